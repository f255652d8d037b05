"""Newton's method: dense (Cholesky + Levenberg–Marquardt) and truncated Newton-CG.

* :func:`run_newton` — the Hessian H = ∇²f(x) is formed densely and the step solves
  (H + τI) d = −∇f by Cholesky, with τ = 0 when H is positive definite and otherwise
  increased until the factorisation succeeds (N&W Algorithm 3.3, "Cholesky with added
  multiple of the identity", a Levenberg–Marquardt shift). A strong Wolfe line search tries
  t = 1 first, so on a strictly convex quadratic the first step lands on the minimiser.
* :func:`truncated_cg` and :func:`run_newton_cg` — line-search Newton-CG (N&W Algorithm 7.1):
  CG on H d = −∇f using only Hessian-vector products, stopped by the forcing term
  ‖r‖ ≤ ηₖ‖∇f‖ with ηₖ = min(0.5, √‖∇f‖) (superlinear convergence, N&W Theorem 7.2) or at
  the first direction of non-positive curvature. Norms are 1-norms as in scipy's Newton-CG,
  so the counts compare one to one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from natrl.optim.descent_steps import (
    all_finite,
    below_resolution,
    initial_step_from_decrease,
    line_search_status,
    wolfe_with_fallback,
)
from natrl.optim.result import STATUS_MESSAGES, OptimizeResult, Status, non_finite_message

__all__ = ["TruncatedCGResult", "damped_cholesky", "run_newton", "run_newton_cg", "truncated_cg"]

FG = Callable[[Tensor], tuple[Tensor, Tensor]]
Matvec = Callable[[Tensor], Tensor]
Callback = Callable[[OptimizeResult], object]


def damped_cholesky(h: Tensor, *, beta: float = 1e-3, max_tries: int = 60) -> tuple[Tensor, float]:
    """Cholesky factor of H + τI with the smallest τ in {0, τ₀, 2τ₀, 4τ₀, …} that works.

    N&W Algorithm 3.3: τ₀ = 0 if min(diag H) > 0, else β − min(diag H); after each failed
    factorisation τ ← max(2τ, β).

    Args:
        h: symmetric H, shape (n, n).
        beta: the smallest positive shift tried.
        max_tries: the most factorisations attempted.

    Returns:
        ``(L, τ)`` with L lower triangular, L Lᵀ = H + τI.

    Raises:
        RuntimeError: if no shift made H + τI numerically positive definite.
    """
    n = h.shape[0]
    eye = torch.eye(n, dtype=h.dtype, device=h.device)
    min_diag = float(h.diagonal().min())
    tau = 0.0 if min_diag > 0.0 else beta - min_diag
    for _ in range(max_tries):
        chol, info = torch.linalg.cholesky_ex(h + tau * eye)
        if int(info) == 0 and bool(torch.isfinite(chol).all()):
            return chol, tau
        tau = max(2.0 * tau, beta)
    raise RuntimeError("damped_cholesky: H + τI is not positive definite for any τ tried")


def run_newton(
    fg: FG,
    hessian: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    gtol: float = 1e-5,
    c1: float = 1e-4,
    c2: float = 0.9,
    beta: float = 1e-3,
    max_iter: int | None = None,
    callback: Callback | None = None,
) -> tuple[OptimizeResult, int]:
    """Minimise f by Newton's method with a dense Hessian (N&W Algorithms 3.2 and 3.3).

    d = −(H + τI)⁻¹∇f (:func:`damped_cholesky`), t from a strong Wolfe search starting at
    t = 1. Stops when ‖∇f‖_∞ ≤ gtol or when the predicted decrease −½∇fᵀd is below the
    rounding error of f; stops with status 3 (the message names it) when f, ∇f, H or d is
    not finite.

    Args:
        fg: ``fg(x) -> (f, ∇f)``.
        hessian: ``hessian(x) -> H``, shape (n, n).
        x0: starting point, shape (n,).
        gtol: max-abs gradient tolerance.
        c1: sufficient-decrease constant.
        c2: curvature constant.
        beta: smallest Levenberg–Marquardt shift when H is not positive definite.
        max_iter: iteration limit (200 n by default).
        callback: called after each iteration; returning True stops.

    Returns:
        ``(result, n_hessians)``.
    """
    n = x0.numel()
    max_iter = 200 * n if max_iter is None else max_iter
    x = x0.detach().reshape(-1).clone()
    fv, g = fg(x)
    f = float(fv)
    g = g.reshape(-1)
    nfev, nh, k = 1, 0, 0
    status = Status.SUCCESS
    message: str | None = None

    def result(st: int, msg: str | None = None) -> OptimizeResult:
        return OptimizeResult(x, f, g, k, nfev, nfev, nh, st == Status.SUCCESS, st, msg or STATUS_MESSAGES[st])

    if not math.isfinite(f):
        return result(Status.NON_FINITE, non_finite_message("the objective", 0)), nh
    if not all_finite(g):
        return result(Status.NON_FINITE, non_finite_message("the gradient", 0)), nh
    while float(g.abs().max()) > gtol:
        if k >= max_iter:
            status = Status.MAX_ITER
            break
        h = hessian(x)
        nh += 1
        if not all_finite(h):
            status, message = Status.NON_FINITE, non_finite_message("the Hessian", k)
            break
        chol, _ = damped_cholesky(h, beta=beta)
        d = -torch.cholesky_solve(g.unsqueeze(1), chol).squeeze(1)
        if not all_finite(d):
            status, message = Status.NON_FINITE, non_finite_message("the Newton step", k)
            break
        if below_resolution(f, float(torch.dot(g, d)), x.dtype):
            break
        ls = wolfe_with_fallback(fg, x, d, f, g, 1.0, c1, c2, 1e-100, 1e100)
        nfev += ls.nfev
        if not ls.success or ls.g is None:
            status, message = line_search_status(ls, k)
            break
        x, f, g = ls.x, ls.f, ls.g
        k += 1
        if callback is not None and callback(result(Status.SUCCESS)) is True:
            status = Status.CALLBACK
            break
    return result(status, message), nh


class TruncatedCGResult(NamedTuple):
    """Outcome of :func:`truncated_cg`.

    Attributes:
        x: the approximate Newton step, shape (n,).
        iterations: Hessian-vector products used.
        converged: the forcing-term test was met.
        negative_curvature: a direction with pᵀHp ≤ 0 stopped CG.
        non_finite: g, a product H p or the residual was not finite; CG stopped and ``x`` is
            the last finite iterate (zero when g is not finite).
    """

    x: Tensor
    iterations: int
    converged: bool
    negative_curvature: bool
    non_finite: bool = False


def truncated_cg(
    matvec: Matvec,
    g: Tensor,
    *,
    forcing: float | None = None,
    max_iter: int | None = None,
    norm: float = 1.0,
    step_tol: float = 0.0,
) -> TruncatedCGResult:
    """Approximately solve H d = −g by CG, truncated by a forcing term (N&W Algorithm 7.1).

    Starts at d = 0 and stops when ‖r‖ ≤ η‖g‖ with η = ``forcing`` (min(0.5, √‖g‖) by
    default), when a search direction has (numerically) zero curvature, pᵀHp ≤ 3ε‖p‖²
    (relative, so invariant to scaling H), or when pᵀHp < 0: then the current iterate is
    returned, or, on the first iteration, the steepest-descent step −(gᵀg / |gᵀHg|) g. A
    non-finite g, pᵀHp or residual stops CG with ``non_finite`` set (at most ``max_iter``
    products in every case).

    Args:
        matvec: v ↦ H v.
        g: the gradient, shape (n,).
        forcing: η ∈ (0, 1).
        max_iter: the most products (20 n by default).
        norm: the order of the norms in the stopping test (1 as in scipy).
        step_tol: CG also stops (converged) once an update α p has ‖α p‖₁ ≤ this: refining d
            below the caller's resolution in x is wasted work (0: off).

    Returns:
        A :class:`TruncatedCGResult`.
    """
    n = g.numel()
    max_iter = 20 * n if max_iter is None else max_iter
    gnorm = float(torch.linalg.vector_norm(g, ord=norm))
    x = torch.zeros_like(g)
    if not math.isfinite(gnorm):
        return TruncatedCGResult(x, 0, False, False, True)
    eta = min(0.5, math.sqrt(gnorm)) if forcing is None else forcing
    tol = eta * gnorm
    eps = float(torch.finfo(torch.float64).eps)
    r = g.clone()
    p = -r
    rr = float(torch.dot(r, r))
    for i in range(max_iter):
        if float(torch.linalg.vector_norm(r, ord=norm)) <= tol:
            return TruncatedCGResult(x, i, True, False)
        hp = matvec(p)
        curv = float(torch.dot(p, hp))
        if not math.isfinite(curv):
            return TruncatedCGResult(x, i + 1, False, False, True)
        if 0.0 <= curv <= 3.0 * eps * float(torch.dot(p, p)):  # (numerically) zero curvature
            return TruncatedCGResult(x, i + 1, False, False)
        if curv < 0.0:
            if i == 0:
                x = -(rr / -curv) * g
            return TruncatedCGResult(x, i + 1, False, True)
        alpha = rr / curv
        x_prev, x = x, x + alpha * p
        if step_tol > 0.0 and alpha * float(torch.linalg.vector_norm(p, ord=1)) <= step_tol:
            return TruncatedCGResult(x, i + 1, True, False)
        r = r + alpha * hp
        rr_new = float(torch.dot(r, r))
        if not math.isfinite(rr_new):
            return TruncatedCGResult(x_prev, i + 1, False, False, True)
        p = -r + (rr_new / rr) * p
        rr = rr_new
    return TruncatedCGResult(x, max_iter, False, False)


CG_STEP_FRACTION = 1e-3
"""Newton-CG's CG stops once its last update moved d by ≤ this fraction of the outer step tolerance."""


