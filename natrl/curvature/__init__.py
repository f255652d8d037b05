"""Curvature matrix-vector products: each operator returns a matvec ``v -> M v`` on flat vectors.

* :func:`fisher_vp` — exact Fisher F = (1/N) Σ Jᵀ M J of a model whose outputs parameterise a
  distribution (jvp → analytic output Fisher → vjp, linearisation shared across matvecs).
* :func:`fisher_quadratic` — the number vᵀFv alone, from one forward-mode jvp (no backward pass).
* :func:`kl_hvp` — Hessian of the mean KL(old ‖ new) by double backprop (reference / fallback).
* :func:`hvp` — Hessian-vector products of a scalar loss (reverse-over-reverse by default).
* :func:`ggn_vp` — generalised Gauss-Newton for MSE / cross-entropy losses.
* :func:`empirical_fisher_vp` — empirical Fisher (1/N) Σ gᵢ gᵢᵀ from per-sample gradients.
* :func:`to_dense` — materialise any matvec column by column (tests, tiny models).

Spectrum of any of them (:mod:`natrl.curvature.spectrum`): :func:`lanczos`,
:func:`power_iteration`, :func:`hutchinson_trace`, :func:`hutchpp_trace`,
:func:`hutchinson_diagonal`, :func:`spectral_density`, :func:`condition_number`.

Whole data sets and scipy (:mod:`natrl.curvature.batches`): :func:`over_batches` (any of the
operators accumulated over a DataLoader, each batch weighted by its size) and
:func:`as_linear_operator` (a ``scipy.sparse.linalg.LinearOperator``).
"""

from natrl.curvature.batches import as_linear_operator, over_batches
from natrl.curvature.operators import (
    Matvec,
    empirical_fisher_vp,
    fisher_quadratic,
    fisher_vp,
    ggn_vp,
    hvp,
    kl_hvp,
    to_dense,
)
from natrl.curvature.spectrum import (
    ConditionNumber,
    Density,
    DiagonalEstimate,
    EigResult,
    HutchppEstimate,
    TraceEstimate,
    condition_number,
    hutchinson_diagonal,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    power_iteration,
    spectral_density,
)

__all__ = [
    "ConditionNumber",
    "Density",
    "DiagonalEstimate",
    "EigResult",
    "HutchppEstimate",
    "Matvec",
    "TraceEstimate",
    "as_linear_operator",
    "condition_number",
    "empirical_fisher_vp",
    "fisher_quadratic",
    "fisher_vp",
    "ggn_vp",
    "hutchinson_diagonal",
    "hutchinson_trace",
    "hutchpp_trace",
    "hvp",
    "kl_hvp",
    "lanczos",
    "over_batches",
    "power_iteration",
    "spectral_density",
    "to_dense",
]
