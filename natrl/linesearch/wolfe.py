"""Armijo backtracking and strong Wolfe line searches over flat tensors.

Both searches look along a direction ``d`` from ``x`` for a step ``t > 0`` with

* sufficient decrease (Armijo):  f(x + t d) ≤ f(x) + c1 · t · ∇f(x)ᵀd,
* curvature (strong Wolfe):      |∇f(x + t d)ᵀd| ≤ c2 · |∇f(x)ᵀd|,

0 < c1 < c2 < 1 (Nocedal & Wright, *Numerical Optimization*, 2nd ed., eqs. 3.6a and 3.7).
The scalar bookkeeping runs in Python floats (one device→host copy per evaluation); the
vectors stay on their device and keep their dtype. :func:`strong_wolfe` also takes NumPy
arrays (``fg`` then takes and returns arrays): the host path of small CPU problems in
:func:`natrl.optim.quasi_newton.run_lbfgs`.

:func:`strong_wolfe` implements two algorithms:

* ``"more-thuente"`` (default): the Moré & Thuente (1994) safeguarded cubic/quadratic
  interval search, the algorithm of MINPACK-2 ``dcsrch`` used by scipy's BFGS, Newton-CG and
  L-BFGS-B (N&W §3.5, "the line search algorithm of Moré and Thuente");
* ``"zoom"``: bracketing then zoom, N&W Algorithm 3.5 and Algorithm 3.6, with the cubic /
  quadratic interpolation of :func:`scipy.optimize.line_search`.

Trial points where ``f``, its gradient or the point itself is not finite (inf or NaN) are never
accepted: the search shrinks the step towards the last good point instead, so a caller never
receives a NaN iterate. Every loop is bounded by ``max_evals``; a search whose every trial was
non-finite fails with the message :data:`NON_FINITE_TRIALS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["NON_FINITE_TRIALS", "PRECISION_LOSS", "LineSearchResult", "armijo", "strong_wolfe"]

#: The message of a search stopped because rounding errors prevent further progress.
PRECISION_LOSS = "rounding errors prevent progress"
#: The message of a failed search whose every trial point had a non-finite f or gradient.
NON_FINITE_TRIALS = "f or its gradient is not finite at every trial point"

FG = Callable[[Tensor], tuple[Tensor | float, Tensor]]
F = Callable[[Tensor], Tensor | float]


class LineSearchResult(NamedTuple):
    """Outcome of a line search.

    Attributes:
        step: the step length t (0.0 when nothing acceptable was found and no trial decreased f).
        f: f(x + t d), a Python float.
        g: ∇f(x + t d), shape of ``x`` (``None`` for :func:`armijo`, which evaluates no gradient).
        nfev: number of evaluations of ``f`` (or ``fg``) made by the search.
        success: True when the returned step satisfies the requested conditions.
        message: why the search stopped.
        x: the point x + t d at which ``f`` and ``g`` were evaluated (bit-exact).
    """

    step: float
    f: float
    g: Tensor | None
    nfev: int
    success: bool
    message: str
    x: Tensor


def _check_c(c1: float, c2: float | None = None) -> None:
    if not 0.0 < c1 < 1.0:
        raise ValueError(f"line search: need 0 < c1 < 1, got c1={c1}")
    if c2 is not None and not c1 < c2 < 1.0:
        raise ValueError(f"line search: need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")


def _check_search(where: str, step: float, max_evals: int) -> None:
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"{where}: step must be a real number, got {type(step).__name__} {step!r}")
    if not (math.isfinite(step) and step > 0.0):
        raise ValueError(f"{where}: step (the initial step) must be a finite number > 0, got {step!r}")
    if isinstance(max_evals, bool) or not isinstance(max_evals, int):
        raise TypeError(f"{where}: max_evals must be an int >= 1, got {type(max_evals).__name__} {max_evals!r}")
    if max_evals < 1:
        raise ValueError(f"{where}: max_evals must be an int >= 1, got {max_evals}")


def _to_float(v: Tensor | float) -> float:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"line search: f must return a scalar, got shape {tuple(v.shape)}")
        return float(v.item())
    return float(v)


def _flat(a: Tensor) -> Tensor:
    return a if a.dim() == 1 else a.reshape(-1)


def _dot(a: Tensor, b: Tensor) -> float:
    if isinstance(a, np.ndarray):
        return float(a.dot(b)) if a.ndim == 1 and b.ndim == 1 else float(np.dot(a.reshape(-1), b.reshape(-1)))
    return float(torch.dot(_flat(a), _flat(b)).item())


# ---------------------------------------------------------------------------------------------
# Armijo backtracking
# ---------------------------------------------------------------------------------------------


def armijo(
    f: F,
    x: Tensor,
    d: Tensor,
    *,
    f0: Tensor | float,
    g0: Tensor,
    step: float = 1.0,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_evals: int = 20,
) -> LineSearchResult:
    """Backtracking line search for the sufficient-decrease (Armijo) condition.

    Tries t = step, shrink·step, shrink²·step, … until
    f(x + t d) ≤ f0 + c1 · t · g0ᵀd (N&W Algorithm 3.1). Non-finite trial values count as
    failures of the condition.

    Args:
        f: the objective, ``f(x) -> scalar`` (tensor or float).
        x: the current point, any shape.
        d: the search direction, same shape as ``x``; must satisfy g0ᵀd < 0.
        f0: f(x).
        g0: ∇f(x), same shape as ``x``.
        step: the first trial step (> 0).
        c1: sufficient-decrease constant, 0 < c1 < 1.
        shrink: backtracking factor, 0 < shrink < 1.
        max_evals: the most evaluations of ``f``.

    Returns:
        A :class:`LineSearchResult` with ``g=None``. On failure ``step`` is 0.0 and ``x``, ``f``
        are the starting point and value.
    """
    _check_c(c1)
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"armijo: need 0 < shrink < 1, got {shrink}")
    _check_search("armijo", step, max_evals)
    fx0 = _to_float(f0)
    gtd0 = _dot(g0, d)
    if not math.isfinite(fx0) or not math.isfinite(gtd0):
        return LineSearchResult(0.0, fx0, None, 0, False, "non-finite value or slope at the starting point", x)
    if not gtd0 < 0.0:
        return LineSearchResult(0.0, fx0, None, 0, False, "not a descent direction", x)
    t = float(step)
    all_non_finite = True
    for nfev in range(1, max_evals + 1):
        xt = x + t * d
        ft = _to_float(f(xt))
        if not (math.isfinite(ft) and bool(torch.isfinite(xt).all())):
            t *= shrink
            continue
        all_non_finite = False
        if ft <= fx0 + c1 * t * gtd0:
            return LineSearchResult(t, ft, None, nfev, True, "sufficient decrease", xt)
        t *= shrink
    message = NON_FINITE_TRIALS if all_non_finite else f"no sufficient decrease in {max_evals} evaluations"
    return LineSearchResult(0.0, fx0, None, max_evals, False, message, x)


# ---------------------------------------------------------------------------------------------
# Strong Wolfe
# ---------------------------------------------------------------------------------------------


class _Evaluator:
    """Evaluates φ(t) = f(x + t d) and φ'(t) = ∇f(x + t d)ᵀd, keeping the best point."""

    def __init__(self, fg: FG, x: Tensor, d: Tensor, f0: float, g0: Tensor, max_evals: int):
        self.fg, self.x, self.d = fg, x, d
        self.nfev = 0
        self.nonfinite = 0  # trials with a non-finite f, slope or point
        self.max_evals = max_evals
        self.last: tuple[float, float, float, Tensor, Tensor] | None = None
        # Best point by function value among finite evaluations (fallback result).
        self.best: tuple[float, float, Tensor, Tensor] = (0.0, f0, g0, x)

    @property
    def exhausted(self) -> bool:
        return self.nfev >= self.max_evals

    def __call__(self, t: float) -> tuple[float, float]:
        xt = self.x + t * self.d
        fv, gv = self.fg(xt)
        self.nfev += 1
        ft = _to_float(fv)
        gt = gv.detach() if gv.requires_grad else gv
        dt = _dot(gt, self.d) if math.isfinite(ft) else math.nan
        if not math.isfinite(dt) or not bool(torch.isfinite(xt).all()):
            ft = math.nan
        return self._record(t, ft, dt, gt, xt)

    def _record(self, t: float, ft: float, dt: float, gt: Tensor, xt: Tensor) -> tuple[float, float]:
        if not math.isfinite(ft):
            self.nonfinite += 1
        self.last = (t, ft, dt, gt, xt)
        if ft < self.best[1]:  # False for NaN
            self.best = (t, ft, gt, xt)
        return ft, dt

    def result(self, success: bool, message: str) -> LineSearchResult:
        if success and self.last is not None:
            t, ft, _, gt, xt = self.last
            return LineSearchResult(t, ft, gt, self.nfev, True, message, xt)
        if self.nfev and self.nonfinite == self.nfev:
            message = NON_FINITE_TRIALS
        t, ft, gt, xt = self.best
        return LineSearchResult(t, ft, gt, self.nfev, False, message, xt)


