"""Proximal Policy Optimisation with the clipped surrogate (Schulman et al., 2017).

The first-order baseline: per update, ``n_epochs`` passes of minibatch Adam on

    L = − mean min(r Â, clip(r, 1 ± ε) Â) + c_v · mean (V − R)² − c_e · H[π],

with r = π_θ(a|s)/π_old(a|s), optional value clipping around the old values,
global gradient-norm clipping, and an early stop of the epoch loop when the
approximate KL exceeds ``target_kl`` (as in stable-baselines3, whose value-loss
scale — plain MSE — natrl shares, so c_v means the same in both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from natrl.rl.accel import PPOCoefs, PPOGrads, PPOMinibatch, PPOTerms
from natrl.rl.agent import OnPolicyAgent
from natrl.rl.batch import Batch
from natrl.rl.config import OnPolicyConfig, Schedule, check, schedule_value
from natrl.rl.critic import adam, adam_step, clip_grad_norm, unique_parameters
from natrl.rl.policies.modules import distribution_and_value

__all__ = ["PPO", "PPOConfig"]


@dataclass(frozen=True, kw_only=True)
class PPOConfig(OnPolicyConfig):
    """PPO hyperparameters (defaults follow stable-baselines3's PPO).

    Attributes:
        learning_rate: Adam learning rate for actor and critic.
        anneal_lr: decay the learning rate linearly to 0 over the run (stable-baselines3's progress remaining:
            ``learn``'s ``total_timesteps``, plus the steps before it when ``reset_num_timesteps=False``).
        n_epochs: passes over the rollout per update.
        batch_size: minibatch size.
        clip_range: ε of the clipped surrogate.
        clip_range_vf: clip the value prediction to ±this around the old value (None: off).
        ent_coef: entropy bonus coefficient c_e.
        vf_coef: value loss coefficient c_v.
        max_grad_norm: global gradient-norm clip.
        target_kl: stop the epoch loop once the approximate KL exceeds this (None: never).
    """

    # PPO's critic trains in the joint loss; checkpoints of natrl 0.1 listed (and ignored) these
    retired_fields: ClassVar[tuple[str, ...]] = ("critic_lr", "critic_epochs", "critic_batch_size")

    learning_rate: float | str | Schedule = 3e-4
    anneal_lr: bool = False
    n_epochs: int = 10
    batch_size: int = 64
    clip_range: float | str | Schedule = 0.2
    clip_range_vf: float | None = None
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None

    def minibatch_steps(self) -> int:
        return self.batch_size

    def validate(self) -> None:
        super().validate()
        check(schedule_value(self.learning_rate, 1.0) > 0, "learning_rate", self.learning_rate, "must be > 0")
        check(isinstance(self.n_epochs, int) and self.n_epochs >= 1, "n_epochs", self.n_epochs, "an integer >= 1")
        check(
            isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1"
        )
        check(schedule_value(self.clip_range, 1.0) > 0, "clip_range", self.clip_range, "must be > 0")
        check(self.clip_range_vf is None or self.clip_range_vf > 0, "clip_range_vf", self.clip_range_vf, "None or > 0")
        check(self.ent_coef >= 0, "ent_coef", self.ent_coef, "must be >= 0")
        check(self.vf_coef > 0, "vf_coef", self.vf_coef, "must be > 0 (with 0 the critic would never train)")
        check(self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm, "must be > 0")
        check(self.target_kl is None or self.target_kl > 0, "target_kl", self.target_kl, "None or > 0")


class PPO(OnPolicyAgent):
    """PPO-clip with an actor, a critic (shared parameters counted once) and one Adam optimiser."""

    algo = "ppo"
    config_cls = PPOConfig
    config: PPOConfig
    fields_read_each_update = OnPolicyAgent.fields_read_each_update | {
        "learning_rate", "n_epochs", "batch_size", "clip_range", "clip_range_vf", "ent_coef", "vf_coef",
        "max_grad_norm", "target_kl",
    }  # fmt: skip

    def _setup(self) -> None:
        self.params = unique_parameters(self.actor, self.critic)
        self.optimizer = adam(self.params, self.scheduled("learning_rate"), eps=1e-5)
        # the minibatch gradient: autograd on the loss below, or its closed form for natrl's MLPs
        self._minibatch_grads: PPOGrads = self.fast.ppo_grads or self._autograd_grads

    def _autograd_grads(self, mb: PPOMinibatch, coefs: PPOCoefs) -> tuple[PPOTerms, Callable[[], None]]:
        """PPO's loss on one minibatch; its backward writes the gradient of every parameter."""
        if mb.seq is None:
            dist, values = distribution_and_value(self.actor, self.critic, mb.obs)
        else:
            dist = self.actor.distribution(*mb.seq.actor_inputs(mb.obs))
            values = self.critic(*mb.seq.critic_inputs(mb.obs)).flatten()
        log_ratio = dist.log_prob(mb.actions) - mb.old_log_probs
        ratio = log_ratio.exp()
        surr1 = ratio * mb.advantages
        surr2 = ratio.clamp(1 - coefs.clip_range, 1 + coefs.clip_range) * mb.advantages
        pg_loss = -torch.min(surr1, surr2).mean()
        if coefs.clip_range_vf is not None:
            assert mb.old_values is not None
            values = mb.old_values + (values - mb.old_values).clamp(-coefs.clip_range_vf, coefs.clip_range_vf)
        v_loss = (values - mb.returns).pow(2).mean()
        entropy = dist.entropy().mean()
        loss = pg_loss + coefs.vf_coef * v_loss - coefs.ent_coef * entropy
        with torch.no_grad():
            # Schulman's unbiased, non-negative estimator of KL(old ‖ new)
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clip_frac = ((ratio - 1).abs() > coefs.clip_range).float().mean()

        def backward() -> None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()

        terms = PPOTerms(pg_loss.detach(), v_loss.detach(), entropy.detach(), approx_kl, clip_frac)
        return terms, backward

    def _update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        lr = self.scheduled("learning_rate")
        if cfg.anneal_lr:
            lr *= self.progress_remaining
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        coefs = PPOCoefs(self.scheduled("clip_range"), cfg.clip_range_vf, cfg.ent_coef, cfg.vf_coef)
        # minibatches of rows, or of whole sequences (batch_size steps' worth) for a recurrent policy
        n = batch.units
        size = max(1, cfg.batch_size // batch.unit_length)
        terms: list[PPOTerms] = []
        stopped_early = False
        for _ in range(cfg.n_epochs):
            perm = torch.randperm(n, generator=self.generator, device=self.generator.device).to(batch.advantages.device)
            for start in range(0, n, size):
                units = perm[start : start + size]
                idx = units if batch.seq is None else batch.seq.rows(units)
                adv = batch.advantages[idx]
                if cfg.normalize_advantage and idx.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                mb = PPOMinibatch(
                    batch.obs[idx],
                    batch.actions[idx],
                    batch.log_probs[idx],
                    adv,
                    batch.returns[idx],
                    batch.values[idx] if cfg.clip_range_vf is not None else None,
                    None if batch.seq is None else batch.seq.select(units),
                )
                t, backward = self._minibatch_grads(mb, coefs)
                if cfg.target_kl is not None and float(t.approx_kl) > 1.5 * cfg.target_kl:
                    stopped_early = True
                    break
                backward()
                clip_grad_norm(self.params, cfg.max_grad_norm)
                adam_step(self.optimizer)
                terms.append(t)
            if stopped_early:
                break

        def mean(i: int) -> float:
            return float(torch.stack([t[i] for t in terms]).mean()) if terms else float("nan")

        stats = {
            "kl": mean(3),
            "clip_fraction": mean(4),
            "policy_loss": mean(0),
            "value_loss": mean(1),
            "entropy": mean(2),
            "stopped_early": float(stopped_early),
            "learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        if self.actor.free_log_std:
            stats["std"] = float(self.actor.log_std.detach().exp().mean())
        return stats

    def _algo_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
