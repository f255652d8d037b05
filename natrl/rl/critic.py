"""Value-function regression shared by TRPO, NPG and ACKTR, and the Adam that it shares with PPO."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.adam import adam as functional_adam

from natrl.rl.policies import Actor

__all__ = [
    "ValueGrads",
    "adam",
    "adam_step",
    "clip_grad_norm",
    "critic_only_parameters",
    "fit_critic",
    "unique_parameters",
    "value_grads",
]

ValueGrads = Callable[[Any, Tensor], Tensor]
"""``grads(inputs, returns) -> loss``: writes ∇ of ½·mean (V(inputs) − returns)² into the critic's ``.grad``;
``inputs`` are stored observations, or a recurrent critic's sequences ``(obs, starts, state)``."""


def unique_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """The parameters of the modules, each once (a trunk shared by actor and critic appears in both)."""
    seen: set[int] = set()
    out = []
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def critic_only_parameters(actor: Actor, critic: nn.Module) -> list[nn.Parameter]:
    """The critic's parameters that the actor does not use.

    The natural-gradient agents regress the critic on these only: a trunk shared by actor and
    critic is then moved by the policy step alone, so the trust region bounds every change of
    the policy (a regression step on a shared trunk would change the policy by an unbounded KL).
    """
    actor_ids = {id(p) for p in actor.parameters_in_use()}
    params = [p for p in critic.parameters() if id(p) not in actor_ids]
    if not params:
        raise ValueError("the critic has no parameters of its own (all are the actor's); give it a value head")
    return params


def value_grads(critic: nn.Module) -> ValueGrads:
    """The generic critic gradient: autograd on ½·mean (V(obs) − returns)², for any critic module."""
    params = list(critic.parameters())

    def grads(x: Tensor | tuple[Tensor, ...], y: Tensor) -> Tensor:
        loss = 0.5 * ((critic(*x) if isinstance(x, tuple) else critic(x)) - y).pow(2).mean()
        for p in params:
            p.grad = None
        loss.backward()
        return loss.detach()

    return grads


def adam(params: list[torch.nn.Parameter], lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all parameters, CPU and CUDA)."""
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)


def adam_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` for natrl's fused Adam through torch's public functional Adam.

    ``Optimizer.step`` wraps the fused kernel in hooks, profiler records and per-group bookkeeping
    that cost more than the kernel for a 64-unit network, and the minibatch loops of the critic and
    of PPO step it thousands of times per run. :func:`torch.optim.adam.adam` (torch's functional
    Adam, the function ``step`` itself calls) is given the optimizer's own state and hyperparameters,
    so parameters, state and checkpoints are those of ``optimizer.step()`` bit for bit (tested).
    Anything else (another optimizer, several groups, amsgrad, maximize, decoupled weight decay, a
    first step that must create the state) takes ``optimizer.step()``.
    """
    groups = optimizer.param_groups
    if type(optimizer) is not torch.optim.Adam or len(groups) != 1:
        optimizer.step()
        return
    g = groups[0]
    if not g.get("fused") or g["amsgrad"] or g["maximize"] or g.get("decoupled_weight_decay", False):
        optimizer.step()
        return
    grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
    for p in g["params"]:
        st = optimizer.state.get(p)
        if p.grad is None or not st:
            optimizer.step()
            return
        grads.append(p.grad)
        exp_avgs.append(st["exp_avg"])
        exp_avg_sqs.append(st["exp_avg_sq"])
        steps.append(st["step"])
    beta1, beta2 = g["betas"]
    with torch.no_grad():
        functional_adam(
            g["params"], grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, amsgrad=False, beta1=beta1,
            beta2=beta2, lr=g["lr"], weight_decay=g["weight_decay"], eps=g["eps"], maximize=False,
        )  # fmt: skip


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (2-norm) for parameters on one device.

    The same arithmetic as torch's (per-tensor 2-norms, the 2-norm of those, coefficient
    max_norm / (norm + 1e-6) clamped at 1, gradients scaled in place), so on the CPU the gradients are the
    same bits (tested), without its per-call grouping of the tensors by device and dtype, which costs more
    than the arithmetic for a 64-unit network in PPO's minibatch loop. Parameters without a gradient are
    skipped; returns the total norm.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2.0) for g in grads]), 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef)
    return total


def fit_critic(
    grads: ValueGrads,
    optimizer: torch.optim.Optimizer,
    obs: Tensor | tuple[Tensor, ...],
    returns: Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Minimise ½·mean (V(s) − R)² by minibatch passes over the rollout.

    Each epoch draws one permutation and walks it in minibatches of ``batch_size``; after each
    minibatch the optimiser steps once.

    Args:
        grads: the critic's gradient function: :func:`value_grads` (autograd, any critic), or the
            hand-written backward of natrl's MLP critic (:func:`natrl.rl.accel.mlp_value_grads`).
        optimizer: the critic's optimiser (Adam in the presets).
        obs: (N, ...) stored observations, or a recurrent critic's inputs ``(obs (S, L, ...), starts (S, L),
            state (S, ...))``, whose minibatches hold whole sequences.
        returns: (N,) regression targets (GAE λ-returns); (S, L) for sequences.
        epochs: passes over the data.
        batch_size: minibatch size in steps (for sequences: batch_size // L sequences, at least one).
        generator: the torch generator used for shuffling (reproducible).

    Returns:
        The mean squared error over the last epoch (nan when epochs = 0).
    """
    n = returns.shape[0]
    per_unit = returns[0].numel()
    size = max(1, batch_size // per_unit)
    sequences = isinstance(obs, tuple)
    inputs = obs if sequences else (obs,)
    total = None
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(returns.device)
        # the minibatches as views of the shuffled tensors, split once per epoch; index_select copies the same
        # rows as t[perm] at a third of its cost on the CPU (2,048 observations of 348: 140 against 480 µs)
        minibatches = zip(*(t.index_select(0, perm).split(size) for t in (returns, *inputs)))
        # the losses are summed in the last epoch only, the one whose mean is returned
        total = torch.zeros((), device=returns.device) if epoch == epochs - 1 else None
        for y, *x in minibatches:
            loss = grads(tuple(x) if sequences else x[0], y)
            adam_step(optimizer)
            if total is not None:
                total += loss.detach() * y.numel()
    return float("nan") if total is None else float(2.0 * total / returns.numel())
