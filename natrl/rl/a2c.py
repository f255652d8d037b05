"""Synchronous advantage actor-critic, A2C (Mnih et al., 2016, the synchronous variant of A3C).

The first-order baseline the ACKTR paper compares with (Wu et al., 2017, §5). One update per rollout:

    rollout of n_envs × n_steps transitions → GAE(λ) advantages Â and λ-returns R
    → L = − mean Â · log π(a|s) + c_v · mean (V(s) − R)² − c_e · mean H[π(·|s)]
    → one gradient step on L over actor and critic together: the global gradient norm clipped to
      ``max_grad_norm``, then RMSprop (or Adam with ``use_rms_prop=False``).

Defaults, names and meanings are stable-baselines3's A2C: λ = 1 (n-step returns), no advantage
normalisation, plain MSE for the value loss (so c_v means the same in both) and torch's RMSprop with
α = 0.99, ε = ``rms_prop_eps`` added to √v outside the square root, no momentum, one optimiser for all
parameters. With ``use_rms_prop=False`` the optimiser is Adam with ε = 1e-5, as SB3's policies use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from natrl.rl.agent import OnPolicyAgent
from natrl.rl.batch import Batch
from natrl.rl.config import OnPolicyConfig, Schedule, check, schedule_value
from natrl.rl.critic import adam, adam_step, clip_grad_norm, unique_parameters
from natrl.rl.policies.modules import distribution_and_value

__all__ = ["A2C", "ADAM_EPS", "RMSPROP_ALPHA", "A2CConfig"]

A = TypeVar("A", bound="A2C")

RMSPROP_ALPHA = 0.99
"""The smoothing constant of RMSprop's squared-gradient average (stable-baselines3's A2C fixes it too)."""

ADAM_EPS = 1e-5
"""Adam's ε with ``use_rms_prop=False`` (stable-baselines3's policies' default)."""


@dataclass(frozen=True, kw_only=True)
class A2CConfig(OnPolicyConfig):
    """A2C hyperparameters (defaults and names follow stable-baselines3's A2C).

    Attributes:
        learning_rate: step size of RMSprop (or Adam) for actor and critic.
        ent_coef: entropy bonus coefficient c_e.
        vf_coef: value loss coefficient c_v.
        max_grad_norm: global gradient-norm clip.
        rms_prop_eps: RMSprop's ε, added to the root of the squared-gradient average.
        use_rms_prop: RMSprop (True, the A2C paper's optimiser) or Adam (False).
    """

    n_steps: int = 5
    gae_lambda: float = 1.0
    normalize_advantage: bool = False
    learning_rate: float | str | Schedule = 7e-4
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    rms_prop_eps: float = 1e-5
    use_rms_prop: bool = True

    def validate(self) -> None:
        super().validate()
        check(schedule_value(self.learning_rate, 1.0) > 0, "learning_rate", self.learning_rate, "must be > 0")
        check(self.ent_coef >= 0, "ent_coef", self.ent_coef, "must be >= 0")
        check(self.vf_coef > 0, "vf_coef", self.vf_coef, "must be > 0 (with 0 the critic would never train)")
        check(self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm, "must be > 0")
        check(self.rms_prop_eps > 0, "rms_prop_eps", self.rms_prop_eps, "must be > 0")


class A2C(OnPolicyAgent):
    """A2C with an actor, a critic (shared parameters counted once) and one optimiser (see module docstring)."""

    algo = "a2c"
    config_cls = A2CConfig
    config: A2CConfig
    fields_read_each_update = OnPolicyAgent.fields_read_each_update | {
        "learning_rate", "ent_coef", "vf_coef", "max_grad_norm"
    }  # fmt: skip

    def _setup(self) -> None:
        cfg = self.config
        self.params = unique_parameters(self.actor, self.critic)
        lr = self.scheduled("learning_rate")
        if cfg.use_rms_prop:
            self.optimizer: torch.optim.Optimizer = torch.optim.RMSprop(
                self.params, lr=lr, alpha=RMSPROP_ALPHA, eps=cfg.rms_prop_eps
            )
        else:
            self.optimizer = adam(self.params, lr, eps=ADAM_EPS)

    def learn(
        self: A,
        total_timesteps: int | float,
        callback: Any = None,
        log_interval: int = 100,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> A:
        """:meth:`~natrl.rl.agent.OnPolicyAgent.learn` with stable-baselines3's A2C default
        ``log_interval=100``: A2C updates every ``n_envs × n_steps`` (5) steps, so the logger is dumped every 100
        updates (PPO's and TRPO's default is 1)."""
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = self.scheduled("learning_rate")
        advantages = batch.advantages
        if cfg.normalize_advantage and len(batch) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        if batch.seq is None:
            dist, values = distribution_and_value(self.actor, self.critic, batch.obs)
        else:
            dist = self.actor.distribution(*batch.actor_inputs())
            values = self.critic(*batch.critic_inputs()).flatten()
        policy_loss = -(advantages * dist.log_prob(batch.actions)).mean()
        value_loss = (values - batch.returns).pow(2).mean()
        entropy = dist.entropy().mean()
        loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad_norm(self.params, cfg.max_grad_norm)
        adam_step(self.optimizer)  # optimizer.step() for RMSprop; torch's functional fused Adam for Adam

        stats = {
            "policy_loss": float(policy_loss.detach()),
            "value_loss": float(value_loss.detach()),
            "entropy": float(entropy.detach()),
            "grad_norm": float(grad_norm),
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
