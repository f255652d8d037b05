"""Trust-region Newton-CG: Steihaug's truncated CG inside a trust region.

The model mₖ(p) = f + ∇fᵀp + ½ pᵀ∇²f p is minimised approximately over ‖p‖ ≤ Δ by CG-Steihaug
(N&W Algorithm 7.2): CG from p = 0, stopped by the forcing term ‖r‖ ≤ min(0.5, √‖g‖)‖g‖, at
the boundary when an iterate leaves the region, or along a direction of non-positive
curvature to the boundary. The radius follows N&W Algorithm 4.1 with the ratio
ρ = (f(x) − f(x + p)) / (m(0) − m(p)): shrink ×1/4 when ρ < 1/4, double (up to Δ_max) when
ρ > 3/4 and the step reached the boundary; accept the step when ρ > η.
Defaults and stopping rules mirror scipy's ``trust-ncg``. Model values are tracked along the
CG recurrence, so no Hessian-vector product is spent on evaluating m(p).

Non-finite values never loop: CG-Steihaug stops at a non-finite product, a trial point with a
non-finite f or ∇f is rejected like a bad step (the radius shrinks), and the run stops with
status 3 and a message naming the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from natrl.optim.result import STATUS_MESSAGES, OptimizeResult, Status, non_finite_message

__all__ = ["SteihaugResult", "run_trust_ncg", "steihaug_cg"]

FG = Callable[[Tensor], tuple[Tensor, Tensor]]
Matvec = Callable[[Tensor], Tensor]
Callback = Callable[[OptimizeResult], object]


class SteihaugResult(NamedTuple):
    """Outcome of :func:`steihaug_cg`.

    Attributes:
        p: the step, shape (n,), ‖p‖ ≤ Δ.
        model_decrease: m(0) − m(p) = −(gᵀp + ½ pᵀBp) ≥ 0.
        hits_boundary: whether ‖p‖ = Δ.
        iterations: the number of products B v.
        non_finite: g or a product B d was not finite; CG stopped and ``p`` is the last
            finite iterate (zero when g is not finite).
    """

    p: Tensor
    model_decrease: float
    hits_boundary: bool
    iterations: int
    non_finite: bool = False


def _to_boundary(z: Tensor, d: Tensor, radius: float) -> tuple[float, float]:
    """Roots ta ≤ tb of ‖z + t d‖ = Δ (stable quadratic formula)."""
    a = float(torch.dot(d, d))
    b = 2.0 * float(torch.dot(z, d))
    c = float(torch.dot(z, z)) - radius * radius
    disc = math.sqrt(max(b * b - 4.0 * a * c, 0.0))
    aux = b + math.copysign(disc, b)
    if aux == 0.0:
        return 0.0, 0.0
    ta, tb = -aux / (2.0 * a), -2.0 * c / aux
    return (ta, tb) if ta <= tb else (tb, ta)


def steihaug_cg(matvec: Matvec, g: Tensor, radius: float, *, max_iter: int | None = None) -> SteihaugResult:
    """CG-Steihaug for min gᵀp + ½ pᵀBp subject to ‖p‖ ≤ Δ (N&W Algorithm 7.2).

    Args:
        matvec: v ↦ B v (B symmetric, possibly indefinite).
        g: the gradient, shape (n,).
        radius: the trust radius Δ > 0.
        max_iter: the most products (20 n by default, as scipy's Newton-CG; CG ends in ≤ n
            steps in exact arithmetic).

    Returns:
        A :class:`SteihaugResult`.
    """
    gnorm = float(torch.linalg.vector_norm(g))
    z = torch.zeros_like(g)
    if not math.isfinite(gnorm):
        return SteihaugResult(z, 0.0, False, 0, True)
    tol = min(0.5, math.sqrt(gnorm)) * gnorm
    if gnorm < tol or gnorm == 0.0:
        return SteihaugResult(z, 0.0, False, 0)
    r = g.clone()
    d = -r
    m_z = 0.0  # m(z) − m(0)
    it = 0
    limit = 20 * g.numel() if max_iter is None else max_iter
    while it < limit:
        bd = matvec(d)
        it += 1
        dbd = float(torch.dot(d, bd))
        if not math.isfinite(dbd):
            return SteihaugResult(z, -m_z, False, it, True)
        rd = float(torch.dot(r, d))  # slope of m at z along d (r = g + Bz)

        def model_at(t: float, rd: float = rd, dbd: float = dbd, m_z: float = m_z) -> float:
            return m_z + t * rd + 0.5 * t * t * dbd

        if dbd <= 0.0:
            ta, tb = _to_boundary(z, d, radius)
            ma, mb = model_at(ta), model_at(tb)
            t, m_t = (ta, ma) if ma < mb else (tb, mb)
            return SteihaugResult(z + t * d, -m_t, True, it)
        rr = float(torch.dot(r, r))
        alpha = rr / dbd
        z_next = z + alpha * d
        if float(torch.linalg.vector_norm(z_next)) >= radius:
            _, tb = _to_boundary(z, d, radius)
            return SteihaugResult(z + tb * d, -model_at(tb), True, it)
        r_next = r + alpha * bd
        rr_next = float(torch.dot(r_next, r_next))
        if not math.isfinite(rr_next):
            return SteihaugResult(z, -m_z, False, it, True)
        m_z = model_at(alpha)
        if math.sqrt(rr_next) < tol:
            return SteihaugResult(z_next, -m_z, False, it)
        d = -r_next + (rr_next / rr) * d
        z, r = z_next, r_next
    return SteihaugResult(z, -m_z, False, it)


def run_trust_ncg(
    fg: FG,
    hvp_at: Callable[[Tensor], Matvec],
    x0: Tensor,
    *,
    gtol: float = 1e-4,
    initial_trust_radius: float = 1.0,
    max_trust_radius: float = 1000.0,
    eta: float = 0.15,
    max_iter: int | None = None,
    callback: Callback | None = None,
) -> OptimizeResult:
    """Minimise f by the trust-region Newton-CG method (N&W Algorithms 4.1 and 7.2).

    Args:
        fg: ``fg(x) -> (f, ∇f)``.
        hvp_at: ``hvp_at(x)`` returns v ↦ ∇²f(x) v.
        x0: starting point, shape (n,).
        gtol: stop when ‖∇f‖₂ < gtol.
        initial_trust_radius: Δ₀.
        max_trust_radius: Δ_max.
        eta: acceptance threshold on ρ, 0 ≤ η < 1/4.
        max_iter: iteration limit (200 n by default).
        callback: called after each iteration; returning True stops.

    Returns:
        An :class:`OptimizeResult` (``nhev`` left 0: the caller counts products).

    Raises:
        ValueError: for radii or η out of range.
    """
    if not 0.0 <= eta < 0.25:
        raise ValueError(f"trust-ncg: eta must lie in [0, 0.25), got {eta}")
    if not 0.0 < initial_trust_radius < max_trust_radius:
        raise ValueError(
            "trust-ncg: need 0 < initial_trust_radius < max_trust_radius, got "
            f"{initial_trust_radius} and {max_trust_radius}"
        )
    n = x0.numel()
    max_iter = 200 * n if max_iter is None else max_iter
    x = x0.detach().reshape(-1).clone()
    fv, g = fg(x)
    f = float(fv)
    g = g.reshape(-1)
    nfev, k = 1, 0
    radius = initial_trust_radius
    status = Status.SUCCESS
    message: str | None = None
    eps = float(torch.finfo(x.dtype).eps)

    def result(st: int, msg: str | None = None) -> OptimizeResult:
        return OptimizeResult(x, f, g, k, nfev, nfev, 0, st == Status.SUCCESS, st, msg or STATUS_MESSAGES[st])

    if not math.isfinite(f):
        return result(Status.NON_FINITE, non_finite_message("the objective", 0))
    if not bool(torch.isfinite(g).all()):
        return result(Status.NON_FINITE, non_finite_message("the gradient", 0))
    while float(torch.linalg.vector_norm(g)) >= gtol:
        sub = steihaug_cg(hvp_at(x), g, radius)
        if sub.non_finite:
            status, message = Status.NON_FINITE, non_finite_message("the Hessian-vector product", k)
            break
        predicted = sub.model_decrease
        if not predicted > 0.0:
            status = Status.BAD_MODEL
            break
        x_new = x + sub.p
        f_new_t, g_new = fg(x_new)
        nfev += 1
        f_new = float(f_new_t)
        finite_trial = math.isfinite(f_new) and bool(torch.isfinite(g_new).all())
        actual = f - f_new if finite_trial else -math.inf  # a non-finite trial is a bad step
        rho = actual / predicted
        if rho < 0.25:
            radius *= 0.25
        elif rho > 0.75 and sub.hits_boundary:
            radius = min(2.0 * radius, max_trust_radius)
        if rho > eta:
            x, f, g = x_new, f_new, g_new.reshape(-1)
        k += 1
        if not finite_trial and radius <= eps * max(1.0, float(torch.linalg.vector_norm(x))):
            # the region has shrunk below the resolution of x: every step is non-finite
            what = f"the objective or its gradient at every trial point (trust radius shrunk to {radius:.2g})"
            status, message = Status.NON_FINITE, non_finite_message(what, k)
            break
        if callback is not None and callback(result(Status.SUCCESS)) is True:
            status = Status.CALLBACK
            break
        if float(torch.linalg.vector_norm(g)) < gtol:
            break
        if k >= max_iter:
            status = Status.MAX_ITER
            break
    return result(status, message)
