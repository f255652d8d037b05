"""Conjugate gradient for A x = b with A given only as a matrix-vector product.

A is symmetric positive (semi-)definite of size n × n and is never formed:
the solver only calls ``matvec(v) = A v``. With a preconditioner
``preconditioner(v) ≈ A⁻¹ v`` (symmetric positive definite, call it M) the
same loop runs preconditioned CG. One iteration, from x₀ (zero by default),
r₀ = b − A x₀, z₀ = M r₀, p₀ = z₀:

    αₖ   = rₖᵀzₖ / pₖᵀA pₖ
    xₖ₊₁ = xₖ + αₖ pₖ
    rₖ₊₁ = rₖ − αₖ A pₖ
    zₖ₊₁ = M rₖ₊₁
    βₖ   = rₖ₊₁ᵀzₖ₊₁ / rₖᵀzₖ
    pₖ₊₁ = zₖ₊₁ + βₖ pₖ

(without a preconditioner M = I, so zₖ = rₖ). In exact arithmetic it solves an
SPD system in at most n iterations; TRPO and Hessian-free optimisation run a
handful (≈10) on the damped Fisher or Gauss-Newton matrix.

Reference: Nocedal & Wright (2006), "Numerical Optimization", 2nd ed.,
Algorithm 5.2 (CG) and Algorithm 5.3 (preconditioned CG); the negative-curvature
exit follows Algorithm 7.1 (line-search Newton-CG).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CGResult", "NonFiniteError", "conjugate_gradient"]


class NonFiniteError(ValueError):
    """A non-finite (NaN or inf) value in a solve: in b, x0, a product, or the recurrence.

    A subclass of ValueError, so callers that catch ValueError keep working; callers that
    skip an update on non-finite data (natrl's torch.optim classes) catch this one alone.
    """


class CGResult(NamedTuple):
    """Outcome of :func:`conjugate_gradient`.

    Attributes:
        x: the approximate solution, shape (n,), same dtype and device as b,
            detached from any autograd graph.
        iterations: the number of CG iterations run, i.e. of products A pₖ with
            search directions (the product A x₀ for a given ``x0`` is not
            counted); at most ``max_iter``.
        residual_norm: ‖b − A x‖₂ for the returned x (absolute, not relative),
            as tracked by the CG recurrence.
        converged: whether ‖b − A x‖₂ ≤ tol · ‖b‖₂ was reached.
        negative_curvature: whether a search direction with pᵀA p ≤ 0 was met,
            which stopped the solver (A is then not positive definite).
    """

    x: Tensor
    iterations: int
    residual_norm: float
    converged: bool
    negative_curvature: bool


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    max_iter: int = 10,
    tol: float = 1e-10,
    x0: Tensor | None = None,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
) -> CGResult:
    """Solve A x = b by (preconditioned) conjugate gradient.

    The iteration is the one in the module docstring, started from x₀ = 0 (or
    ``x0``), never from random noise, so the result is deterministic.

    Stopping rule: the solver stops as soon as the residual satisfies the
    *relative* criterion ‖b − A x‖₂ ≤ tol · ‖b‖₂, or after ``max_iter``
    iterations. For b = 0 it returns x = 0 (the minimum-norm solution) with
    ``converged=True`` and no call to ``matvec``, whatever ``x0`` is.

    Negative curvature: if a search direction has pₖᵀA pₖ ≤ 0, A is not positive
    definite along pₖ and the CG step is undefined. The solver then stops with
    ``negative_curvature=True`` and ``converged=False`` and returns the last
    iterate xₖ. On the first iteration (k = 0) the last iterate is the start,
    so it returns x₀ + p₀ instead, where p₀ = M r₀ is the preconditioned
    steepest-descent direction (= b for x₀ = 0 and no preconditioner): the
    solution the system would have if A were replaced by M⁻¹ (by I without a
    preconditioner). This is always finite. Newton-CG uses the same fallback
    (Nocedal & Wright, Algorithm 7.1).

    Cost: one ``matvec`` per iteration (plus one for A x₀ when ``x0`` is given),
    one ``preconditioner`` call per iteration, and one host-device
    synchronisation per iteration for the convergence and curvature checks.
    The vector updates are out of place; ``b`` and ``x0`` are never modified.
    ``matvec`` is called in the caller's autograd mode (it may use autograd
    internally); its outputs are detached, so the solve builds no graph.

    Args:
        matvec: v ↦ A v for v of shape (n,), returning shape (n,); A symmetric
            positive (semi-)definite.
        b: right-hand side, shape (n,), real floating point (float32 or
            float64, CPU or CUDA); the solution follows its dtype and device.
        max_iter: maximum number of iterations, ≥ 1.
        tol: relative residual tolerance, ≥ 0 (0 runs all ``max_iter``
            iterations unless the residual is exactly zero).
        x0: optional starting point, shape (n,); cast to b's dtype and device.
        preconditioner: optional v ↦ M v with M ≈ A⁻¹ symmetric positive
            definite (for example the inverse of A's diagonal, Jacobi).

    Returns:
        A :class:`CGResult` ``(x, iterations, residual_norm, converged,
        negative_curvature)``.

    Raises:
        TypeError: if b is not a real floating-point tensor, or a callable
            argument is not callable, or ``max_iter`` is not an int.
        ValueError: if b is not 1-D or contains NaN/inf; if ``x0`` or an output
            of ``matvec``/``preconditioner`` has the wrong shape or non-finite
            values; if the preconditioner is not positive definite
            (rᵀM r ≤ 0); if ``max_iter`` < 1 or ``tol`` < 0; or if the
            iteration diverges to non-finite values. Every non-finite case
            raises the subclass :class:`NonFiniteError`.

    Example:
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> res = conjugate_gradient(lambda v: A @ v, torch.ones(2, dtype=torch.float64))
        >>> res.converged, res.iterations
        (True, 2)
    """
    _check_arguments(matvec, b, max_iter, tol, preconditioner)
    b = b.detach()
    b_norm = float(torch.linalg.vector_norm(b))
    if not math.isfinite(b_norm):
        if not bool(torch.isfinite(b).all()):
            raise NonFiniteError("conjugate_gradient: b contains non-finite values (NaN or inf)")
        raise NonFiniteError(f"conjugate_gradient: ‖b‖₂ overflows {b.dtype}; rescale b (the system is linear)")
    if b_norm == 0.0:
        return CGResult(torch.zeros_like(b), 0, 0.0, True, False)
    threshold_sq = (tol * b_norm) ** 2

    if x0 is None:
        x = torch.zeros_like(b)
        r = b
        rr_t = torch.dot(r, r)
        rr = b_norm**2
    else:
        if not isinstance(x0, Tensor):
            raise TypeError(f"conjugate_gradient: x0 must be a Tensor or None, got {type(x0).__name__}")
        if x0.shape != b.shape:
            raise ValueError(
                f"conjugate_gradient: x0 has shape {tuple(x0.shape)} but b has shape "
                f"{tuple(b.shape)}; pass a starting point of the same shape"
            )
        x = x0.detach().to(dtype=b.dtype, device=b.device, copy=True)
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError("conjugate_gradient: x0 contains non-finite values (NaN or inf)")
        r = b - _apply(matvec, x, b, "matvec")
        rr_t = torch.dot(r, r)
        rr = float(rr_t)
        if not math.isfinite(rr):
            raise NonFiniteError("conjugate_gradient: matvec(x0) returned non-finite values (NaN or inf)")
    if rr <= threshold_sq:
        return CGResult(x, 0, math.sqrt(rr), True, False)

    z = r if preconditioner is None else _apply(preconditioner, r, b, "preconditioner")
    rz = rr_t if preconditioner is None else torch.dot(r, z)
    p = z
    for k in range(max_iter):
        ap = _apply(matvec, p, b, "matvec")
        pap = torch.dot(p, ap)
        alpha = rz / pap
        x_new = torch.addcmul(x, alpha, p)
        r_new = torch.addcmul(r, alpha, ap, value=-1.0)
        rr_new_t = torch.dot(r_new, r_new)
        # One synchronisation per iteration: rᵀz (preconditioner check), pᵀAp, ‖r‖².
        rz_f, pap_f, rr_new = torch.stack([rz, pap, rr_new_t]).tolist()

        if preconditioner is not None and not (math.isfinite(rz_f) and rz_f > 0.0):
            raise (ValueError if math.isfinite(rz_f) else NonFiniteError)(
                f"conjugate_gradient: the preconditioner is not positive definite or returned "
                f"non-finite values (rᵀM r = {rz_f:.3g} at iteration {k}); it must approximate "
                "A⁻¹ with a symmetric positive definite operator"
            )
        if not math.isfinite(pap_f):
            if not bool(torch.isfinite(ap).all()):
                raise NonFiniteError(
                    f"conjugate_gradient: matvec returned non-finite values (NaN or inf) at iteration {k}"
                )
            raise NonFiniteError(
                f"conjugate_gradient: pᵀA p overflowed {b.dtype} at iteration {k}; rescale the system or use float64"
            )
        if pap_f <= 0.0:
            if k == 0:  # no iterate yet: fall back to x₀ + p₀ (see docstring)
                r_fallback = r - ap
                return CGResult(x + p, 1, float(torch.linalg.vector_norm(r_fallback)), False, True)
            return CGResult(x, k + 1, math.sqrt(rr), False, True)
        if not math.isfinite(rr_new):
            raise NonFiniteError(
                f"conjugate_gradient: the residual became non-finite at iteration {k} "
                f"(pᵀA p = {pap_f:.3g}); A is likely singular or badly scaled, add damping"
            )

        x, r, rr = x_new, r_new, rr_new
        if rr <= threshold_sq:
            return CGResult(x, k + 1, math.sqrt(rr), True, False)
        if preconditioner is None:
            z, rz_next = r, rr_new_t
        else:
            z = _apply(preconditioner, r, b, "preconditioner")
            rz_next = torch.dot(r, z)
        p = torch.addcmul(z, rz_next / rz, p)
        rz = rz_next
    return CGResult(x, max_iter, math.sqrt(rr), False, False)


def _apply(fn: Callable[[Tensor], Tensor], v: Tensor, b: Tensor, name: str) -> Tensor:
    """fn(v), detached, checked to be a tensor of b's shape, in b's dtype."""
    out = fn(v)
    if not isinstance(out, Tensor):
        raise TypeError(f"conjugate_gradient: {name} must return a Tensor, got {type(out).__name__}")
    if out.shape != b.shape:
        raise ValueError(
            f"conjugate_gradient: {name} returned shape {tuple(out.shape)} for an input of shape "
            f"{tuple(b.shape)}; it must map (n,) to (n,)"
        )
    return out.detach().to(dtype=b.dtype)


def _check_arguments(
    matvec: object,
    b: object,
    max_iter: object,
    tol: object,
    preconditioner: object,
) -> None:
    if not callable(matvec):
        raise TypeError(f"conjugate_gradient: matvec must be callable, got {type(matvec).__name__}")
    if preconditioner is not None and not callable(preconditioner):
        raise TypeError(
            f"conjugate_gradient: preconditioner must be callable or None, got {type(preconditioner).__name__}"
        )
    if not isinstance(b, Tensor):
        raise TypeError(f"conjugate_gradient: b must be a Tensor, got {type(b).__name__}")
    if not b.dtype.is_floating_point:
        raise TypeError(
            f"conjugate_gradient: b must be a real floating-point tensor, got dtype {b.dtype}; "
            "convert it with b.double() or b.float()"
        )
    if b.dim() != 1:
        raise ValueError(
            f"conjugate_gradient: b must be 1-D of shape (n,), got shape {tuple(b.shape)}; "
            "flatten it (see natrl.params.flatten)"
        )
    if isinstance(max_iter, bool) or not hasattr(max_iter, "__index__"):  # an int or a NumPy integer
        raise TypeError(f"conjugate_gradient: max_iter must be an int, got {type(max_iter).__name__}")
    max_iter = operator.index(max_iter)
    if max_iter < 1:
        raise ValueError(f"conjugate_gradient: max_iter must be ≥ 1, got {max_iter}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"conjugate_gradient: tol must be a float, got {type(tol).__name__}")
    if not (math.isfinite(tol) and tol >= 0.0):
        raise ValueError(f"conjugate_gradient: tol must be finite and ≥ 0, got {tol}")
