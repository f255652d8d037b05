"""The CPU fast paths for natrl's own MLPs, chosen once at setup.

Each algorithm has one generic path that works for any policy module on any device.
For natrl's own MLP actor and critic on the CPU (flat float observations, Linear
layers with tanh or ReLU between them, a categorical or diagonal-Gaussian head), three
functions of that path have faster replacements, because for 64-unit networks the
framework's dispatch and autograd's bookkeeping cost as much as the arithmetic:

* the rollout sampler: :func:`numpy_sampler` runs the actor's forward and the sample
  in NumPy on views of the parameters (generic: ``actor.distribution(obs).sample()``);
* the critic's minibatch gradient: :func:`mlp_value_grads`, a hand-written backward
  (generic: autograd on ½·mean (V − R)²);
* PPO's minibatch gradient: :func:`clipped_loss_grads`, the loss's gradient w.r.t. the
  networks' outputs in closed form, pulled back through the MLPs by hand (generic:
  autograd on PPO's loss).

Each earns its code: it beats the generic path, and the generic path with public tools
(``torch.compile`` of the loss or of the rollout forward), by at least 10% of end-to-end
training steps/s on one of CartPole-v1, Pendulum-v1 and Hopper-v5 at the presets
(scripts/speed_devices.py, docs/bench/speed-devices.md). A hand-written Fisher-vector
product for TRPO/NPG did not (within 10% of autograd's double-vjp) and was removed.

:func:`fast_paths` returns the replacements that apply (each ``None`` otherwise); the
algorithms take either the replacement or the generic function once, at setup, and
never branch on it again. Each replacement is tested against the generic function it
replaces (tests/test_policies.py, tests/test_rl_formulas.py, tests/test_agents.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from natrl.distributions import Categorical, DiagGaussian
from natrl.rl.batch import Sequences
from natrl.rl.fastmlp import MLPSpec, mlp_backward, mlp_forward, mlp_spec
from natrl.rl.policies.extractors import FlattenExtractor
from natrl.rl.policies.modules import Actor, Critic

__all__ = [
    "FastPaths",
    "HeadGrads",
    "PPOCoefs",
    "PPOMinibatch",
    "clipped_loss_grads",
    "fast_paths",
    "mlp_value_grads",
    "numpy_sampler",
]

_LOG_2PI = math.log(2.0 * math.pi)
_NUMPY_ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.ELU, nn.GELU)


def _on_cpu(module: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in module.parameters())


def _own_mlp(module: Actor | Critic) -> bool:
    """natrl's MLP on flat float observations, on the CPU, in float32."""
    return (
        type(module) in (Actor, Critic)
        and module.core is None
        and module.obs_codec.flat_float
        and type(module.features) is FlattenExtractor
        and isinstance(module.net, nn.Sequential)
        and _on_cpu(module)
        and all(p.dtype == torch.float32 for p in module.parameters())
    )


def _own_head(actor: Actor) -> bool:
    return actor.dist_cls in (Categorical, DiagGaussian)


# --------------------------------------------------------------------------- rollout sampler


def numpy_sampler(actor: Actor, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray] | None:
    """A NumPy ``obs -> raw action sample`` for CPU rollouts, or None when it does not apply.

    One forward of a small MLP on a handful of observations costs a few microseconds of
    arithmetic but tens of microseconds of framework dispatch in torch; NumPy's dispatch is
    several times cheaper, and the rollout loop runs this once per vector step. The arrays
    are views of the (CPU) parameter tensors, so in-place updates of the parameters are seen
    without rebuilding. Categorical samples use the Gumbel-max trick; log-probabilities are
    recomputed in torch for the whole rollout afterwards. Draws the same distribution as
    ``actor.distribution(obs).sample()`` (tested), from NumPy's generator instead of torch's.
    """
    if not (_own_mlp(actor) and _own_head(actor)):
        return None
    net = actor.net
    assert isinstance(net, nn.Sequential)  # _own_mlp
    layers: list[tuple[np.ndarray, np.ndarray] | Callable[[np.ndarray], np.ndarray]] = []
    for m in net:
        if type(m) is nn.Linear and m.bias is not None:
            layers.append((m.weight.detach().numpy().T, m.bias.detach().numpy()))
        elif type(m) is nn.Tanh:
            layers.append(lambda x: np.tanh(x, out=x))
        elif type(m) is nn.ReLU:
            layers.append(lambda x: np.maximum(x, 0.0, out=x))
        elif type(m) in _NUMPY_ACTIVATIONS:
            fn = m  # ELU/GELU: torch's kernel on a NumPy view, no autograd

            def through_torch(x: np.ndarray, fn: nn.Module = fn) -> np.ndarray:
                with torch.no_grad():
                    return fn(torch.from_numpy(x)).numpy()

            layers.append(through_torch)
        else:
            return None
    discrete, sd_std, k = actor.discrete, actor.state_dependent_std, actor.act_dim
    log_std = actor.log_std.detach().numpy() if actor.free_log_std else None

    def sample(obs: np.ndarray) -> np.ndarray:
        x = obs
        for layer in layers:
            x = x @ layer[0] + layer[1] if isinstance(layer, tuple) else layer(x)
        if discrete:
            return (x + rng.gumbel(size=x.shape)).argmax(-1)
        if sd_std:
            x, ls = x[:, :k], x[:, k:]
        else:
            assert log_std is not None  # a free log-std when the std is not state-dependent
            ls = log_std
        return (x + np.exp(ls) * rng.standard_normal(x.shape, dtype=np.float32)).astype(np.float32)

    return sample


# --------------------------------------------------------------------------- critic gradient


