"""K-FAC: Kronecker-factored approximate curvature for the common layers, and EKFAC.

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
EKFAC (the same paper) keeps the eigenbases and replaces g aᵀ by the second moments of the
per-example gradients in them. Grouped convolutions get one block per group, 1-D
convolutions are 2-D ones of height 1, ``nn.Embedding`` is a Linear layer on one-hot inputs
(A diagonal: the token frequencies), affine norm layers get the exact diagonal Fisher of
their weight and bias, and ``nn.LSTM``/``nn.GRU`` one block per weight matrix with statistics over
the time steps (independence across time, :mod:`natrl.optim.kfac_recurrent`).

Pieces, all usable on their own (ACKTR reuses them with a policy's sampled Fisher):

* pure functions: :func:`linear_factors`, :func:`conv_factors`, :func:`conv2d_factors`,
  :func:`embedding_factors` (factor contributions from inputs and output gradients),
  :func:`norm_fisher_diagonal`, :func:`ekfac_second_moments`, :func:`eigh_robust` (eigendecomposition with jitter then
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias, cast

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from natrl.linalg import LevenbergMarquardt
from natrl.optim import kfac_distributed as kfd
from natrl.optim.kfac_recurrent import RECURRENT_TYPES, recurrent_blocks, recurrent_unsupported, unroll
from natrl.optim.validation import check_int, check_real

__all__ = [
    "KFAC",
    "NORM_TYPES",
    "Eigen",
    "KFACStats",
    "conv2d_factors",
    "conv_factors",
    "conv_patches",
    "eigh_robust",
    "ekfac_second_moments",
    "embedding_factors",
    "g_factor",
    "kl_clip_scale",
    "linear_factors",
    "norm_fisher_diagonal",
    "normalized_inputs",
    "precondition",
]


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def _with_ones(a: Tensor) -> Tensor:
    return torch.cat([a, torch.ones(*a.shape[:-1], 1, dtype=a.dtype, device=a.device)], dim=-1)


SCALES = ("per_example", "batch_mean")
METHODS = ("eigen", "inverse", "ekfac")


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


_Conv: TypeAlias = "nn.Conv1d | nn.Conv2d"


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if len(v) == 2 else (1, int(v[0]))


def _conv_padding(conv: _Conv) -> tuple[int, int]:
    """Symmetric zero padding (rows, columns) of a convolution ("same" resolved; 1-D: rows 0)."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":  # _supported admits an even total padding only
        kh, kw = _pair(conv.kernel_size)
        dh, dw = _pair(conv.dilation)
        return dh * (kh - 1) // 2 if len(conv.kernel_size) == 2 else 0, dw * (kw - 1) // 2
    ph, pw = _pair(conv.padding)
    return (ph if len(conv.padding) == 2 else 0), pw


def conv_patches(inputs: Tensor, conv: _Conv, group: int = 0) -> Tensor:
    """Unfolded input patches of a ``Conv1d``/``Conv2d`` for one channel group.

    Args:
        inputs: the layer input, shape (N, C_in, L) or (N, C_in, H, W).
        conv: the layer.
        group: which of the ``conv.groups`` input-channel groups.

    Returns:
        Shape (N, L_out, C_in/groups · k…), each row ordered like
        ``weight[group rows].reshape(rows, -1)``.
    """
    x = inputs.unsqueeze(2) if inputs.dim() == 3 else inputs
    if conv.groups > 1:
        c = conv.in_channels // conv.groups
        x = x[:, group * c : (group + 1) * c]
    cols = nnf.unfold(x, _pair(conv.kernel_size), dilation=_pair(conv.dilation), padding=_conv_padding(conv),
                      stride=_pair(conv.stride))  # fmt: skip
    return cols.transpose(1, 2)


def _conv_out_rows(grad_outputs: Tensor, conv: _Conv, group: int = 0) -> Tensor:
    """Output gradients of one channel group as (N, L_out, C_out/groups)."""
    go = grad_outputs
    if conv.groups > 1:
        c = conv.out_channels // conv.groups
        go = go[:, group * c : (group + 1) * c]
    return go.reshape(go.shape[0], go.shape[1], -1).transpose(1, 2)


def conv_factors(
    inputs: Tensor, grad_outputs: Tensor | None, conv: _Conv, *, group: int = 0, scale: str = "per_example"
) -> tuple[Tensor, Tensor | None]:
    """K-FAC (KFC) factor estimates of one group's block of an ``nn.Conv1d``/``nn.Conv2d``.

    A = (1/(N L)) Σ_{n,t} ā_{n,t} ā_{n,t}ᵀ over the unfolded patches ā of the group's input
    channels (plus 1 with a bias) and G = N Σ_{n,t} ĝ_{n,t} ĝ_{n,t}ᵀ over the L output
    locations of the group's output channels (the L·Ḡ of Grosse & Martens 2016 with per-example
    gradients N ĝ), so that for a 1 × 1 output map the factors equal those of the equivalent
    ``nn.Linear``. A grouped convolution's weight is block diagonal over its groups (group j
    maps input channels j·C_in/k… to output channels j·C_out/k…), so its Fisher block is one
    Kronecker product per group. With ``scale="batch_mean"``, G = (1/(N L)) Σ_{n,t} ĝ ĝᵀ (see
    :func:`g_factor`; kfac-pytorch further divides both its conv factors by L²).

    Args:
        inputs: the layer input, shape (N, C_in, L) or (N, C_in, H, W).
        grad_outputs: ∂L/∂output, shape (N, C_out, L') or (N, C_out, H', W'), or None.
        conv: the layer (kernel, stride, padding, dilation, groups, bias).
        group: the channel group (0 ≤ group < ``conv.groups``).
        scale: ``"per_example"`` or ``"batch_mean"``.

    Returns:
        ``(A, G)`` of shapes (C_in/groups · k… [+1], …) and (C_out/groups, C_out/groups).
    """
    n = inputs.shape[0]
    patches = conv_patches(inputs, conv, group)
    a = patches.reshape(-1, patches.shape[-1])
    if conv.bias is not None:
        a = _with_ones(a)
    big_a = a.T @ a / a.shape[0]
    if grad_outputs is None:
        return big_a, None
    g = _conv_out_rows(grad_outputs, conv, group)
    return big_a, g_factor(g.reshape(-1, g.shape[-1]), n, scale)


def conv2d_factors(
    inputs: Tensor, grad_outputs: Tensor | None, conv: nn.Conv2d, *, scale: str = "per_example"
) -> tuple[Tensor, Tensor | None]:
    """K-FAC factors of an ``nn.Conv2d`` with one group: :func:`conv_factors` with ``group=0``.

    Args:
        inputs: the layer input, shape (N, C_in, H, W).
        grad_outputs: ∂L/∂output, shape (N, C_out, H', W'), or None.
        conv: the layer.
        scale: ``"per_example"`` or ``"batch_mean"``.

    Returns:
        ``(A, G)`` of shapes (C_in kh kw [+1], …) and (C_out, C_out).
    """
    return conv_factors(inputs, grad_outputs, conv, scale=scale)


def embedding_factors(
    indices: Tensor,
    grad_outputs: Tensor | None,
    num_embeddings: int,
    *,
    batch_size: int | None = None,
    scale: str = "per_example",
) -> tuple[Tensor, Tensor | None]:
    """K-FAC factors of an ``nn.Embedding``: a diagonal A (token frequencies) and G.

    An embedding is a Linear layer on one-hot inputs e_k without bias, with the weight stored
    transposed (V × D, row k is token k's vector). The per-example gradient of W is
    Σ_t e_{k_t} ĝ_tᵀ and its Fisher block is approximated by A ⊗ G (row-major vec of W) with
    A = E[e_k e_kᵀ] = diag(p), p_k the frequency of token k among the R looked-up positions,
    and G from the output gradients as for a Linear layer (:func:`g_factor`). With one lookup
    per example the exact block is Σ_k p_k e_k e_kᵀ ⊗ E[ĝ ĝᵀ | k]: block diagonal over the
    tokens, so A's diagonal form loses nothing there and K-FAC's only approximation is
    E[ĝ ĝᵀ | k] ≈ G.

    Args:
        indices: the looked-up token ids, shape (N, …).
        grad_outputs: ∂L/∂output, shape (N, …, D), or None.
        num_embeddings: V.
        batch_size: N (``indices.shape[0]`` by default).
        scale: ``"per_example"`` or ``"batch_mean"``.

    Returns:
        ``(a, G)``: the diagonal of A, shape (V,), and G, shape (D, D).
    """
    n = indices.shape[0] if batch_size is None else batch_size
    flat = indices.reshape(-1)
    counts = torch.bincount(flat, minlength=num_embeddings)
    dtype = grad_outputs.dtype if grad_outputs is not None else torch.get_default_dtype()
    a = counts.to(dtype) / max(flat.numel(), 1)
    if grad_outputs is None:
        return a, None
    return a, g_factor(grad_outputs.reshape(-1, grad_outputs.shape[-1]), n, scale)


NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
"""The affine normalisation layers whose weight and bias get a diagonal Fisher block."""


def normalized_inputs(module: nn.Module, inputs: Tensor) -> Tensor:
    """x̂: what an affine norm layer multiplies by its weight (its output is x̂ ⊙ w + b).

    Batch and instance norms normalise with the statistics of the batch (training mode).
    """
    if isinstance(module, nn.LayerNorm):
        return nnf.layer_norm(inputs, module.normalized_shape, None, None, module.eps)
    if isinstance(module, nn.RMSNorm):
        return nnf.rms_norm(inputs, module.normalized_shape, None, module.eps)
    if isinstance(module, nn.GroupNorm):
        return nnf.group_norm(inputs, module.num_groups, None, None, module.eps)
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
        return nnf.batch_norm(inputs, None, None, None, None, True, 0.0, module.eps)
    if isinstance(module, nn.InstanceNorm1d | nn.InstanceNorm2d | nn.InstanceNorm3d):
        return nnf.instance_norm(inputs, eps=module.eps)
    raise TypeError(f"not an affine norm layer: {type(module).__name__}")


def norm_fisher_diagonal(
    module: nn.Module, inputs: Tensor, grad_outputs: Tensor, *, scale: str = "per_example"
) -> Tensor:
    """The diagonal Fisher block of an affine norm layer's [weight, bias], from one batch.

    The per-example gradients are exact and cheap: with x̂ the normalised input
    (:func:`normalized_inputs`) and ĝ the gradient of the batch-mean loss at the output,
    ∂ℓₙ/∂w = N Σ ĝₙ ⊙ x̂ₙ and ∂ℓₙ/∂b = N Σ ĝₙ, the sums over the positions that share a
    weight (sequence positions for LayerNorm / RMSNorm, spatial positions for batch, group and
    instance norms). ``"per_example"``: the mean of their squares, the exact diagonal of the
    empirical (or, with sampled targets, the true) Fisher; ``"batch_mean"``: 1/N² of it.

    Args:
        module: the norm layer (weight and bias define the order; either may be None).
        inputs: its input x.
        grad_outputs: ĝ, shaped like the output.
        scale: ``"per_example"`` or ``"batch_mean"``.

    Returns:
        The diagonal, shape (weight.numel() + bias.numel(),), weight first (flattened).
    """
    return _norm_diagonal_from(module, normalized_inputs(module, inputs), grad_outputs, scale)


_BATCHED_DIMS: dict[type[nn.Module], int] = {nn.Conv1d: 3, nn.Conv2d: 4}


def _check_batched(name: str, module: nn.Module, x: Tensor) -> None:
    """One TypeError for an unbatched input (torch's layers take one; K-FAC's statistics average over a batch)."""
    low = _BATCHED_DIMS.get(type(module), 2 if isinstance(module, nn.Linear) else 1)
    if x.dim() < low or (type(module) in _BATCHED_DIMS and x.dim() != low):
        raise TypeError(
            f"KFAC: layer {name!r} got an unbatched input of shape {tuple(x.shape)}; K-FAC averages its statistics "
            "over a batch: add the batch dimension (x.unsqueeze(0))"
        )


def _bias(module: nn.Module) -> Tensor | None:
    """A layer's trained bias parameter, None when it has none (``nn.Embedding`` and ``nn.RMSNorm`` have no
    attribute) or it is frozen (``requires_grad=False``: the block is the weight's alone, and the bias's ``.grad``
    stays None)."""
    return _trained(cast(Tensor | None, getattr(module, "bias", None)))


def _trained(bias: Tensor | None) -> Tensor | None:
    """``bias`` when it is trained, None when it is absent or frozen (then not part of the layer's block)."""
    return bias if bias is not None and bias.requires_grad else None


def _norm_diagonal_from(module: nn.Module, xhat: Tensor, go: Tensor, scale: str) -> Tensor:
    n = go.shape[0]
    w = cast(Tensor | None, module.weight)
    b = _bias(module)
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        shared = tuple(range(1, go.dim() - len(module.normalized_shape)))
    else:
        shared = tuple(range(2, go.dim()))
    parts = []
    if w is not None:
        s = go * xhat
        parts.append((s.sum(shared) if shared else s).reshape(n, -1))
    if b is not None:
        parts.append((go.sum(shared) if shared else go).reshape(n, -1))
    per = torch.cat(parts, dim=1)  # per-example gradients / N
    sq = (per * per).sum(0)
    return sq * n if scale == "per_example" else sq / n


def ekfac_second_moments(
    inputs: Tensor, grad_outputs: Tensor, eig_a: Eigen, eig_g: Eigen, *, scale: str = "per_example"
) -> Tensor:
    """EKFAC's diagonal: the second moments of per-example gradients in the Kronecker eigenbasis.

    George et al. 2018 ("Fast approximate natural gradient descent in a Kronecker-factored
    eigenbasis", NeurIPS, §3): with A = Q_A diag(a) Q_Aᵀ and G = Q_G diag(g) Q_Gᵀ, K-FAC's
    block in that basis is diag(g aᵀ); EKFAC replaces g aᵀ by the exact second moments
    S = E_n[(Q_Gᵀ ∇ₙ Q_A)²] of the per-example gradients ∇ₙ = N Σ_t ĝ_{n,t} ā_{n,t}ᵀ (the
    best diagonal in the fixed basis). ``"batch_mean"`` divides by N R, as :func:`g_factor`.

    Args:
        inputs: ā, shape (N, T, d_a) (T rows per example: sequence positions, conv locations).
        grad_outputs: ĝ, gradients of the batch-mean loss, shape (N, T, d_g).
        eig_a: eigendecomposition of A.
        eig_g: eigendecomposition of G.
        scale: ``"per_example"`` or ``"batch_mean"``.

    Returns:
        S, shape (d_g, d_a).
    """
    n, t = inputs.shape[0], inputs.shape[1]
    a = inputs @ eig_a.vectors
    g = grad_outputs @ eig_g.vectors
    if t == 1:
        sq = (g[:, 0] ** 2).T @ (a[:, 0] ** 2)
    else:
        proj = torch.einsum("ntg,nta->nga", g, a)
        sq = (proj * proj).sum(0)
    return sq * n if scale == "per_example" else sq / (n * t)


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


Schedule: TypeAlias = "float | Callable[[int], float]"
"""A constant, or a function of the step count k (0 at the first :meth:`KFAC.step`)."""


@dataclass
class _Layer:
    """Factors and their decompositions for one Fisher block (a layer, or one group of a conv).

    ``kind`` is ``"kron"`` (Linear, Conv1d/2d, one weight of a recurrent layer: A and G matrices),
    ``"embedding"`` (A a vector: the diagonal, G a matrix) or ``"diag"`` (affine norms: the diagonal
    Fisher in ``g``, no A). The block's parameters are the module's attributes ``weight_name`` and
    ``bias_name`` (a recurrent layer has one pair per block).
    """

    name: str
    module: nn.Module
    dtype: torch.dtype  # of the factors and decompositions
    kind: str
    dim_a: int
    dim_g: int
    group: int = 0
    rows: slice = field(default_factory=lambda: slice(None))  # the weight rows (output channels) of this block
    damping: Schedule | None = None  # per-layer λ overriding the optimizer's
    weight_name: str = "weight"
    bias_name: str = "bias"
    a: Tensor | None = None
    g: Tensor | None = None
    a_sum: Tensor | None = None
    a_rows: int = 0
    g_sum: Tensor | None = None
    g_count: int = 0
    eig_a: Eigen | None = None
    eig_g: Eigen | None = None
    inv_a: Tensor | None = None  # method="inverse": damped factor inverses
    inv_g: Tensor | None = None
    scales: Tensor | None = None  # method="ekfac": second moments in the eigenbasis
    refreshed: bool = False  # the eigenbasis changed in this step (EKFAC restarts its average)
    pending: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # EKFAC: this step's (ā, ĝ)
    inv_denom: Tensor | None = None  # 1 / (g aᵀ + λ) in the eigenbasis, for the current λ
    denom_damping: float = math.nan
    outputs: list[Tensor] = field(default_factory=list)  # outputs of this step's forwards
    handles: list[RemovableHandle] = field(default_factory=list)

    @property
    def weight(self) -> Tensor:
        return cast(Tensor, getattr(self.module, self.weight_name))

    @property
    def bias(self) -> Tensor | None:
        return _trained(cast(Tensor | None, getattr(self.module, self.bias_name, None)))

    @property
    def params(self) -> list[Tensor]:
        b = self.bias
        return [self.weight] if b is None else [self.weight, b]

    @property
    def ready(self) -> bool:
        """Factors present (A is not used by diagonal blocks)."""
        return self.g is not None and (self.kind == "diag" or self.a is not None)

    @property
    def decomposed(self) -> bool:
        if self.kind == "diag":
            return self.g is not None
        if self.inv_g is not None:
            return True
        return self.eig_g is not None and (self.kind == "embedding" or self.eig_a is not None)

    def clear_decompositions(self) -> None:
        self.eig_a = self.eig_g = self.inv_a = self.inv_g = self.inv_denom = self.scales = None


