"""Trust Region Policy Optimisation (Schulman et al., 2015) and natural policy gradient.

One TRPO update reads as the paper's pseudocode:

    rollout → GAE → g = ∇L(θ_old) → x = −(F + λI)⁻¹ g by CG with the exact Fisher
    → full step β x, β = sqrt(2δ / xᵀ(F+λI)x) → KL-constrained backtracking
    (restores θ_old bit for bit when every trial fails) → critic regression.

NPG (Kakade, 2001; Rajeswaran et al., 2017, "Towards generalization and
simplicity in continuous control", Alg. 1) takes the same normalised natural
step β x with a fixed δ and no line search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from natrl.linalg import ConstantDamping, LevenbergMarquardt
from natrl.linesearch import backtracking
from natrl.optim.kfac import KFAC
from natrl.params import write_back
from natrl.rl.agent import OnPolicyAgent
from natrl.rl.batch import Batch
from natrl.rl.config import CriticConfig, Schedule, check, schedule_value
from natrl.rl.critic import adam, critic_only_parameters, fit_critic
from natrl.rl.kfac_policy import kfac_policy_direction, make_actor_kfac
from natrl.rl.natural import NaturalDirection, PolicyObjective, natural_direction

__all__ = ["NPG", "TRPO", "NPGConfig", "TRPOConfig"]


@dataclass(frozen=True, kw_only=True)
class _NaturalConfig(CriticConfig):
    """Hyperparameters of the natural direction (shared by TRPO and NPG).

    Attributes:
        cg_iters: conjugate-gradient iterations per update.
        cg_tol: CG stops when ‖residual‖ ≤ cg_tol·‖g‖.
        damping: Tikhonov damping λ added to the Fisher (initial value when adaptive).
        adaptive_damping: adapt λ by the Levenberg–Marquardt rule from the ratio of the
            actual to the predicted surrogate improvement.
        fisher_subsample: fraction of the batch used for Fisher-vector products (0, 1].
        curvature: "exact" (CG on the exact Fisher) or "kfac" (the K-FAC natural gradient of the
            policy's own Fisher, no CG; xᵀFx from the K-FAC blocks; a recurrent core's LSTM/GRU
            weights get blocks with independence across time). With "kfac", ``damping`` is
            the Tikhonov damping of the Kronecker blocks.
        kfac_factor_decay: moving-average decay of the K-FAC factors (curvature="kfac").
    """

    critic_batch_size: int = 128
    cg_iters: int = 15
    cg_tol: float = 1e-10
    damping: float = 0.1
    adaptive_damping: bool = False
    fisher_subsample: float = 1.0
    curvature: str = "exact"
    kfac_factor_decay: float = 0.95

    def validate(self) -> None:
        super().validate()
        check(self.curvature in ("exact", "kfac"), "curvature", self.curvature, "'exact' or 'kfac'")
        check(0.0 <= self.kfac_factor_decay < 1.0, "kfac_factor_decay", self.kfac_factor_decay, "must lie in [0, 1)")
        check(
            self.curvature == "exact" or self.damping > 0, "damping", self.damping, "must be > 0 with curvature='kfac'"
        )
        check(isinstance(self.cg_iters, int) and self.cg_iters >= 1, "cg_iters", self.cg_iters, "an integer >= 1")
        check(self.cg_tol >= 0, "cg_tol", self.cg_tol, "must be >= 0")
        check(self.damping >= 0, "damping", self.damping, "must be >= 0")
        check(0.0 < self.fisher_subsample <= 1.0, "fisher_subsample", self.fisher_subsample, "must lie in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class TRPOConfig(_NaturalConfig):
    """TRPO hyperparameters (defaults follow sb3-contrib's TRPO).

    Attributes:
        max_kl: trust-region radius δ: the mean KL(π_old ‖ π_new) an accepted step may reach.
        line_search_shrink: backtracking factor in (0, 1).
        line_search_max_backtracks: shrinking steps tried before the update is rejected.
        line_search_accept_ratio: accept a trial only if the surrogate improves by this fraction
            of the linear prediction (0: any improvement, as in the TRPO paper).
    """

    max_kl: float | str | Schedule = 0.01
    line_search_shrink: float = 0.8
    line_search_max_backtracks: int = 10
    line_search_accept_ratio: float = 0.0

    def validate(self) -> None:
        super().validate()
        check(schedule_value(self.max_kl, 1.0) > 0, "max_kl", self.max_kl, "must be > 0")
        check(0.0 < self.line_search_shrink < 1.0, "line_search_shrink", self.line_search_shrink, "must lie in (0, 1)")
        check(
            isinstance(self.line_search_max_backtracks, int) and self.line_search_max_backtracks >= 0,
            "line_search_max_backtracks",
            self.line_search_max_backtracks,
            "an integer >= 0",
        )
        check(
            0.0 <= self.line_search_accept_ratio < 1.0,
            "line_search_accept_ratio",
            self.line_search_accept_ratio,
            "must lie in [0, 1)",
        )


@dataclass(frozen=True, kw_only=True)
class NPGConfig(_NaturalConfig):
    """NPG hyperparameters.

    Attributes:
        step_size: normalised step δ: every update moves by β x with a quadratic-model KL of δ.
    """

    step_size: float | str | Schedule = 0.01

    def validate(self) -> None:
        super().validate()
        check(schedule_value(self.step_size, 1.0) > 0, "step_size", self.step_size, "must be > 0")


class _NaturalAgent(OnPolicyAgent):
    config: _NaturalConfig
    fields_read_each_update = OnPolicyAgent.fields_read_each_update | {
        "critic_lr", "critic_epochs", "critic_batch_size", "cg_iters"
    }  # fmt: skip

    def _setup(self) -> None:
        cfg = self.config
        self.critic_optimizer = adam(critic_only_parameters(self.actor, self.critic), self.scheduled("critic_lr"))
        self.damping = (
            LevenbergMarquardt(max(cfg.damping, 1e-8)) if cfg.adaptive_damping else ConstantDamping(cfg.damping)
        )
        self.kfac: KFAC | None = None
        if cfg.curvature == "kfac":
            self.kfac = make_actor_kfac(
                self.actor, damping=cfg.damping, factor_decay=cfg.kfac_factor_decay, inverse_interval=1
            )

    def _prepare(self, batch: Batch) -> None:
        if self.config.normalize_advantage and len(batch) > 1:
            adv = batch.advantages
            batch.advantages = (adv - adv.mean()) / (adv.std() + 1e-8)

    def _policy_step(self, objective: PolicyObjective) -> dict[str, float]:
        raise NotImplementedError

    def _update(self, batch: Batch) -> dict[str, float]:
        self._prepare(batch)
        objective = PolicyObjective(self.actor, batch)
        stats = self._policy_step(objective)
        for group in self.critic_optimizer.param_groups:
            group["lr"] = self.scheduled("critic_lr")
        stats["value_loss"] = fit_critic(
            self._critic_grads,
            self.critic_optimizer,
            batch.obs if batch.seq is None else batch.critic_inputs(),
            batch.per_unit(batch.returns),
            epochs=self.config.critic_epochs,
            batch_size=self.config.critic_batch_size,
            generator=self.generator,
        )
        with torch.no_grad():
            stats["entropy"] = float(self.actor.distribution(*batch.actor_inputs()).entropy().mean())
        stats["damping"] = self.damping.value
        if self.actor.free_log_std:
            stats["std"] = float(self.actor.log_std.detach().exp().mean())
        return stats

    def _algo_state(self) -> dict[str, Any]:
        state = {"critic_optimizer": self.critic_optimizer.state_dict(), "damping": self.damping.state_dict()}
        if self.kfac is not None:
            state["kfac"] = self.kfac.state_dict()
        return state

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        if "critic_optimizer" in state:
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if "damping" in state:
            self.damping.load_state_dict(state["damping"])
        if self.kfac is not None and "kfac" in state:
            self.kfac.load_state_dict(state["kfac"])

    def _direction(self, objective: PolicyObjective) -> NaturalDirection | None:
        cfg = self.config
        if self.kfac is not None:
            self.kfac.damping = self.damping.value
            kd = kfac_policy_direction(
                self.actor, self.kfac, objective.batch, ent_coef=0.0, generator=self.generator, importance_ratio=True
            )
            if kd is None:
                return None
            quad = float(kd.natural @ kd.grad)  # xᵀ F̂ x with F̂ x = −g for x = −ĝ
            if not math.isfinite(quad) or quad <= 0.0:
                return None
            return NaturalDirection(torch.tensor(kd.loss0), kd.grad, -kd.natural, quad, None)
        return natural_direction(
            objective,
            damping=self.damping.value,
            cg_iters=cfg.cg_iters,
            cg_tol=cfg.cg_tol,
            subsample=cfg.fisher_subsample,
            generator=self.generator,
        )


class TRPO(_NaturalAgent):
    """Trust Region Policy Optimisation with the exact Fisher (see module docstring).

    Example:
        >>> agent = TRPO("CartPole-v1", seed=0, n_envs=2, n_steps=512)
        >>> agent.learn(100_000).evaluate(episodes=10).mean
    """

    algo = "trpo"
    config_cls = TRPOConfig
    config: TRPOConfig
    fields_read_each_update = _NaturalAgent.fields_read_each_update | {
        "max_kl", "line_search_shrink", "line_search_max_backtracks"
    }  # fmt: skip

    def _policy_step(self, objective: PolicyObjective) -> dict[str, float]:
        cfg = self.config
        nd = self._direction(objective)
        if nd is None:
            return {"kl": 0.0, "line_search_failed": 1.0, "line_search_steps": 0.0, "surrogate_gain": 0.0}
        theta0 = objective.theta()
        max_kl = self.scheduled("max_kl")
        full_step = nd.step_for_kl(max_kl)
        expected = float(-(nd.grad @ full_step))
        if not math.isfinite(expected) or expected <= 0.0:
            # not a descent direction (CG broke down): no step, parameters untouched
            return {"kl": 0.0, "line_search_failed": 1.0, "line_search_steps": 0.0, "surrogate_gain": 0.0}
        ls = backtracking(
            objective.loss_and_kl,
            theta0,
            full_step,
            expected_improvement=expected,
            max_kl=max_kl,
            shrink=cfg.line_search_shrink,
            max_backtracks=cfg.line_search_max_backtracks,
            accept_ratio=cfg.line_search_accept_ratio,
            loss0=float(nd.loss0),
        )
        if ls.accepted:
            write_back(objective.params, ls.params)
        self.damping.update(
            ls.improvement if ls.accepted else -1.0, expected * ls.step_fraction if ls.accepted else expected
        )
        return {
            "kl": ls.kl if ls.accepted else 0.0,
            "surrogate_gain": ls.improvement if ls.accepted else 0.0,
            "expected_gain": expected,
            "step_fraction": ls.step_fraction if ls.accepted else 0.0,
            "line_search_steps": float(ls.n_trials),
            "line_search_failed": 0.0 if ls.accepted else 1.0,
            **nd.cg_stats(),
            "grad_norm": float(nd.grad.norm()),
        }


class NPG(_NaturalAgent):
    """Natural policy gradient with a normalised step (no line search).

    A step that would produce a non-finite loss or KL is not applied (the
    parameters stay exactly as they were).
    """

    algo = "npg"
    config_cls = NPGConfig
    config: NPGConfig

    def _policy_step(self, objective: PolicyObjective) -> dict[str, float]:
        nd = self._direction(objective)
        if nd is None:
            return {"kl": 0.0, "step_rejected": 1.0, "surrogate_gain": 0.0}
        theta0 = objective.theta()
        step = nd.step_for_kl(self.scheduled("step_size"))
        theta = theta0 + step
        loss, kl = objective.loss_and_kl(theta)
        ok = math.isfinite(float(loss)) and math.isfinite(float(kl))
        if ok:
            write_back(objective.params, theta)
        expected = float(-(nd.grad @ step))
        gain = float(nd.loss0 - loss)
        self.damping.update(gain if ok else -1.0, expected)
        return {
            "kl": float(kl) if ok else 0.0,
            "surrogate_gain": gain if ok else 0.0,
            "expected_gain": expected,
            "step_rejected": 0.0 if ok else 1.0,
            **nd.cg_stats(),
            "grad_norm": float(nd.grad.norm()),
        }
