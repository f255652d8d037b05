"""Proximal Policy Optimisation with the clipped surrogate (Schulman et al., 2017).

The first-order baseline: per update, ``n_epochs`` passes of minibatch Adam on

    L = − mean min(r Â, clip(r, 1 ± ε) Â) + c_v · mean (V − R)² − c_e · H[π],

with r = π_θ(a|s)/π_old(a|s), optional value clipping around the old values,
global gradient-norm clipping, and an early stop of the epoch loop when the
approximate KL exceeds ``target_kl`` (as in stable-baselines3, whose value-loss
scale — plain MSE — natrl shares, so c_v means the same in both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from natrl.rl.agent import Batch, OnPolicyAgent
from natrl.rl.config import OnPolicyConfig, check
from natrl.rl.critic import adam, adam_step, clip_grad_norm
from natrl.rl.fastmlp import MLPSpec, mlp_backward, mlp_forward, mlp_spec
from natrl.rl.policies import Critic

__all__ = ["PPO", "PPOConfig"]


@dataclass(frozen=True, kw_only=True)
class PPOConfig(OnPolicyConfig):
    """PPO hyperparameters (defaults follow stable-baselines3's PPO).

    Attributes:
        learning_rate: Adam learning rate for actor and critic.
        anneal_lr: decay the learning rate linearly to 0 over the run (``learn``'s ``run_start`` to its end).
        n_epochs: passes over the rollout per update.
        batch_size: minibatch size.
        clip_range: ε of the clipped surrogate.
        clip_range_vf: clip the value prediction to ±this around the old value (None: off).
        ent_coef: entropy bonus coefficient c_e.
        vf_coef: value loss coefficient c_v.
        max_grad_norm: global gradient-norm clip.
        target_kl: stop the epoch loop once the approximate KL exceeds this (None: never).
    """

    learning_rate: float = 3e-4
    anneal_lr: bool = False
    n_epochs: int = 10
    batch_size: int = 64
    clip_range: float = 0.2
    clip_range_vf: float | None = None
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None

    def validate(self) -> None:
        super().validate()
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be > 0")
        check(isinstance(self.n_epochs, int) and self.n_epochs >= 1, "n_epochs", self.n_epochs, "an integer >= 1")
        check(
            isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1"
        )
        check(self.clip_range > 0, "clip_range", self.clip_range, "must be > 0")
        check(self.clip_range_vf is None or self.clip_range_vf > 0, "clip_range_vf", self.clip_range_vf, "None or > 0")
        check(self.ent_coef >= 0, "ent_coef", self.ent_coef, "must be >= 0")
        check(self.vf_coef >= 0, "vf_coef", self.vf_coef, "must be >= 0")
        check(self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm, "must be > 0")
        check(self.target_kl is None or self.target_kl > 0, "target_kl", self.target_kl, "None or > 0")


class PPO(OnPolicyAgent):
    """PPO-clip with separate actor and critic MLPs and one Adam optimiser."""

    algo = "ppo"
    config_cls = PPOConfig
    config: PPOConfig

    def _setup(self) -> None:
        self.params = [*self.actor.parameters(), *self.critic.parameters()]
        self.optimizer = adam(self.params, self.config.learning_rate, eps=1e-5)
        self._schedule_span: tuple[int, int] | None = None

    def _update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        if cfg.anneal_lr and self._schedule_span is not None:
            start, end = self._schedule_span
            # progress counted after this rollout, as stable-baselines3 does
            frac = max(0.0, 1.0 - (self.num_timesteps + len(batch) - start) / max(end - start, 1))
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.learning_rate * frac
        n = len(batch)
        fast = self._fast_path()
        clip_fracs, approx_kls, pg_losses, v_losses, entropies = [], [], [], [], []
        stopped_early = False
        for _ in range(cfg.n_epochs):
            perm = torch.randperm(n, generator=self.generator, device=self.generator.device).to(batch.obs.device)
            for start in range(0, n, cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                obs = batch.obs[idx]
                adv = batch.advantages[idx]
                if cfg.normalize_advantage and idx.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                if fast is not None:
                    out_a, acts_a = mlp_forward(fast[0], obs)
                    out_v, acts_v = mlp_forward(fast[1], obs)
                    out_a.requires_grad_()
                    out_v.requires_grad_()
                    dist = self.actor.dist_cls(*self.actor.head(out_a))
                    values = out_v.squeeze(-1)
                else:
                    dist = self.actor.distribution(obs)
                    values = self.critic(obs)
                log_ratio = dist.log_prob(batch.actions[idx]) - batch.log_probs[idx]
                ratio = log_ratio.exp()
                pg_loss = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range) * adv).mean()
                if cfg.clip_range_vf is not None:
                    old_v = batch.values[idx]
                    values = old_v + (values - old_v).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
                v_loss = (values - batch.returns[idx]).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                with torch.no_grad():
                    # Schulman's unbiased, non-negative estimator of KL(old ‖ new)
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                if cfg.target_kl is not None and float(approx_kl) > 1.5 * cfg.target_kl:
                    stopped_early = True
                    break
                if fast is not None:
                    # autograd over the loss's head only; the two MLPs by hand (natrl.rl.fastmlp)
                    leaves = [out_a, out_v, *fast[2]]
                    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
                    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
                    mlp_backward(fast[0], acts_a, grads[0])
                    mlp_backward(fast[1], acts_v, grads[1])
                    for p, g in zip(fast[2], grads[2:]):
                        p.grad = g
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                clip_grad_norm(self.params, cfg.max_grad_norm)
                adam_step(self.optimizer)
                approx_kls.append(approx_kl)
                clip_fracs.append(((ratio - 1).abs() > cfg.clip_range).float().mean().detach())
                pg_losses.append(pg_loss.detach())
                v_losses.append(v_loss.detach())
                entropies.append(entropy.detach())
            if stopped_early:
                break

        def mean(xs: list[torch.Tensor]) -> float:
            return float(torch.stack(xs).mean()) if xs else float("nan")

        stats = {
            "kl": mean(approx_kls),
            "clip_fraction": mean(clip_fracs),
            "policy_loss": mean(pg_losses),
            "value_loss": mean(v_losses),
            "entropy": mean(entropies),
            "stopped_early": float(stopped_early),
            "learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        if not self.actor.discrete and not self.actor.state_dependent_std:
            stats["std"] = float(self.actor.log_std.detach().exp().mean())
        return stats

    def _fast_path(self) -> tuple[MLPSpec, MLPSpec, list[nn.Parameter]] | None:
        """(actor MLP, critic MLP, other actor parameters) when both nets are plain tanh/ReLU MLPs."""
        spec_a, spec_v = mlp_spec(self.actor.net), mlp_spec(self.critic.net)
        if spec_a is None or spec_v is None or type(self.critic) is not Critic:
            return None
        net_ids = {id(p) for p in self.actor.net.parameters()}
        rest = [p for p in self.actor.parameters() if id(p) not in net_ids]
        if not all(p.requires_grad for p in rest):
            return None
        return spec_a, spec_v, rest

    def _algo_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
