"""Value-function regression shared by TRPO, NPG and ACKTR."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from natrl.rl.policies import Critic

__all__ = ["adam", "fit_critic", "mlp_layers", "mlp_value_grads"]


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

    Each epoch draws one permutation and walks it in minibatches of ``batch_size``; after each
    minibatch the optimiser steps once. For the MLP critics natrl builds (Linear layers with
    tanh or ReLU between them) the gradient is computed by a hand-written backward pass
    (:func:`mlp_value_grads`): the same arithmetic as autograd, without its graph, about 1.8x
    faster per minibatch for 64-unit networks on a CPU. Other critics use autograd.

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
    layers = mlp_layers(critic)
    n = returns.shape[0]
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(obs.device)
        obs_p, ret_p = obs[perm], returns[perm]
        total = torch.zeros((), device=obs.device)
        for start in range(0, n, batch_size):
            x, y = obs_p[start : start + batch_size], ret_p[start : start + batch_size]
            if layers is not None:
                loss = mlp_value_grads(layers, x, y)
            else:
                loss = 0.5 * (critic(x) - y).pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            total += loss.detach() * y.shape[0]
        last = float(2.0 * total / n)
    return last


_DERIVATIVE_FROM_OUTPUT = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def mlp_layers(critic: nn.Module) -> tuple[list[nn.Linear], str] | None:
    """(Linear layers, activation) when ``critic`` is natrl's MLP critic with tanh or ReLU, else None."""
    net = getattr(critic, "net", None)
    if type(critic) is not Critic or not isinstance(net, nn.Sequential):
        return None
    mods = list(net)
    linears, acts = mods[0::2], mods[1::2]
    if len(mods) % 2 == 0 or not all(type(m) is nn.Linear for m in linears):
        return None
    kinds = {type(a) for a in acts}
    if len(kinds) > 1 or (kinds and next(iter(kinds)) not in _DERIVATIVE_FROM_OUTPUT):
        return None
    if not all(p.requires_grad for p in critic.parameters()):
        return None
    return linears, _DERIVATIVE_FROM_OUTPUT[next(iter(kinds))] if kinds else "none"


def mlp_value_grads(layers: tuple[list[nn.Linear], str], x: Tensor, y: Tensor) -> Tensor:
    """Write ∇ of ½·mean (V(x) − y)² into the layers' ``.grad``; return the loss.

    The backward pass of an MLP by hand: with aₖ the activations (a₀ = x) and δ the gradient
    w.r.t. a layer's pre-activation, ∇Wₖ = δᵀ aₖ, ∇bₖ = Σ δ, and δ ← (δ Wₖ) ⊙ σ'(·) where
    σ' is read off the stored output (tanh: 1 − a², ReLU: a > 0).
    """
    linears, act = layers
    with torch.no_grad():
        acts = [x]
        h = x
        for lin in linears[:-1]:
            z = torch.addmm(lin.bias, h, lin.weight.t())
            h = torch.tanh(z) if act == "tanh" else torch.relu(z)
            acts.append(h)
        last = linears[-1]
        v = torch.addmm(last.bias, h, last.weight.t()).squeeze(-1)
        err = v - y
        loss = 0.5 * (err * err).mean()
        delta = (err * (1.0 / y.shape[0])).unsqueeze(-1)
        for k in range(len(linears) - 1, -1, -1):
            lin = linears[k]
            if lin.weight.grad is None:
                lin.weight.grad = torch.empty_like(lin.weight)
            if lin.bias.grad is None:
                lin.bias.grad = torch.empty_like(lin.bias)
            torch.mm(delta.t(), acts[k], out=lin.weight.grad)
            torch.sum(delta, 0, out=lin.bias.grad)
            if k > 0:
                delta = torch.mm(delta, lin.weight)
                a = acts[k]
                delta = delta - delta * a * a if act == "tanh" else delta * (a > 0)
    return loss
