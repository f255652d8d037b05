"""Reinforcement learning on Gymnasium: policies, rollouts, GAE and agents (the action distributions are
:mod:`natrl.distributions`)."""

import os
from typing import Any, BinaryIO

from natrl.rl.a2c import A2C, A2CConfig
from natrl.rl.acktr import ACKTR, ACKTRConfig
from natrl.rl.agent import OnPolicyAgent
from natrl.rl.batch import Batch
from natrl.rl.config import OnPolicyConfig
from natrl.rl.env import EnvSource, NonFiniteError
from natrl.rl.evaluation import EvalResult
from natrl.rl.gae import gae
from natrl.rl.guard import NonFiniteUpdateError
from natrl.rl.persistence import CheckpointError, NonFiniteStateError, checkpoint_name, in_memory, read_checkpoint
from natrl.rl.policies import (
    Actor,
    CombinedExtractor,
    Critic,
    FlattenExtractor,
    NatureCNN,
    PolicyError,
)
from natrl.rl.pomdp import MaskVelocity
from natrl.rl.ppo import PPO, PPOConfig
from natrl.rl.spaces import UnsupportedSpaceError
from natrl.rl.trpo import NPG, TRPO, NPGConfig, TRPOConfig

AGENTS: dict[str, type[OnPolicyAgent]] = {"trpo": TRPO, "npg": NPG, "ppo": PPO, "acktr": ACKTR, "a2c": A2C}
"""The agent classes by algorithm name, as the command line and the checkpoints' ``"algo"`` entry spell it."""


def load_agent(path: str | os.PathLike[str] | BinaryIO, *, device: str = "cpu", **kwargs: Any) -> OnPolicyAgent:
    """Load any natrl agent checkpoint (a file, or a binary file object), whatever its algorithm (``kwargs`` as for
    ``TRPO.load``: env, policy, …)."""
    name, path = checkpoint_name(path), in_memory(path)  # a file object is read once
    state = read_checkpoint(path)
    algo = state["algo"]
    if algo not in AGENTS:
        raise CheckpointError(f"{name} holds an agent of unknown algorithm {algo!r}")
    return AGENTS[algo].load(path, device=device, **kwargs)


__all__ = [
    "A2C",
    "ACKTR",
    "AGENTS",
    "NPG",
    "PPO",
    "TRPO",
    "A2CConfig",
    "ACKTRConfig",
    "Actor",
    "Batch",
    "CheckpointError",
    "CombinedExtractor",
    "Critic",
    "EnvSource",
    "EvalResult",
    "FlattenExtractor",
    "MaskVelocity",
    "NPGConfig",
    "NatureCNN",
    "NonFiniteError",
    "NonFiniteStateError",
    "NonFiniteUpdateError",
    "OnPolicyAgent",
    "OnPolicyConfig",
    "PPOConfig",
    "PolicyError",
    "TRPOConfig",
    "UnsupportedSpaceError",
    "gae",
    "load_agent",
]
