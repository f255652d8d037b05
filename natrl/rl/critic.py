"""Value-function regression shared by TRPO, NPG and ACKTR."""

from __future__ import annotations

import torch
from torch import Tensor

from natrl.rl.policies import Critic

__all__ = ["adam", "fit_critic"]


def adam(params: list[torch.nn.Parameter], lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all parameters, CPU and CUDA)."""
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)


def fit_critic(
    critic: Critic,
    optimizer: torch.optim.Optimizer,
    obs: Tensor,
    returns: Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Minimise ½·mean (V(s) − R)² by minibatch passes over the rollout.

    Args:
        critic: the value network.
        optimizer: its optimiser (Adam in the presets).
        obs: (N, obs_dim) observations.
        returns: (N,) regression targets (GAE λ-returns).
        epochs: passes over the data.
        batch_size: minibatch size.
        generator: the torch generator used for shuffling (reproducible).

    Returns:
        The mean squared error over the last epoch (nan when epochs = 0).
    """
    n = returns.shape[0]
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(obs.device)
        total = torch.zeros((), device=obs.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = 0.5 * (critic(obs[idx]) - returns[idx]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.numel()
        last = float(2.0 * total / n)
    return last
