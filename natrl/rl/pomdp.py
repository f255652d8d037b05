"""Partially observed variants of classic-control tasks: the velocities hidden, as in sb3-contrib's
RecurrentPPO benchmark (rl-baselines3-zoo's "NoVel" environments).

Without its velocities an observation no longer determines the state: a policy must infer them from
the last observations, which a recurrent policy (``"MlpLstmPolicy"``) can and an MLP cannot. The
velocity entries are set to zero (the observation keeps its shape), and the tasks are registered with
Gymnasium when ``natrl.rl`` is imported (by any agent; ``gym.make("natrl.rl:CartPoleNoVel-v1")`` imports
it first):

=============================  ==========================  ==============================
id                             base task                   hidden entries
=============================  ==========================  ==============================
``CartPoleNoVel-v1``           ``CartPole-v1``             cart velocity, pole angular velocity
``PendulumNoVel-v1``           ``Pendulum-v1``             angular velocity
``LunarLanderNoVel-v3``        ``LunarLander-v3``          x/y velocities, angular velocity
``MountainCarContinuousNoVel-v0``  ``MountainCarContinuous-v0``  velocity
=============================  ==========================  ==============================

(``LunarLanderNoVel-v3`` needs Box2D: ``pip install "gymnasium[box2d]"``.)

:class:`TMaze` (``TMaze-v0``) is a memory task in its purest form, after Bakker (2001), "Reinforcement
learning with long short-term memory", NeurIPS: a cue seen only at the first step says which arm of
the T the goal is in, ``length`` steps later.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["VELOCITY_ENTRIES", "MaskVelocity", "TMaze", "make_no_velocity", "register_no_velocity_envs"]

VELOCITY_ENTRIES: dict[str, tuple[int, ...]] = {
    "CartPole-v1": (1, 3),
    "Pendulum-v1": (2,),
    "LunarLander-v3": (2, 3, 5),
    "MountainCarContinuous-v0": (1,),
}
"""The observation entries that are velocities, per base task."""


class MaskVelocity(gym.ObservationWrapper):
    """Zero the velocity entries of a classic-control observation (see the module docstring).

    Args:
        env: a ``CartPole-v1``, ``Pendulum-v1``, ``LunarLander-v3`` or ``MountainCarContinuous-v0`` env.
        entries: the entries to zero (default: the task's velocities, :data:`VELOCITY_ENTRIES`).
    """

    def __init__(self, env: gym.Env, entries: tuple[int, ...] | None = None) -> None:
        super().__init__(env)
        if entries is None:
            spec_id = env.spec.id if env.spec is not None else None
            if spec_id not in VELOCITY_ENTRIES:
                raise ValueError(
                    f"MaskVelocity knows the velocities of {', '.join(VELOCITY_ENTRIES)}, not of {spec_id!r}; "
                    "pass entries=(...) to name them"
                )
            entries = VELOCITY_ENTRIES[spec_id]
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"MaskVelocity needs a flat Box observation space, got {space}")
        if not all(0 <= i < space.shape[0] for i in entries):
            raise ValueError(f"MaskVelocity entries {entries} lie outside observations of size {space.shape[0]}")
        self.hidden = np.zeros(space.shape, dtype=bool)
        self.hidden[list(entries)] = True

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.where(self.hidden, np.zeros((), observation.dtype), observation)


class TMaze(gym.Env):
    """A T-shaped maze: a corridor of ``length`` cells, then a junction with a goal up and a goal down.

    The observation has three entries: (1, 0, 0) or (0, 1, 0) at the start cell — the cue: the goal is up
    or down — (0, 0, 0) in the corridor and (0, 0, 1) at the junction. Actions: 0 right, 1 left, 2 up,
    3 down (up and down do nothing outside the junction). Choosing the cued arm at the junction ends the
    episode with reward +1, the other arm with −1; every step costs 0.01. Episodes are truncated after
    ``4 * length`` steps. A policy without memory cannot do better than guessing at the junction
    (expected return ≈ −0.01·length), one that remembers the cue returns 1 − 0.01·(length + 1).

    Args:
        length: corridor cells between the start and the junction (the memory span needed).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(self, length: int = 10) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"TMaze length must be a positive integer, got {length!r}")
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self._pos = 0
        self._goal_up = True
        self._steps = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, np.float32)
        if self._pos == 0:
            obs[0 if self._goal_up else 1] = 1.0
        elif self._pos == self.length:
            obs[2] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos, self._steps = 0, 0
        self._goal_up = bool(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = int(action)
        if not 0 <= action < 4:
            raise ValueError(f"TMaze actions are 0 (right), 1 (left), 2 (up), 3 (down); got {action}")
        self._steps += 1
        reward, terminated = -0.01, False
        if action == 0:
            self._pos = min(self._pos + 1, self.length)
        elif action == 1:
            self._pos = max(self._pos - 1, 0)
        elif self._pos == self.length:
            terminated = True
            reward += 1.0 if (action == 2) == self._goal_up else -1.0
        truncated = not terminated and self._steps >= 4 * self.length
        return self._obs(), reward, terminated, truncated, {}


def make_no_velocity(env_id: str, **kwargs: Any) -> gym.Env:
    """``env_id`` with its velocities hidden (the entry point of the registered "NoVel" ids)."""
    return MaskVelocity(gym.make(env_id, **kwargs))


def register_no_velocity_envs() -> None:
    """Register ``CartPoleNoVel-v1``, ``PendulumNoVel-v1``, ``LunarLanderNoVel-v3`` and
    ``MountainCarContinuousNoVel-v0`` (idempotent), with their base tasks' episode limits, and ``TMaze-v0``
    (:class:`TMaze` with a corridor of 10 cells)."""
    for base in VELOCITY_ENTRIES:
        name, _, version = base.rpartition("-")
        env_id = f"{name}NoVel-{version}"
        if env_id in gym.registry:
            continue
        spec = gym.spec(base)
        # gym.make calls the entry point with the spec's kwargs; Gymnasium's EnvCreator protocol
        # (``__call__(**kwargs)``) admits no named parameters, so these entry points are typed as ignored
        gym.register(
            env_id,
            entry_point=make_no_velocity,  # type: ignore[arg-type]
            kwargs={"env_id": base},
            reward_threshold=spec.reward_threshold,
        )
    if "TMaze-v0" not in gym.registry:
        gym.register("TMaze-v0", entry_point=TMaze, kwargs={"length": 10})  # type: ignore[arg-type]


register_no_velocity_envs()