class _HostEvaluator(_Evaluator):
    """The same on flat NumPy arrays, ``fg`` returning ``(float, array)``."""

    def __init__(self, fg: FG, x: Tensor, d: Tensor, f0: float, g0: Tensor, max_evals: int):
        super().__init__(fg, x, d, f0, g0, max_evals)
        # x·0 is 0 when every entry of x is finite, NaN otherwise: the finiteness test of a trial
        # point in one BLAS call (isfinite followed by a reduction costs several times more).
        self.zero: Any = np.zeros(x.shape, dtype=x.dtype)

    def __call__(self, t: float) -> tuple[float, float]:
        xt: Any = self.x + t * self.d
        fv, gt = self.fg(xt)
        self.nfev += 1
        ft = fv if type(fv) is float else _to_float(fv)
        dt = float(gt.dot(self.d)) if math.isfinite(ft) else math.nan
        if not math.isfinite(dt) or not math.isfinite(xt.dot(self.zero)):
            ft = math.nan
        return self._record(t, ft, dt, gt, xt)


def strong_wolfe(
    fg: FG,
    x: Tensor,
    d: Tensor,
    *,
    f0: Tensor | float,
    g0: Tensor,
    step: float = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 25,
    xtol: float | None = None,
    step_min: float = 0.0,
    step_max: float = 1e10,
    method: str = "more-thuente",
) -> LineSearchResult:
    """Line search for a step satisfying the strong Wolfe conditions.

    Finds t > 0 with f(x + t d) ≤ f0 + c1 t g0ᵀd and |∇f(x + t d)ᵀd| ≤ c2 |g0ᵀd|
    (N&W eqs. 3.7a–b).

    Args:
        fg: ``fg(x) -> (f, grad)``; ``f`` a scalar (tensor or float), ``grad`` shaped like ``x``.
        x: the current point, any shape.
        d: the search direction, same shape as ``x``; must satisfy g0ᵀd < 0.
        f0: f(x).
        g0: ∇f(x).
        step: the first trial step (> 0).
        c1: sufficient-decrease constant.
        c2: curvature constant, c1 < c2 < 1.
        max_evals: the most evaluations of ``fg``.
        xtol: relative width of the bracketing interval below which Moré–Thuente gives up;
            max(1e-14, machine epsilon of x's dtype) by default.
        step_min: smallest allowed step (Moré–Thuente).
        step_max: largest allowed step.
        method: ``"more-thuente"`` (Moré & Thuente 1994; MINPACK-2 dcsrch) or ``"zoom"``
            (N&W Algorithms 3.5 and 3.6).

    Returns:
        A :class:`LineSearchResult`. When ``success`` is False, ``step``/``f``/``g``/``x``
        describe the evaluated point with the lowest finite ``f`` (step 0.0 and the starting
        point when no trial decreased ``f``); that point need not satisfy the conditions.

    Raises:
        ValueError: for invalid constants or an unknown ``method``.
    """
    _check_c(c1, c2)
    _check_search("strong_wolfe", step, max_evals)
    if not (0.0 <= step_min < step_max and math.isfinite(step_max)):
        raise ValueError(
            f"strong_wolfe: need 0 <= step_min < step_max < inf, got step_min={step_min!r}, step_max={step_max!r}"
        )
    methods = ("more-thuente", "zoom")
    if method not in methods:
        raise ValueError(f"strong_wolfe: unknown method {method!r}; valid methods: {methods}")
    fx0 = _to_float(f0)
    gtd0 = _dot(g0, d)
    ev = (_HostEvaluator if isinstance(x, np.ndarray) else _Evaluator)(fg, x, d, fx0, g0, max_evals)
    if not gtd0 < 0.0:
        return ev.result(False, "not a descent direction")
    if not math.isfinite(fx0) or not math.isfinite(gtd0):
        return ev.result(False, "non-finite value or slope at the starting point")
    step = min(max(step, step_min), step_max)
    if xtol is None:
        xtol = max(1e-14, _eps(x))
    if method == "zoom":
        return _zoom_search(ev, fx0, gtd0, step, c1, c2, step_max)
    return _more_thuente(ev, fx0, gtd0, step, c1, c2, xtol, step_min, step_max)


