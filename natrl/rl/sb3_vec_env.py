"""stable-baselines3's VecEnv API both ways, without requiring stable-baselines3.

natrl trains on Gymnasium vector envs with SAME_STEP autoreset (:mod:`natrl.rl.env`). Code written for SB3 speaks
SB3's VecEnv API instead: ``reset() -> obs``, ``step(actions) -> (obs, rewards, dones, infos)`` with the final
observation of an ended episode in ``infos[i]["terminal_observation"]``, ``infos[i]["TimeLimit.truncated"]`` at
every step (True for a time-limit end, as SB3's DummyVecEnv) and ``infos[i]["episode"]`` (``{"r", "l", "t"}``, as
SB3's ``Monitor`` writes it) at an episode's end. This module translates between the two, exactly (no step is lost
or added):

* :class:`SB3VecEnv`: SB3's API over a Gymnasium vector env. ``model.get_env()`` returns one, so SB3's
  quickstart loop runs unchanged; ``model.get_vector_env()`` is the Gymnasium vector env itself.
* :class:`FromSB3VecEnv`: a Gymnasium vector env over any SB3 ``VecEnv`` (``DummyVecEnv``, ``SubprocVecEnv``,
  ``VecNormalize`` and the other ``VecEnvWrapper`` s, ``make_vec_env``'s result), so an agent trains on it.
  ``dones`` split into ``terminated`` and ``truncated`` by ``TimeLimit.truncated``, as SB3 itself reads them.
* :func:`make_vec_env`: SB3's ``make_vec_env`` signature, returning an :class:`SB3VecEnv` over Gymnasium's own
  vector envs (``vec_env_cls="dummy"`` or ``"subproc"``, or SB3's classes when it is installed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

__all__ = [
    "FromSB3VecEnv",
    "SB3VecEnv",
    "is_sb3_vec_env",
    "make_vec_env",
    "register_with_sb3",
    "sb3_infos",
    "split_infos",
]


def is_sb3_vec_env(env: Any) -> bool:
    """An SB3 ``VecEnv`` (by its API: ``step_async``/``step_wait``/``num_envs``), not a Gymnasium one."""
    if isinstance(env, (VectorEnv, SB3VecEnv)):
        return False
    return all(hasattr(env, name) for name in ("step_async", "step_wait", "num_envs", "observation_space"))


def register_with_sb3() -> None:
    """Make :class:`SB3VecEnv` an SB3 ``VecEnv`` for ``isinstance`` (SB3's ``evaluate_policy``, callbacks) when SB3
    is already imported; natrl does not import it."""
    module = sys.modules.get("stable_baselines3.common.vec_env.base_vec_env")
    base = getattr(module, "VecEnv", None)
    if base is not None and not issubclass(SB3VecEnv, base):
        base.register(SB3VecEnv)


class SB3VecEnv:
    """stable-baselines3's VecEnv API over a Gymnasium vector env with SAME_STEP autoreset.

    Args:
        venv: the Gymnasium vector env (its autoreset mode must be SAME_STEP, natrl's).
    """

    def __init__(self, venv: VectorEnv) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode is not None and str(mode) != str(AutoresetMode.SAME_STEP):
            raise ValueError(f"SB3VecEnv needs a vector env with SAME_STEP autoreset, got {mode}")
        self.venv = venv
        self.num_envs = venv.num_envs
        self.observation_space = venv.single_observation_space
        self.action_space = venv.single_action_space
        self.render_mode = getattr(venv, "render_mode", None)
        self.reset_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        self._seeds: list[int | None] = [None] * self.num_envs
        self._options: dict[str, Any] | None = None
        self._actions: Any = None
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, np.int64)
        self._start_time = time.time()
        register_with_sb3()

    # ------------------------------------------------------------------ SB3's VecEnv API
    def reset(self) -> Any:
        """Reset every env; returns the observations (infos in :attr:`reset_infos`)."""
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        obs, info = self.venv.reset(seed=seeds, options=self._options)  # type: ignore[arg-type]
        self._seeds = [None] * self.num_envs
        self._options = None
        self.reset_infos = split_infos(info, self.num_envs)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = np.logical_or(terminated, truncated)
        self._returns += rewards
        self._lengths += 1
        ended = np.flatnonzero(dones)
        episodes = [(float(self._returns[i]), int(self._lengths[i])) for i in ended]
        elapsed = round(time.time() - self._start_time, 6)
        infos = sb3_infos(info, self.num_envs, dones, truncated & ~terminated, episodes, elapsed)
        self._returns[ended], self._lengths[ended] = 0.0, 0
        return obs, np.asarray(rewards, np.float32), dones, infos

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One step of every env: ``(obs, rewards, dones, infos)``; an ended env is already reset."""
        self.step_async(actions)
        return self.step_wait()

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seeds for the next :meth:`reset`: env i gets ``seed + i`` (SB3's convention)."""
        self._seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        return list(self._seeds)

    def set_options(self, options: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
        self._options = options[0] if isinstance(options, list) else options

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames: Any = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """The envs' frames tiled into one image (``rgb_array`` envs); None for other render modes."""
        if self.render_mode != "rgb_array":
            return None
        frames = [f for f in self.get_images() if f is not None]
        if not frames:
            return None
        return np.concatenate(frames, axis=1)

    def _sub_envs(self, indices: int | Iterable[int] | None) -> list[gym.Env]:
        envs = getattr(self.venv, "envs", None)
        if envs is None:
            raise AttributeError(f"{type(self.venv).__name__} does not expose its sub-envs in this process")
        if indices is None:
            return list(envs)
        if isinstance(indices, int):
            return [envs[indices]]
        return [envs[i] for i in indices]

    def get_attr(self, attr_name: str, indices: int | Iterable[int] | None = None) -> list[Any]:
        if isinstance(self.venv, SyncVectorEnv):
            return [env.get_wrapper_attr(attr_name) for env in self._sub_envs(indices)]
        values = list(self.venv.get_attr(attr_name))  # type: ignore[attr-defined]
        return values if indices is None else [values[i] for i in _indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: int | Iterable[int] | None = None) -> None:
        for env in self._sub_envs(indices):
            env.set_wrapper_attr(attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: int | Iterable[int] | None = None, **kwargs: Any
    ) -> list[Any]:
        return [env.get_wrapper_attr(method_name)(*args, **kwargs) for env in self._sub_envs(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: int | Iterable[int] | None = None) -> list[bool]:
        def wrapped(env: Any) -> bool:
            while isinstance(env, gym.Wrapper):
                if isinstance(env, wrapper_class):
                    return True
                env = env.env
            return False

        try:
            return [wrapped(env) for env in self._sub_envs(indices)]
        except AttributeError:
            return [False] * len(list(_indices(indices, self.num_envs)))

    @property
    def envs(self) -> list[gym.Env]:
        """The sub-envs, as SB3's ``DummyVecEnv.envs`` (when they step in this process)."""
        return self._sub_envs(None)

    @property
    def unwrapped(self) -> SB3VecEnv:
        return self


def split_infos(info: dict[str, Any], n_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's info dict of arrays (with ``_key`` masks) → SB3's list of ``n_envs`` per-env dicts; an ended
    episode's ``final_info`` (e.g. RecordEpisodeStatistics' ``"episode"``) is merged into its env's dict."""
    infos: list[dict[str, Any]] = [{} for _ in range(n_envs)]
    for key, values in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = info.get(f"_{key}")
        if isinstance(values, dict):  # a nested dict of arrays (RecordEpisodeStatistics' "episode")
            values = split_infos(values, n_envs)
        for i in range(n_envs):
            if mask is None or bool(mask[i]):
                try:
                    infos[i][key] = values[i]
                except (TypeError, IndexError, KeyError):
                    infos[i][key] = values
    final_info = info.get("final_info")
    if isinstance(final_info, dict):
        for i, sub in enumerate(split_infos(final_info, n_envs)):
            if info.get("_final_info") is None or bool(info["_final_info"][i]):
                infos[i].update(sub)
    return infos


def sb3_infos(
    info: dict[str, Any],
    n_envs: int,
    dones: np.ndarray,
    time_limit: np.ndarray,
    episodes: Sequence[tuple[float, int] | None],
    elapsed: float,
) -> list[dict[str, Any]]:
    """SB3's ``infos`` for one vector step, as SB3's DummyVecEnv over Monitor-wrapped envs gives them:
    :func:`split_infos`, every env's ``TimeLimit.truncated`` (``time_limit[i]``: truncated and not terminated),
    and for each ended env (in the order of ``np.flatnonzero(dones)``) ``terminal_observation`` (Gymnasium's
    ``final_obs``) and, unless the env's own RecordEpisodeStatistics gave one, SB3 Monitor's ``episode`` record
    ``{"r": return, "l": length, "t": elapsed}`` from ``episodes`` (None: no record known)."""
    infos = split_infos(info, n_envs)
    for info_i, cut in zip(infos, time_limit, strict=True):
        info_i["TimeLimit.truncated"] = bool(cut)
    final = info.get("final_obs")
    for i, episode in zip(np.flatnonzero(dones), episodes, strict=True):
        infos[i]["terminal_observation"] = final[i] if final is not None else None
        if episode is not None:
            infos[i].setdefault("episode", {"r": round(episode[0], 6), "l": episode[1], "t": elapsed})
    return infos


def _indices(indices: int | Iterable[int] | None, n: int = 0) -> Iterable[int]:
    if indices is None:
        return range(n)
    return [indices] if isinstance(indices, int) else indices


class FromSB3VecEnv(VectorEnv):
    """A Gymnasium vector env (SAME_STEP autoreset) over a stable-baselines3 ``VecEnv``.

    SB3's ``done`` is split into Gymnasium's ``terminated`` and ``truncated`` by ``info["TimeLimit.truncated"]``,
    and ``info["terminal_observation"]`` becomes ``info["final_obs"]``. Seeds given to :meth:`reset` are passed
    with SB3's ``seed`` (env i gets ``seed + i``).

    Args:
        venv: the SB3 VecEnv (``DummyVecEnv``, ``SubprocVecEnv``, ``VecNormalize``, …).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012 (Gymnasium's class attribute)

    def __init__(self, venv: Any) -> None:
        self.sb3_venv = venv
        self.num_envs = int(venv.num_envs)
        self.single_observation_space = venv.observation_space
        self.single_action_space = venv.action_space
        self.observation_space = gym.vector.utils.batch_space(venv.observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(venv.action_space, self.num_envs)
        self.render_mode = getattr(venv, "render_mode", None)
        self.spec = None
        self.closed = False

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self.sb3_venv.seed(seed)
        if options is not None and hasattr(self.sb3_venv, "set_options"):
            self.sb3_venv.set_options(options)
        return self.sb3_venv.reset(), {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, dones, infos = self.sb3_venv.step(actions)
        dones = np.asarray(dones, bool)
        truncated = np.array([bool(d and info.get("TimeLimit.truncated", False)) for d, info in zip(dones, infos)])
        terminated = dones & ~truncated
        info: dict[str, Any] = {}
        if dones.any():
            final = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(dones):
                final[i] = infos[i].get("terminal_observation")
                if final[i] is None:
                    raise ValueError(
                        "the SB3 VecEnv ended an episode without infos[i]['terminal_observation']; natrl needs the "
                        "final observation (SB3's DummyVecEnv and SubprocVecEnv provide it)"
                    )
            info["final_obs"], info["_final_obs"] = final, dones.copy()
        return obs, np.asarray(rewards, np.float64), terminated, truncated, info

    def render(self) -> Any:
        return self.sb3_venv.render()

    def close_extras(self, **kwargs: Any) -> None:
        self.sb3_venv.close()


def make_vec_env(
    env_id: str | Callable[..., gym.Env],
    n_envs: int = 1,
    seed: int | None = None,
    start_index: int = 0,
    monitor_dir: str | None = None,
    wrapper_class: Callable[..., gym.Env] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_cls: Any = None,
    vec_env_kwargs: dict[str, Any] | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
    wrapper_kwargs: dict[str, Any] | None = None,
) -> SB3VecEnv:
    """stable-baselines3's ``make_vec_env``: ``n_envs`` copies of an env id or factory, in SB3's VecEnv API.

    The copies run in Gymnasium's vector envs with SAME_STEP autoreset (``vec_env_cls`` None or SB3's
    ``DummyVecEnv``: one process; SB3's ``SubprocVecEnv`` or ``"subproc"``: one process per env), each wrapped in
    ``RecordEpisodeStatistics`` (SB3's Monitor; ``monitor_dir`` is not supported: use natrl's run directories).

    Raises:
        ValueError: ``monitor_dir`` is given, or ``n_envs`` is not a positive integer.
    """
    if monitor_dir is not None:
        raise ValueError("make_vec_env: monitor_dir is not supported; natrl's run directories log episodes")
    if not isinstance(n_envs, int) or isinstance(n_envs, bool) or n_envs < 1:
        raise ValueError(f"make_vec_env: n_envs must be a positive integer, got {n_envs!r}")
    env_kwargs, wrapper_kwargs = dict(env_kwargs or {}), dict(wrapper_kwargs or {})
    monitor_kwargs = dict(monitor_kwargs or {})

    def factory(rank: int) -> Callable[[], gym.Env]:
        def make() -> gym.Env:
            env = gym.make(env_id, **env_kwargs) if isinstance(env_id, str) else env_id(**env_kwargs)
            env = gym.wrappers.RecordEpisodeStatistics(env, **monitor_kwargs)
            if wrapper_class is not None:
                env = wrapper_class(env, **wrapper_kwargs)
            return env

        return make

    name = vec_env_cls if isinstance(vec_env_cls, str) else getattr(vec_env_cls, "__name__", None)
    kwargs = {"autoreset_mode": AutoresetMode.SAME_STEP, **(vec_env_kwargs or {})}
    fns = [factory(start_index + i) for i in range(n_envs)]
    if name in (None, "dummy", "DummyVecEnv"):
        venv: VectorEnv = SyncVectorEnv(fns, **kwargs)
    elif name in ("subproc", "SubprocVecEnv"):
        kwargs.pop("start_method", None)
        venv = AsyncVectorEnv(fns, **kwargs)
    else:
        raise ValueError(f"make_vec_env: vec_env_cls must be DummyVecEnv or SubprocVecEnv, got {vec_env_cls!r}")
    wrapped = SB3VecEnv(venv)
    if seed is not None:
        wrapped.seed(seed)
    return wrapped
