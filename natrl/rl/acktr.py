"""ACKTR: actor-critic with a K-FAC natural gradient and a KL trust region (Wu et al., 2017).

One update:

    rollout → GAE → forward the actor on the batch
    → a Fisher pass: actions a' ~ π(·|s) sampled from the policy itself, backward of
      −mean log π(a'|s), which feeds K-FAC its output-gradient factors G (the true Fisher,
      not the empirical one); the input factors A come from the same forward
    → the policy gradient g of −mean log π(a|s)·Â − c_e·H, preconditioned layer by layer:
      ĝ = (G ⊗ A + λI)⁻¹ g for the MLP, ĝ = g / 2 for a state-independent log-std
      (its exact Fisher block: 2 per dimension, uncoupled from the mean's)
    → momentum u = μ u_prev + ĝ, then the KL clip ν = min(1, √(κ / (η² uᵀFu))) with the
      exact Fisher (uᵀFu from one jvp, :func:`natrl.curvature.fisher_quadratic`), step −η ν u
      (Ba et al., 2017, §5; Wu et al., 2017, §3.1 clip ĝ alone, which lets momentum carry the
      step past the trust region)
    → damping λ constant or Levenberg–Marquardt from actual vs predicted surrogate change
    → critic regression (Adam, or K-FAC with Gauss-Newton factors from sampled targets).

:func:`kfac_policy_direction` is shared with ``TRPO(curvature="kfac")``, which takes the
K-FAC direction, scales it to the trust region with the exact Fisher and line-searches it.
A recurrent policy's LSTM/GRU weights get blocks with independence across time
(:mod:`natrl.optim.kfac_recurrent`), its KL clip the exact Fisher through time (a Fisher-vector
product), and its critic Adam.

Eigendecomposition failures and non-finite statistics never crash and never produce NaN
parameters: :func:`natrl.optim.kfac.eigh_robust` retries with jitter and in float64, a layer
whose factors cannot be decomposed keeps its plain gradient (with a warning), and a step whose
direction is not finite is skipped with the parameters left exactly as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from natrl.curvature import fisher_quadratic, fisher_vp
from natrl.linalg import ConstantDamping, LevenbergMarquardt
from natrl.optim.kfac import KFAC
from natrl.params import flatten, write_back
from natrl.rl.agent import OnPolicyAgent
from natrl.rl.batch import Batch
from natrl.rl.config import CriticConfig, Schedule, check, schedule_value
from natrl.rl.critic import adam, fit_critic
from natrl.rl.kfac_policy import KFACDirection, kfac_policy_direction, make_actor_kfac
from natrl.rl.natural import PolicyObjective

__all__ = ["ACKTR", "ACKTRConfig"]


@dataclass(frozen=True, kw_only=True)
class ACKTRConfig(CriticConfig):
    """ACKTR hyperparameters.

    Attributes:
        learning_rate: step size η of the actor's natural-gradient step.
        momentum: momentum of the actor's step (0 disables it).
        kl_clip: κ: the step −η ν u along the momentum direction u is scaled so that η² ν² uᵀF u ≤ κ.
        damping: Tikhonov λ of the K-FAC blocks (initial value when adaptive).
        adaptive_damping: Levenberg–Marquardt adaptation of λ from the ratio of the actual to
            the predicted change of the surrogate.
        factor_decay: ε of the K-FAC factor moving averages.
        inverse_interval: recompute the eigendecompositions every this many updates.
        ent_coef: entropy bonus c_e.
        critic_optimizer: "adam" (minibatch epochs) or "kfac" (Gauss-Newton K-FAC steps).
        critic_kfac_lr: step size of the critic's K-FAC steps.
    """

    n_envs: int = 4
    n_steps: int = 64
    learning_rate: float | str | Schedule = 0.25
    momentum: float = 0.9
    kl_clip: float = 0.001
    damping: float = 0.01
    adaptive_damping: bool = False
    factor_decay: float = 0.95
    inverse_interval: int = 1
    ent_coef: float = 0.0
    critic_optimizer: str = "adam"
    critic_kfac_lr: float = 0.25
    critic_epochs: int = 5
    critic_batch_size: int = 64

    def validate(self) -> None:
        super().validate()
        check(schedule_value(self.learning_rate, 1.0) > 0, "learning_rate", self.learning_rate, "must be > 0")
        check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "must lie in [0, 1)")
        check(self.kl_clip > 0, "kl_clip", self.kl_clip, "must be > 0")
        check(self.damping > 0, "damping", self.damping, "must be > 0")
        check(0.0 <= self.factor_decay < 1.0, "factor_decay", self.factor_decay, "must lie in [0, 1)")
        check(
            isinstance(self.inverse_interval, int) and self.inverse_interval >= 1,
            "inverse_interval",
            self.inverse_interval,
            "an integer >= 1",
        )
        check(self.ent_coef >= 0, "ent_coef", self.ent_coef, "must be >= 0")
        check(self.critic_optimizer in ("adam", "kfac"), "critic_optimizer", self.critic_optimizer, "'adam' or 'kfac'")
        check(self.critic_kfac_lr > 0, "critic_kfac_lr", self.critic_kfac_lr, "must be > 0")


class ACKTR(OnPolicyAgent):
    """Actor-critic using Kronecker-factored trust region (see module docstring)."""

    algo = "acktr"
    config_cls = ACKTRConfig
    config: ACKTRConfig
    fields_read_each_update = OnPolicyAgent.fields_read_each_update | {
        "critic_epochs", "critic_batch_size", "learning_rate", "ent_coef"
    }  # fmt: skip

    def _setup(self) -> None:
        cfg = self.config
        if cfg.critic_optimizer == "kfac" and self.critic.recurrent:
            raise ValueError(
                "critic_optimizer='kfac' takes a critic without memory; use critic_optimizer='adam' with a "
                "recurrent policy"
            )
        self.kfac = make_actor_kfac(
            self.actor, damping=cfg.damping, factor_decay=cfg.factor_decay, inverse_interval=cfg.inverse_interval
        )
        self._momentum: Tensor | None = None  # momentum buffer of the actor's natural step
        self.damping = LevenbergMarquardt(cfg.damping) if cfg.adaptive_damping else ConstantDamping(cfg.damping)
        if cfg.critic_optimizer == "kfac":
            self.critic_optimizer: torch.optim.Optimizer = KFAC(
                self.critic,
                lr=cfg.critic_kfac_lr,
                momentum=cfg.momentum,
                damping=cfg.damping,
                factor_decay=cfg.factor_decay,
                kl_clip=cfg.kl_clip,
                fisher="sampled",
            )
        else:
            self.critic_optimizer = adam(list(self.critic.parameters()), self.scheduled("critic_lr"))

    def _update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        if cfg.normalize_advantage and len(batch) > 1:
            batch.advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
        self.kfac.damping = self.damping.value
        params = list(self.actor.parameters())
        theta0 = flatten(params).detach().clone()
        objective = PolicyObjective(self.actor, batch)  # π_old, and the actor's outputs at any θ, one row per step
        nd = kfac_policy_direction(
            self.actor, self.kfac, batch, ent_coef=cfg.ent_coef, generator=self.generator, importance_ratio=False
        )
        stats: dict[str, float] = {"damping": self.damping.value}
        if nd is None:
            stats.update(step_skipped=1.0, kl=0.0)
        else:
            # momentum on the natural gradient, then the KL clip on the whole step:
            # ν = min(1, √(κ / (η² uᵀ F u))) with u the momentum direction and F the exact
            # Fisher (one jvp), so the step's quadratic KL ½ η² ν² uᵀFu stays ≤ κ / 2
            buf = nd.natural if self._momentum is None else cfg.momentum * self._momentum + nd.natural
            if batch.seq is None:
                quad = float(
                    fisher_quadratic(objective.model_fn, theta0, objective.inputs, objective.output_fisher(), buf)
                )
            else:  # torch's fused recurrent layers have no forward-mode jvp: uᵀ(Fu) by the double backward
                fvp = fisher_vp(objective.model_fn, theta0, objective.inputs, objective.output_fisher())
                quad = float(buf @ fvp(buf))
            lr = self.scheduled("learning_rate")
            # a schedule at 0 (its last update) takes no step: nothing to clip
            nu = 1.0 if not (quad > 0 and lr > 0) else min(1.0, math.sqrt(cfg.kl_clip / (lr**2 * quad)))
            theta1 = theta0 - lr * nu * buf
            if not (math.isfinite(quad) and bool(torch.isfinite(theta1).all())):
                stats.update(step_skipped=1.0, kl=0.0)  # parameters untouched
            else:
                self._momentum = nu * buf if cfg.momentum > 0 else None
                write_back(params, theta1)
                stats.update(self._step_stats(objective, theta0, theta1, nd, nu, quad))
        if cfg.critic_optimizer == "kfac":
            stats["value_loss"] = self._fit_critic_kfac(batch)
        else:
            for group in self.critic_optimizer.param_groups:
                group["lr"] = self.scheduled("critic_lr")
            stats["value_loss"] = fit_critic(
                self._critic_grads,
                self.critic_optimizer,
                batch.obs if batch.seq is None else batch.critic_inputs(),
                batch.per_unit(batch.returns),
                epochs=cfg.critic_epochs,
                batch_size=cfg.critic_batch_size,
                generator=self.generator,
            )
        if self.actor.free_log_std:
            stats["std"] = float(self.actor.log_std.detach().exp().mean())
        return stats

    def _step_stats(
        self, objective: PolicyObjective, theta0: Tensor, theta1: Tensor, nd: KFACDirection, nu: float, quad: float
    ) -> dict[str, float]:
        """KL of the step, actual vs predicted surrogate change, and the damping update."""
        batch = objective.batch
        with torch.no_grad():
            new = objective.dist(theta1)
            kl = float(objective.old_dist.kl(new).mean())
            ratio = torch.exp(new.log_prob(batch.actions) - batch.log_probs)
            gain = float(-(ratio * batch.advantages).mean() - (-batch.advantages.mean()))
        step = theta1 - theta0
        lin = float(nd.grad @ step)
        predicted = -(lin + 0.5 * (nu * self.scheduled("learning_rate")) ** 2 * quad)
        self.damping.update(-gain, predicted)
        return {
            "kl": kl,
            "kl_scale": nu,
            "surrogate_gain": -gain,
            "predicted_gain": predicted,
            "entropy": nd.entropy,
            "eigen_fallbacks": float(nd.fallbacks),
            "failed_layers": float(len(nd.failed_layers)),
        }

    def _fit_critic_kfac(self, batch: Batch) -> float:
        cfg = self.config
        opt = self.critic_optimizer
        assert isinstance(opt, KFAC)
        n = len(batch)
        last = float("nan")  # the mean squared error over the last epoch, as fit_critic reports it
        for _ in range(cfg.critic_epochs):
            perm = torch.randperm(n, generator=self.generator, device=self.generator.device).to(batch.obs.device)
            total = torch.zeros((), device=batch.obs.device)
            for start in range(0, n, cfg.critic_batch_size):
                idx = perm[start : start + cfg.critic_batch_size]
                values = self.critic(batch.obs[idx])
                opt.sampled_fisher_backward(values, "gaussian", generator=self.generator)
                loss = 0.5 * (values - batch.returns[idx]).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * idx.numel()
            last = float(2.0 * total / n)
        return last

    def _algo_state(self) -> dict[str, Any]:
        return {
            "kfac": self.kfac.state_dict(),
            "momentum": self._momentum,
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "damping": self.damping.state_dict(),
        }

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        for name, obj in (
            ("kfac", self.kfac),
            ("critic_optimizer", self.critic_optimizer),
            ("damping", self.damping),
        ):
            if name in state:
                obj.load_state_dict(state[name])
        if state.get("momentum") is not None:
            self._momentum = state["momentum"].to(self.device)
