"""K-FAC: Kronecker-factored approximate curvature for ``nn.Linear`` and ``nn.Conv2d``.

For a layer with (bias-augmented) input ā and pre-activation output s, the per-example
gradient of the weights [W | b] is g āᵀ with g = ∂ℓ/∂s, so the layer's Fisher block is
F = E[(g gᵀ) ⊗ (ā āᵀ)] (row-major vec of [W | b]). K-FAC assumes g and ā independent:

    F ≈ G ⊗ A,   A = E[ā āᵀ],   G = E[g gᵀ]

(Martens & Grosse 2015, "Optimizing neural networks with Kronecker-factored approximate
curvature", ICML, §3). For ``Conv2d`` ā are the unfolded input patches and g the output
gradients at each spatial location; with spatially uncorrelated derivatives
F ≈ (L·Ḡ) ⊗ Ā over the L locations (Grosse & Martens 2016, "A Kronecker-factored approximate
Fisher matrix for convolution layers", ICML, §3.1). The preconditioned gradient solves the
damped system with the eigendecompositions A = Q_A diag(a) Q_Aᵀ, G = Q_G diag(g) Q_Gᵀ:

    (G ⊗ A + λI)⁻¹ vec(∇) = vec(Q_G [(Q_Gᵀ ∇ Q_A) ⊘ (g aᵀ + λ)] Q_Aᵀ)

(Tikhonov damping of the Kronecker product, exact in the eigenbasis; George et al. 2018,
"Fast approximate natural gradient descent in a Kronecker-factored eigenbasis", §3).

Pieces, all usable on their own (ACKTR reuses them with a policy's sampled Fisher):

* pure functions: :func:`linear_factors`, :func:`conv2d_factors` (factor contributions from
  inputs and output gradients), :func:`eigh_robust` (eigendecomposition with jitter then
  float64 fallbacks), :func:`precondition` (the solve above), :func:`kl_clip_scale` (the
  step scale ν = min(1, √(κ / (η² Σ⟨∇̃, ∇⟩))) of Ba et al. 2017 / ACKTR, Wu et al. 2017);
* :class:`KFAC`, a ``torch.optim`` optimizer that collects the factors with forward hooks on
  the layers and tensor hooks on their outputs, keeps exponential moving averages, refreshes
  eigendecompositions every ``inverse_interval`` steps, and either only rewrites ``.grad``
  (``preconditioner_only=True``: ``loss.backward(); kfac.step(); other_opt.step()``) or also
  takes an SGD-with-momentum step.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias, cast

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from natrl.linalg import LevenbergMarquardt
from natrl.optim import kfac_distributed as kfd
from natrl.optim.validation import check_int, check_real

__all__ = [
    "KFAC",
    "Eigen",
    "KFACStats",
    "conv2d_factors",
    "eigh_robust",
    "g_factor",
    "kl_clip_scale",
    "linear_factors",
    "precondition",
]


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def _with_ones(a: Tensor) -> Tensor:
    return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)


SCALES = ("per_example", "batch_mean")


def g_factor(g: Tensor, n: int, scale: str = "per_example") -> Tensor:
    """G from output-gradient rows ĝ_r (r = 1..R) of a loss averaged over N examples.

    ``"per_example"``: G = N Σ_r ĝ_r ĝ_rᵀ, the mean over examples of the per-example
    gradients' outer products (N ĝ is the per-example gradient), independent of N.
    ``"batch_mean"``: G = (1/R) Σ_r ĝ_r ĝ_rᵀ, the second moment of the mean loss's gradients
    (kfac-pytorch's convention), = per_example G / (N R): 1/N² for a plain batch.

    Args:
        g: ĝ, shape (R, d_out).
        n: N.
        scale: ``"per_example"`` or ``"batch_mean"``.
    """
    if scale == "per_example":
        return (g.T @ g) * n
    return g.T @ g / g.shape[0]


def linear_factors(
    inputs: Tensor,
    grad_outputs: Tensor | None,
    *,
    bias: bool,
    batch_size: int | None = None,
    scale: str = "per_example",
) -> tuple[Tensor, Tensor | None]:
    """K-FAC factor estimates of an ``nn.Linear`` layer from one batch.

    With rows r = 1..R (all leading dimensions flattened; R = N for a plain batch):
    A = (1/R) Σ_r ā_r ā_rᵀ with ā = [a, 1] when ``bias``, and G = N Σ_r ĝ_r ĝ_rᵀ where ĝ are
    the gradients of a loss *averaged* over the N examples with respect to the outputs (so N ĝ
    is the per-example gradient and G = (1/N) Σₙ (N ĝₙ)(N ĝₙ)ᵀ for a plain batch). With
    ``scale="batch_mean"``, G = (1/R) Σ_r ĝ_r ĝ_rᵀ instead (see :func:`g_factor`).

    Args:
        inputs: the layer input, shape (N, …, d_in).
        grad_outputs: ∂L/∂output, shape (N, …, d_out), or None (then G is None).
        bias: whether the layer has a bias (append the homogeneous coordinate).
        batch_size: N (``inputs.shape[0]`` by default).
        scale: ``"per_example"`` or ``"batch_mean"``.

    Returns:
        ``(A, G)`` of shapes (d_in [+1], d_in [+1]) and (d_out, d_out).
    """
    n = inputs.shape[0] if batch_size is None else batch_size
    a = inputs.reshape(-1, inputs.shape[-1])
    if bias:
        a = _with_ones(a)
    big_a = a.T @ a / a.shape[0]
    if grad_outputs is None:
        return big_a, None
    g = grad_outputs.reshape(-1, grad_outputs.shape[-1])
    return big_a, g_factor(g, n, scale)


def _conv_patches(inputs: Tensor, conv: nn.Conv2d) -> Tensor:
    """Unfolded input patches, shape (N·L, C_in·kh·kw), ordered like ``weight.view(C_out, -1)``."""
    padding = conv.padding if not isinstance(conv.padding, str) else 0  # "valid"
    cols = nnf.unfold(inputs, conv.kernel_size, dilation=conv.dilation, padding=padding,
                      stride=conv.stride)  # fmt: skip
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def conv2d_factors(
    inputs: Tensor, grad_outputs: Tensor | None, conv: nn.Conv2d, *, scale: str = "per_example"
) -> tuple[Tensor, Tensor | None]:
    """K-FAC (KFC) factor estimates of an ``nn.Conv2d`` layer (groups = 1) from one batch.

    A = (1/(N L)) Σ_{n,t} ā_{n,t} ā_{n,t}ᵀ over the unfolded patches ā (plus 1 with a bias)
    and G = N Σ_{n,t} ĝ_{n,t} ĝ_{n,t}ᵀ over the L output locations (the L·Ḡ of Grosse &
    Martens 2016 with per-example gradients N ĝ), so that for a 1 × 1 output map the factors
    equal those of the equivalent ``nn.Linear``. With ``scale="batch_mean"``,
    G = (1/(N L)) Σ_{n,t} ĝ_{n,t} ĝ_{n,t}ᵀ (see :func:`g_factor`; kfac-pytorch further divides
    both its conv factors by L²).

    Args:
        inputs: the layer input, shape (N, C_in, H, W).
        grad_outputs: ∂L/∂output, shape (N, C_out, H', W'), or None.
        conv: the layer (kernel, stride, padding, dilation, bias).
        scale: ``"per_example"`` or ``"batch_mean"``.

    Returns:
        ``(A, G)`` of shapes (C_in kh kw [+1], …) and (C_out, C_out).
    """
    n = inputs.shape[0]
    a = _conv_patches(inputs, conv)
    if conv.bias is not None:
        a = _with_ones(a)
    big_a = a.T @ a / a.shape[0]
    if grad_outputs is None:
        return big_a, None
    g = grad_outputs.permute(0, 2, 3, 1).reshape(-1, grad_outputs.shape[1])
    return big_a, g_factor(g, n, scale)


class Eigen(NamedTuple):
    """A symmetric eigendecomposition M = Q diag(values) Qᵀ (values clamped at ≥ 0)."""

    values: Tensor
    vectors: Tensor


def eigh_robust(m: Tensor, *, jitters: tuple[float, ...] = (1e-6, 1e-4, 1e-2)) -> tuple[Eigen | None, str]:
    """Eigendecomposition of a symmetric PSD factor that does not crash.

    Tries ``torch.linalg.eigh`` on ½(M + Mᵀ) first; only on failure (an exception or
    non-finite output) are the fallbacks built: M + j·(tr M / n)·I for each jitter j, then
    M in float64 (cast back); it gives up with ``None``. A factor with non-finite entries
    returns ``None`` without a retry.

    Args:
        m: M, shape (n, n).
        jitters: relative diagonal shifts tried in turn.

    Returns:
        ``(eigen, how)``: the decomposition (or None) and ``"ok"``, ``"jitter=…"``,
        ``"float64"`` or the reason it failed.
    """
    sym = 0.5 * (m + m.T)

    def attempt(mat: Tensor) -> Eigen | None:
        try:
            vals, vecs = torch.linalg.eigh(mat)
        except (RuntimeError, torch.linalg.LinAlgError):
            return None
        if bool(torch.isfinite(vals).all() & torch.isfinite(vecs).all()):
            return Eigen(vals.to(m.dtype).clamp_min(0.0), vecs.to(m.dtype))
        return None

    eig = attempt(sym)
    if eig is not None:
        return eig, "ok"
    if not bool(torch.isfinite(m).all()):
        return None, "non-finite factor"
    scale = float(sym.diagonal().abs().mean()) or 1.0
    eye = torch.eye(sym.shape[0], dtype=sym.dtype, device=sym.device)
    for j in jitters:
        eig = attempt(sym + j * scale * eye)
        if eig is not None:
            return eig, f"jitter={j:g}"
    eig = attempt(sym.double())
    if eig is not None:
        return eig, "float64"
    return None, "eigh failed (also with jitter and in float64)"


def precondition(
    grad: Tensor, eig_a: Eigen, eig_g: Eigen, damping: float, *, inv_denom: Tensor | None = None
) -> Tensor:
    """(G ⊗ A + λI)⁻¹ vec(∇) for a gradient matrix ∇ of shape (d_out, d_a), as a matrix.

    Args:
        grad: ∇ = [∇W | ∇b], shape (d_out, d_a).
        eig_a: eigendecomposition of A (d_a × d_a).
        eig_g: eigendecomposition of G (d_out × d_out).
        damping: λ > 0.
        inv_denom: 1 / (g aᵀ + λ), shape (d_out, d_a), if already computed.

    Returns:
        The preconditioned gradient, shape (d_out, d_a).
    """
    qa, qg = eig_a.vectors, eig_g.vectors
    if inv_denom is None:
        inv_denom = 1.0 / (torch.outer(eig_g.values, eig_a.values) + damping)
    return qg @ ((qg.T @ grad @ qa) * inv_denom) @ qa.T


def kl_clip_scale(inner: float, lr: float, kl_clip: float) -> float:
    """ν = min(1, √(κ / (η² Σ⟨∇̃, ∇⟩))): the step-scaling of ACKTR (Wu et al. 2017, §3.1).

    Args:
        inner: Σ over parameters of ⟨∇̃, ∇⟩ (the quadratic form ∇̃ᵀ F ∇̃ of the update).
        lr: the learning rate η of the step that follows.
        kl_clip: κ > 0.

    Returns:
        ν ∈ [0, 1]: 1.0 when the quadratic form is ≤ 0 or NaN (nothing to clip), 0.0 when it
        is +inf (an unbounded step is scaled to nothing).
    """
    quad = lr * lr * inner
    if quad == math.inf:
        return 0.0
    if not quad > 0.0 or not math.isfinite(quad):
        return 1.0
    return min(1.0, math.sqrt(kl_clip / quad))


# ---------------------------------------------------------------------------------------------
# The optimizer
# ---------------------------------------------------------------------------------------------


_Tracked: TypeAlias = "nn.Linear | nn.Conv2d"
"""The layer types whose Fisher blocks K-FAC approximates (see :func:`_supported`)."""


@dataclass
class _Layer:
    """Factors and their eigendecompositions for one tracked layer."""

    name: str
    module: _Tracked
    dtype: torch.dtype  # of the factors and decompositions
    dim_a: int
    dim_g: int
    a: Tensor | None = None
    g: Tensor | None = None
    a_sum: Tensor | None = None
    a_rows: int = 0
    g_sum: Tensor | None = None
    g_count: int = 0
    eig_a: Eigen | None = None
    eig_g: Eigen | None = None
    inv_denom: Tensor | None = None  # 1 / (g aᵀ + λ) in the eigenbasis, for the current λ
    denom_damping: float = math.nan
    outputs: list[Tensor] = field(default_factory=list)  # outputs of this step's forwards
    handles: list[RemovableHandle] = field(default_factory=list)

    @property
    def params(self) -> list[Tensor]:
        ps = [self.module.weight]
        if self.module.bias is not None:
            ps.append(self.module.bias)
        return ps


class KFACStats(NamedTuple):
    """What one :meth:`KFAC.step` did.

    Attributes:
        kl_scale: ν applied to the preconditioned gradients (1.0 without KL clipping).
        damping: λ used.
        preconditioned_layers: layers whose gradients were preconditioned.
        fallbacks: eigendecompositions that needed jitter or float64 in this step.
        failed_layers: layers left to plain gradients in this step (eigh failed or no factor).
        rho: the Levenberg–Marquardt reduction ratio (NaN when not evaluated).
        comm_seconds: wall time of this step's K-FAC collectives (factor all-reduce,
            decomposition broadcasts, gradient all-reduce); 0.0 without a process group.
        skipped: the step was not taken because a (preconditioned) gradient, a momentum buffer
            or a new parameter value was not finite (or, with adaptive damping, the loss after
            the step); the parameters and momentum buffers are exactly as before. Counted in
            :attr:`KFAC.nonfinite_steps`. Always False with ``preconditioner_only`` (no step is
            taken there: the caller checks the rewritten ``.grad``).
    """

    kl_scale: float
    damping: float
    preconditioned_layers: int
    fallbacks: int
    failed_layers: tuple[str, ...]
    rho: float
    skipped: bool = False
    comm_seconds: float = 0.0


def _factor_dims(module: _Tracked) -> tuple[int, int]:
    """(dim A, dim G) of a supported layer."""
    w = module.weight
    return int(w[0].numel()) + (module.bias is not None), int(w.shape[0])


def _supported(module: nn.Module) -> str | None:
    """None when K-FAC handles the module, else why not."""
    if type(module) is nn.Linear:
        return None
    if type(module) is nn.Conv2d:
        if module.groups != 1:
            return "grouped convolution"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r}"
        if module.padding == "same":
            return "padding='same'"
        return None
    return "unsupported layer type"


class KFAC(Optimizer):
    """K-FAC natural-gradient optimizer or preconditioner for a model's Linear/Conv2d layers.

    Usage as a full optimizer::

        opt = KFAC(model, lr=0.05, momentum=0.9, damping=1e-2)
        loss = criterion(model(x), y); opt.zero_grad(); loss.backward(); opt.step()

    as a preconditioner in front of any optimizer::

        kfac = KFAC(model, lr=0.05, preconditioner_only=True)
        sgd = torch.optim.SGD(model.parameters(), lr=0.05)
        loss.backward(); kfac.step(); sgd.step()

    The factor G comes from the backward passes of the training loss
    (``fisher="empirical"``, the default: cheap, the usual choice for supervised learning), or
    only from passes marked as Fisher passes (``fisher="sampled"``, the true Fisher: run
    ``kfac.fisher_backward(sampled_loss)`` or ``kfac.sampled_fisher_backward(outputs)`` with
    targets sampled from the model, as ACKTR does); A always comes from the forward pass.
    Both assume the loss is averaged over the batch (first dimension).

    Layers other than ``nn.Linear`` and ``nn.Conv2d`` (groups = 1, zero padding) keep their
    plain gradients; they are named in a warning. Parameters without a gradient are skipped.

    Data parallel (``torch.distributed``): when a process group of more than one rank exists
    (or one is passed as ``process_group``), the factors are averaged over the ranks at every
    factor update (bucketed all-reduce of their upper triangles) and the eigendecompositions
    are dealt out to ranks and broadcast (``assignment="round_robin"``) or computed everywhere
    (``"compute_all"``); see :mod:`natrl.optim.kfac_distributed`. Every rank must call
    :meth:`step` at the same steps. With ``DistributedDataParallel`` pass the wrapped model or
    its ``.module`` (the hooks sit on the inner layers; DDP averages the gradients in
    backward). With plain ``torch.distributed`` and no DDP, the gradients are the rank's own
    unless ``allreduce_grads=True`` (then K-FAC averages them before preconditioning; do not
    combine with DDP, which already did). With the default ``scale="per_example"`` and equal
    per-rank batches, P ranks on batch slices give the factors, gradients and steps of one
    process on the whole batch (to rounding); with ``"batch_mean"`` G depends on the per-rank
    batch size, as in kfac-pytorch.

    Mixed precision and compilation: under ``torch.autocast`` the captured activations and
    output gradients are cast to ``factor_dtype`` (float32 unless the weights are float64) and
    the factor products run with autocast off; the preconditioned gradient keeps the
    parameter's dtype. With ``torch.amp.GradScaler`` pass it as ``grad_scaler`` (G is formed
    from the scaled output gradients divided by the scale) and call
    ``scaler.unscale_(kfac)`` or ``scaler.step(kfac)`` (which unscales first and skips the step
    when a gradient is inf/NaN), then ``scaler.update()``; a step reached with non-finite
    gradients anyway is skipped and counted in ``nonfinite_steps``. With ``torch.compile``,
    build KFAC on the original (uncompiled) model and compile afterwards, or pass the compiled
    module (its layers are the same objects): the hooks run eagerly (``torch.compiler.disable``,
    a graph break at each tracked layer), so ``fullgraph=True`` is not supported.

    Args:
        model: the module whose Linear/Conv2d layers are preconditioned; all its trainable
            parameters are the optimizer's parameters.
        lr: the step size η (also used by the KL clip in preconditioner mode: pass the
            learning rate of the optimizer that follows).
        momentum: SGD momentum on the preconditioned gradient (optimizer mode).
        weight_decay: L2 coefficient added to the gradients before preconditioning.
        damping: Tikhonov λ > 0 added to G ⊗ A.
        factor_decay: ε of the moving averages F ← ε F + (1 − ε) F_batch.
        factor_interval: collect statistics and update factors every this many steps.
        inverse_interval: recompute the eigendecompositions every this many steps.
        kl_clip: κ of the KL clip (None disables it).
        adaptive_damping: Levenberg–Marquardt adaptation of λ (Martens & Grosse 2015, §6.5;
            ω = (19/20)^damping_interval) from ρ computed with a closure; optimizer mode only.
        damping_interval: steps between damping adaptations (T₃).
        fisher: ``"empirical"`` or ``"sampled"`` (see above).
        preconditioner_only: only rewrite ``.grad`` (no parameter update).
        scale: ``"per_example"`` (G = mean of per-example output-gradient outer products,
            independent of the batch size) or ``"batch_mean"`` (G of the batch-mean loss,
            1/N² of it for a batch of N: kfac-pytorch's convention, so its damping values carry
            over); see :func:`g_factor`.
        factor_init: ``"first_batch"`` (the moving averages start at the first batch's
            factors) or ``"identity"`` (they start at I, as in kfac-pytorch).
        factor_dtype: dtype of the factors and their decompositions; None: the weight's dtype
            when it is float32 or float64, else float32 (bf16/fp16 weights or autocast).
        grad_scaler: the ``torch.amp.GradScaler`` scaling the loss, if any (see above).
        process_group: ``"default"`` (the default group when ``torch.distributed`` is
            initialised), None (never communicate) or a process group.
        assignment: ``"round_robin"`` (each eigendecomposition on one rank, then broadcast) or
            ``"compute_all"`` (every rank decomposes every factor).
        allreduce_grads: average the gradients over the process group before preconditioning
            (for plain ``torch.distributed`` without DDP).
        bucket_cap_mb: most megabytes per all-reduce buffer.

    Attributes:
        stats: :class:`KFACStats` of the last step.
        layers: the names of the preconditioned layers.
        nonfinite_steps: how many steps were skipped because a value was not finite (kept by
            ``state_dict``).

    Raises:
        ValueError: an option out of its range (lr < 0, damping ≤ 0, momentum or factor_decay
            outside [0, 1), an interval < 1, kl_clip ≤ 0, NaN, inf); the message names it.
        TypeError: an option of the wrong type (a string or bool for a number, a float for an
            interval, a non-bool flag).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.01,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        damping: float = 1e-3,
        factor_decay: float = 0.95,
        factor_interval: int = 1,
        inverse_interval: int = 10,
        kl_clip: float | None = 1e-3,
        adaptive_damping: bool = False,
        damping_interval: int = 5,
        fisher: str = "empirical",
        preconditioner_only: bool = False,
        scale: str = "per_example",
        factor_init: str = "first_batch",
        factor_dtype: torch.dtype | None = None,
        grad_scaler: Any = None,
        process_group: Any = "default",
        assignment: str = "round_robin",
        allreduce_grads: bool = False,
        bucket_cap_mb: float = 25.0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"KFAC: model must be an nn.Module, got {type(model).__name__}")
        for name, value, valid in (
            ("fisher", fisher, ("empirical", "sampled")),
            ("scale", scale, SCALES),
            ("factor_init", factor_init, ("first_batch", "identity")),
            ("assignment", assignment, kfd.ASSIGNMENTS),
        ):
            if value not in valid:
                raise ValueError(f"KFAC: unknown {name} {value!r}; valid: {', '.join(repr(v) for v in valid)}")
        if factor_dtype is not None and not (isinstance(factor_dtype, torch.dtype) and factor_dtype.is_floating_point):
            raise TypeError(f"KFAC: factor_dtype must be a floating torch.dtype or None, got {factor_dtype!r}")
        if grad_scaler is not None and not callable(getattr(grad_scaler, "get_scale", None)):
            raise TypeError(
                f"KFAC: grad_scaler must be a torch.amp.GradScaler or None, got {type(grad_scaler).__name__}"
            )
        w = "KFAC"
        lr = check_real(w, "lr", lr, low=0.0)
        momentum = check_real(w, "momentum", momentum, low=0.0, high=1.0, high_open=True)
        weight_decay = check_real(w, "weight_decay", weight_decay, low=0.0)
        damping = check_real(w, "damping", damping, low=0.0, low_open=True)
        factor_decay = check_real(w, "factor_decay", factor_decay, low=0.0, high=1.0, high_open=True)
        factor_interval = check_int(w, "factor_interval", factor_interval)
        inverse_interval = check_int(w, "inverse_interval", inverse_interval)
        damping_interval = check_int(w, "damping_interval", damping_interval)
        if kl_clip is not None:
            kl_clip = check_real(w, "kl_clip", kl_clip, low=0.0, low_open=True)
        bucket_cap_mb = check_real(w, "bucket_cap_mb", bucket_cap_mb, low=0.0, low_open=True)
        for name, flag in (
            ("adaptive_damping", adaptive_damping),
            ("preconditioner_only", preconditioner_only),
            ("allreduce_grads", allreduce_grads),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"KFAC: {name} must be True or False, got {type(flag).__name__} {flag!r}")
        if adaptive_damping and preconditioner_only:
            raise ValueError(
                "KFAC: adaptive_damping needs the parameter update, so it is not available with "
                "preconditioner_only=True"
            )
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("KFAC: the model has no trainable parameters")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.model = model
        self.damping = float(damping)
        self.factor_decay = factor_decay
        self.factor_interval = factor_interval
        self.inverse_interval = inverse_interval
        self.kl_clip = kl_clip
        self.adaptive_damping = adaptive_damping
        self.damping_interval = damping_interval
        self.fisher = fisher
        self.preconditioner_only = preconditioner_only
        self.scale = scale
        self.factor_init = factor_init
        self.grad_scaler = grad_scaler
        self.assignment = assignment
        self.allreduce_grads = allreduce_grads
        self._group, self._rank, self._world = kfd.resolve_group(process_group)
        self._bucket_bytes = int(bucket_cap_mb * 2**20)
        self._comm_seconds = 0.0
        omega = (19.0 / 20.0) ** damping_interval
        self._lm = LevenbergMarquardt(damping, increase=1.0 / omega, decrease=omega,
                                      min_value=min(1e-8, damping), max_value=max(1e4, damping))  # fmt: skip
        self._k = 0  # steps taken
        self.nonfinite_steps = 0  # steps skipped because a value was not finite (KFACStats.skipped)
        self._in_fisher_pass = False
        self._suspended = False
        self.stats: KFACStats | None = None

        self._layers: dict[nn.Module, _Layer] = {}
        skipped: list[str] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            why = _supported(module)
            if why is not None:
                skipped.append(f"{name or '<root>'} ({type(module).__name__}: {why})")
                continue
            tracked = cast(_Tracked, module)  # _supported admits these types only
            wdt = tracked.weight.dtype
            dtype = factor_dtype or (wdt if wdt in (torch.float32, torch.float64) else torch.float32)
            layer = _Layer(name or "<root>", tracked, dtype, *_factor_dims(tracked))
            # eager under torch.compile: dynamo would trace the hook and the tensor hook it registers
            layer.handles.append(module.register_forward_hook(torch.compiler.disable(self._forward_hook)))
            self._layers[module] = layer
        if skipped:
            warnings.warn(
                "KFAC: layers left to plain gradients: " + ", ".join(skipped),
                UserWarning,
                stacklevel=2,
            )
        self.layers = [layer.name for layer in self._layers.values()]

    # -- statistics collection -----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # a copy of this optimizer, made when a model carrying its hooks is copied (copy.deepcopy of an ACKTR
        # actor for a rollout worker), keeps torch.optim's state only and is inert: its hooks collect nothing
        state = super().__getstate__()
        state["_suspended"] = True
        return state

    def suspend(self) -> None:
        """Stop collecting statistics: forward and backward passes leave the factors alone until
        :meth:`resume` (e.g. line searches and Fisher-vector products through a policy)."""
        self._suspended = True

    def resume(self) -> None:
        """Collect statistics again (see :meth:`suspend`)."""
        self._suspended = False

    def discard_statistics(self) -> None:
        """Drop the statistics collected since the last step (a pass whose gradients were unusable)."""
        for layer in self._layers.values():
            layer.a_sum, layer.a_rows, layer.g_sum, layer.g_count = None, 0, None, 0
            layer.outputs.clear()

    @property
    def _collecting(self) -> bool:
        return not self._suspended and self._k % self.factor_interval == 0

    def _forward_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not (self._collecting and module.training and torch.is_grad_enabled()):
            return
        x = inputs[0]
        if not isinstance(x, Tensor) or not isinstance(output, Tensor):
            return
        if not isinstance(module.weight, nn.Parameter):
            # torch.func.functional_call (and the torch.func transforms run through it) swaps the module's
            # parameters for plain tensors: a pass at other parameters, not a data pass of this model
            return
        layer = self._layers[module]
        x = x.detach().to(layer.dtype)  # bf16/fp16 activations under autocast: factors in factor_dtype
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            if isinstance(module, nn.Conv2d):
                big_a, _ = conv2d_factors(x, None, module)
                rows = x.shape[0] * output.shape[-1] * output.shape[-2]
            else:
                big_a, _ = linear_factors(x, None, bias=module.bias is not None)
                rows = x.numel() // x.shape[-1]
        layer.a_sum = big_a * rows if layer.a_sum is None else layer.a_sum + big_a * rows
        layer.a_rows += rows
        if output.requires_grad:
            n = x.shape[0]
            output.register_hook(lambda go, layer=layer, n=n: self._grad_hook(layer, n, go))
            layer.outputs.append(output)

    def _grad_hook(self, layer: _Layer, n: int, go: Tensor) -> None:
        if self._suspended:
            return
        wanted = self._in_fisher_pass if self.fisher == "sampled" else not self._in_fisher_pass
        if not wanted:
            return
        with torch.no_grad(), torch.autocast(go.device.type, enabled=False):
            if go.dim() == 4 and isinstance(layer.module, nn.Conv2d):
                g = go.permute(0, 2, 3, 1).reshape(-1, go.shape[1])
            else:
                g = go.reshape(-1, go.shape[-1])
            g = g.to(layer.dtype)
            if self.grad_scaler is not None and not self._in_fisher_pass:
                g = g / float(self.grad_scaler.get_scale())  # the loss was scaled by S: so is ĝ
            big_g = g_factor(g, n, self.scale)
        layer.g_sum = big_g if layer.g_sum is None else layer.g_sum + big_g
        layer.g_count += 1

    @contextlib.contextmanager
    def fisher_pass(self) -> Iterator[None]:
        """Mark the backward passes inside as Fisher passes (sampled targets)."""
        prev = self._in_fisher_pass
        self._in_fisher_pass = True
        try:
            yield
        finally:
            self._in_fisher_pass = prev

    def fisher_backward(self, loss: Tensor) -> None:
        """Backpropagate a loss with sampled targets to collect G, leaving ``.grad`` untouched.

        Gradients are taken only with respect to the layer outputs recorded in this step's
        forward passes (no weight gradients are formed); the graph is retained, so the
        training loss can be backpropagated afterwards.
        """
        outputs = [o for layer in self._layers.values() for o in layer.outputs]
        if not outputs:
            return  # not a collection step (factor_interval) or no forward in training mode
        with self.fisher_pass():
            torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)

    def sampled_fisher_backward(
        self, outputs: Tensor, likelihood: str = "categorical", *, generator: torch.Generator | None = None
    ) -> None:
        """Sample targets from the model's predictive distribution and call
        :meth:`fisher_backward` on their mean negative log-likelihood.

        Args:
            outputs: logits (``"categorical"``, shape (N, C)) or means (``"gaussian"``, unit
                variance, any shape with N first).
            likelihood: ``"categorical"`` or ``"gaussian"``.
            generator: random generator for the samples.
        """
        with torch.no_grad():
            if likelihood == "categorical":
                probs = torch.softmax(outputs.detach().float(), dim=-1)
                y = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
                y = y.reshape(outputs.shape[:-1])
            elif likelihood == "gaussian":
                noise = torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype,
                                    device=outputs.device)  # fmt: skip
                y = outputs.detach() + noise
            else:
                raise ValueError(f"KFAC: unknown likelihood {likelihood!r}; valid: 'categorical', 'gaussian'")
        if likelihood == "categorical":
            loss = nnf.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), y.reshape(-1))
        else:
            loss = 0.5 * ((outputs - y) ** 2).reshape(outputs.shape[0], -1).sum(1).mean()
        self.fisher_backward(loss)

    # -- factors and inverses ------------------------------------------------------------------

    def _batch_factors(self) -> list[tuple[Tensor | None, Tensor | None]]:
        """This step's (A, G) estimate of each layer, averaged over the process group if any."""
        local = []
        for layer in self._layers.values():
            new_a = layer.a_sum.div_(layer.a_rows) if layer.a_sum is not None and layer.a_rows > 0 else None
            new_g = layer.g_sum.div_(layer.g_count) if layer.g_sum is not None and layer.g_count > 0 else None
            layer.a_sum, layer.a_rows, layer.g_sum, layer.g_count = None, 0, None, 0
            local.append((new_a, new_g))
        if self._group is None or not self._layers:
            return local
        layers = list(self._layers.values())
        t0 = time.perf_counter()
        flat = kfd.all_reduce_factors(
            [f for pair in local for f in pair],
            [d for layer in layers for d in (layer.dim_a, layer.dim_g)],
            [layer.dtype for layer in layers for _ in (0, 1)],
            self._device,
            self._group,
            bucket_bytes=self._bucket_bytes,
        )
        self._comm_seconds += time.perf_counter() - t0
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(layers))]

    @property
    def _device(self) -> torch.device:
        return next(iter(self._layers.values())).module.weight.device

    def _update_factors(self) -> None:
        eps = self.factor_decay
        for layer, (new_a, new_g) in zip(self._layers.values(), self._batch_factors(), strict=True):
            bad = [n for n, f in (("A", new_a), ("G", new_g)) if f is not None and not bool(torch.isfinite(f).all())]
            if bad:
                # a NaN/inf batch statistic would poison the moving average for good: skip
                # this refresh and keep the previous factors
                warnings.warn(
                    f"KFAC: non-finite {' and '.join(bad)} statistics for layer {layer.name}; "
                    "this factor update is skipped and the previous factors are kept",
                    RuntimeWarning,
                    stacklevel=4,
                )
                continue
            if self.factor_init == "identity":  # kfac-pytorch's start: F ← ε I + (1 − ε) F_batch
                if new_a is not None and layer.a is None:
                    layer.a = torch.eye(layer.dim_a, dtype=layer.dtype, device=self._device)
                if new_g is not None and layer.g is None:
                    layer.g = torch.eye(layer.dim_g, dtype=layer.dtype, device=self._device)
            if new_a is not None:
                layer.a = new_a if layer.a is None else layer.a.lerp_(new_a, 1 - eps)
            if new_g is not None:
                layer.g = new_g if layer.g is None else layer.g.lerp_(new_g, 1 - eps)

    def _decompositions(
        self, todo: list[tuple[_Layer, Tensor, Tensor]]
    ) -> list[tuple[tuple[Eigen | None, str], tuple[Eigen | None, str]]]:
        """``((eig_a, how_a), (eig_g, how_g))`` for each ``(layer, A, G)``: here, or shared out over the ranks."""
        if self._group is None or self.assignment == "compute_all" or not todo:
            return [(eigh_robust(a), eigh_robust(g)) for _, a, g in todo]
        jobs = [kfd.FactorJob((layer.name, k), d, layer.dtype)
                for layer, _, _ in todo for k, d in (("a", layer.dim_a), ("g", layer.dim_g))]  # fmt: skip
        owners = kfd.assign_round_robin(jobs, self._world)
        local: dict[int, tuple[Tensor, Tensor, float] | None] = {}
        for i, job in enumerate(jobs):
            if owners[i] == self._rank:
                _, a, g = todo[i // 2]
                eig, how = eigh_robust(a if job.key[1] == "a" else g)
                local[i] = None if eig is None else (eig.values, eig.vectors, kfd.OK if how == "ok" else kfd.FALLBACK)
        t0 = time.perf_counter()
        shared = kfd.broadcast_decompositions(jobs, owners, local, self._rank, self._group, self._device)
        self._comm_seconds += time.perf_counter() - t0

        def unpack(res: tuple[Tensor, Tensor, float] | None) -> tuple[Eigen | None, str]:
            if res is None:
                return None, "eigh failed on the rank that owns this factor"
            return Eigen(res[0], res[1]), "ok" if res[2] == kfd.OK else "fallback"

        return [(unpack(shared[2 * i]), unpack(shared[2 * i + 1])) for i in range(len(todo))]

    def _update_inverses(self, force: bool) -> tuple[int, list[str]]:
        fallbacks, failed = 0, []
        todo = [(layer, layer.a, layer.g) for layer in self._layers.values()
                if layer.a is not None and layer.g is not None and (force or layer.eig_a is None)]  # fmt: skip
        for (layer, _, _), ((eig_a, how_a), (eig_g, how_g)) in zip(todo, self._decompositions(todo), strict=True):
            fallbacks += (how_a not in ("ok",) and eig_a is not None) + (how_g not in ("ok",) and eig_g is not None)
            if eig_a is None or eig_g is None:
                failed.append(layer.name)
                warnings.warn(
                    f"KFAC: eigendecomposition failed for layer {layer.name} "
                    f"({how_a if eig_a is None else how_g}); it keeps plain gradients until "
                    "its factors recover",
                    RuntimeWarning,
                    stacklevel=5,  # _update_inverses < _precondition < precondition_grads < step
                )
                layer.eig_a = layer.eig_g = layer.inv_denom = None
                continue
            layer.eig_a, layer.eig_g = eig_a, eig_g
            layer.inv_denom = None
        return fallbacks, failed

    @staticmethod
    def _grad_matrix(layer: _Layer) -> Tensor | None:
        w = layer.module.weight
        if w.grad is None:
            return None
        gm = w.grad.reshape(w.shape[0], -1)
        b = layer.module.bias
        if b is not None:
            gb = b.grad if b.grad is not None else torch.zeros_like(b)
            gm = torch.cat([gm, gb.reshape(-1, 1)], dim=1)
        return gm

    @staticmethod
    def _write_grad_matrix(layer: _Layer, mat: Tensor) -> None:
        w = layer.module.weight
        b = layer.module.bias
        if b is not None:
            wg, bg = mat[:, :-1], mat[:, -1]
            if b.grad is None:
                b.grad = bg.reshape(b.shape).clone()
            else:
                b.grad.copy_(bg.reshape(b.shape))
        else:
            wg = mat
        assert w.grad is not None
        w.grad.copy_(wg.reshape(w.shape))

    # -- the step ------------------------------------------------------------------------------

    def precondition_grads(self) -> tuple[float, int, int, list[str]]:
        """Update factors/inverses as scheduled and replace ``.grad`` by ν (G⊗A + λI)⁻¹ ∇.

        Returns:
            ``(ν, preconditioned layers, eigen fallbacks, failed layer names)``.
        """
        params = [p for g in self.param_groups for p in g["params"]]
        if all(p.grad is None for p in params):
            raise RuntimeError("KFAC: no parameter has a gradient; call loss.backward() first")
        with torch.no_grad():
            return self._precondition(params)

    def _precondition(self, params: list[Tensor]) -> tuple[float, int, int, list[str]]:
        wd = float(self.param_groups[0]["weight_decay"])  # a scheduler edits the group, not defaults
        keep_raw = self.adaptive_damping and not self.preconditioner_only
        raw: dict[int, Tensor] = {}
        if self.allreduce_grads and self._group is not None:
            # every rank must send the same layout: a missing gradient travels as zeros
            grads = []
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
            t0 = time.perf_counter()
            kfd.all_reduce_mean(grads, self._group, bucket_bytes=self._bucket_bytes)
            self._comm_seconds += time.perf_counter() - t0
        for p in params:
            if p.grad is None:
                continue
            if wd:
                p.grad.add_(p, alpha=wd)
            if keep_raw:
                raw[id(p)] = p.grad.clone()
        if self._k % self.factor_interval == 0:
            self._update_factors()
        for layer in self._layers.values():
            layer.outputs.clear()
        fallbacks, failed = self._update_inverses(force=self._k % self.inverse_interval == 0)
        done = 0
        inners: list[Tensor] = []  # ⟨∇̃, ∇⟩ pieces for the KL clip
        handled: set[int] = set()
        for layer in self._layers.values():
            if layer.eig_a is None or layer.eig_g is None:
                if layer.name not in failed and layer.a is not None:
                    failed.append(layer.name)
                continue
            gm = self._grad_matrix(layer)
            if gm is None:
                continue
            if layer.inv_denom is None or layer.denom_damping != self.damping:
                outer = torch.outer(layer.eig_g.values, layer.eig_a.values)
                layer.inv_denom = 1.0 / (outer + self.damping)
                layer.denom_damping = self.damping
            pre = precondition(gm.to(layer.dtype), layer.eig_a, layer.eig_g, self.damping,
                               inv_denom=layer.inv_denom).to(gm.dtype)  # fmt: skip
            if self.kl_clip is not None:  # in float64: ⟨∇̃, ∇⟩ of a large float32 gradient overflows
                inners.append(torch.dot(pre.reshape(-1).double(), gm.reshape(-1).double()))
            self._write_grad_matrix(layer, pre)
            handled.update(id(p) for p in layer.params)
            done += 1
        nu = 1.0
        if self.kl_clip is not None:
            inners += [torch.dot(p.grad.reshape(-1).double(), p.grad.reshape(-1).double()) for p in params
                       if p.grad is not None and id(p) not in handled]  # fmt: skip
            inner = float(torch.stack(inners).sum()) if inners else 0.0
            nu = kl_clip_scale(inner, float(self.param_groups[0]["lr"]), self.kl_clip)
            if nu < 1.0:
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(nu)
        self._raw_grads = raw
        return nu, done, fallbacks, failed

    def _quadratic_model(self, deltas: dict[int, Tensor]) -> float:
        """gᵀδ + ½ δᵀ(F̂ + λI)δ with F̂ the K-FAC blocks (curvature of other parameters: λ only)."""
        lin = sum(float((self._raw_grads[i] * d).sum()) for i, d in deltas.items() if i in self._raw_grads)
        quad = self.damping * sum(float((d * d).sum()) for d in deltas.values())
        for layer in self._layers.values():
            if layer.a is None or layer.g is None:
                continue
            w = layer.module.weight
            if id(w) not in deltas:
                continue
            dm = deltas[id(w)].reshape(w.shape[0], -1)
            b = layer.module.bias
            if b is not None:
                db = deltas.get(id(b), torch.zeros_like(b))
                dm = torch.cat([dm, db.reshape(-1, 1)], dim=1)
            dm = dm.to(layer.dtype)
            quad += float((dm * (layer.g @ dm @ layer.a)).sum())
        return lin + 0.5 * quad

    def step(self, closure: Callable[[], Any] | None = None) -> Tensor | None:  # type: ignore[override]
        """Precondition the gradients and (unless ``preconditioner_only``) take a step.

        Args:
            closure: optional; zeroes the gradients, computes the loss, calls backward and
                returns the loss. Needed for ``adaptive_damping`` (it is called again, without
                collecting statistics, at the new parameters).

        Returns:
            The closure's loss (before the step), if a closure was given.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lam = self.damping
        self._comm_seconds = 0.0
        nu, done, fallbacks, failed = self.precondition_grads()
        rho = math.nan
        skipped = False
        if not self.preconditioner_only:
            adapt = self.adaptive_damping and closure is not None and (self._k + 1) % self.damping_interval == 0
            # Every new value (momentum buffer, parameter) is formed out of place and checked before
            # anything is written, so a non-finite step leaves the optimizer exactly as it was.
            updates: list[tuple[Tensor, Tensor, Tensor | None]] = []  # (p, new p, new momentum buffer)
            deltas: dict[int, Tensor] = {}
            with torch.no_grad():
                for group in self.param_groups:
                    lr, mom = float(group["lr"]), float(group["momentum"])
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        d_p, new_buf = p.grad, None
                        if mom:
                            buf = self.state[p].get("momentum_buffer")
                            new_buf = d_p.clone() if buf is None else buf.mul(mom).add_(d_p)
                            d_p = new_buf
                        delta = -lr * d_p
                        if adapt:
                            deltas[id(p)] = delta
                        updates.append((p, p + delta, new_buf))
                checks = [torch.isfinite(t).all() for _, new_p, buf in updates for t in (new_p, buf) if t is not None]
                if checks:  # one device sync (parameters may live on several devices)
                    skipped = not bool(torch.stack([c.to(checks[0].device) for c in checks]).all())
            if skipped:
                warnings.warn(
                    "KFAC: a non-finite gradient, momentum or parameter update (NaN/inf inputs or loss, or a step "
                    "too large for the dtype); the step is skipped and the parameters are unchanged",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                old = [(p.clone(), self.state[p].get("momentum_buffer")) for p, _, _ in updates] if adapt else []
                self._commit(updates)
                if adapt:
                    assert loss is not None and closure is not None
                    predicted = self._quadratic_model(deltas)
                    self._suspended = True
                    try:
                        with torch.enable_grad():
                            new_loss = float(torch.as_tensor(closure()).detach())
                    finally:
                        self._suspended = False
                    actual = self._mean_over_ranks(new_loss) - self._mean_over_ranks(
                        float(torch.as_tensor(loss).detach())
                    )
                    rho = actual / predicted if predicted < 0 else -math.inf
                    self._lm.update(-actual, -predicted)
                    self.damping = self._lm.value
                    if not math.isfinite(new_loss):  # finite parameters, non-finite loss: undo the step
                        skipped = True
                        with torch.no_grad():
                            for (p, _, _), (p_old, buf_old) in zip(updates, old, strict=True):
                                p.copy_(p_old)
                                if buf_old is None:
                                    self.state[p].pop("momentum_buffer", None)
                                else:
                                    self.state[p]["momentum_buffer"] = buf_old
            if skipped:
                self.nonfinite_steps += 1
        self.stats = KFACStats(nu, lam, done, fallbacks, tuple(failed), rho, skipped, self._comm_seconds)
        self._k += 1
        return loss

    def _mean_over_ranks(self, value: float) -> float:
        """The mean of a rank's loss over the process group (so λ adapts alike everywhere)."""
        if self._group is None:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device)
        t0 = time.perf_counter()
        kfd.all_reduce_mean([t], self._group, bucket_bytes=self._bucket_bytes)
        self._comm_seconds += time.perf_counter() - t0
        return float(t)

    @torch.no_grad()
    def _commit(self, updates: list[tuple[Tensor, Tensor, Tensor | None]]) -> None:
        """Write checked new parameters and momentum buffers."""
        for p, new_p, new_buf in updates:
            p.copy_(new_p)
            if new_buf is not None:
                self.state[p]["momentum_buffer"] = new_buf

    def state_dict(self) -> dict[str, Any]:
        """The torch.optim state plus the factors, λ, the step count and the skipped steps."""
        sd = super().state_dict()
        sd["kfac"] = {
            "step": self._k,
            "damping": self.damping,
            "nonfinite_steps": self.nonfinite_steps,
            "factors": {layer.name: (layer.a, layer.g) for layer in self._layers.values()},
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; eigendecompositions are recomputed at the next step."""
        sd = dict(state_dict)
        extra = sd.pop("kfac", None)
        super().load_state_dict(sd)
        if extra is None:
            return
        self._k = int(extra["step"])
        self.damping = float(extra["damping"])
        self.nonfinite_steps = int(extra.get("nonfinite_steps", 0))
        self._lm.load_state_dict({"value": self.damping})
        for layer in self._layers.values():
            a, g = extra["factors"].get(layer.name, (None, None))
            layer.a = None if a is None else a.clone()
            layer.g = None if g is None else g.clone()
            layer.eig_a = layer.eig_g = layer.inv_denom = None

    def remove_hooks(self) -> None:
        """Detach the forward hooks from the model (the optimizer stops collecting)."""
        for layer in self._layers.values():
            for h in layer.handles:
                h.remove()
            layer.handles.clear()

    def factors(self) -> dict[str, tuple[Tensor | None, Tensor | None]]:
        """The current (A, G) of each preconditioned layer, by layer name."""
        return {layer.name: (layer.a, layer.g) for layer in self._layers.values()}
