"""Gymnasium's MuJoCo locomotion tasks stepped without gymnasium's per-step Python (``vec_env="mujoco"``).

:class:`MujocoSameStep` builds ``gym.make(id)`` copies for their MuJoCo models and data, their spaces and their
resets (``reset`` is gymnasium's own, so the initial states and random streams are gymnasium's), and steps them
itself: the action into ``data.ctrl``, ``mujoco.mj_step(model, data, nstep=frame_skip)`` (and
``mj_rnePostConstraint`` where the task reads contact forces), then the observation, reward and termination of the
whole batch in a few NumPy operations, the time limit of the id's spec, and SAME_STEP autoreset with
``info["final_obs"]`` as gymnasium's SyncVectorEnv gives it. What it leaves out is what the training loop does not
read: the per-step info dicts of the envs, the wrappers' checks, the second health check per step, and
``mj_rnePostConstraint`` where nothing reads its output (Hopper, Walker2d, HalfCheetah, Swimmer). Its state, for
exact resume, is that of the copies (:mod:`natrl.rl.env_state`), as a SyncVectorEnv's.

The formulas are those of gymnasium's ``*_v5.py`` environments (Hopper, Walker2d, HalfCheetah, Ant, Swimmer,
Humanoid), in the same floating-point order, so observations, rewards, terminations and truncations are equal bit
for bit to gymnasium's SyncVectorEnv with the same seeds and actions (tests/test_mujoco_env.py). Only the keyword
arguments that set the reward weights, the health ranges, ``terminate_when_unhealthy``, ``reset_noise_scale``,
``frame_skip``, ``max_episode_steps`` and Ant's ``include_cfrc_ext_in_observation`` are taken; one that changes
the model or the observation otherwise is refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

__all__ = ["MUJOCO_IDS", "MujocoSameStep", "check_mujoco_env", "check_mujoco_kwargs"]

_LOCOMOTION = ("forward_reward_weight", "ctrl_cost_weight")
_HEALTH = ("healthy_reward", "terminate_when_unhealthy", "healthy_z_range")
_COMMON = ("reset_noise_scale", "frame_skip", "max_episode_steps")

MUJOCO_IDS: dict[str, tuple[str, ...]] = {
    "Hopper-v5": (*_LOCOMOTION, *_HEALTH, "healthy_state_range", "healthy_angle_range"),
    "Walker2d-v5": (*_LOCOMOTION, *_HEALTH, "healthy_angle_range"),
    "HalfCheetah-v5": _LOCOMOTION,
    "Swimmer-v5": _LOCOMOTION,
    "Ant-v5": (
        *_LOCOMOTION,
        *_HEALTH,
        "contact_cost_weight",
        "contact_force_range",
        "include_cfrc_ext_in_observation",
    ),
    "Humanoid-v5": (*_LOCOMOTION, *_HEALTH, "contact_cost_weight", "contact_cost_range"),
}
"""The ids :class:`MujocoSameStep` steps, each with the ``gym.make`` keyword arguments it takes besides
``reset_noise_scale``, ``frame_skip`` and ``max_episode_steps``."""


def check_mujoco_env(env: Any, wrapper_class: Any) -> None:
    """Refuse, with one line, an agent whose ``vec_env="mujoco"`` cannot be honoured.

    Raises:
        ValueError: an env that is not one of :data:`MUJOCO_IDS`, or a wrapper.
    """
    if not (isinstance(env, str) and env in MUJOCO_IDS):
        raise ValueError(
            f"vec_env='mujoco' takes one of the ids {', '.join(MUJOCO_IDS)}, got {env!r}; use vec_env='sync'"
        )
    if wrapper_class is not None:
        raise ValueError(
            "vec_env='mujoco' steps the MuJoCo envs itself and takes no gymnasium wrapper; use vec_env='sync'"
        )


def check_mujoco_kwargs(env_id: str, env_kwargs: Mapping[str, Any]) -> None:
    """Refuse, with one line, ``gym.make`` keyword arguments :class:`MujocoSameStep` does not compute (those that
    change the model or the observation).

    Raises:
        ValueError: a keyword argument not listed for the id in :data:`MUJOCO_IDS` nor common to all ids.
    """
    taken = set(MUJOCO_IDS[env_id]) | set(_COMMON)
    other = sorted(k for k in env_kwargs if k not in taken)
    if other:
        raise ValueError(
            f"vec_env='mujoco' computes {env_id}'s default observation and takes only the env_kwargs "
            f"{', '.join(sorted(taken))}; got {', '.join(other)}: use vec_env='sync'"
        )


@dataclass(frozen=True)
class _Layout:
    """Where each env's raw values sit in one row of the batch buffer: ``(name, source rows, width)`` per MjData
    field, copied after every step."""

    fields: tuple[tuple[str, slice, int], ...]

    def columns(self, name: str) -> slice:
        start = 0
        for field, _, width in self.fields:
            if field == name:
                return slice(start, start + width)
            start += width
        raise KeyError(name)

    @property
    def width(self) -> int:
        return sum(width for _, _, width in self.fields)


class _Task:
    """One task's formulas over the batch buffer ``raw`` (one row per env, the fields of :class:`_Layout`).

    ``position(raw)`` is what the forward velocity differentiates, ``outcome(raw, actions, velocity)`` the
    observation, reward and termination of every env, each written as gymnasium's ``step`` computes it.
    """

    contact_forces = False  # calls mj_rnePostConstraint after mj_step (cfrc_ext is read)

    def __init__(self, model: Any, params: Mapping[str, Any]) -> None:
        self.p = dict(params)
        self.layout = self._layout(model)
        self.cols = {name: self.layout.columns(name) for name, _, _ in self.layout.fields}
        self.qpos, self.qvel = self.cols["qpos"], self.cols["qvel"]

    def _layout(self, model: Any) -> _Layout:
        return _Layout((("qpos", slice(None), model.nq), ("qvel", slice(None), model.nv)))

    def position(self, raw: np.ndarray) -> np.ndarray:
        return raw[:, self.qpos.start]

    def outcome(self, raw: np.ndarray, actions: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def control_cost(self, actions: np.ndarray) -> np.ndarray:
        # in the actions' dtype, as gymnasium's np.sum(np.square(action)) of one env's action
        return self.p["ctrl_cost_weight"] * np.square(actions).sum(axis=1)


class _Planar(_Task):
    """Hopper, Walker2d: observation qpos[1:] and clip(qvel, -10, 10); reward forward velocity + healthy
    reward - control cost; terminated when unhealthy: z and angle (qpos[1], qpos[2]) within their open ranges, and
    for Hopper every value of the state from qpos[2] on within the state range."""

    def __init__(self, model: Any, params: Mapping[str, Any]) -> None:
        super().__init__(model, params)
        p = self.p
        # the open bounds of the checked columns qpos[1], qpos[2] (, qpos[3:], qvel): a < x and b < x is max(a, b) < x
        (min_z, max_z), (min_angle, max_angle) = p["healthy_z_range"], p["healthy_angle_range"]
        low, high = [min_z, min_angle], [max_z, max_angle]
        if "healthy_state_range" in p:
            min_state, max_state = p["healthy_state_range"]
            width = self.qvel.stop - 2
            low = [min_z] + [max(min_angle, min_state)] + [min_state] * (width - 1)
            high = [max_z] + [min(max_angle, max_state)] + [max_state] * (width - 1)
        self.checked = slice(self.qpos.start + 1, self.qpos.start + 1 + len(low))
        self.low, self.high = np.array(low, float), np.array(high, float)
        self.velocities = slice(self.qpos.stop - 1 - self.qpos.start, None)  # of the observation

    def outcome(self, raw: np.ndarray, actions: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, ...]:
        p = self.p
        obs = raw[:, self.qpos.start + 1 : self.qvel.stop].copy()
        velocities = obs[:, self.velocities]
        np.minimum(np.maximum(velocities, -10, out=velocities), 10, out=velocities)  # np.clip, without its wrapper
        checked = raw[:, self.checked]
        healthy = np.asarray(((self.low < checked) & (checked < self.high)).all(axis=1))
        reward = (p["forward_reward_weight"] * velocity + healthy * p["healthy_reward"]) - self.control_cost(actions)
        return obs, reward, ~healthy & bool(p["terminate_when_unhealthy"])


class _Swimming(_Task):
    """HalfCheetah (``skip=1``), Swimmer (``skip=2``): observation qpos[skip:] and qvel; reward forward velocity -
    control cost; never terminated."""

    def __init__(self, model: Any, params: Mapping[str, Any], skip: int) -> None:
        super().__init__(model, params)
        self.skip = skip

    def outcome(self, raw: np.ndarray, actions: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, ...]:
        obs = raw[:, self.qpos.start + self.skip : self.qvel.stop].copy()
        reward = self.p["forward_reward_weight"] * velocity - self.control_cost(actions)
        return obs, reward, np.zeros(len(raw), bool)


class _Ant(_Task):
    """Ant: velocity of the torso's xpos; observation qpos[2:], qvel (, clip(cfrc_ext[1:])); reward forward
    velocity + healthy reward - (control cost + contact cost of the clipped cfrc_ext); healthy when the state is
    finite and z within the closed range."""

    contact_forces = True

    def _layout(self, model: Any) -> _Layout:
        return _Layout(
            (
                ("qpos", slice(None), model.nq),
                ("qvel", slice(None), model.nv),
                ("xpos", slice(1, 2), 3),  # the main body (body 1, the torso)
                ("cfrc_ext", slice(None), model.nbody * 6),
            )
        )

    def position(self, raw: np.ndarray) -> np.ndarray:
        return raw[:, self.cols["xpos"].start]

    def outcome(self, raw: np.ndarray, actions: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, ...]:
        p = self.p
        low, high = p["contact_force_range"]
        forces = np.minimum(np.maximum(raw[:, self.cols["cfrc_ext"]], low), high)  # np.clip, without its wrapper
        position = raw[:, self.qpos.start + 2 : self.qvel.stop]
        obs = (
            np.concatenate((position, forces[:, 6:]), axis=1)
            if p["include_cfrc_ext_in_observation"]
            else position.copy()
        )
        min_z, max_z = p["healthy_z_range"]
        z = raw[:, self.qpos.start + 2]
        healthy = np.isfinite(raw[:, self.qpos.start : self.qvel.stop]).all(axis=1) & (min_z <= z) & (z <= max_z)
        contact = p["contact_cost_weight"] * np.square(forces).sum(axis=1)
        costs = self.control_cost(actions) + contact
        reward = (velocity * p["forward_reward_weight"] + healthy * p["healthy_reward"]) - costs
        return obs, reward, ~healthy & bool(p["terminate_when_unhealthy"])


class _Humanoid(_Task):
    """Humanoid: velocity of the mass centre (body masses times xipos); observation qpos[2:], qvel, cinert[1:],
    cvel[1:], qfrc_actuator[6:], cfrc_ext[1:]; reward forward velocity + healthy reward - (control cost of
    data.ctrl + contact cost clipped to its range); healthy when z is within the open range."""

    contact_forces = True

    def __init__(self, model: Any, params: Mapping[str, Any]) -> None:
        super().__init__(model, params)
        self.mass = model.body_mass.copy()
        self.total_mass = self.mass.sum()

    def _layout(self, model: Any) -> _Layout:
        nb = model.nbody
        return _Layout(
            (
                ("qpos", slice(None), model.nq),
                ("qvel", slice(None), model.nv),
                ("cinert", slice(1, None), (nb - 1) * 10),
                ("cvel", slice(1, None), (nb - 1) * 6),
                ("qfrc_actuator", slice(6, None), model.nv - 6),
                ("cfrc_ext", slice(None), nb * 6),
                ("xipos", slice(None), nb * 3),
            )
        )

    def position(self, raw: np.ndarray) -> np.ndarray:
        # gymnasium's mass_center, np.einsum("b,bj->j", mass, xipos) / total mass, for the batch (the same sums)
        xipos = np.ascontiguousarray(raw[:, self.cols["xipos"]]).reshape(len(raw), -1, 3)
        return np.einsum("b,ebj->ej", self.mass, xipos)[:, 0] / self.total_mass

    def outcome(self, raw: np.ndarray, actions: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, ...]:
        p = self.p
        cfrc = self.cols["cfrc_ext"]
        obs = np.concatenate(
            (raw[:, self.qpos.start + 2 : self.cols["qfrc_actuator"].stop], raw[:, cfrc.start + 6 : cfrc.stop]), axis=1
        )
        min_z, max_z = p["healthy_z_range"]
        z = raw[:, self.qpos.start + 2]
        healthy = (min_z < z) & (z < max_z)
        # gymnasium's control cost reads data.ctrl: the action as float64
        ctrl = p["ctrl_cost_weight"] * np.square(actions.astype(np.float64)).sum(axis=1)
        low, high = p["contact_cost_range"]
        contact = np.minimum(np.maximum(p["contact_cost_weight"] * np.square(raw[:, cfrc]).sum(axis=1), low), high)
        reward = (p["forward_reward_weight"] * velocity + healthy * p["healthy_reward"]) - (ctrl + contact)
        return obs, reward, ~healthy & bool(p["terminate_when_unhealthy"])


_TASKS: dict[str, Callable[[Any, Mapping[str, Any]], _Task]] = {
    "Hopper-v5": _Planar,
    "Walker2d-v5": _Planar,
    "HalfCheetah-v5": lambda model, params: _Swimming(model, params, 1),
    "Swimmer-v5": lambda model, params: _Swimming(model, params, 2),
    "Ant-v5": _Ant,
    "Humanoid-v5": _Humanoid,
}


def _params(env: gym.Env, env_id: str, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The task's parameters: the env_kwargs given, else the defaults of the env class's constructor."""
    signature = inspect.signature(type(env.unwrapped).__init__).parameters
    return {k: env_kwargs.get(k, signature[k].default) for k in MUJOCO_IDS[env_id]}


