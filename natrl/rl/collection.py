"""The rollout collector an agent trains with: over its training vector env, or over Ray rollout workers."""

from __future__ import annotations

from typing import Any

import torch

from natrl.rl.config import OnPolicyConfig
from natrl.rl.distributed import DistributedCollector
from natrl.rl.env import EnvSource
from natrl.rl.normalization import ObsNormalizer, RewardScaler
from natrl.rl.persistence import CheckpointError
from natrl.rl.policies import Actor, Critic
from natrl.rl.rollout import RolloutCollector

__all__ = ["make_collector"]


def make_collector(
    source: EnvSource,
    actor: Actor,
    critic: Critic,
    config: OnPolicyConfig,
    *,
    seed: int,
    device: torch.device,
    obs_normalizer: ObsNormalizer | None,
    reward_scaler: RewardScaler | None,
    state: dict[str, Any] | None,
) -> RolloutCollector:
    """A collector of ``config.n_steps``-step rollouts: :class:`~natrl.rl.distributed.DistributedCollector` over
    ``config.workers`` Ray workers, else :class:`~natrl.rl.rollout.RolloutCollector` over ``source``'s vector env.

    ``state`` (a checkpoint's collector state) continues the saved episodes where they were saved; None starts
    fresh episodes seeded with ``seed``.

    Raises:
        CheckpointError: ``state`` does not fit the envs (the vector env made here is closed again).
    """
    if config.workers > 0:
        return DistributedCollector(  # type: ignore[return-value]
            source.builder(), actor, critic, workers=config.workers, n_envs=config.n_envs, seed=seed,
            device=device, obs_normalizer=obs_normalizer, reward_scaler=reward_scaler,
            address=config.ray_address, fast=config.fast_paths, state=state,
        )  # fmt: skip
    venv = source.vector_env(config.n_envs)
    try:
        return RolloutCollector(
            venv, device=device, seed=seed, obs_codec=actor.obs_codec, obs_normalizer=obs_normalizer,
            reward_scaler=reward_scaler, obs_norm_update=config.obs_norm_update, state=state,
        )  # fmt: skip
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        if source.owns(venv):
            venv.close()
        raise CheckpointError(
            f"the saved state of the envs does not fit this agent's envs ({type(exc).__name__}: {exc}); "
            "load with env=... to start fresh episodes"
        ) from None