def _eps(x: Tensor) -> float:
    """Machine epsilon of x's dtype (a tensor's or an array's); 0 for integer dtypes."""
    eps = _EPS.get(x.dtype)
    if eps is None:
        if isinstance(x, np.ndarray):
            eps = float(np.finfo(x.dtype).eps) if np.issubdtype(x.dtype, np.floating) else 0.0
        else:
            eps = float(torch.finfo(x.dtype).eps) if x.dtype.is_floating_point else 0.0
        _EPS[x.dtype] = eps
    return eps


_EPS: dict[object, float] = {}


def _step_resolution(x: Tensor, d: Tensor) -> float:
    """The smallest step change that still moves x + t d in x's dtype (relative to its largest entry)."""
    if not x.numel() if isinstance(x, Tensor) else not x.size:
        return 0.0
    if isinstance(x, np.ndarray):
        return _eps(x) * float(np.abs(x).max()) / max(float(np.abs(d).max()), 1e-300)
    inf = math.inf
    return (
        float(torch.finfo(x.dtype).eps)
        * float(torch.linalg.vector_norm(x, ord=inf))
        / max(float(torch.linalg.vector_norm(d, ord=inf)), 1e-300)
    )


def _more_thuente(
    ev: _Evaluator,
    finit: float,
    ginit: float,
    stp: float,
    ftol: float,
    gtol: float,
    xtol: float,
    stpmin: float,
    stpmax: float,
    resolution: float | None = None,
) -> LineSearchResult:
    """Moré & Thuente (1994) line search (MINPACK-2 ``dcsrch``), on floats.

    Besides the tests of ``dcsrch`` it stops (unsuccessfully) once the bracketing interval is
    narrower than ``resolution``, the step change below which x + t d no longer changes in
    its dtype (this saves dozens of evaluations on the plateau of float32 rounding noise);
    None: computed from x and d once the minimum is first bracketed (most searches accept
    their first trial and never need it).
    """
    xtrapl, xtrapu, p5, p66 = 1.1, 4.0, 0.5, 0.66
    brackt = False
    stage = 1
    gtest = ftol * ginit
    width = stpmax - stpmin
    width1 = width / p5
    stx, fx, gx = 0.0, finit, ginit
    sty, fy, gy = 0.0, finit, ginit
    stmin, stmax = 0.0, stp + xtrapu * stp
    while True:
        if ev.exhausted:
            return ev.result(False, f"no strong Wolfe step in {ev.max_evals} evaluations")
        f, g = ev(stp)
        if not math.isfinite(f):
            # Never accept, never interpolate through a non-finite value: shrink towards the
            # best point and cap the interval there.
            stpmax = stp
            stp = stx + 0.5 * (stp - stx)
            stmax = min(stmax, stpmax)
            if abs(stp - stx) <= xtol * max(abs(stp), 1e-300):
                return ev.result(False, "non-finite values prevent progress")
            continue
        ftest = finit + stp * gtest
        if stage == 1 and f <= ftest and g >= 0.0:
            stage = 2
        if f <= ftest and abs(g) <= gtol * (-ginit):
            return ev.result(True, "strong Wolfe conditions satisfied")
        if brackt and (stp <= stmin or stp >= stmax):
            return ev.result(False, PRECISION_LOSS)
        if brackt and stmax - stmin <= xtol * stmax:
            return ev.result(False, "interval of uncertainty below xtol")
        if brackt and resolution is None:  # needed only once the minimum is bracketed
            resolution = _step_resolution(ev.x, ev.d)
        if brackt and resolution is not None and stmax - stmin <= resolution:
            return ev.result(False, PRECISION_LOSS)
        if stp == stpmax and f <= ftest and g <= gtest:
            return ev.result(False, "step at step_max")
        if stp == stpmin and (f > ftest or g >= gtest):
            return ev.result(False, "step at step_min")
        if stage == 1 and f <= fx and f > ftest:
            # Use the modified function ψ(t) = φ(t) − φ(0) − ftol·t·φ'(0).
            fm, fxm, fym = f - stp * gtest, fx - stx * gtest, fy - sty * gtest
            gm, gxm, gym = g - gtest, gx - gtest, gy - gtest
            stx, fxm, gxm, sty, fym, gym, stp, brackt = _dcstep(
                stx, fxm, gxm, sty, fym, gym, stp, fm, gm, brackt, stmin, stmax
            )
            fx, fy = fxm + stx * gtest, fym + sty * gtest
            gx, gy = gxm + gtest, gym + gtest
        else:
            stx, fx, gx, sty, fy, gy, stp, brackt = _dcstep(stx, fx, gx, sty, fy, gy, stp, f, g, brackt, stmin, stmax)
        if brackt:
            if abs(sty - stx) >= p66 * width1:
                stp = stx + p5 * (sty - stx)
            width1 = width
            width = abs(sty - stx)
            stmin, stmax = min(stx, sty), max(stx, sty)
        else:
            stmin = stp + xtrapl * (stp - stx)
            stmax = stp + xtrapu * (stp - stx)
        stp = min(max(stp, stpmin), stpmax)
        if (brackt and (stp <= stmin or stp >= stmax)) or (brackt and stmax - stmin <= xtol * stmax):
            stp = stx
        if not math.isfinite(stp):
            return ev.result(False, "non-finite trial step")


