"""The K-FAC natural gradient of a policy with its own sampled Fisher (Wu et al., 2017, §3.1),
shared by ACKTR and ``TRPO(curvature="kfac")``.

K-FAC factors come from a Fisher pass: actions a' ~ π(·|s) sampled from the policy itself and a
backward of −mean log π(a'|s) (the true Fisher, not the empirical one); the input factors from
the same forward. A state-independent log-std is preconditioned by its exact Fisher block (2 I).

A recurrent policy's LSTM/GRU weights get the blocks of :mod:`natrl.optim.kfac_recurrent` (independence
across time): the Fisher pass runs the core with the written-out cells over the batch's sequences, resets
at episode starts included, and the network on the S·L steps as rows. Every block then counts the steps as
the examples (the surrogate is a mean over steps), so each approximates its block of the Fisher that TRPO's
exact products and the KL use: the mean over steps of the per-step Fisher, dependence through time included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from natrl.optim.kfac import KFAC
from natrl.params import flatten_grads
from natrl.rl.batch import Batch
from natrl.rl.policies import Actor

__all__ = ["KFACDirection", "kfac_policy_direction", "make_actor_kfac"]


def make_actor_kfac(actor: Actor, *, damping: float, factor_decay: float, inverse_interval: int) -> KFAC:
    """A K-FAC preconditioner over the actor's features extractor and network with the policy's own
    (sampled) Fisher.

    Linear and Conv2d layers and a recurrent core's LSTM/GRU weights get Kronecker-factored blocks; other
    parameters (a user's custom layers) keep their plain gradients (named in KFAC's warning), and a
    state-independent log-std its exact Fisher block (see :func:`kfac_policy_direction`).
    Statistics are collected only inside :func:`kfac_policy_direction`; other forward and
    backward passes through the actor (line searches, Fisher-vector products, rollouts)
    leave the factors alone.
    """
    modules = {"features": actor.features, "net": actor.net}
    if actor.core is not None:
        modules["core"] = actor.core
    kfac = KFAC(
        nn.ModuleDict(modules),
        lr=1.0,
        damping=damping,
        factor_decay=factor_decay,
        inverse_interval=inverse_interval,
        kl_clip=None,
        fisher="sampled",
        preconditioner_only=True,
    )
    kfac.suspend()
    return kfac


@contextlib.contextmanager
def _collecting(kfac: KFAC) -> Iterator[None]:
    kfac.resume()
    try:
        yield
    finally:
        kfac.suspend()


def _fisher_pass_outputs(actor: Actor, kfac: KFAC, batch: Batch) -> tuple[Tensor, ...]:
    """The actor's outputs, one row per step, from a forward that collects K-FAC statistics."""
    if actor.core is None or batch.seq is None:
        return actor(batch.obs)
    obs, starts, state = batch.seq.actor_inputs(batch.obs)
    S, L = starts.shape
    # natrl's state (S, k, layers, H), k = 2 (h, c) for an LSTM, as torch's (layers, S, H) tensors
    parts = tuple(state[:, i].transpose(0, 1).contiguous() for i in range(state.shape[1]))
    hx = parts if len(parts) == 2 else parts[0]
    y, _ = kfac.recurrent_forward(actor.core.rnn, actor.sequence_features(obs), hx, keep=~starts, batch_size=S * L)
    return actor.head(actor.net(y.flatten(0, 1)))


@dataclass
class KFACDirection:
    """ĝ ≈ F⁻¹ g for the actor's parameters (flat), with g and the surrogate at θ_old."""

    grad: Tensor  # g, flat over list(actor.parameters())
    natural: Tensor  # ĝ
    loss0: float
    entropy: float
    fallbacks: int
    failed_layers: tuple[str, ...]


def kfac_policy_direction(
    actor: Actor,
    kfac: KFAC,
    batch: Batch,
    *,
    ent_coef: float,
    generator: torch.Generator,
    importance_ratio: bool,
) -> KFACDirection | None:
    """K-FAC natural gradient of the policy loss at the current parameters.

    Args:
        actor: the policy.
        kfac: its preconditioner (:func:`make_actor_kfac`); its factors are updated here.
        batch: the rollout (advantages already normalised if wanted).
        ent_coef: entropy bonus c_e.
        generator: for the actions sampled in the Fisher pass.
        importance_ratio: use the surrogate −mean r·Â with r = π/π_old (TRPO) instead of
            −mean log π·Â (ACKTR); both have the same gradient at θ_old.

    Returns:
        The direction, or None when the gradient or its preconditioned form is not finite
        (the caller then skips the step).
    """
    params = list(actor.parameters())
    for p in params:
        p.grad = None
    actor.train()
    with _collecting(kfac):
        dist = actor.dist_cls(*_fisher_pass_outputs(actor, kfac, batch))
        with torch.no_grad():
            sampled = dist.detach().sample(generator)
        kfac.fisher_backward(-dist.log_prob(sampled).mean())
        log_prob = dist.log_prob(batch.actions)
        if importance_ratio:
            pg = -(torch.exp(log_prob - batch.log_probs) * batch.advantages).mean()
        else:
            pg = -(log_prob * batch.advantages).mean()
        entropy = dist.entropy().mean()
        (pg - ent_coef * entropy).backward()
        grad = flatten_grads(params)
        if not bool(torch.isfinite(grad).all()):
            for p in params:
                p.grad = None
            kfac.discard_statistics()
            return None
        kfac.step()  # preconditioner_only: rewrites the MLP's .grad, refreshes factors/inverses
    stats = kfac.stats
    assert stats is not None
    fallbacks, failed = stats.fallbacks, list(stats.failed_layers)
    if actor.free_log_std and actor.log_std.grad is not None:
        actor.log_std.grad.div_(2.0)  # exact Fisher of a state-independent log-std: 2 I
    natural = flatten_grads(params)
    for p in params:
        p.grad = None
    if not bool(torch.isfinite(natural).all()):
        return None
    return KFACDirection(grad, natural, float(pg.detach()), float(entropy.detach()), fallbacks, tuple(failed))
