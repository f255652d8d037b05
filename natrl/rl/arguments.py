"""An agent's constructor arguments as users give them: stable-baselines3's and natrl's argument forms,
devices, step counts, ready vector envs, and what a checkpoint stores to rebuild the env."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from natrl.rl.env import EnvLike
from natrl.rl.policies import BUILTIN_POLICIES
from natrl.rl.sb3_vec_env import FromSB3VecEnv, SB3VecEnv, is_sb3_vec_env
from natrl.rl.trusted import UntrustedReferenceError, registered_env_id, spec_env_factory

__all__ = [
    "SPEC_PREFIX",
    "check_autoreset",
    "jsonable",
    "positive_int",
    "rebuild_env",
    "rebuildable_env",
    "resolve_device",
    "resolve_env_and_policy",
    "training_env",
]


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


def training_env(env: Any, n_envs: Any) -> Any:
    """What the agent trains on, from what SB3 users pass too: an SB3 ``VecEnv`` becomes a Gymnasium vector env
    (:class:`~natrl.rl.sb3_vec_env.FromSB3VecEnv`), natrl's SB3 view gives back its vector env, and one
    ``gymnasium.Env`` instance without a registered spec is trained on as the only env (as SB3 wraps it in a
    ``DummyVecEnv``); registered instances, ids and factories are built by natrl as before."""
    if isinstance(env, SB3VecEnv):
        return env.venv
    if is_sb3_vec_env(env):
        return FromSB3VecEnv(env)
    if isinstance(env, gym.Env) and env.spec is None:
        if n_envs not in (None, 1):
            raise ValueError(
                f"one env instance without a registered spec is one env, but n_envs={n_envs}; pass a factory "
                "(lambda: MyEnv()) for several copies, or n_envs=1"
            )
        return SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP)
    return env


def positive_int(name: str, value: Any) -> int:
    """An integer count from an int, an integral float (``1e5``) or a NumPy integer; else one clear error."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and float(value).is_integer() and value >= 1:
        return int(value)
    raise ValueError(f"{name} must be a positive whole number, got {value!r}")


def check_autoreset(venv: VectorEnv) -> None:
    mode = venv.metadata.get("autoreset_mode")
    if mode is not None and mode != AutoresetMode.SAME_STEP and str(mode) != str(AutoresetMode.SAME_STEP):
        raise ValueError(
            f"the vector env autoresets in {mode} mode; natrl needs SAME_STEP (final observations in the step's "
            "info): gym.make_vec(id, n, vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP})"
        )


def jsonable(value: dict[str, Any]) -> dict[str, Any] | None:
    """``value`` when JSON can hold it (a checkpoint stores it), else None."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def rebuildable_env(env: Any) -> str | None:
    """What a checkpoint stores to rebuild the env: an id, or an Env's spec as JSON (kwargs and the
    wrappers gymnasium records, e.g. ``gym.make("CartPole-v1", max_episode_steps=50)``); None for factories."""
    if isinstance(env, str):
        return env
    spec = getattr(env, "spec", None)
    if isinstance(env, gym.Env) and spec is not None:
        try:
            return SPEC_PREFIX + spec.to_json()
        except (ValueError, TypeError):  # kwargs gymnasium cannot write as JSON
            return None
    return None


def rebuild_env(stored: Any, *, hint: str) -> EnvLike | None:
    """The env a checkpoint's ``env`` field describes, from data only (:mod:`natrl.rl.trusted`): a registered
    id, or a factory for a spec whose id is registered with the same entry point; None when none is stored.

    Raises:
        UntrustedReferenceError: the field names code (an unregistered ``module:`` id, a foreign entry point or
            wrapper); ``hint`` says how to pass the env yourself.
    """
    if stored is None:
        return None
    if not isinstance(stored, str):
        raise UntrustedReferenceError(f"the checkpoint's env field is not a string ({type(stored).__name__}); {hint}")
    if stored.startswith(SPEC_PREFIX):
        return spec_env_factory(stored[len(SPEC_PREFIX) :], field="the checkpoint's env spec", hint=hint)
    return registered_env_id(stored, field="the checkpoint's env", hint=hint)


SPEC_PREFIX = "spec:"


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not one natrl trains on; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was requested but this machine has no MPS device; use device='cpu'")
    return dev
