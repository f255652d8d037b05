"""The natural policy direction shared by TRPO and NPG.

For the importance-sampled surrogate loss (to minimise)

    L(θ) = − mean_i [ π_θ(aᵢ|sᵢ) / π_old(aᵢ|sᵢ) · Âᵢ ],

the natural direction at θ_old solves (F + λI) x = −∇L(θ_old) by conjugate
gradient, with F the exact Fisher of the policy (jvp → analytic output Fisher →
vjp, :func:`natrl.curvature.fisher_vp`). Scaling x to a quadratic-model KL of δ
gives the step β x with β = sqrt(2δ / xᵀ(F + λI)x) (Schulman et al., 2015,
"Trust Region Policy Optimization", Appendix C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from natrl.curvature import fisher_vp
from natrl.distributions import Distribution
from natrl.linalg import CGResult, conjugate_gradient
from natrl.params import flatten, functional
from natrl.rl.batch import Batch
from natrl.rl.policies import Actor

__all__ = ["NaturalDirection", "PolicyObjective", "SequenceFisher", "natural_direction"]


class SequenceFisher:
    """The output Fisher of a recurrent policy's outputs (S, L, k): the per-step Fisher of the action
    distribution at each of the L steps of a sequence, divided by L.

    :func:`natrl.curvature.fisher_vp` averages Jᵢᵀ Mᵢ Jᵢ over its N = S samples, the sequences (the
    recurrent state carries every step's dependence on the earlier ones into Jᵢ); the 1/L makes that the
    mean over the S·L steps, the Fisher whose quadratic form is the second-order term of the mean KL.
    """

    def __init__(self, dist_cls: type[Distribution], length: int) -> None:
        self.dist_cls = dist_cls
        self.length = length

    def fisher_vp_outputs(self, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        S, L = params[0].shape[:2]
        flat = self.dist_cls.fisher_vp_outputs(
            tuple(p.flatten(0, 1) for p in params), tuple(t.flatten(0, 1) for t in tangents)
        )
        return tuple(f.unflatten(0, (S, L)) / self.length for f in flat)


class PolicyObjective:
    """Surrogate loss and mean KL(π_old ‖ π_θ) of the actor as functions of its flat parameters.

    The actor's parameters are ``list(actor.parameters())`` — declared by the module,
    never filtered by name — so a state-independent log-std is always included. A recurrent
    actor is evaluated on the batch's sequences from their recorded states (:mod:`natrl.rl.batch`).
    """

    def __init__(self, actor: Actor, batch: Batch) -> None:
        self.actor = actor
        self.batch = batch
        self.params = list(actor.parameters())
        self.fn = functional(actor)
        self.inputs = batch.actor_inputs()
        self.obs = batch.obs
        self.actions = batch.actions
        self.old_log_probs = batch.log_probs
        self.advantages = batch.advantages
        with torch.no_grad():
            # clone: a state-independent log-std comes out as an expanded *view* of the
            # parameter, which write_back would otherwise change under π_old's feet
            self.old_dist: Distribution = actor.dist_cls(*(p.clone() for p in self._rows(actor(*self.inputs))))

    def _rows(self, outputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The actor's outputs one row per step (a recurrent actor's (S, L, k) flattened)."""
        return outputs if self.batch.seq is None else tuple(o.flatten(0, 1) for o in outputs)

    def model_fn(self, theta: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The actor's outputs at θ, for :func:`natrl.curvature.fisher_vp` (per unit: row or sequence)."""
        return self.fn(theta, *inputs)

    def output_fisher(self) -> type[Distribution] | SequenceFisher:
        """The output Fisher matching :meth:`model_fn`'s outputs."""
        if self.batch.seq is None:
            return self.actor.dist_cls
        return SequenceFisher(self.actor.dist_cls, self.batch.seq.length)

    def theta(self) -> Tensor:
        return flatten(self.params).detach()

    def dist(self, theta: Tensor) -> Distribution:
        out = self._rows(self.fn(theta, *self.inputs))
        return self.actor.dist_cls(*out)

    def loss(self, dist: Distribution) -> Tensor:
        ratio = torch.exp(dist.log_prob(self.actions) - self.old_log_probs)
        return -(ratio * self.advantages).mean()

    @torch.no_grad()
    def loss_and_kl(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        dist = self.dist(theta)
        return self.loss(dist), self.old_dist.kl(dist).mean()

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        theta = theta.detach().requires_grad_(True)
        loss = self.loss(self.dist(theta))
        (grad,) = torch.autograd.grad(loss, theta)
        return loss.detach(), grad


@dataclass
class NaturalDirection:
    """x ≈ −(F + λI)⁻¹ g and what it took to get it."""

    loss0: Tensor  # surrogate loss at θ_old (a scalar tensor)
    grad: Tensor  # g = ∇L(θ_old)
    direction: Tensor  # x
    quad: float  # xᵀ(F + λI)x
    cg: CGResult | None  # None when the direction came from K-FAC

    def cg_stats(self) -> dict[str, float]:
        if self.cg is None:
            return {}
        return {"cg_iterations": float(self.cg.iterations), "cg_residual": self.cg.residual_norm}

    def step_for_kl(self, delta: float) -> Tensor:
        """β x with β = sqrt(2δ / xᵀ(F+λI)x): the step whose quadratic-model KL is δ."""
        return math.sqrt(2.0 * delta / self.quad) * self.direction


def natural_direction(
    objective: PolicyObjective,
    *,
    damping: float,
    cg_iters: int,
    cg_tol: float,
    subsample: float,
    generator: torch.Generator | None,
) -> NaturalDirection | None:
    """Solve (F + λI) x = −g by CG with the exact Fisher; None when g is zero or non-finite."""
    theta0 = objective.theta()
    loss0, grad = objective.loss_and_grad(theta0)
    if not bool(torch.isfinite(grad).all()) or not bool(grad.any()):
        return None
    n = objective.batch.units  # rows, or whole sequences for a recurrent actor
    sub = None if subsample >= 1.0 else max(1, int(subsample * n))
    fvp = fisher_vp(
        objective.model_fn,
        theta0,
        objective.inputs,
        objective.output_fisher(),
        damping=damping,
        subsample=sub,
        generator=generator,
    )
    cg = conjugate_gradient(fvp, -grad, max_iter=cg_iters, tol=cg_tol)
    quad = float(cg.x @ fvp(cg.x))
    if not math.isfinite(quad) or quad <= 0.0:
        return None
    return NaturalDirection(loss0, grad, cg.x, quad, cg)
