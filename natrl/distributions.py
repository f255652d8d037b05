"""Action distributions with analytic KL divergence and analytic output Fisher.

A distribution is described by a tuple of *output parameters*, the tensors a
policy network produces, each with a leading batch dimension N:

* :class:`Categorical`: ``(logits,)`` with logits of shape (N, K).
* :class:`DiagGaussian`: ``(mean, log_std)``, both of shape (N, D). A
  state-independent log-std is a single parameter vector broadcast to (N, D)
  by the policy; a state-dependent one is a network output. Either way the
  Fisher below is exact, because the broadcast is part of the network's
  Jacobian. Box actions of any shape use it over the flattened action.
* :class:`MultiCategorical`: ``(logits,)`` of shape (N, Σₖ nₖ), one independent
  categorical per component of a MultiDiscrete action (``MultiCategorical.of(nvec)``
  makes the family for one ``nvec``).
* :class:`Bernoulli`: ``(logits,)`` of shape (N, D), D independent binary actions
  (MultiBinary).

For each family the Fisher information of one sample with respect to its output
parameters, M = E_a[∇ log π(a) ∇ log π(a)ᵀ], is known in closed form, and it is
also the Hessian of KL(old ‖ new) in the new output parameters at new = old:

* Categorical over logits z, p = softmax(z):   M = diag(p) − p pᵀ.
* Diagonal Gaussian over (μ, log σ):            M = diag(1/σ², 2).
* Product of independent factors:               M = blockdiag(M₁, …, M_K)
  (MultiCategorical: one categorical block per component).
* Bernoulli over logits z, p = sigmoid(z):       M = diag(p (1 − p)).

``fisher_vp_outputs`` multiplies a tangent of the output parameters by M, one
sample at a time (no reduction over the batch). :func:`natrl.curvature.fisher_vp`
pulls it back through the network: F v = (1/N) Σᵢ Jᵢᵀ Mᵢ Jᵢ v.

Reference: Martens (2020), "New insights and perspectives on the natural
gradient method", JMLR 21, §9.2 (Fisher of exponential-family outputs).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Bernoulli", "Categorical", "DiagGaussian", "Distribution", "MultiCategorical"]

_LOG_2PI = math.log(2.0 * math.pi)


class Distribution:
    """Common interface. Subclasses hold their output parameters in ``params``."""

    n_params: ClassVar[int]
    params: tuple[Tensor, ...]

    def log_prob(self, actions: Tensor) -> Tensor:  # (N,)
        raise NotImplementedError

    def entropy(self) -> Tensor:  # (N,)
        raise NotImplementedError

    def kl(self, other: Distribution) -> Tensor:  # KL(self ‖ other), (N,)
        raise NotImplementedError

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def mode(self) -> Tensor:
        raise NotImplementedError

    @classmethod
    def fisher_vp_outputs(cls, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def detach(self) -> Distribution:
        """A copy cut from autograd and from the parameters' storage (a frozen π_old)."""
        return type(self)(*(p.detach().clone() for p in self.params))