class MujocoSameStep(VectorEnv):
    """``num_envs`` copies of one of gymnasium's MuJoCo tasks (:data:`MUJOCO_IDS`), stepped as one batch with
    SAME_STEP autoreset.

    Args:
        env_id: one of :data:`MUJOCO_IDS`.
        num_envs: environments stepped together.
        env_kwargs: ``gym.make`` keyword arguments, those :data:`MUJOCO_IDS` lists for the id.

    Attributes:
        envs: the ``gym.make(env_id)`` copies whose MuJoCo data is stepped (their own ``step`` is not called;
            their ``reset`` is).

    Raises:
        ValueError: an id or a keyword argument this env does not compute (one line naming ``vec_env='sync'``).
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(self, env_id: str, num_envs: int, env_kwargs: Mapping[str, Any] | None = None) -> None:
        import mujoco

        check_mujoco_env(env_id, None)
        kwargs = dict(env_kwargs or {})
        check_mujoco_kwargs(env_id, kwargs)
        self.env_id = env_id
        self.num_envs = int(num_envs)
        self.envs = [gym.make(env_id, **kwargs) for _ in range(self.num_envs)]
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        bases: list[Any] = [env.unwrapped for env in self.envs]
        self._models = [base.model for base in bases]
        self._datas = [base.data for base in bases]
        self._frame_skip = int(bases[0].frame_skip)
        self._dt = bases[0].dt
        self._task = _TASKS[env_id](self._models[0], _params(first, env_id, kwargs))
        self._max_steps = None if first.spec is None else first.spec.max_episode_steps
        self._mj_step = mujoco.mj_step
        self._rne = mujoco.mj_rnePostConstraint if self._task.contact_forces else None
        self._raw = np.zeros((self.num_envs, self._task.layout.width))
        # (destination in the row, MjData array) per field: MjData's arrays view memory fixed for its lifetime
        self._copies = [self._row_copies(i, data) for i, data in enumerate(self._datas)]
        self._ctrl = [data.ctrl for data in self._datas]
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._position = np.zeros(self.num_envs)

    def _row_copies(self, i: int, data: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        copies, start = [], 0
        for name, rows, width in self._task.layout.fields:
            source = getattr(data, name)[rows].reshape(-1)
            if not np.shares_memory(source, getattr(data, name)):  # a copy would not follow the simulation
                raise RuntimeError(f"MjData.{name}[{rows}] is not a view of the simulation's memory")
            copies.append((self._raw[i, start : start + width], source))
            start += width
        return copies

    def _read(self, i: int) -> None:
        for destination, source in self._copies[i]:
            destination[...] = source

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict]:
        seeds: list[int | None]
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
        obs = np.stack([self._reset_one(i, s, options) for i, s in enumerate(seeds)])
        return obs, {}

    def _reset_one(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None) -> np.ndarray:
        obs, _ = self.envs[i].reset(seed=seed, options=options)
        self._elapsed[i] = 0
        self._read(i)
        self._position[i] = self._task.position(self._raw[i : i + 1])[0]
        return np.asarray(obs)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Each copy's attribute ``name`` (``env.get_wrapper_attr``), as SyncVectorEnv's ``get_attr``."""
        return tuple(env.get_wrapper_attr(name) for env in self.envs)

    def record_episode_steps(self) -> None:
        """Write each env's step count into its ``TimeLimit`` wrapper (which :meth:`step` leaves alone), so that the
        state of :attr:`envs` holds the whole state of this vector env (:mod:`natrl.rl.env_state`)."""
        if self._max_steps is not None:
            for env, steps in zip(self.envs, self._elapsed):
                env.set_wrapper_attr("_elapsed_steps", int(steps))

    def resume_from_envs(self) -> None:
        """Take up the state written into :attr:`envs` (a resumed run): the step counts of their ``TimeLimit``
        wrappers, and the simulations' values this env reads."""
        for i, env in enumerate(self.envs):
            if self._max_steps is not None:
                self._elapsed[i] = env.get_wrapper_attr("_elapsed_steps")
            self._read(i)
            self._position[i] = self._task.position(self._raw[i : i + 1])[0]

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        actions = np.asarray(actions)
        step, rne, skip = self._mj_step, self._rne, self._frame_skip
        for i, (model, data) in enumerate(zip(self._models, self._datas)):
            self._ctrl[i][:] = actions[i]
            step(model, data, nstep=skip)
            if rne is not None:
                rne(model, data)
            for destination, source in self._copies[i]:
                destination[...] = source
        task, raw = self._task, self._raw
        position = task.position(raw).copy()  # a view of raw, which the next step overwrites
        velocity = (position - self._position) / self._dt
        self._position = position
        obs, reward, terminated = task.outcome(raw, actions, velocity)
        self._elapsed += 1
        truncated = self._elapsed >= self._max_steps if self._max_steps is not None else np.zeros(self.num_envs, bool)
        ended = terminated | truncated
        info: dict[str, Any] = {}
        if ended.any():
            final = np.full(self.num_envs, None, dtype=object)
            for e in np.flatnonzero(ended):
                final[e] = obs[e].copy()
                obs[e] = self._reset_one(int(e))
            info["final_obs"], info["_final_obs"] = final, ended.copy()
        return obs, reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
