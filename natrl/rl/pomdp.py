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
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["VELOCITY_ENTRIES", "MaskVelocity", "make_no_velocity", "register_no_velocity_envs"]

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


def make_no_velocity(env_id: str, **kwargs: Any) -> gym.Env:
    """``env_id`` with its velocities hidden (the entry point of the registered "NoVel" ids)."""
    return MaskVelocity(gym.make(env_id, **kwargs))


def register_no_velocity_envs() -> None:
    """Register ``CartPoleNoVel-v1``, ``PendulumNoVel-v1``, ``LunarLanderNoVel-v3`` and
    ``MountainCarContinuousNoVel-v0`` (idempotent), with their base tasks' episode limits."""
    for base in VELOCITY_ENTRIES:
        name, _, version = base.rpartition("-")
        env_id = f"{name}NoVel-{version}"
        if env_id in gym.registry:
            continue
        spec = gym.spec(base)
        gym.register(
            env_id,
            entry_point=make_no_velocity,
            kwargs={"env_id": base},
            reward_threshold=spec.reward_threshold,
        )


register_no_velocity_envs()