class Categorical(Distribution):
    """Categorical distribution over K actions parameterised by logits (N, K)."""

    n_params = 1

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits
        self.log_p = F.log_softmax(logits, dim=-1)
        self.params = (logits,)

    @property
    def probs(self) -> Tensor:
        return self.log_p.exp()

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.log_p.gather(-1, actions.long().reshape(-1, 1)).squeeze(-1)

    def entropy(self) -> Tensor:
        return -(self.probs * self.log_p).sum(-1)

    def kl(self, other: Distribution) -> Tensor:
        assert isinstance(other, Categorical)
        return (self.probs * (self.log_p - other.log_p)).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Gumbel-max: argmax(z − log(−log U)), U ~ Uniform(0, 1), is Categorical(softmax z)."""
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device, dtype=self.logits.dtype)
        return (self.logits - torch.log(-torch.log(u))).argmax(-1)

    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    @classmethod
    def fisher_vp_outputs(cls, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """M v = p ⊙ v − p (pᵀ v), per sample."""
        p = torch.softmax(params[0], dim=-1)
        v = tangents[0]
        pv = p * v
        return (pv - p * pv.sum(-1, keepdim=True),)


class DiagGaussian(Distribution):
    """Diagonal Gaussian with mean (N, D) and log standard deviation (N, D)."""

    n_params = 2

    def __init__(self, mean: Tensor, log_std: Tensor) -> None:
        self.mean = mean
        self.log_std = log_std.expand_as(mean)
        self.params = (mean, self.log_std)

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def log_prob(self, actions: Tensor) -> Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (self.log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)

    def kl(self, other: Distribution) -> Tensor:
        assert isinstance(other, DiagGaussian)
        var_ratio = torch.exp(2.0 * (self.log_std - other.log_std))
        mean_term = ((self.mean - other.mean) * torch.exp(-other.log_std)).pow(2)
        return (other.log_std - self.log_std + 0.5 * (var_ratio + mean_term - 1.0)).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> Tensor:
        return self.mean

    @classmethod
    def fisher_vp_outputs(cls, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """M (v_μ, v_s) = (v_μ / σ², 2 v_s), per sample."""
        _, log_std = params
        v_mean, v_log_std = tangents
        return (v_mean * torch.exp(-2.0 * log_std), 2.0 * v_log_std)


class MultiCategorical(Distribution):
    """Independent categoricals over the components of a MultiDiscrete action.

    ``MultiCategorical.of(nvec)`` returns the family (a subclass) for component sizes
    ``nvec``; an instance holds logits (N, Σₖ nₖ), the components' logits side by side,
    and actions are integer tensors (N, K). Log-probabilities, entropies and KLs are sums
    over the components; the output Fisher is block diagonal with one categorical block
    diag(pₖ) − pₖpₖᵀ per component.
    """

    n_params = 1
    nvec: ClassVar[tuple[int, ...]] = ()

    @classmethod
    def of(cls, nvec: tuple[int, ...] | list[int]) -> type[MultiCategorical]:
        sizes = tuple(int(n) for n in nvec)
        if not sizes or any(n < 1 for n in sizes):
            raise ValueError(f"MultiCategorical needs positive component sizes, got {nvec!r}")
        return type(f"MultiCategorical{list(sizes)}", (cls,), {"nvec": sizes, "__module__": cls.__module__})

    def __init__(self, logits: Tensor) -> None:
        if not self.nvec:
            raise TypeError("use MultiCategorical.of(nvec) to make the family for given component sizes")
        self.logits = logits
        self.log_ps = [F.log_softmax(z, dim=-1) for z in logits.split(self.nvec, dim=-1)]
        self.params = (logits,)

    def log_prob(self, actions: Tensor) -> Tensor:
        idx = actions.long()
        return torch.stack(
            [lp.gather(-1, idx[:, k : k + 1]).squeeze(-1) for k, lp in enumerate(self.log_ps)], dim=-1
        ).sum(-1)

    def entropy(self) -> Tensor:
        return torch.stack([-(lp.exp() * lp).sum(-1) for lp in self.log_ps], dim=-1).sum(-1)

    def kl(self, other: Distribution) -> Tensor:
        assert isinstance(other, MultiCategorical) and other.nvec == self.nvec
        return torch.stack([(p.exp() * (p - q)).sum(-1) for p, q in zip(self.log_ps, other.log_ps)], dim=-1).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Gumbel-max per component."""
        z = self.logits
        u = torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        g = z - torch.log(-torch.log(u))
        return torch.stack([part.argmax(-1) for part in g.split(self.nvec, dim=-1)], dim=-1)

    def mode(self) -> Tensor:
        return torch.stack([part.argmax(-1) for part in self.logits.split(self.nvec, dim=-1)], dim=-1)

    @classmethod
    def fisher_vp_outputs(cls, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Per component k: Mₖ vₖ = pₖ ⊙ vₖ − pₖ (pₖᵀ vₖ)."""
        out = []
        for z, v in zip(params[0].split(cls.nvec, dim=-1), tangents[0].split(cls.nvec, dim=-1)):
            pv = torch.softmax(z, dim=-1) * v
            out.append(pv - torch.softmax(z, dim=-1) * pv.sum(-1, keepdim=True))
        return (torch.cat(out, dim=-1),)

    def detach(self) -> Distribution:
        return type(self)(self.logits.detach().clone())


class Bernoulli(Distribution):
    """D independent Bernoulli actions (MultiBinary) with logits (N, D); actions are 0/1 (N, D)."""

    n_params = 1

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits
        self.params = (logits,)

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, actions: Tensor) -> Tensor:
        # a log σ(z) + (1 − a) log σ(−z) = −BCE-with-logits(z, a)
        a = actions.to(self.logits.dtype)
        return -F.binary_cross_entropy_with_logits(self.logits, a, reduction="none").sum(-1)

    def entropy(self) -> Tensor:
        p = self.probs
        return F.binary_cross_entropy_with_logits(self.logits, p, reduction="none").sum(-1)

    def kl(self, other: Distribution) -> Tensor:
        assert isinstance(other, Bernoulli)
        p = self.probs
        z, w = self.logits, other.logits
        # Σ p (log σ(z) − log σ(w)) + (1 − p)(log σ(−z) − log σ(−w))
        return (p * (F.logsigmoid(z) - F.logsigmoid(w)) + (1.0 - p) * (F.logsigmoid(-z) - F.logsigmoid(-w))).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        z = self.logits
        u = torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return (u < torch.sigmoid(z)).to(z.dtype)

    def mode(self) -> Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    @classmethod
    def fisher_vp_outputs(cls, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """M v = p (1 − p) ⊙ v, per sample."""
        p = torch.sigmoid(params[0])
        return (p * (1.0 - p) * tangents[0],)
