"""An agent's arguments as users give them: stable-baselines3's and natrl's argument forms, devices, step
counts (the env argument is read by :class:`natrl.rl.env.EnvSource`)."""

from __future__ import annotations

import importlib.util
import json
import logging
import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from natrl.rl.config import OnPolicyConfig, build_config
from natrl.rl.env import EnvLike, training_env
from natrl.rl.policies import BUILTIN_POLICIES
from natrl.rl.sb3_names import action_dims, sb3_names_in, translate_sb3_names

__all__ = [
    "check_seed",
    "jsonable",
    "positive_int",
    "resolve_config",
    "resolve_device",
    "resolve_env_and_policy",
    "translate_config",
]

_log = logging.getLogger("natrl")


def resolve_env_and_policy(name: str, first: Any, env: Any, policy: Any) -> tuple[EnvLike, Any]:
    """natrl's ``Agent(env, policy=...)`` and stable-baselines3's ``Agent(policy, env)`` forms."""
    if env is not None:
        if first is not None and policy is not None:
            raise TypeError(f"{name}: the policy was given twice (positionally and as policy=)")
        return env, (first if first is not None else policy) or "MlpPolicy"
    if first is None:
        raise TypeError(f"{name} needs an environment: {name}(env) or {name}('MlpPolicy', env)")
    if isinstance(first, str) and first in BUILTIN_POLICIES:
        raise TypeError(f"{name}({first!r}) needs an environment too: {name}({first!r}, env)")
    return first, policy or "MlpPolicy"


MAX_COUNT = 10**15
"""The largest count :func:`positive_int` takes (the command line's bound on step counts too): beyond it a count is
a typo (``1e99``), and floats no longer hold every integer near it."""


def seed_global_generators(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's, as stable-baselines3's ``set_random_seed`` does
    (natrl's own samples use the agent's generators; the global ones serve the network's initialisation and users'
    code: wrappers, callbacks)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator is what users' code draws from
    torch.manual_seed(seed)


def positive_int(name: str, value: Any) -> int:
    """An integer count from an int, an integral float (``1e5``) or a NumPy integer, at most :data:`MAX_COUNT`;
    else one clear error."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and float(value).is_integer() and 1 <= value <= MAX_COUNT:
        return int(value)
    bound = "at most 1e15, " if ok and float(value).is_integer() and value > MAX_COUNT else ""
    raise ValueError(f"{name} must be a positive whole number, {bound}got {value!r}")


def jsonable(value: dict[str, Any]) -> dict[str, Any] | None:
    """``value`` when JSON can hold it (a checkpoint stores it), else None."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device natrl trains on from ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not one natrl trains on; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was requested but this machine has no MPS device; use device='cpu'")
    return dev


def resolve_config(
    agent_cls: Any, env: Any, config: OnPolicyConfig | None, hyperparameters: dict[str, Any]
) -> tuple[Any, OnPolicyConfig, dict[str, Any]]:
    """An agent's config from a ready one and/or keyword hyperparameters, and the env it trains on.

    Args:
        agent_cls: the agent class (its ``algo`` and ``config_cls``).
        env: the env argument (an SB3 VecEnv or a spec-less Env instance is converted, see
            :func:`~natrl.rl.env.training_env`).
        config: a ready config of ``agent_cls.config_cls``, or None.
        hyperparameters: the agent's keyword hyperparameters: natrl's names, and stable-baselines3's, which
            :func:`translate_config` translates once the action space is known.

    Returns:
        ``(env, config, sb3_given)``: a ready vector env's ``num_envs`` is the config's ``n_envs``.
    """
    name = agent_cls.__name__
    if config is not None and not isinstance(config, agent_cls.config_cls):
        raise TypeError(f"{name} needs a {agent_cls.config_cls.__name__}, got {type(config).__name__}")
    env = training_env(env, hyperparameters.get("n_envs", config.n_envs if config is not None else None))
    sb3_given = sb3_names_in(agent_cls.algo, hyperparameters)
    hyperparameters = {k: v for k, v in hyperparameters.items() if k not in sb3_given}
    if config is None:
        config = build_config(agent_cls.config_cls, hyperparameters)
    elif hyperparameters:
        config = build_config(agent_cls.config_cls, {**config.to_dict(), **hyperparameters})
    if isinstance(env, VectorEnv):  # a ready vector env: natrl trains on it as given
        if config.workers > 0:
            raise ValueError(
                "workers > 0 build their own envs: pass an env id, a gymnasium.Env or a factory, not a vector env"
            )
        if config.n_envs != env.num_envs:
            config = build_config(agent_cls.config_cls, {**config.to_dict(), "n_envs": env.num_envs})
    if config.workers > 0 and importlib.util.find_spec("ray") is None:
        raise ValueError(f"workers={config.workers} needs Ray, which is not installed: pip install 'natrl[ray]'")
    return env, config, sb3_given


def translate_config(
    agent_cls: Any,
    config: OnPolicyConfig,
    sb3_given: dict[str, Any],
    natrl_given: set[str],
    action_space: gym.Space,
    verbose: int,
) -> tuple[OnPolicyConfig, list[str]]:
    """``config`` with stable-baselines3's hyperparameters translated to natrl's (:mod:`natrl.rl.sb3_names`),
    and one note per translation (logged, and printed with ``verbose >= 1``)."""
    if not sb3_given:
        return config, []
    translated, notes = translate_sb3_names(agent_cls.algo, sb3_given, action_dims(action_space), natrl_given)
    for note in notes:
        _log.info("%s: %s", agent_cls.__name__, note)
        if verbose >= 1:
            print(f"{agent_cls.__name__}: SB3 name {note}")
    return build_config(agent_cls.config_cls, {**config.to_dict(), **translated}), notes


def check_seed(seed: Any) -> int:
    """An agent's seed: an integer in [0, 2**63), or None for 0."""
    if seed is not None and (
        not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**63
    ):
        raise TypeError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")
    return 0 if seed is None else int(seed)
