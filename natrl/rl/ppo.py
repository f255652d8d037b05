"""Proximal Policy Optimisation with the clipped surrogate (Schulman et al., 2017).

The first-order baseline: per update, ``n_epochs`` passes of minibatch Adam on

    L = − mean min(r Â, clip(r, 1 ± ε) Â) + c_v · mean (V − R)² − c_e · H[π],

with r = π_θ(a|s)/π_old(a|s), optional value clipping around the old values,
global gradient-norm clipping, and an early stop of the epoch loop when the
approximate KL exceeds ``target_kl`` (as in stable-baselines3, whose value-loss
scale — plain MSE — natrl shares, so c_v means the same in both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from natrl.rl.agent import Batch, OnPolicyAgent
from natrl.rl.config import OnPolicyConfig, check
from natrl.rl.critic import adam, adam_step, clip_grad_norm
from natrl.rl.fastmlp import MLPSpec, mlp_backward, mlp_forward, mlp_spec
from natrl.rl.policies import Actor, Critic

__all__ = ["PPO", "PPOConfig", "clipped_loss_grads"]

_LOG_2PI = math.log(2.0 * math.pi)


class HeadGrads(NamedTuple):
    """Gradients of the PPO loss w.r.t. the networks' outputs, and the loss's terms."""

    actor_out: Tensor  # (B, out) gradient w.r.t. the actor MLP's output
    critic_out: Tensor  # (B, 1) gradient w.r.t. the critic MLP's output
    log_std: Tensor | None  # gradient w.r.t. a state-independent log-std parameter
    pg_loss: Tensor
    v_loss: Tensor
    entropy: Tensor
    approx_kl: Tensor
    clip_fraction: Tensor


@torch.no_grad()
def clipped_loss_grads(
    out_a: Tensor,
    out_v: Tensor,
    log_std: Tensor | None,
    actions: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    returns: Tensor,
    old_values: Tensor | None,
    *,
    discrete: bool,
    clip_range: float,
    clip_range_vf: float | None,
    ent_coef: float,
    vf_coef: float,
) -> HeadGrads:
    """The PPO loss of one minibatch and its gradient w.r.t. the networks' outputs, in closed form.

    With ℓ = log π(a|s), r = exp(ℓ − ℓ_old), c = clip(r, 1 ± ε) and B samples,

        ∂L_clip/∂ℓ = −r Â / B where r Â ≤ c Â, else 0
        ∂ℓ/∂μ = (a − μ)/σ²,  ∂ℓ/∂log σ = ((a − μ)/σ)² − 1           (diagonal Gaussian)
        ∂ℓ/∂z = onehot(a) − softmax(z),  ∂H/∂z = −p ⊙ (log p + H)    (categorical logits z)
        ∂L_V/∂V = 2 c_v (V' − R)/B, zero where value clipping is active,

    which is what autograd computes for :meth:`PPO._update`'s loss (ties of the min and the
    clamp boundaries included), without building a graph for a dozen elementwise ops per
    minibatch. ``out_a`` is the actor MLP's output: logits, the mean, or [mean, log-std]
    when ``log_std`` is None for a Gaussian (state-dependent std). Runs without autograd
    (inputs that require grad, such as the log-std parameter, are not recorded): every
    returned tensor is plain data.
    """
    n = out_a.shape[0]
    if discrete:
        log_p = torch.log_softmax(out_a, dim=-1)
        p = log_p.exp()
        idx = actions.long().reshape(-1, 1)
        logp = log_p.gather(-1, idx).squeeze(-1)
        ent_rows = -(p * log_p).sum(-1)
    else:
        k = actions.shape[-1]
        if log_std is None:
            mean, ls = out_a[:, :k], out_a[:, k:]
        else:
            mean, ls = out_a, log_std.expand_as(out_a)
        inv_std = torch.exp(-ls)
        z = (actions - mean) * inv_std
        logp = (-0.5 * z.pow(2) - ls - 0.5 * _LOG_2PI).sum(-1)
        ent_rows = (ls + 0.5 * (1.0 + _LOG_2PI)).sum(-1)
    log_ratio = logp - old_log_probs
    ratio = log_ratio.exp()
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1 - clip_range, 1 + clip_range) * advantages
    pg_loss = -torch.min(surr1, surr2).mean()
    g_logp = torch.where(surr1 <= surr2, surr1, 0.0).mul_(-1.0 / n)

    values = out_v.squeeze(-1)
    v_mask = None
    if clip_range_vf is not None:
        assert old_values is not None, "value clipping needs the old values"
        diff = values - old_values
        v_mask = diff.abs() <= clip_range_vf
        values = old_values + diff.clamp(-clip_range_vf, clip_range_vf)
    v_err = values - returns
    v_loss = v_err.pow(2).mean()
    g_v = v_err * (2.0 * vf_coef / n)
    if v_mask is not None:
        g_v = g_v * v_mask

    g_log_std = None
    if discrete:
        g_out = (g_logp[:, None] * -p).scatter_add_(-1, idx, g_logp[:, None])
        if ent_coef:
            g_out += (ent_coef / n) * p * (log_p + ent_rows[:, None])
    else:
        g_mean = (g_logp[:, None] * z) * inv_std
        g_ls = g_logp[:, None] * (z.pow(2) - 1.0)
        if ent_coef:
            g_ls -= ent_coef / n
        if log_std is None:
            g_out = torch.cat([g_mean, g_ls], dim=-1)
        else:
            g_out, g_log_std = g_mean, g_ls.sum(0)
    approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's unbiased estimator of KL(old ‖ new)
    clip_fraction = ((ratio - 1).abs() > clip_range).float().mean()
    return HeadGrads(g_out, g_v[:, None], g_log_std, pg_loss, v_loss, ent_rows.mean(), approx_kl, clip_fraction)


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
                    # closed-form loss gradients (clipped_loss_grads) pulled back through the
                    # two MLPs by hand (natrl.rl.fastmlp): no autograd graph per minibatch
                    out_a, acts_a = mlp_forward(fast[0], obs)
                    out_v, acts_v = mlp_forward(fast[1], obs)
                    h = clipped_loss_grads(
                        out_a,
                        out_v,
                        fast[2][0] if fast[2] else None,
                        batch.actions[idx],
                        batch.log_probs[idx],
                        adv,
                        batch.returns[idx],
                        batch.values[idx] if cfg.clip_range_vf is not None else None,
                        discrete=self.actor.discrete,
                        clip_range=cfg.clip_range,
                        clip_range_vf=cfg.clip_range_vf,
                        ent_coef=cfg.ent_coef,
                        vf_coef=cfg.vf_coef,
                    )
                    pg_loss, v_loss, entropy, approx_kl, clip_frac = (
                        h.pg_loss,
                        h.v_loss,
                        h.entropy,
                        h.approx_kl,
                        h.clip_fraction,
                    )
                    if cfg.target_kl is not None and float(approx_kl) > 1.5 * cfg.target_kl:
                        stopped_early = True
                        break
                    mlp_backward(fast[0], acts_a, h.actor_out)
                    mlp_backward(fast[1], acts_v, h.critic_out)
                    if fast[2]:
                        fast[2][0].grad = h.log_std
                else:
                    dist = self.actor.distribution(obs)
                    values = self.critic(obs)
                    log_ratio = dist.log_prob(batch.actions[idx]) - batch.log_probs[idx]
                    ratio = log_ratio.exp()
                    surr1 = ratio * adv
                    surr2 = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range) * adv
                    pg_loss = -torch.min(surr1, surr2).mean()
                    if cfg.clip_range_vf is not None:
                        old_v = batch.values[idx]
                        values = old_v + (values - old_v).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
                    v_loss = (values - batch.returns[idx]).pow(2).mean()
                    entropy = dist.entropy().mean()
                    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                    with torch.no_grad():
                        # Schulman's unbiased, non-negative estimator of KL(old ‖ new)
                        approx_kl = ((ratio - 1) - log_ratio).mean()
                        clip_frac = ((ratio - 1).abs() > cfg.clip_range).float().mean()
                    if cfg.target_kl is not None and float(approx_kl) > 1.5 * cfg.target_kl:
                        stopped_early = True
                        break
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                clip_grad_norm(self.params, cfg.max_grad_norm)
                adam_step(self.optimizer)
                approx_kls.append(approx_kl)
                clip_fracs.append(clip_frac)
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
        """(actor MLP, critic MLP, [log-std] or []) when both nets are plain tanh/ReLU MLPs
        under natrl's own Actor and Critic (whose heads :func:`clipped_loss_grads` knows)."""
        if type(self.actor) is not Actor or type(self.critic) is not Critic:
            return None
        spec_a, spec_v = mlp_spec(self.actor.net), mlp_spec(self.critic.net)
        if spec_a is None or spec_v is None:
            return None
        net_ids = {id(p) for p in self.actor.net.parameters()}
        rest = [p for p in self.actor.parameters() if id(p) not in net_ids]
        own_log_std = not self.actor.discrete and not self.actor.state_dependent_std
        expected = [self.actor.log_std] if own_log_std else []
        if len(rest) != len(expected) or any(a is not b for a, b in zip(rest, expected)):
            return None
        if not all(p.requires_grad for p in rest):
            return None
        return spec_a, spec_v, rest

    def _algo_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