def _dcstep(
    stx: float,
    fx: float,
    dx: float,
    sty: float,
    fy: float,
    dy: float,
    stp: float,
    fp: float,
    dp: float,
    brackt: bool,
    stpmin: float,
    stpmax: float,
) -> tuple[float, float, float, float, float, float, float, bool]:
    """Safeguarded cubic/quadratic step of Moré & Thuente (1994), MINPACK-2 ``dcstep``."""
    sgnd = math.copysign(1.0, dp) * math.copysign(1.0, dx) if dp != 0 and dx != 0 else 0.0

    def _gamma(theta: float, a: float, b: float) -> float:
        s = max(abs(theta), abs(a), abs(b))
        if s == 0.0:
            return 0.0
        return s * math.sqrt(max(0.0, (theta / s) ** 2 - (a / s) * (b / s)))

    if fp > fx:
        # Case 1: higher function value; the minimum is bracketed.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        gamma = _gamma(theta, dx, dp)
        if stp < stx:
            gamma = -gamma
        p = (gamma - dx) + theta
        q = ((gamma - dx) + gamma) + dp
        stpc = stx + (p / q) * (stp - stx)
        stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        stpf = stpc if abs(stpc - stx) <= abs(stpq - stx) else stpc + (stpq - stpc) / 2.0
        brackt = True
    elif sgnd < 0.0:
        # Case 2: lower value, derivatives of opposite sign; the minimum is bracketed.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        gamma = _gamma(theta, dx, dp)
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dx
        stpc = stp + (p / q) * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        brackt = True
    elif abs(dp) < abs(dx):
        # Case 3: lower value, same-sign derivative that decreases in magnitude.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        gamma = _gamma(theta, dx, dp)
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = p / q if q != 0.0 else 0.0
        if r < 0.0 and gamma != 0.0:
            stpc = stp + r * (stx - stp)
        elif stp > stx:
            stpc = stpmax
        else:
            stpc = stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if brackt:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            if stp > stx:
                stpf = min(stp + 0.66 * (sty - stp), stpf)
            else:
                stpf = max(stp + 0.66 * (sty - stp), stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = min(max(stpf, stpmin), stpmax)
    else:
        # Case 4: lower value, same-sign derivative that does not decrease.
        if brackt:
            theta = 3.0 * (fp - fy) / (sty - stp) + dy + dp
            gamma = _gamma(theta, dy, dp)
            if stp > sty:
                gamma = -gamma
            p = (gamma - dp) + theta
            q = ((gamma - dp) + gamma) + dy
            stpf = stp + (p / q) * (sty - stp)
        elif stp > stx:
            stpf = stpmax
        else:
            stpf = stpmin
    # Update the interval that contains a minimiser.
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sgnd < 0.0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, stpf, brackt


def _cubicmin(a: float, fa: float, fpa: float, b: float, fb: float, c: float, fc: float) -> float | None:
    """Minimiser of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a."""
    try:
        db, dc = b - a, c - a
        denom = (db * dc) ** 2 * (db - dc)
        r1 = fb - fa - fpa * db
        r2 = fc - fa - fpa * dc
        aa = (dc**2 * r1 - db**2 * r2) / denom
        bb = (-(dc**3) * r1 + db**3 * r2) / denom
        radical = bb * bb - 3.0 * aa * fpa
        xmin = a + (-bb + math.sqrt(radical)) / (3.0 * aa)
    except (ZeroDivisionError, ValueError, OverflowError):
        return None
    return xmin if math.isfinite(xmin) else None


def _quadmin(a: float, fa: float, fpa: float, b: float, fb: float) -> float | None:
    """Minimiser of the quadratic through (a, fa), (b, fb) with slope fpa at a."""
    try:
        db = b - a
        bb = (fb - fa - fpa * db) / (db * db)
        xmin = a - fpa / (2.0 * bb)
    except (ZeroDivisionError, OverflowError):
        return None
    return xmin if math.isfinite(xmin) else None


def _zoom_search(
    ev: _Evaluator, f0: float, g0: float, t1: float, c1: float, c2: float, tmax: float
) -> LineSearchResult:
    """N&W Algorithm 3.5 (bracketing phase), calling :func:`_zoom` (Algorithm 3.6)."""
    t0, f_t0, g_t0 = 0.0, f0, g0
    first = True
    while not ev.exhausted:
        f1, g1 = ev(t1)
        if not math.isfinite(f1):
            tmax = t1
            t1 = t0 + 0.5 * (t1 - t0)
            continue
        if f1 > f0 + c1 * t1 * g0 or (f1 >= f_t0 and not first):
            return _zoom(ev, t0, t1, f_t0, f1, g_t0, f0, g0, c1, c2)
        if abs(g1) <= -c2 * g0:
            return ev.result(True, "strong Wolfe conditions satisfied")
        if g1 >= 0.0:
            return _zoom(ev, t1, t0, f1, f_t0, g1, f0, g0, c1, c2)
        first = False
        t0, f_t0, g_t0 = t1, f1, g1
        t1 = min(2.0 * t1, tmax)
    return ev.result(False, f"no strong Wolfe step in {ev.max_evals} evaluations")


def _zoom(
    ev: _Evaluator,
    a_lo: float,
    a_hi: float,
    f_lo: float,
    f_hi: float,
    g_lo: float,
    f0: float,
    g0: float,
    c1: float,
    c2: float,
) -> LineSearchResult:
    """N&W Algorithm 3.6 (zoom) with cubic, then quadratic, then bisection interpolation."""
    delta1, delta2 = 0.2, 0.1  # safeguards of the cubic and quadratic trial points
    a_rec, f_rec = 0.0, f0
    first = True
    while not ev.exhausted:
        dalpha = a_hi - a_lo
        a, b = (a_lo, a_hi) if dalpha > 0 else (a_hi, a_lo)
        a_j: float | None = None
        if not first:
            cchk = delta1 * abs(dalpha)
            a_j = _cubicmin(a_lo, f_lo, g_lo, a_hi, f_hi, a_rec, f_rec)
        if first or a_j is None or a_j > b - cchk or a_j < a + cchk:
            qchk = delta2 * abs(dalpha)
            a_j = _quadmin(a_lo, f_lo, g_lo, a_hi, f_hi)
            if a_j is None or a_j > b - qchk or a_j < a + qchk:
                a_j = a_lo + 0.5 * dalpha
        first = False
        if dalpha == 0.0:
            return ev.result(False, PRECISION_LOSS)
        f_j, g_j = ev(a_j)
        if not math.isfinite(f_j) or f_j > f0 + c1 * a_j * g0 or f_j >= f_lo:
            a_rec, f_rec = a_hi, f_hi
            a_hi, f_hi = a_j, (f_j if math.isfinite(f_j) else math.inf)
        else:
            if abs(g_j) <= -c2 * g0:
                return ev.result(True, "strong Wolfe conditions satisfied")
            if g_j * (a_hi - a_lo) >= 0.0:
                a_rec, f_rec = a_hi, f_hi
                a_hi, f_hi = a_lo, f_lo
            else:
                a_rec, f_rec = a_lo, f_lo
            a_lo, f_lo, g_lo = a_j, f_j, g_j
    return ev.result(False, f"no strong Wolfe step in {ev.max_evals} evaluations")