def mlp_value_grads(spec: MLPSpec, x: Tensor, y: Tensor) -> Tensor:
    """Write ∇ of ½·mean (V(x) − y)² into the critic's ``.grad`` (hand-written backward); return the loss."""
    with torch.no_grad():
        out, acts = mlp_forward(spec, x)
        err = out.squeeze(-1) - y
        loss = 0.5 * (err * err).mean()
        grad_out = (err * (1.0 / y.shape[0])).unsqueeze(-1)
        mlp_backward(spec, acts, grad_out)
    return loss


def critic_mlp(critic: nn.Module) -> MLPSpec | None:
    """The :class:`~natrl.rl.fastmlp.MLPSpec` of natrl's MLP critic on flat observations, else None."""
    if type(critic) is not Critic or not critic.obs_codec.flat_float or type(critic.features) is not FlattenExtractor:
        return None
    return mlp_spec(critic.net)


# --------------------------------------------------------------------------- PPO gradient


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

    which is what autograd computes for PPO's loss (ties of the min and the clamp boundaries
    included), without building a graph for a dozen elementwise ops per minibatch. ``out_a`` is
    the actor MLP's output: logits, the mean, or [mean, log-std] when ``log_std`` is None for a
    Gaussian (state-dependent std). Runs without autograd (inputs that require grad, such as the
    log-std parameter, are not recorded): every returned tensor is plain data.
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


class PPOTerms(NamedTuple):
    """The terms of PPO's loss on one minibatch (detached scalars)."""

    pg_loss: Tensor
    v_loss: Tensor
    entropy: Tensor
    approx_kl: Tensor
    clip_fraction: Tensor


class PPOMinibatch(NamedTuple):
    """One PPO minibatch (advantages already normalised if wanted)."""

    obs: Tensor
    actions: Tensor
    old_log_probs: Tensor
    advantages: Tensor
    returns: Tensor
    old_values: Tensor | None  # needed with value clipping
    seq: Sequences | None = None  # a recurrent policy's sequences (the rows are theirs, sequence by sequence)


class PPOCoefs(NamedTuple):
    """The coefficients of PPO's loss for one update (schedules already evaluated)."""

    clip_range: float
    clip_range_vf: float | None
    ent_coef: float
    vf_coef: float


PPOGrads = Callable[[PPOMinibatch, PPOCoefs], tuple[PPOTerms, Callable[[], None]]]
"""``grads(minibatch, coefs) -> (terms, backward)``: the minibatch's loss terms, and a function that
writes the loss's gradient into the parameters' ``.grad`` (called unless the update stops early)."""


def _ppo_closed_form(actor: Actor, critic: Critic) -> PPOGrads | None:
    spec_a, spec_v = mlp_spec(actor.net), mlp_spec(critic.net)
    if spec_a is None or spec_v is None:
        return None
    # every actor parameter must be one the closed form writes: the MLP's and the free log-std
    known = {id(p) for p in actor.net.parameters()}
    rest = [p for p in actor.parameters() if id(p) not in known]
    expected = [actor.log_std] if actor.free_log_std else []
    if len(rest) != len(expected) or any(a is not b for a, b in zip(rest, expected)):
        return None
    if not all(p.requires_grad for p in rest):
        return None
    log_std = expected[0] if expected else None
    discrete = actor.discrete

    def grads(mb: PPOMinibatch, coefs: PPOCoefs) -> tuple[PPOTerms, Callable[[], None]]:
        out_a, acts_a = mlp_forward(spec_a, mb.obs)
        out_v, acts_v = mlp_forward(spec_v, mb.obs)
        h = clipped_loss_grads(out_a, out_v, log_std, *mb[1:6], discrete=discrete, **coefs._asdict())

        def backward() -> None:
            mlp_backward(spec_a, acts_a, h.actor_out)
            mlp_backward(spec_v, acts_v, h.critic_out)
            if log_std is not None:
                log_std.grad = h.log_std

        return PPOTerms(h.pg_loss, h.v_loss, h.entropy, h.approx_kl, h.clip_fraction), backward

    return grads


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class FastPaths:
    """The fast replacements that apply to one agent's networks (None where the generic path runs)."""

    sampler: Callable[[np.ndarray], np.ndarray] | None
    critic_grads: Callable[[Tensor, Tensor], Tensor] | None
    ppo_grads: PPOGrads | None

    @property
    def active(self) -> tuple[str, ...]:
        """The names of the devices in use (the fields that are not None), for logs."""
        return tuple(n for n in ("sampler", "critic_grads", "ppo_grads") if getattr(self, n) is not None)


NONE = FastPaths(None, None, None)


def fast_paths(
    actor: Actor,
    critic: Critic,
    rng: np.random.Generator,
    *,
    enabled: bool = True,
    sampler: bool = True,
    critic_grads: bool = True,
    ppo_grads: bool = True,
) -> FastPaths:
    """The fast paths for these networks (see the module docstring); :data:`NONE` when disabled.

    Each keyword after ``enabled`` turns one device off (the generic path runs there), so that a
    measurement can compare one device at a time (scripts/speed_devices.py).
    """
    if not enabled:
        return NONE
    own_critic = _own_mlp(critic)
    spec_v = critic_mlp(critic) if own_critic and critic_grads else None
    own_ppo = ppo_grads and _own_mlp(actor) and _own_head(actor) and own_critic
    return FastPaths(
        sampler=numpy_sampler(actor, rng) if sampler else None,
        critic_grads=functools.partial(mlp_value_grads, spec_v) if spec_v is not None else None,
        ppo_grads=_ppo_closed_form(actor, critic) if own_ppo else None,
    )