class KFACStats(NamedTuple):
    """What one :meth:`KFAC.step` did.

    Attributes:
        kl_scale: ν applied to the preconditioned gradients (1.0 without KL clipping).
        damping: λ used (the optimizer's; per-layer values may differ).
        preconditioned_layers: Fisher blocks whose gradients were preconditioned (a grouped
            convolution counts one per group).
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


def _kind(module: nn.Module) -> str:
    if type(module) is nn.Embedding:
        return "embedding"
    if type(module) in NORM_TYPES:
        return "diag"
    return "kron"


def _supported(module: nn.Module) -> str | None:
    """None when K-FAC handles the module, else why not."""
    t = type(module)
    if t is nn.Linear or t in NORM_TYPES:
        return None
    if t is nn.Embedding:
        return "sparse gradients" if cast(nn.Embedding, module).sparse else None
    if t in RECURRENT_TYPES:
        return recurrent_unsupported(module)
    if t is nn.Conv1d or t is nn.Conv2d:
        conv = cast(_Conv, module)
        if conv.padding_mode != "zeros":
            return f"padding_mode={conv.padding_mode!r}"
        if conv.padding == "same":
            k, d = _pair(conv.kernel_size), _pair(conv.dilation)
            if any(di * (ki - 1) % 2 for ki, di in zip(k, d, strict=True)):
                return "padding='same' with an even kernel (asymmetric padding)"
        return None
    return "unsupported layer type"


def _blocks(name: str, module: nn.Module, dtype: torch.dtype) -> list[_Layer]:
    """The Fisher blocks of a supported layer (one per group for a grouped convolution, two per layer of a
    recurrent one)."""
    if type(module) in RECURRENT_TYPES:
        return [_Layer(f"{name}.{suffix}", module, dtype, "kron", d_a, d_g, weight_name=w, bias_name=b)
                for suffix, w, b, d_a, d_g in recurrent_blocks(module)]  # fmt: skip
    kind = _kind(module)
    w = cast(Tensor, module.weight)
    has_bias = _bias(module) is not None
    if kind == "diag":
        b = _bias(module)
        return [_Layer(name, module, dtype, kind, 0, w.numel() + (0 if b is None else b.numel()))]
    if kind == "embedding":
        return [_Layer(name, module, dtype, kind, int(w.shape[0]), int(w.shape[1]))]
    groups = int(getattr(module, "groups", 1))
    rows = w.shape[0] // groups
    dim_a = int(w[0].numel()) + has_bias
    out = []
    for j in range(groups):
        block = f"{name}[{j}]" if groups > 1 else name
        out.append(_Layer(block, module, dtype, kind, dim_a, rows, group=j, rows=slice(j * rows, (j + 1) * rows)))
    return out


def _damped_inverse(m: Tensor, shift: float) -> Tensor | None:
    """(M + shift·I)⁻¹ of a PSD factor: Cholesky, else through :func:`eigh_robust`."""
    eye = torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    chol, info = torch.linalg.cholesky_ex(0.5 * (m + m.T) + shift * eye)
    if int(info) == 0:
        inv = torch.cholesky_inverse(chol)
        if bool(torch.isfinite(inv).all()):
            return inv
    eig, _ = eigh_robust(m)
    if eig is None:
        return None
    return (eig.vectors / (eig.values + shift)) @ eig.vectors.T


def _pi(a_trace_mean: float, g_trace_mean: float) -> float:
    """π of factored Tikhonov damping (Martens & Grosse 2015, §6.3): √((tr A/d_A)/(tr G/d_G))."""
    if a_trace_mean > 0 and g_trace_mean > 0 and math.isfinite(a_trace_mean / g_trace_mean):
        return math.sqrt(a_trace_mean / g_trace_mean)
    return 1.0


def _scheduled(value: Any, k: int) -> tuple[Any, str]:
    """The value of a constant or a schedule at step k, and how to name it in an error."""
    if callable(value):
        return value(k), f" (schedule at step {k})"
    return value, ""


def _check_damping(where: str, name: str, value: Any, k: int) -> float:
    v, at = _scheduled(value, k)
    return check_real(where, name + at, v, low=0.0, low_open=True)


def _check_decay(value: Any, k: int) -> float:
    v, at = _scheduled(value, k)
    return check_real("KFAC", "factor_decay" + at, v, low=0.0, high=1.0, high_open=True)


def _check_kl(value: Any, k: int) -> float:
    v, at = _scheduled(value, k)
    return check_real("KFAC", "kl_clip" + at, v, low=0.0, low_open=True)


class KFAC(Optimizer):
    """K-FAC natural-gradient optimizer or preconditioner for a model's common layers.

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

    Fisher blocks by layer type (each layer's parameters form one block, cross-layer terms are
    dropped):

    * ``nn.Linear`` (any leading dimensions: the rows of a sequence share the factors, so the
      q/k/v/output projections of a hand-written attention block are covered),
      ``nn.Conv1d`` and ``nn.Conv2d`` (zero padding; ``"same"`` with symmetric padding;
      grouped: one Kronecker block per group, named ``layer[j]``): G ⊗ A;
    * ``nn.Embedding`` (dense gradients): diag(token frequencies) ⊗ G
      (:func:`embedding_factors`);
    * affine norms (``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``BatchNorm1d/2d/3d``,
      ``InstanceNorm1d/2d/3d`` with affine parameters): the exact diagonal of the Fisher of
      [weight, bias] from per-example gradients (:func:`norm_fisher_diagonal`);
    * ``nn.LSTM`` and ``nn.GRU`` (unidirectional, no projection, no dropout between layers): per
      layer ℓ, G ⊗ A for [weight_ih, bias_ih] (``name.ih_lℓ``) and for [weight_hh, bias_hh]
      (``name.hh_lℓ``), A and G over every (sequence, step) row (independence across time,
      :mod:`natrl.optim.kfac_recurrent`); a collecting forward reruns the layer with the cell
      equations written out and returns their outputs (:meth:`recurrent_forward`).

    Other layers (``nn.MultiheadAttention``, whose projections are used functionally, not
    called as modules) keep their plain gradients; they are named in a warning. Parameters
    without a gradient are skipped.

    ``method`` picks how the Kronecker blocks are inverted: ``"eigen"`` (eigendecompositions,
    Tikhonov damping of G ⊗ A exact in the eigenbasis), ``"inverse"`` (explicit inverses of
    the factors with factored Tikhonov damping (A + π√λ I)⁻¹ and (G + √λ/π I)⁻¹,
    Martens & Grosse 2015 §6.3, recomputed with the λ of the refresh step, as kfac-pytorch's
    inverse method) or ``"ekfac"`` (George et al. 2018: the eigenbases of A and G with the
    diagonal re-estimated every factor update as the second moments of per-example gradients
    in that basis, :func:`ekfac_second_moments`; after a refresh of the eigenbasis the moving
    average restarts from K-FAC's diagonal g aᵀ). Embedding and norm blocks are the same for
    all three methods.

    ``damping``, ``factor_decay`` and ``kl_clip`` take a number or a schedule: a function of
    the step count k (0, 1, … at each :meth:`step`) returning the value for that step, checked
    like the constant (e.g. ``damping=lambda k: max(1e-3, 0.1 * 0.99**k)``).
    ``layer_damping`` gives chosen layers their own λ (a number or a schedule), keyed by the
    layer names of :attr:`layers` (without a group's ``[j]``).

    Data parallel (``torch.distributed``): when a process group of more than one rank exists
    (or one is passed as ``process_group``), the factors are averaged over the ranks at every
    factor update (bucketed all-reduce of their upper triangles) and the eigendecompositions
    are dealt out to ranks and broadcast (``assignment="round_robin"``) or computed everywhere
    (``"compute_all"``); see :mod:`natrl.optim.kfac_distributed`. ``grad_worker_fraction`` f < 1
    (with ``"round_robin"``) is KAISA's knob towards memory: each Kronecker or embedding block is
    decomposed, stored and preconditioned by k = max(1, round(f·P)) ranks only, which broadcast
    its preconditioned gradient to the others (f = 1/P: every decomposition on one rank; the
    factors themselves stay on every rank). Every rank must call
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
        model: the module whose supported layers are preconditioned; all its trainable
            parameters are the optimizer's parameters.
        lr: the step size η (also used by the KL clip in preconditioner mode: pass the
            learning rate of the optimizer that follows).
        momentum: SGD momentum on the preconditioned gradient (optimizer mode).
        weight_decay: L2 coefficient added to the gradients before preconditioning.
        damping: Tikhonov λ > 0 added to G ⊗ A, or a schedule k ↦ λ.
        factor_decay: ε of the moving averages F ← ε F + (1 − ε) F_batch, or a schedule.
        factor_interval: collect statistics and update factors every this many steps.
        inverse_interval: recompute the eigendecompositions every this many steps.
        kl_clip: κ of the KL clip, or a schedule (None disables it).
        adaptive_damping: Levenberg–Marquardt adaptation of λ (Martens & Grosse 2015, §6.5;
            ω = (19/20)^damping_interval) from ρ computed with a closure; optimizer mode only.
        damping_interval: steps between damping adaptations (T₃).
        method: ``"eigen"``, ``"inverse"`` or ``"ekfac"`` (see above).
        layer_damping: per-layer λ (a number or a schedule) by layer name.
        fisher: ``"empirical"`` or ``"sampled"`` (see above).
        preconditioner_only: only rewrite ``.grad`` (no parameter update).
        scale: ``"per_example"`` (G = mean of per-example output-gradient outer products,
            independent of the batch size) or ``"batch_mean"`` (G of the batch-mean loss,
            1/N² of it for a batch of N: kfac-pytorch's convention, so its damping values carry
            over); see :func:`g_factor`.
        accumulation_steps: k backward passes per :meth:`step` whose losses are divided by k (gradient
            accumulation over micro-batches, as kfac-pytorch's ``accumulation_steps``): the statistics of the k
            passes are averaged, and under ``"per_example"`` the output gradients are multiplied back by k, so the
            factors are those of one batch of all the micro-batches (``"batch_mean"`` needs no correction).
        factor_init: ``"first_batch"`` (the moving averages start at the first batch's
            factors) or ``"identity"`` (they start at I, as in kfac-pytorch).
        factor_dtype: dtype of the factors and their decompositions; None: the weight's dtype
            when it is float32 or float64, else float32 (bf16/fp16 weights or autocast).
        grad_scaler: the ``torch.amp.GradScaler`` scaling the loss, if any (see above).
        process_group: ``"default"`` (the default group when ``torch.distributed`` is
            initialised), None (never communicate) or a process group.
        assignment: ``"round_robin"`` (each eigendecomposition on one rank, then broadcast) or
            ``"compute_all"`` (every rank decomposes every factor).
        grad_worker_fraction: f ∈ (0, 1], the share of the P ranks that hold each Kronecker or
            embedding block's decompositions and precondition its gradient (kfac-pytorch's
            name; KAISA, Pauloski et al. 2021, §3.2): k = max(1, round(f·P)) of them, which must
            divide P. 1 (the default) is ``"round_robin"``: every rank preconditions every block
            and the decompositions are broadcast to all; 1/P keeps each block's decompositions
            on one rank (memory-optimal) and broadcasts its preconditioned gradient every step.
            Below 1 it needs ``assignment="round_robin"`` and ``method`` ``"eigen"`` or
            ``"inverse"``, and, with a process group of several ranks, every process of the job
            builds the optimizer at the same time (it creates process groups once, with
            ``torch.distributed.new_group``). The gradients must then be the same on every rank
            (DDP, or ``allreduce_grads=True``): a rank receives the workers' preconditioned
            gradient for the blocks it does not hold. :attr:`KFACStats.fallbacks` then counts
            the fallbacks among the decompositions this rank holds.
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
            outside [0, 1), an interval < 1, kl_clip ≤ 0, NaN, inf; also a schedule's value,
            checked at construction for k = 0 and at each step); an unknown method or
            layer name; a damping schedule with ``adaptive_damping``. The message names it.
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
        damping: Schedule = 1e-3,
        factor_decay: Schedule = 0.95,
        factor_interval: int = 1,
        inverse_interval: int = 10,
        kl_clip: Schedule | None = 1e-3,
        adaptive_damping: bool = False,
        damping_interval: int = 5,
        fisher: str = "empirical",
        preconditioner_only: bool = False,
        scale: str = "per_example",
        accumulation_steps: int = 1,
        factor_init: str = "first_batch",
        factor_dtype: torch.dtype | None = None,
        grad_scaler: Any = None,
        process_group: Any = "default",
        assignment: str = "round_robin",
        grad_worker_fraction: float = 1.0,
        allreduce_grads: bool = False,
        bucket_cap_mb: float = 25.0,
        method: str = "eigen",
        layer_damping: Mapping[str, Schedule] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"KFAC: model must be an nn.Module, got {type(model).__name__}")
        for name, value, valid in (
            ("fisher", fisher, ("empirical", "sampled")),
            ("scale", scale, SCALES),
            ("factor_init", factor_init, ("first_batch", "identity")),
            ("assignment", assignment, kfd.ASSIGNMENTS),
            ("method", method, METHODS),
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
        self._damping_fn = damping if callable(damping) else None
        self._decay_fn = factor_decay if callable(factor_decay) else None
        self._kl_fn = kl_clip if callable(kl_clip) else None
        damping = _check_damping(w, "damping", damping, 0)
        factor_decay = _check_decay(factor_decay, 0)
        factor_interval = check_int(w, "factor_interval", factor_interval)
        inverse_interval = check_int(w, "inverse_interval", inverse_interval)
        self.accumulation_steps = check_int(w, "accumulation_steps", accumulation_steps)
        damping_interval = check_int(w, "damping_interval", damping_interval)
        if kl_clip is not None:
            kl_clip = _check_kl(kl_clip, 0)
        bucket_cap_mb = check_real(w, "bucket_cap_mb", bucket_cap_mb, low=0.0, low_open=True)
        grad_worker_fraction = check_real(w, "grad_worker_fraction", grad_worker_fraction, low=0.0, high=1.0,
                                          low_open=True)  # fmt: skip
        if grad_worker_fraction < 1.0 and (assignment != "round_robin" or method == "ekfac"):
            raise ValueError(
                "KFAC: grad_worker_fraction < 1 needs assignment='round_robin' and method 'eigen' or 'inverse', got "
                f"assignment={assignment!r}, method={method!r}"
            )
        for name, flag in (
            ("adaptive_damping", adaptive_damping),
            ("preconditioner_only", preconditioner_only),
            ("allreduce_grads", allreduce_grads),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"KFAC: {name} must be True or False, got {type(flag).__name__} {flag!r}")
        if adaptive_damping and self._damping_fn is not None:
            raise ValueError("KFAC: adaptive_damping adapts λ itself; it cannot be combined with a damping schedule")
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
        self.method = method
        self._group, self._rank, self._world = kfd.resolve_group(process_group)
        self.grad_worker_fraction = grad_worker_fraction
        self._workers: kfd.WorkerGroups | None = None
        workers = kfd.worker_count(grad_worker_fraction, self._world)
        if self._group is not None and workers < self._world:
            if self._world % workers:
                raise ValueError(
                    f"KFAC: grad_worker_fraction={grad_worker_fraction:g} gives {workers} gradient workers per "
                    f"layer, which do not divide the {self._world} ranks"
                )
            self._workers = kfd.WorkerGroups(self._group, self._rank, self._world, workers)
        self._bucket_bytes = int(bucket_cap_mb * 2**20)
        self._comm_seconds = 0.0
        omega = (19.0 / 20.0) ** damping_interval
        self._lm = LevenbergMarquardt(damping, increase=1.0 / omega, decrease=omega,
                                      min_value=min(1e-8, damping), max_value=max(1e4, damping))  # fmt: skip
        self._k = 0  # steps taken
        self.nonfinite_steps = 0  # steps skipped because a value was not finite (KFACStats.skipped)
        self._in_fisher_pass = False
        self._suspended = False
        self._warned_eval = False
        self.stats: KFACStats | None = None

        self._layers: dict[str, _Layer] = {}  # the Fisher blocks, by block name
        self._blocks_of: dict[nn.Module, list[_Layer]] = {}
        skipped: list[str] = []
        by_name: dict[str, list[_Layer]] = {}
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            why = _supported(module)
            if why is not None:
                skipped.append(f"{name or '<root>'} ({type(module).__name__}: {why})")
                continue
            wdt = own[0].dtype
            dtype = factor_dtype or (wdt if wdt in (torch.float32, torch.float64) else torch.float32)
            blocks = _blocks(name or "<root>", module, dtype)
            # eager under torch.compile: dynamo would trace the hook and the tensor hook it registers
            if type(module) in RECURRENT_TYPES:
                hook = module.register_forward_hook(torch.compiler.disable(self._recurrent_hook), with_kwargs=True)
            else:
                hook = module.register_forward_hook(torch.compiler.disable(self._forward_hook))
            blocks[0].handles.append(hook)
            self._blocks_of[module] = blocks
            by_name[name or "<root>"] = blocks
            for block in blocks:
                self._layers[block.name] = block
        if skipped:
            warnings.warn(
                "KFAC: layers left to plain gradients: " + ", ".join(skipped),
                UserWarning,
                stacklevel=2,
            )
        owner: dict[int, _Layer] = {}
        for layer in self._layers.values():
            for param in layer.params:
                other = owner.setdefault(id(param), layer)
                if other.module is not layer.module:  # (a grouped conv's blocks share their module's weight)
                    raise ValueError(
                        f"KFAC: layers {other.name!r} and {layer.name!r} share a parameter (tied weights), but "
                        "K-FAC preconditions each layer's gradient with its own block: give each layer its own weight"
                    )
        self.layers = [layer.name for layer in self._layers.values()]
        # grad_worker_fraction < 1: the worker group of each Kronecker / embedding block (diagonal blocks stay
        # on every rank), balanced by the elements of its decompositions
        self._shared = [i for i, layer in enumerate(self._layers.values()) if layer.kind != "diag"]
        self._owner_group: dict[str, int] = {}
        if self._workers is not None:
            shared = [list(self._layers.values())[i] for i in self._shared]
            costs = [b.dim_g * (b.dim_g + 1) + (b.dim_a if b.kind == "embedding" else b.dim_a * (b.dim_a + 1))
                     for b in shared]  # fmt: skip
            for b, j in zip(shared, kfd.assign_worker_groups(costs, self._workers.groups), strict=True):
                self._owner_group[b.name] = j
        if layer_damping is not None:
            for key, layer_lam in layer_damping.items():
                if key not in by_name:
                    raise ValueError(
                        f"KFAC: layer_damping names {key!r}, not a preconditioned layer; valid: "
                        + ", ".join(repr(k) for k in by_name)
                    )
                _check_damping(w, f"layer_damping[{key!r}]", layer_lam, 0)
                for block in by_name[key]:
                    block.damping = layer_lam

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
        if not inputs:
            name = self._blocks_of[module][0].name if module in self._blocks_of else type(module).__name__
            raise TypeError(
                f"KFAC: layer {name!r} was called with its input as a keyword argument, which its statistics hook "
                "does not see: pass the input positionally (layer(x))"
            )
        x = inputs[0]
        if not isinstance(x, Tensor) or not isinstance(output, Tensor):
            return
        if not isinstance(module.weight, nn.Parameter):
            # torch.func.functional_call (and the torch.func transforms run through it) swaps the module's
            # parameters for plain tensors: a pass at other parameters, not a data pass of this model
            return
        blocks = self._blocks_of.get(module)
        if blocks is None:  # a copy of the model (copy.deepcopy shares the hook function): not this optimizer's
            return
        _check_batched(blocks[0].name, module, x)
        kind, dtype = blocks[0].kind, blocks[0].dtype
        n = x.shape[0]
        ctx: list[Tensor] | Tensor | None = None
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            if kind == "embedding":
                layer = blocks[0]
                counts = torch.bincount(x.reshape(-1), minlength=layer.dim_a).to(dtype)
                layer.a_sum = counts if layer.a_sum is None else layer.a_sum + counts
                layer.a_rows += x.numel()
            elif kind == "diag":
                # bf16/fp16 activations under autocast: statistics in factor_dtype
                ctx = normalized_inputs(module, x.detach().to(dtype))
            else:
                xd = x.detach().to(dtype)
                kept: list[Tensor] = []
                for layer in blocks:
                    if isinstance(module, nn.Linear):
                        big_a, _ = linear_factors(xd, None, bias=_bias(module) is not None)
                        count = xd.numel() // xd.shape[-1]
                        if self.method == "ekfac":
                            rows = xd.reshape(n, -1, xd.shape[-1])
                            kept.append(rows if _bias(module) is None else _with_ones(rows))
                    else:
                        rows = conv_patches(xd, cast(_Conv, module), layer.group)
                        if _bias(module) is not None:
                            rows = _with_ones(rows)
                        flat = rows.reshape(-1, rows.shape[-1])
                        count = flat.shape[0]
                        big_a = flat.T @ flat / count
                        kept.append(rows)
                    layer.a_sum = big_a * count if layer.a_sum is None else layer.a_sum + big_a * count
                    layer.a_rows += count
                if self.method == "ekfac":
                    ctx = kept
        if output.requires_grad:
            output.register_hook(lambda go, module=module, n=n, ctx=ctx: self._grad_hook(module, n, go, ctx))
            blocks[0].outputs.append(output)

    def _grad_hook(self, module: nn.Module, n: int, go: Tensor, ctx: list[Tensor] | Tensor | None) -> None:
        if self._suspended:
            return
        wanted = self._in_fisher_pass if self.fisher == "sampled" else not self._in_fisher_pass
        if not wanted:
            return
        blocks = self._blocks_of[module]
        with torch.no_grad(), torch.autocast(go.device.type, enabled=False):
            god = go.to(blocks[0].dtype)
            if self.grad_scaler is not None and not self._in_fisher_pass:
                god = god / float(self.grad_scaler.get_scale())  # the loss was scaled by S: so is ĝ
            if self.accumulation_steps > 1 and self.scale == "per_example":
                god = god * self.accumulation_steps  # each micro-batch's loss was divided by k: so is ĝ
            for layer in blocks:
                if layer.kind == "diag":
                    assert isinstance(ctx, Tensor)
                    big_g = _norm_diagonal_from(module, ctx, god, self.scale)
                else:
                    if layer.kind == "kron" and not isinstance(module, nn.Linear):
                        g = _conv_out_rows(god, cast(_Conv, module), layer.group)
                    else:
                        g = god.reshape(n, -1, god.shape[-1])
                    big_g = g_factor(g.reshape(-1, g.shape[-1]), n, self.scale)
                    if isinstance(ctx, list):
                        layer.pending.append((ctx[layer.group], g))
                layer.g_sum = big_g if layer.g_sum is None else layer.g_sum + big_g
                layer.g_count += 1

    def _recurrent_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        """A recurrent layer's forward in a collecting pass: run again with the written-out cells, which record
        the statistics, and return their outputs (the fused module's to rounding), so that the backward passes
        through the recorded gate pre-activations."""
        if not (self._collecting and module.training and torch.is_grad_enabled()):
            return None
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if not isinstance(x, Tensor) or not isinstance(self._blocks_of[module][0].weight, nn.Parameter):
            return None  # a PackedSequence (no statistics), or a pass at swapped-out parameters (torch.func)
        return self.recurrent_forward(module, x, hx)

    def recurrent_forward(
        self,
        module: nn.Module,
        x: Tensor,
        hx: Tensor | tuple[Tensor, Tensor] | None = None,
        *,
        keep: Tensor | None = None,
        batch_size: int | None = None,
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """``module(x, hx)`` for one of the model's ``nn.LSTM``/``nn.GRU`` layers, run with the written-out cell
        equations (:func:`natrl.optim.kfac_recurrent.unroll`) and collecting its K-FAC statistics when this
        optimizer collects (as the forward hook does when the module is called), with optional resets.

        Args:
            module: the recurrent layer (a module of the model).
            x: its input as the module takes it ((B, T, d) with ``batch_first``, (T, B, d) without, (T, d)
                unbatched).
            hx: its initial state as the module takes it, or None (zeros).
            keep: multipliers of the state before each step (0 where a new sequence begins), shaped like x's
                leading (batch, time) dimensions, or None.
            batch_size: N, the number of examples the loss averages over (the batch dimension by default); a
                policy whose loss averages over the steps of its sequences passes the number of steps.

        Returns:
            What the module returns: ``(output, (h_n, c_n))`` or ``(output, h_n)``.
        """
        blocks = self._blocks_of.get(module)
        if blocks is None or type(module) not in RECURRENT_TYPES:
            raise ValueError("KFAC.recurrent_forward: the module is not one of this optimizer's recurrent layers")
        rnn = cast(nn.LSTM | nn.GRU, module)
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(0)
            hx = None if hx is None else cast(Any, tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple)
                                                     else hx.unsqueeze(1))  # fmt: skip
            keep = None if keep is None else keep.unsqueeze(0)
        elif not rnn.batch_first:
            x = x.transpose(0, 1)
            keep = None if keep is None else keep.transpose(0, 1)
        record = self._collecting and rnn.training and torch.is_grad_enabled()
        y, final, taps = unroll(rnn, x, hx, keep, record=record)
        if taps:
            self._record_recurrent(rnn, blocks, taps, x.shape[0] if batch_size is None else batch_size)
        if not batched:
            return y[0], cast(Any, tuple(f[:, 0] for f in final) if isinstance(final, tuple) else final[:, 0])
        return (y if rnn.batch_first else y.transpose(0, 1)), final

    def _record_recurrent(self, rnn: nn.Module, blocks: list[_Layer], taps: list[Any], n: int) -> None:
        """A recurrent layer's A factors from the recorded rows, and hooks for its G factors."""
        lstm = isinstance(rnn, nn.LSTM)
        for k, tap in enumerate(taps):
            ih, hh = blocks[2 * k], blocks[2 * k + 1]
            ctx: list[Tensor | None] = []
            with torch.no_grad(), torch.autocast(tap.inputs.device.type, enabled=False):
                for layer, rows in ((ih, tap.inputs), (hh, tap.hidden)):
                    a = rows.to(layer.dtype)
                    if layer.bias is not None:
                        a = _with_ones(a)
                    flat = a.reshape(-1, a.shape[-1])
                    layer.a_sum = flat.T @ flat if layer.a_sum is None else layer.a_sum + flat.T @ flat
                    layer.a_rows += flat.shape[0]
                    # EKFAC's per-example gradients Σ_t ĝ_t ā_tᵀ: the examples must be the sequences
                    ctx.append(a if self.method == "ekfac" and n == a.shape[0] else None)
            if tap.gates_ih.requires_grad:
                pairs = ((ih, ctx[0]), (hh, ctx[1])) if lstm else ((ih, ctx[0]),)
                tap.gates_ih.register_hook(lambda go, pairs=pairs: self._recurrent_grad_hook(pairs, n, go))
                ih.outputs.append(tap.gates_ih)
            if tap.gates_hh is not None:
                tap.gates_hh.register_hook(lambda go, pairs=((hh, ctx[1]),): self._recurrent_grad_hook(pairs, n, go))
                hh.outputs.append(tap.gates_hh)

    def _recurrent_grad_hook(self, pairs: tuple[tuple[_Layer, Tensor | None], ...], n: int, go: Tensor) -> None:
        """G of recurrent blocks from the gradients at their gate pre-activations, (B, T, gates·H)."""
        if self._suspended:
            return
        wanted = self._in_fisher_pass if self.fisher == "sampled" else not self._in_fisher_pass
        if not wanted:
            return
        with torch.no_grad(), torch.autocast(go.device.type, enabled=False):
            g = go.to(pairs[0][0].dtype)
            if self.grad_scaler is not None and not self._in_fisher_pass:
                g = g / float(self.grad_scaler.get_scale())
            big_g = g_factor(g.reshape(-1, g.shape[-1]), n, self.scale)
            for layer, a in pairs:
                layer.g_sum = big_g.clone() if layer.g_sum is None else layer.g_sum + big_g
                layer.g_count += 1
                if a is not None:
                    layer.pending.append((a, g))

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

    def _vector_slot(self, layer: _Layer, which: str) -> bool:
        """Whether this factor is kept as a vector (a diagonal), not a square matrix."""
        return (layer.kind == "embedding" and which == "a") or (layer.kind == "diag" and which == "g")

    def _batch_factors(self) -> list[tuple[Tensor | None, Tensor | None]]:
        """This step's (A, G) estimate of each block, averaged over the process group if any."""
        local: list[tuple[Tensor | None, Tensor | None]] = []
        for layer in self._layers.values():
            new_a = layer.a_sum.div_(layer.a_rows) if layer.a_sum is not None and layer.a_rows > 0 else None
            new_g = layer.g_sum.div_(layer.g_count) if layer.g_sum is not None and layer.g_count > 0 else None
            layer.a_sum, layer.a_rows, layer.g_sum, layer.g_count = None, 0, None, 0
            local.append((new_a, new_g))
        if self._group is None or not self._layers:
            return local
        layers = list(self._layers.values())
        square = [(i, w) for i, layer in enumerate(layers) for w in ("a", "g")
                  if not self._vector_slot(layer, w) and (w == "g" or layer.kind != "diag")]  # fmt: skip
        vector = [(i, w) for i, layer in enumerate(layers) for w in ("a", "g") if self._vector_slot(layer, w)]
        t0 = time.perf_counter()
        flat = kfd.all_reduce_factors(
            [local[i][w == "g"] for i, w in square],
            [layers[i].dim_a if w == "a" else layers[i].dim_g for i, w in square],
            [layers[i].dtype for i, _ in square],
            self._device,
            self._group,
            bucket_bytes=self._bucket_bytes,
        )
        vecs = self._all_reduce_present(
            [local[i][w == "g"] for i, w in vector],
            [layers[i].dim_a if w == "a" else layers[i].dim_g for i, w in vector],
            [layers[i].dtype for i, _ in vector],
        )
        self._comm_seconds += time.perf_counter() - t0
        out: list[list[Tensor | None]] = [[None, None] for _ in layers]
        for (i, w), f in zip(square + vector, list(flat) + vecs, strict=True):
            out[i][w == "g"] = f
        return [(a, g) for a, g in out]

    def _all_reduce_present(
        self, tensors: list[Tensor | None], sizes: list[int], dtypes: list[torch.dtype]
    ) -> list[Tensor | None]:
        """The mean over the ranks that have each tensor (None where no rank has it)."""
        if not tensors:
            return []
        bufs = []
        for t, size, dt in zip(tensors, sizes, dtypes, strict=True):
            buf = torch.zeros(size + 1, dtype=dt, device=self._device)
            if t is not None:
                buf[:-1] = t.reshape(-1)
                buf[-1] = 1.0
            bufs.append(buf)
        kfd.all_reduce_mean(bufs, self._group, bucket_bytes=self._bucket_bytes)
        weights = torch.stack([b[-1].double().cpu() for b in bufs]).tolist()
        return [None if wgt == 0.0 else (b[:-1] / b[-1]).reshape(t.shape if t is not None else (-1,))
                for b, wgt, t in zip(bufs, weights, tensors, strict=True)]  # fmt: skip

    @property
    def _device(self) -> torch.device:
        return next(iter(self._layers.values())).params[0].device

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
                layer.pending.clear()
                continue
            if self.factor_init == "identity":  # kfac-pytorch's start: F ← ε I + (1 − ε) F_batch
                if new_a is not None and layer.a is None:
                    layer.a = self._identity(layer, "a")
                if new_g is not None and layer.g is None:
                    layer.g = self._identity(layer, "g")
            if new_a is not None:
                layer.a = new_a if layer.a is None else layer.a.lerp_(new_a, 1 - eps)
            if new_g is not None:
                layer.g = new_g if layer.g is None else layer.g.lerp_(new_g, 1 - eps)

    def _identity(self, layer: _Layer, which: str) -> Tensor:
        dim = layer.dim_a if which == "a" else layer.dim_g
        if self._vector_slot(layer, which):
            return torch.ones(dim, dtype=layer.dtype, device=self._device)
        return torch.eye(dim, dtype=layer.dtype, device=self._device)

    def _mine(self, layer: _Layer) -> bool:
        """Whether this rank decomposes (or receives the decompositions of) the block and preconditions it."""
        return self._workers is None or layer.kind == "diag" or self._owner_group[layer.name] == self._workers.index

    def decomposition_bytes(self) -> int:
        """Bytes of the decompositions this rank holds: eigenvalues and eigenvectors (or the damped
        inverses), EKFAC's diagonal and the cached 1 / (g aᵀ + λ). The factors are not counted."""
        total = 0
        for layer in self._layers.values():
            for t in (layer.inv_a, layer.inv_g, layer.inv_denom, layer.scales):
                total += 0 if t is None else t.numel() * t.element_size()
            for eig in (layer.eig_a, layer.eig_g):
                if eig is not None:
                    total += sum(t.numel() * t.element_size() for t in eig)
        return total

    def _decompositions(self, mats: list[tuple[_Layer, str, Tensor]]) -> list[tuple[Eigen | None, str]]:
        """``(eig, how)`` for each ``(block, "a" | "g", matrix)``: here, or shared out over the ranks
        (over this rank's worker group with ``grad_worker_fraction`` < 1)."""
        group, rank, world = self._group, self._rank, self._world
        if self._workers is not None:
            group, rank, world = self._workers.worker_group, self._workers.column, self._workers.workers
        if group is None or self.assignment == "compute_all" or not mats:
            return [eigh_robust(m) for _, _, m in mats]
        jobs = [kfd.FactorJob((layer.name, k), m.shape[0], layer.dtype) for layer, k, m in mats]
        owners = kfd.assign_round_robin(jobs, world)
        local: dict[int, tuple[Tensor, Tensor, float] | None] = {}
        for i, (_, _, m) in enumerate(mats):
            if owners[i] == rank:
                eig, how = eigh_robust(m)
                local[i] = None if eig is None else (eig.values, eig.vectors, kfd.OK if how == "ok" else kfd.FALLBACK)
        t0 = time.perf_counter()
        shared = kfd.broadcast_decompositions(jobs, owners, local, rank, group, self._device)
        self._comm_seconds += time.perf_counter() - t0

        def unpack(res: tuple[Tensor, Tensor, float] | None) -> tuple[Eigen | None, str]:
            if res is None:
                return None, "eigh failed on the rank that owns this factor"
            return Eigen(res[0], res[1]), "ok" if res[2] == kfd.OK else "fallback"

        return [unpack(r) for r in shared]

    def _layer_damping(self, layer: _Layer) -> float:
        if layer.damping is None:
            return self.damping
        if callable(layer.damping):
            return _check_damping("KFAC", f"layer_damping[{layer.name!r}]", layer.damping, self._k)
        return float(layer.damping)

    def _update_inverses(self, force: bool) -> tuple[int, list[str]]:
        fallbacks, failed = 0, []
        todo = [layer for layer in self._layers.values() if layer.kind != "diag" and self._mine(layer)
                and layer.ready and (force or not layer.decomposed)]  # fmt: skip
        if self.method == "inverse":
            for layer in todo:
                if not self._invert(layer):
                    failed.append(layer.name)
                    self._warn_failed(layer, "the damped factor could not be inverted")
            return 0, failed
        mats = [(layer, k, m) for layer in todo for k, m in (("a", layer.a), ("g", layer.g))
                if m is not None and not self._vector_slot(layer, k)]  # fmt: skip
        results = dict(zip([(id(layer), k) for layer, k, _ in mats], self._decompositions(mats), strict=True))
        for layer in todo:
            eig_g, how_g = results[(id(layer), "g")]
            if layer.kind == "embedding":
                eig_a, how_a = None, "ok"
            else:
                eig_a, how_a = results[(id(layer), "a")]
            fallbacks += (how_a != "ok" and eig_a is not None) + (how_g != "ok" and eig_g is not None)
            if eig_g is None or (eig_a is None and layer.kind != "embedding"):
                failed.append(layer.name)
                self._warn_failed(layer, how_a if eig_a is None and layer.kind != "embedding" else how_g)
                layer.clear_decompositions()
                continue
            layer.eig_a, layer.eig_g = eig_a, eig_g
            layer.inv_denom = None
            layer.refreshed = True
        return fallbacks, failed

    @staticmethod
    def _warn_failed(layer: _Layer, why: str) -> None:
        warnings.warn(
            f"KFAC: eigendecomposition failed for layer {layer.name} ({why}); it keeps plain gradients "
            "until its factors recover",
            RuntimeWarning,
            stacklevel=6,  # _warn_failed < _update_inverses < _precondition < precondition_grads < step
        )

    def _invert(self, layer: _Layer) -> bool:
        """method="inverse": factored Tikhonov damping with this step's λ of the layer."""
        assert layer.a is not None and layer.g is not None
        lam = self._layer_damping(layer)
        a_mean = float(layer.a.mean() if layer.kind == "embedding" else layer.a.diagonal().mean())
        pi = _pi(a_mean, float(layer.g.diagonal().mean()))
        root = math.sqrt(lam)
        inv_g = _damped_inverse(layer.g, root / pi)
        if layer.kind == "embedding":
            inv_a: Tensor | None = 1.0 / (layer.a + pi * root)
        else:
            inv_a = _damped_inverse(layer.a, pi * root)
        if inv_a is None or inv_g is None:
            layer.clear_decompositions()
            return False
        layer.inv_a, layer.inv_g = inv_a, inv_g
        return True

    def _update_ekfac_scales(self) -> None:
        """Re-estimate EKFAC's diagonal from this step's per-example (ā, ĝ) in the current basis."""
        layers = [layer for layer in self._layers.values() if layer.kind == "kron"]
        batch: list[Tensor | None] = []
        for layer in layers:
            if layer.pending and layer.eig_a is not None and layer.eig_g is not None:
                eig_a, eig_g = layer.eig_a, layer.eig_g
                s = [ekfac_second_moments(a, g, eig_a, eig_g, scale=self.scale) for a, g in layer.pending]
                batch.append(torch.stack(s).mean(0))
            else:
                batch.append(None)
            layer.pending.clear()
        if self._group is not None and layers:
            t0 = time.perf_counter()
            batch = self._all_reduce_present(batch, [layer.dim_g * layer.dim_a for layer in layers],
                                             [layer.dtype for layer in layers])  # fmt: skip
            batch = [None if b is None else b.reshape(layer.dim_g, layer.dim_a)
                     for b, layer in zip(batch, layers, strict=True)]  # fmt: skip
            self._comm_seconds += time.perf_counter() - t0
        eps = self.factor_decay
        for layer, s_batch in zip(layers, batch, strict=True):
            if layer.eig_a is None or layer.eig_g is None:
                continue
            if layer.refreshed or layer.scales is None:
                layer.scales = torch.outer(layer.eig_g.values, layer.eig_a.values)
            layer.refreshed = False
            if s_batch is not None and bool(torch.isfinite(s_batch).all()):
                layer.scales.lerp_(s_batch.to(layer.scales.dtype), 1 - eps)

    def _grad_matrix(self, layer: _Layer) -> Tensor | None:
        """The block's gradient as the matrix K-FAC preconditions (a vector for a diagonal block)."""
        w, b = layer.weight, layer.bias
        if layer.kind == "diag":
            gs = [p.grad if p.grad is not None else torch.zeros_like(p) for p in (w, b) if p is not None]
            if all(p.grad is None for p in (w, b) if p is not None):
                return None
            return torch.cat([gr.reshape(-1) for gr in gs])
        if w.grad is None:
            return None
        if layer.kind == "embedding":
            return w.grad
        gm = w.grad[layer.rows].reshape(layer.dim_g, -1)
        if b is not None:
            gb = b.grad[layer.rows] if b.grad is not None else torch.zeros(layer.dim_g, dtype=w.dtype, device=w.device)
            gm = torch.cat([gm, gb.reshape(-1, 1)], dim=1)
        return gm

    @staticmethod
    def _write_grad_matrix(layer: _Layer, mat: Tensor) -> None:
        w, b = layer.weight, layer.bias
        if layer.kind == "diag":
            offset = 0
            for p in (w, b):
                if p is None:
                    continue
                piece = mat[offset : offset + p.numel()].reshape(p.shape)
                offset += p.numel()
                if p.grad is None:
                    p.grad = piece.clone()
                else:
                    p.grad.copy_(piece)
            return
        assert w.grad is not None
        if layer.kind == "embedding":
            w.grad.copy_(mat)
            return
        if b is not None:
            wg, bg = mat[:, :-1], mat[:, -1]
            if b.grad is None:
                b.grad = torch.zeros_like(b)
            b.grad[layer.rows] = bg
        else:
            wg = mat
        w.grad[layer.rows] = wg.reshape(w.grad[layer.rows].shape)

    def _precondition_block(self, layer: _Layer, gm: Tensor, lam: float) -> Tensor:
        """(F̂ + λI)⁻¹ ∇ for one block, in the factor dtype."""
        if layer.kind == "diag":
            assert layer.g is not None
            return gm / (layer.g + lam)
        if layer.inv_g is not None and layer.inv_a is not None:  # method="inverse"
            if layer.kind == "embedding":
                return layer.inv_a[:, None] * (gm @ layer.inv_g)
            return layer.inv_g @ gm @ layer.inv_a
        assert layer.eig_g is not None
        qg = layer.eig_g.vectors
        if layer.kind == "embedding":
            assert layer.a is not None
            denom = torch.outer(layer.a, layer.eig_g.values) + lam
            return ((gm @ qg) / denom) @ qg.T
        assert layer.eig_a is not None
        if self.method == "ekfac" and layer.scales is not None:
            qa = layer.eig_a.vectors
            return qg @ ((qg.T @ gm @ qa) / (layer.scales + lam)) @ qa.T
        if layer.inv_denom is None or layer.denom_damping != lam:
            layer.inv_denom = 1.0 / (torch.outer(layer.eig_g.values, layer.eig_a.values) + lam)
            layer.denom_damping = lam
        return precondition(gm, layer.eig_a, layer.eig_g, lam, inv_denom=layer.inv_denom)

    def _block_quadratic(self, layer: _Layer, dm: Tensor) -> float:
        """δᵀ F̂ δ of one block for the update δ in the block's matrix form."""
        assert layer.g is not None
        if layer.kind == "diag":
            return float((layer.g * dm * dm).sum())
        assert layer.a is not None
        if layer.kind == "embedding":
            return float((dm * (layer.a[:, None] * (dm @ layer.g))).sum())
        if self.method == "ekfac" and layer.scales is not None and layer.eig_a is not None and layer.eig_g is not None:
            proj = layer.eig_g.vectors.T @ dm @ layer.eig_a.vectors
            return float((layer.scales * proj * proj).sum())
        return float((dm * (layer.g @ dm @ layer.a)).sum())

    # -- the step ------------------------------------------------------------------------------

    def _apply_schedules(self) -> None:
        """This step's λ, ε and κ from their schedules."""
        if self._damping_fn is not None:
            self.damping = _check_damping("KFAC", "damping", self._damping_fn, self._k)
        if self._decay_fn is not None:
            self.factor_decay = _check_decay(self._decay_fn, self._k)
        if self._kl_fn is not None:
            self.kl_clip = _check_kl(self._kl_fn, self._k)

    def precondition_grads(self) -> tuple[float, int, int, list[str]]:
        """Update factors/inverses as scheduled and replace ``.grad`` by ν (F̂ + λI)⁻¹ ∇.

        Returns:
            ``(ν, preconditioned blocks, eigen fallbacks, failed layer names)``.
        """
        params = [p for g in self.param_groups for p in g["params"]]
        if all(p.grad is None for p in params):
            raise RuntimeError("KFAC: no parameter has a gradient; call loss.backward() first")
        self._apply_schedules()
        if not self._warned_eval and not any(layer.ready for layer in self._layers.values()):
            idle = sorted({layer.name for layer in self._layers.values() if not layer.module.training})
            if idle:
                self._warned_eval = True
                warnings.warn(
                    f"KFAC: layers {', '.join(idle)} are in eval mode, where no statistics are collected, so their "
                    "gradients are not preconditioned: call model.train() for K-FAC steps",
                    UserWarning,
                    stacklevel=3,
                )
        with torch.no_grad():
            return self._precondition(params)

    def _precondition(self, params: list[Tensor]) -> tuple[float, int, int, list[str]]:
        # each parameter's own group's decay (a scheduler edits the groups, not defaults)
        decay = {id(p): float(g["weight_decay"]) for g in self.param_groups for p in g["params"]}
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
            if decay[id(p)]:
                p.grad.add_(p, alpha=decay[id(p)])
            if keep_raw:
                raw[id(p)] = p.grad.clone()
        collect = self._k % self.factor_interval == 0
        if collect:
            self._update_factors()
        for layer in self._layers.values():
            layer.outputs.clear()
        fallbacks, failed = self._update_inverses(force=self._k % self.inverse_interval == 0)
        if self.method == "ekfac" and collect:
            self._update_ekfac_scales()
        for layer in self._layers.values():
            layer.pending.clear()
        done = 0
        inners: list[Tensor] = []  # ⟨∇̃, ∇⟩ pieces for the KL clip
        handled: set[int] = set()
        layers = list(self._layers.values())
        found: dict[int, tuple[Tensor, Tensor]] = {}  # block index -> (∇, preconditioned ∇)
        for i, layer in enumerate(layers):
            if not self._mine(layer):
                continue
            if not layer.decomposed:
                if layer.name not in failed and (layer.a is not None or layer.g is not None):
                    failed.append(layer.name)
                continue
            gm = self._grad_matrix(layer)
            if gm is None:
                continue
            pre = self._precondition_block(layer, gm.to(layer.dtype), self._layer_damping(layer)).to(gm.dtype)
            found[i] = (gm, pre)
        if self._workers is not None:
            self._receive_preconditioned(layers, found, failed)
        pres: list[tuple[_Layer, Tensor]] = []
        for i in sorted(found):  # block order on every rank: the same ν everywhere
            gm, pre = found[i]
            if self.kl_clip is not None:  # in float64: ⟨∇̃, ∇⟩ of a large float32 gradient overflows
                inners.append(torch.dot(pre.reshape(-1).double(), gm.reshape(-1).double()))
            pres.append((layers[i], pre))
        for layer, pre in pres:  # written after all blocks read theirs (a grouped conv shares .grad)
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

    def _receive_preconditioned(
        self, layers: list[_Layer], found: dict[int, tuple[Tensor, Tensor]], failed: list[str]
    ) -> None:
        """grad_worker_fraction < 1: add the blocks other worker groups preconditioned to ``found``."""
        assert self._workers is not None
        shared = [layers[i] for i in self._shared]
        owners = [self._owner_group[layer.name] for layer in shared]
        local = {s: found[i][1] for s, i in enumerate(self._shared) if i in found}
        t0 = time.perf_counter()
        received = kfd.broadcast_from_workers(
            [layer.dim_a * layer.dim_g for layer in shared],
            [layer.weight.dtype for layer in shared],
            owners,
            local,
            self._workers,
            self._device,
        )
        self._comm_seconds += time.perf_counter() - t0
        for s, (i, layer) in enumerate(zip(self._shared, shared, strict=True)):
            if owners[s] == self._workers.index:
                continue
            gm = self._grad_matrix(layer)
            pre = received[s]
            if gm is None:
                continue
            if pre is None:
                if layer.a is not None or layer.g is not None:
                    failed.append(layer.name)
                continue
            found[i] = (gm, pre.view(gm.shape))

    def _quadratic_model(self, deltas: dict[int, Tensor]) -> float:
        """gᵀδ + ½ δᵀ(F̂ + λI)δ with F̂ the K-FAC blocks (curvature of other parameters: λ only)."""
        lin = sum(float((self._raw_grads[i] * d).sum()) for i, d in deltas.items() if i in self._raw_grads)
        covered = {id(p) for layer in self._layers.values() if layer.ready for p in layer.params}
        quad = self.damping * sum(float((d * d).sum()) for i, d in deltas.items() if i not in covered)
        for layer in self._layers.values():
            if not layer.ready:
                continue
            ps = layer.params
            if id(ps[0]) not in deltas:
                continue
            w, b = layer.weight, layer.bias
            if layer.kind == "diag":
                dm = torch.cat([deltas.get(id(p), torch.zeros_like(p)).reshape(-1) for p in ps])
            elif layer.kind == "embedding":
                dm = deltas[id(w)]
            else:
                dm = deltas[id(w)][layer.rows].reshape(layer.dim_g, -1)
                if b is not None:
                    db = deltas.get(id(b), torch.zeros_like(b))[layer.rows]
                    dm = torch.cat([dm, db.reshape(-1, 1)], dim=1)
            quad += self._block_quadratic(layer, dm.to(layer.dtype))
            quad += self._layer_damping(layer) * float((dm * dm).sum())
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
        self._comm_seconds = 0.0
        nu, done, fallbacks, failed = self.precondition_grads()
        lam = self.damping  # this step's (after the schedule, before the adaptation)
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
        """The torch.optim state plus the factors, their decompositions (inverses, EKFAC's diagonal), λ, the step
        count and the skipped steps: a run resumed from it continues as the uninterrupted one, also between two
        decompositions (``inverse_interval`` > 1). Plain tensors and tuples (``torch.load(weights_only=True)``)."""
        sd = super().state_dict()
        sd["kfac"] = {
            "step": self._k,
            "damping": self.damping,
            "nonfinite_steps": self.nonfinite_steps,
            "factors": {layer.name: (layer.a, layer.g) for layer in self._layers.values()},
            "decompositions": {
                layer.name: {
                    "eig_a": None if layer.eig_a is None else tuple(layer.eig_a),
                    "eig_g": None if layer.eig_g is None else tuple(layer.eig_g),
                    "inv_a": layer.inv_a,
                    "inv_g": layer.inv_g,
                    "scales": layer.scales,
                    "refreshed": layer.refreshed,
                }
                for layer in self._layers.values()
            },
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, strictly as ``nn.Module.load_state_dict``: the same blocks (by name) with
        factors of the same sizes, else one ValueError and nothing changed. A state without decompositions (saved
        before they were kept) recomputes them at the next step."""
        sd = dict(state_dict)
        extra = sd.pop("kfac", None)
        if extra is not None:
            self._check_factors(extra["factors"])
        super().load_state_dict(sd)
        if extra is None:
            return
        self._k = int(extra["step"])
        self.damping = float(extra["damping"])
        self.nonfinite_steps = int(extra.get("nonfinite_steps", 0))
        self._lm.load_state_dict({"value": self.damping})
        decompositions = extra.get("decompositions", {})
        for layer in self._layers.values():
            a, g = extra["factors"][layer.name]
            layer.a = None if a is None else a.clone()
            layer.g = None if g is None else g.clone()
            layer.clear_decompositions()
            saved = decompositions.get(layer.name)
            if saved is not None:
                layer.eig_a = None if saved["eig_a"] is None else Eigen(*(t.clone() for t in saved["eig_a"]))
                layer.eig_g = None if saved["eig_g"] is None else Eigen(*(t.clone() for t in saved["eig_g"]))
                inverses = (saved["inv_a"], saved["inv_g"], saved["scales"])
                layer.inv_a, layer.inv_g, layer.scales = (None if t is None else t.clone() for t in inverses)
                layer.refreshed = bool(saved["refreshed"])

    def _check_factors(self, factors: dict[str, Any]) -> None:
        """One ValueError unless ``factors`` holds this optimizer's blocks, with factors of their sizes."""
        mine, theirs = set(self._layers), set(factors)
        if mine != theirs:
            raise ValueError(
                f"KFAC.load_state_dict: the state's blocks {sorted(theirs)} are not this optimizer's {sorted(mine)} "
                "(another model, or a torch.compile'd module's '_orig_mod.' names: build both optimizers on the same "
                "module)"
            )
        for name, layer in self._layers.items():
            for which, t, dim in zip("AG", factors[name], (layer.dim_a, layer.dim_g), strict=True):
                if t is not None and (t.dim() == 0 or t.shape[0] != dim):
                    raise ValueError(
                        f"KFAC.load_state_dict: block {name!r} has factor {which} of shape {tuple(t.shape)}, this "
                        f"model's has {dim} rows (a model of other layer sizes)"
                    )

    def remove_hooks(self) -> None:
        """Detach the forward hooks from the model (the optimizer stops collecting)."""
        for layer in self._layers.values():
            for h in layer.handles:
                h.remove()
            layer.handles.clear()

    def ekfac_scales(self) -> dict[str, Tensor | None]:
        """EKFAC's diagonal S (shape (d_G, d_A), in the eigenbasis of G and A) of each Kronecker
        block, by block name (None before the first estimate or with another ``method``)."""
        return {layer.name: layer.scales for layer in self._layers.values() if layer.kind == "kron"}

    def factors(self) -> dict[str, tuple[Tensor | None, Tensor | None]]:
        """The current (A, G) of each Fisher block, by block name.

        An embedding's A is its diagonal (a vector); a norm layer's block has no A and its
        "G" is the diagonal Fisher of [weight, bias] (a vector).
        """
        return {layer.name: (layer.a, layer.g) for layer in self._layers.values()}
