"""Checks of what an environment returns: the step's types at construction, and finite observations and
rewards (that fit the rollouts' float32 storage) during rollouts."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["NonFiniteError", "check_finite", "check_float32_rewards", "check_step_types"]


class NonFiniteError(FloatingPointError):
    """An environment returned a NaN or infinite observation or reward."""


def check_step_types(env: gym.Env, name: str) -> None:
    """One reset and one step of a throw-away copy: ``terminated``/``truncated`` must be booleans and the reward a
    number (a vector env would read ``None`` as False and train on it without a word)."""
    try:
        first = env.reset(seed=0)
        step = env.step(env.action_space.sample())
    except Exception:  # the env's own errors surface, with their traceback, at the first rollout
        return
    if not (isinstance(first, tuple) and len(first) == 2 and isinstance(first[1], dict)):
        raise TypeError(
            f"{name}: env.reset must return (observation, info dict), as Gymnasium's API, got {first!r:.80}"
        )
    if not (isinstance(step, tuple) and len(step) == 5 and isinstance(step[4], dict)):
        raise TypeError(
            f"{name}: env.step must return (observation, reward, terminated, truncated, info dict), as Gymnasium's "
            f"API, got {step!r:.80}"
        )
    reward: Any = step[1]
    terminated, truncated = step[2], step[3]
    for field_, value in (("terminated", terminated), ("truncated", truncated)):
        if np.ndim(value) != 0 or np.asarray(value).dtype != np.bool_:
            raise TypeError(
                f"{name}: env.step returned {field_}={value!r} ({type(value).__name__}); Gymnasium envs return a bool"
            )
    kind = np.asarray(reward).dtype.kind if np.ndim(reward) == 0 else "shape"
    if kind not in "iuf":
        raise TypeError(f"{name}: env.step returned reward={reward!r} ({type(reward).__name__}); return a number")


def check_finite(obs: np.ndarray, rewards: np.ndarray, step: int) -> None:
    """Raise :class:`NonFiniteError` naming the env index and step on NaN/inf."""
    if np.isfinite(obs).all() and np.isfinite(rewards).all():
        return
    bad_obs = ~np.isfinite(obs.reshape(obs.shape[0], -1)).all(axis=1)
    bad_rew = ~np.isfinite(rewards)
    idx = int(np.flatnonzero(bad_obs | bad_rew)[0])
    what = "observation" if bad_obs[idx] else "reward"
    raise NonFiniteError(
        f"environment {idx} returned a non-finite {what} at step {step}; the update was not "
        "applied and the policy is unchanged. Check the environment or wrap it to clip/sanitise."
    )


def check_float32_rewards(stored: np.ndarray, first_step: int) -> None:
    """Raise :class:`NonFiniteError` when rewards that were finite overflowed float32 (T, E) storage."""
    if np.isfinite(stored).all():
        return
    t, e = (int(i[0]) for i in np.nonzero(~np.isfinite(stored)))
    raise NonFiniteError(
        f"environment {e} returned a reward beyond float32's range (±3.4e38) at step "
        f"{first_step + t * stored.shape[1]}, and rollouts store rewards in float32; the update was not "
        "applied. Scale the rewards with a wrapper (gymnasium.wrappers.TransformReward) or normalize_reward=True."
    )
