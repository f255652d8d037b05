"""Generalised advantage estimation (Schulman et al., 2016, eq. 16) as a pure function."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["gae"]


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    episode_end: Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """GAE(γ, λ) advantages and λ-returns for a rollout of T steps in E envs.

    With V(s'ₜ) the value of the true next state of step t (the final observation
    when the episode ended there, so truncated episodes bootstrap from it):

        δₜ = rₜ + γ (1 − terminatedₜ) V(s'ₜ) − V(sₜ)
        Aₜ = δₜ + γ λ (1 − endₜ) Aₜ₊₁,      A_T = 0 past the rollout,

    where endₜ = terminatedₜ or truncatedₜ cuts the recursion between episodes.
    Returns (the critic's regression targets) are Aₜ + V(sₜ).

    Args:
        rewards: (T, E) rewards.
        values: (T, E) V(sₜ).
        next_values: (T, E) V(s'ₜ), the value of the next state of each step.
        terminated: (T, E) bool, the episode reached a terminal state at step t.
        episode_end: (T, E) bool, terminated or truncated at step t.
        gamma: discount γ ∈ [0, 1].
        lam: GAE λ ∈ [0, 1].

    Returns:
        ``(advantages, returns)``, each (T, E).
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    shape = rewards.shape
    for name, other in (
        ("values", values),
        ("next_values", next_values),
        ("terminated", terminated),
        ("episode_end", episode_end),
    ):
        if other.shape != shape:
            raise ValueError(f"gae: {name} has shape {tuple(other.shape)}, expected {tuple(shape)} like rewards")
    not_term = 1.0 - terminated.to(rewards.dtype)
    carry = gamma * lam * (1.0 - episode_end.to(rewards.dtype))
    deltas = rewards + gamma * not_term * next_values - values
    # the backward recursion runs in NumPy: per step it costs about a microsecond on
    # (E,)-sized arrays, where two torch ops cost ten (the rollout lives on the CPU anyway)
    d = deltas.detach().cpu().numpy()
    c = carry.detach().cpu().numpy()
    adv = np.empty_like(d)
    last = np.zeros_like(d[0])
    for t in range(shape[0] - 1, -1, -1):
        last = d[t] + c[t] * last
        adv[t] = last
    advantages = torch.from_numpy(adv).to(rewards.device)
    return advantages, advantages + values
