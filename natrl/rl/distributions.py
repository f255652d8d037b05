"""Action distributions with analytic KL divergence and analytic output Fisher.

A distribution is described by a tuple of *output parameters*, the tensors a
policy network produces, each with a leading batch dimension N:

* :class:`Categorical`: ``(logits,)`` with logits of shape (N, K).
* :class:`DiagGaussian`: ``(mean, log_std)``, both of shape (N, D). A
  state-independent log-std is a single parameter vector broadcast to (N, D)
  by the policy; a state-dependent one is a network output. Either way the
  Fisher below is exact, because the broadcast is part of the network's
  Jacobian.

For each family the Fisher information of one sample with respect to its output
parameters, M = E_a[∇ log π(a) ∇ log π(a)ᵀ], is known in closed form, and it is
also the Hessian of KL(old ‖ new) in the new output parameters at new = old:

* Categorical over logits z, p = softmax(z):   M = diag(p) − p pᵀ.
* Diagonal Gaussian over (μ, log σ):            M = diag(1/σ², 2).

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

__all__ = ["Categorical", "DiagGaussian", "Distribution"]

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

    @staticmethod
    def fisher_vp_outputs(params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
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

    @staticmethod
    def fisher_vp_outputs(params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
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

    @staticmethod
    def fisher_vp_outputs(params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """M (v_μ, v_s) = (v_μ / σ², 2 v_s), per sample."""
        _, log_std = params
        v_mean, v_log_std = tangents
        return (v_mean * torch.exp(-2.0 * log_std), 2.0 * v_log_std)