def run_newton_cg(
    fg: FG,
    hvp_at: Callable[[Tensor], Matvec],
    x0: Tensor,
    *,
    xtol: float = 1e-5,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_iter: int | None = None,
    cg_max_iter: int | None = None,
    callback: Callback | None = None,
) -> OptimizeResult:
    """Minimise f by line-search Newton-CG (N&W Algorithm 7.1), as scipy's ``Newton-CG``.

    Each iteration: d from :func:`truncated_cg` on ∇²f(x) (products from ``hvp_at(x)``), a
    strong Wolfe search (first trial min(1, 2.02 Δf / ∇fᵀd), steps in [1e-8, 50]); stop when
    ‖t d‖₁ ≤ n · xtol, or when the predicted decrease −½∇fᵀd is below the rounding error of f.
    One deliberate difference from scipy: CG's zero-curvature test is relative (pᵀHp ≤ 3ε‖p‖²)
    where scipy's is absolute (pᵀHp ≤ 3ε), so the method is invariant to scaling f and keeps
    taking Newton steps once ∇f is tiny (scipy stops at x0 when f is scaled by 1e-6).
    A non-finite f or ∇f at x0, Hessian-vector product, or f/∇f at every trial step of a line
    search stops the run with status 3 and a message naming it.

    Args:
        fg: ``fg(x) -> (f, ∇f)``.
        hvp_at: ``hvp_at(x)`` returns v ↦ ∇²f(x) v.
        x0: starting point, shape (n,).
        xtol: average relative step tolerance.
        c1: sufficient-decrease constant.
        c2: curvature constant.
        max_iter: iteration limit (200 n by default).
        cg_max_iter: CG products per iteration (20 n by default).
        callback: called after each iteration; returning True stops.

    Returns:
        An :class:`OptimizeResult` (``nhev`` left 0: the caller counts products).
    """
    n = x0.numel()
    max_iter = 200 * n if max_iter is None else max_iter
    x = x0.detach().reshape(-1).clone()
    fv, g = fg(x)
    f = float(fv)
    g = g.reshape(-1)
    f_prev: float | None = None
    nfev, k = 1, 0
    status = Status.SUCCESS
    message: str | None = None

    def result(st: int, msg: str | None = None) -> OptimizeResult:
        return OptimizeResult(x, f, g, k, nfev, nfev, 0, st == Status.SUCCESS, st, msg or STATUS_MESSAGES[st])

    if not math.isfinite(f):
        return result(Status.NON_FINITE, non_finite_message("the objective", 0))
    if not all_finite(g):
        return result(Status.NON_FINITE, non_finite_message("the gradient", 0))
    update_norm = math.inf
    while update_norm > n * xtol:
        if k >= max_iter:
            status = Status.MAX_ITER
            break
        cg = truncated_cg(hvp_at(x), g, max_iter=cg_max_iter, step_tol=CG_STEP_FRACTION * n * xtol)
        if cg.non_finite:
            status, message = Status.NON_FINITE, non_finite_message("the Hessian-vector product", k)
            break
        if (
            not cg.converged
            and not cg.negative_curvature
            and cg.iterations >= (20 * n if cg_max_iter is None else cg_max_iter)
        ):
            status = Status.NOT_POSITIVE_DEFINITE
            break
        d = cg.x
        gtd = float(torch.dot(g, d))
        if not gtd < 0.0:  # zero step (gradient already tiny) or ascent: use −∇f
            d = -g
            gtd = float(torch.dot(g, d))
            if gtd == 0.0:
                break
        if below_resolution(f, gtd, x.dtype):
            break
        step = initial_step_from_decrease(f, f_prev, gtd)
        ls = wolfe_with_fallback(fg, x, d, f, g, step, c1, c2, 1e-8, 50.0)
        nfev += ls.nfev
        if not ls.success or ls.g is None:
            status, message = line_search_status(ls, k)
            break
        update_norm = float(torch.linalg.vector_norm(ls.x - x, ord=1))
        f_prev, f = f, ls.f
        x, g = ls.x, ls.g
        k += 1
        if callback is not None and callback(result(Status.SUCCESS)) is True:
            status = Status.CALLBACK
            break
    return result(status, message)
