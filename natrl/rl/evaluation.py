"""Evaluation: whole episodes of a policy on a Gymnasium env (:func:`evaluate_env`) or on a vector env in
stable-baselines3's VecEnv API (:func:`evaluate_vec_env`).

:meth:`natrl.rl.OnPolicyAgent.evaluate` runs whole episodes on a fresh single env. An evaluation env given as a
VecEnv (SB3's ``make_vec_env``, ``DummyVecEnv``, natrl's :class:`~natrl.rl.sb3_vec_env.SB3VecEnv`) is run by
:func:`evaluate_vec_env`, which counts episodes as SB3's ``evaluate_policy`` does: env i of n runs
``(episodes + i) // n`` of them, so the episodes are spread evenly and none is cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EvalResult", "check_evaluate_args", "evaluate_env", "evaluate_vec_env"]


@dataclass(frozen=True)
class EvalResult:
    """Deterministic (or stochastic) evaluation over whole episodes."""

    mean: float
    std: float
    returns: list[float]
    lengths: list[int]


def check_evaluate_args(episodes: Any, deterministic: Any, seed: Any) -> None:
    """Refuse ``evaluate``'s arguments unless ``episodes`` is a positive integer, ``deterministic`` a bool and
    ``seed`` None or a non-negative integer (one line naming the argument)."""
    if not isinstance(episodes, (int, np.integer)) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"evaluate: seed must be a non-negative integer or None, got {seed!r}")
    if not isinstance(deterministic, (bool, np.bool_)):
        raise TypeError(f"evaluate: deterministic must be True or False, got {deterministic!r}")


def evaluate_env(model: Any, env: Any, episodes: int, *, deterministic: bool = True, seed: int = 0) -> EvalResult:
    """Run ``episodes`` whole episodes of ``model.predict`` on a Gymnasium ``env``; episode i is reset with
    ``seed + i`` (a recurrent policy starts each from zeros). The env is not closed.

    Args:
        model: anything with stable-baselines3's ``predict(obs, state, deterministic=...)``.
        env: a ``gymnasium.Env`` (``reset(seed=) -> (obs, info)``, ``step(a) -> (obs, r, term, trunc, info)``).
        episodes: how many.
        deterministic: the policy's mode instead of samples.
        seed: the first episode's reset seed.

    Returns:
        the undiscounted episode returns and lengths.
    """
    returns: list[float] = []
    lengths: list[int] = []
    for i in range(int(episodes)):
        obs, _ = env.reset(seed=seed + i)
        total, length, done, state = 0.0, 0, False, None
        while not done:
            action, state = model.predict(obs, state, deterministic=deterministic)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = bool(terminated or truncated)
        returns.append(total)
        lengths.append(length)
    return EvalResult(float(np.mean(returns)), float(np.std(returns)), returns, lengths)


def evaluate_vec_env(model: Any, venv: Any, episodes: int, *, deterministic: bool = True) -> EvalResult:
    """Run ``episodes`` whole episodes of ``model.predict`` on ``venv`` (SB3's VecEnv API), starting from a reset.

    Args:
        model: anything with stable-baselines3's ``predict(obs, state, episode_start, deterministic)``.
        venv: the vector env (``reset() -> obs``, ``step(a) -> (obs, rewards, dones, infos)``).
        episodes: how many episodes in all.
        deterministic: the policy's mode instead of samples.
    """
    n = int(venv.num_envs)
    targets = np.array([(episodes + i) // n for i in range(n)], int)
    counts = np.zeros(n, int)
    running_return, running_length = np.zeros(n), np.zeros(n, int)
    returns: list[float] = []
    lengths: list[int] = []
    obs = venv.reset()
    state, starts = None, np.ones(n, bool)
    while (counts < targets).any():
        action, state = model.predict(obs, state, episode_start=starts, deterministic=deterministic)
        obs, rewards, dones, _ = venv.step(action)
        running_return += rewards
        running_length += 1
        for i in np.flatnonzero(dones):
            if counts[i] < targets[i]:
                returns.append(float(running_return[i]))
                lengths.append(int(running_length[i]))
                counts[i] += 1
            running_return[i], running_length[i] = 0.0, 0
        starts = np.asarray(dones, bool)
    return EvalResult(float(np.mean(returns)), float(np.std(returns)), returns, lengths)
