"""BFGS and L-BFGS: pure update rules and line-search drivers over flat tensors.

BFGS keeps a dense inverse-Hessian approximation H ≈ ∇²f⁻¹ and updates it from the step
s = x₊ − x and the gradient change y = ∇f(x₊) − ∇f(x) (N&W eq. 6.17)::

    H₊ = (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ,   ρ = 1 / yᵀs.

L-BFGS keeps only the last m pairs (s, y) and applies H to a vector with the two-loop
recursion (N&W Algorithm 7.4) from H₀ = γ I, γ = sᵀy / yᵀy of the newest pair (N&W eq. 7.20).

Both drivers take steps x₊ = x + t d, d = −H ∇f(x), with t from a strong Wolfe line search,
which keeps yᵀs > 0 and so H positive definite (N&W Algorithm 6.1 and Algorithm 7.5).
Their defaults and stopping rules mirror scipy's ``BFGS`` and ``L-BFGS-B`` (unconstrained), so
iteration and evaluation counts are comparable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from natrl.linesearch.wolfe import NON_FINITE_TRIALS, LineSearchResult, strong_wolfe
from natrl.optim import lbfgs_host
from natrl.optim.descent_steps import (
    all_finite,
    below_resolution,
    initial_step_from_decrease,
    line_search_status,
    wolfe_with_fallback,
)
from natrl.optim.lbfgs_host import host_eligible
from natrl.optim.result import STATUS_MESSAGES, OptimizeResult, Status, non_finite_message

__all__ = [
    "LBFGSMemory",
    "bfgs_update",
    "lbfgs_direction",
    "lbfgs_init",
    "lbfgs_push",
    "run_bfgs",
    "run_lbfgs",
]

FG = Callable[[Tensor], tuple[Tensor, Tensor]]
Callback = Callable[[OptimizeResult], object]


# ---------------------------------------------------------------------------------------------
# Pure update rules
# ---------------------------------------------------------------------------------------------


def bfgs_update(h: Tensor, s: Tensor, y: Tensor, *, skip_tol: float | None = None) -> tuple[Tensor, bool]:
    """One BFGS update of the inverse-Hessian approximation.

    H₊ = (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ with ρ = 1/(yᵀs) (N&W eq. 6.17), computed in
    O(n²) as H − ρ (s (Hy)ᵀ + (Hy) sᵀ) + (ρ² yᵀHy + ρ) s sᵀ. The update is skipped (H returned
    unchanged) when yᵀs ≤ skip_tol · ‖y‖ ‖s‖, where the curvature condition fails and the
    update would destroy positive definiteness (N&W §6.1), and when H₊ would not be finite.

    Args:
        h: H, shape (n, n), symmetric positive definite.
        s: the step x₊ − x, shape (n,).
        y: the gradient change ∇f(x₊) − ∇f(x), shape (n,).
        skip_tol: relative threshold; machine epsilon of the dtype by default.

    Returns:
        ``(H₊, skipped)``.
    """
    if skip_tol is None:
        skip_tol = float(torch.finfo(h.dtype).eps)
    ys = float(torch.dot(y, s))
    if not math.isfinite(ys) or ys <= skip_tol * float(torch.linalg.vector_norm(y) * torch.linalg.vector_norm(s)):
        return h, True
    rho = 1.0 / ys
    hy = h @ y
    yhy = float(torch.dot(y, hy))
    h_new = torch.addr(h, s, hy, alpha=-rho)  # rank-one updates, no n × n temporaries
    h_new.addr_(hy, s, alpha=-rho)
    h_new.addr_(s, s, alpha=rho * rho * yhy + rho)
    if not bool(torch.isfinite(h_new).all()):  # overflow: keep the last finite H
        return h, True
    return h_new, False


def _bfgs_update_host(h: np.ndarray, s: np.ndarray, y: np.ndarray, skip_tol: float) -> tuple[np.ndarray, bool]:
    """:func:`bfgs_update` on NumPy arrays: H₊ = H + s (c s + v)ᵀ + v sᵀ with v = −ρ H y and
    c = ρ² yᵀHy + ρ, the same rank-two update as two outer products."""
    ys = float(y.dot(s))
    if not math.isfinite(ys) or ys <= skip_tol * (math.sqrt(float(y.dot(y))) * math.sqrt(float(s.dot(s)))):
        return h, True
    rho = 1.0 / ys
    hy = h.dot(y)
    v = hy * -rho
    h_new = h + np.outer(s, s * (rho * rho * float(y.dot(hy)) + rho) + v)
    h_new += np.outer(v, s)
    if not np.isfinite(h_new).all():  # overflow: keep the last finite H
        return h, True
    return h_new, False


class LBFGSMemory(NamedTuple):
    """The L-BFGS curvature pairs, oldest first.

    Attributes:
        s: steps sₖ = xₖ₊₁ − xₖ, each of shape (n,).
        y: gradient changes yₖ = ∇fₖ₊₁ − ∇fₖ, each of shape (n,).
        rho: ρₖ = 1 / yₖᵀsₖ (Python floats).
        gamma: the initial scaling γ = sᵀy / yᵀy of H₀ = γ I (1.0 while empty).
    """

    s: tuple[Tensor, ...]
    y: tuple[Tensor, ...]
    rho: tuple[float, ...]
    gamma: float


def lbfgs_init() -> LBFGSMemory:
    """An empty memory (the first direction is steepest descent)."""
    return LBFGSMemory((), (), (), 1.0)


def lbfgs_push(
    memory: LBFGSMemory, s: Tensor, y: Tensor, *, history_size: int, skip_tol: float | None = None
) -> tuple[LBFGSMemory, bool]:
    """Add the pair (s, y), dropping the oldest beyond ``history_size`` pairs.

    The pair is skipped when yᵀs ≤ skip_tol · yᵀy (the test of L-BFGS-B, Byrd et al. 1995),
    which keeps the implicit H positive definite.

    Returns:
        ``(memory, skipped)``.
    """
    if skip_tol is None:
        skip_tol = float(torch.finfo(s.dtype).eps)
    ys = float(torch.dot(y, s))
    yy = float(torch.dot(y, y))
    if not (math.isfinite(ys) and math.isfinite(yy)) or ys <= skip_tol * yy or yy == 0.0:
        return memory, True
    start = max(len(memory.s) - (history_size - 1), 0)
    s_hist = (*memory.s[start:], s)
    y_hist = (*memory.y[start:], y)
    rho = (*memory.rho[start:], 1.0 / ys)
    return LBFGSMemory(s_hist, y_hist, rho, ys / yy), False


_SMALL_N = 1024
"""Up to this dimension :func:`lbfgs_direction` uses the matrix form (fewer, larger ops)."""


def lbfgs_direction(g: Tensor, memory: LBFGSMemory) -> Tensor:
    """The quasi-Newton direction d = −H g by the two-loop recursion (N&W Algorithm 7.4).

    For n ≤ 1024 the same recursion runs in matrix form (two unit-triangular m × m solves): a dozen
    tensor operations instead of 9 per pair, which matters when each operation costs more
    than its arithmetic (small problems, ``scripts/bench_minimize.py``); beyond that the
    loop, whose 4mn flops beat the m²n of the matrix form.

    Args:
        g: the gradient, shape (n,).
        memory: the curvature pairs.

    Returns:
        d, shape (n,).
    """
    if memory.s and g.numel() <= _SMALL_N:
        return _two_loop_matrix(g, memory)
    q = g.clone()
    alphas: list[Tensor] = []
    for s, y, rho in zip(reversed(memory.s), reversed(memory.y), reversed(memory.rho), strict=True):
        a = rho * torch.dot(s, q)
        q.sub_(a * y)
        alphas.append(a)
    r = q.mul_(memory.gamma)
    for s, y, rho, a in zip(memory.s, memory.y, memory.rho, reversed(alphas), strict=True):
        b = rho * torch.dot(y, r)
        r.add_((a - b) * s)
    return r.neg_()


def _two_loop_matrix(g: Tensor, memory: LBFGSMemory) -> Tensor:
    """The two-loop recursion as two unit-triangular solves of size m.

    With the pairs as rows of S, Y (m × n, oldest first), A = S Yᵀ and ρ = (1/yᵢᵀsᵢ):
    the first loop's coefficients aᵢ = ρᵢ sᵢᵀ(g − Σ_{j>i} aⱼ yⱼ) solve
    (I + triu(diag(ρ) A, 1)) a = ρ ⊙ S g; with q = g − Yᵀa, the second loop's
    eᵢ = aᵢ − bᵢ, bᵢ = ρᵢ yᵢᵀ(γ q + Σ_{j<i} eⱼ sⱼ), solve
    (I + tril((diag(ρ) A)ᵀ, −1)) e = a − γ ρ ⊙ Y q; and H g = γ q + Sᵀ e.
    """
    s = torch.stack(memory.s)
    y = torch.stack(memory.y)
    rho = torch.tensor(memory.rho, dtype=g.dtype, device=g.device)[:, None]
    sy = s @ y.T
    # unit-triangular solves read only the strict triangle: no need to form I + ...
    a = torch.linalg.solve_triangular(sy * rho, rho * (s @ g)[:, None], upper=True, unitriangular=True)
    q = g - y.T @ a[:, 0]
    rhs = a.sub_(rho * (y @ q)[:, None], alpha=memory.gamma)
    e = torch.linalg.solve_triangular(sy.T * rho, rhs, upper=False, unitriangular=True)[:, 0]
    return (s.T @ e).add_(q, alpha=memory.gamma).neg_()


# ---------------------------------------------------------------------------------------------
# Drivers
# ---------------------------------------------------------------------------------------------


def run_bfgs(
    fg: FG,
    x0: Tensor,
    *,
    gtol: float = 1e-5,
    norm: float = math.inf,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_iter: int | None = None,
    max_evals: int | None = None,
    xrtol: float = 0.0,
    hess_inv0: Tensor | None = None,
    lr: float | Tensor = 1.0,
    f0: Tensor | float | None = None,
    g0: Tensor | None = None,
    f_prev: float | None = None,
    callback: Callback | None = None,
    fg_numpy: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
) -> OptimizeResult:
    """Minimise f by BFGS with a strong Wolfe line search (N&W Algorithm 6.1).

    d = −H ∇f, t from Moré–Thuente (zoom as a fallback), H updated by :func:`bfgs_update`.
    Stops when ‖∇f‖_norm ≤ gtol, or t‖d‖ ≤ xrtol (xrtol + ‖x‖), or when the predicted decrease
    −½∇fᵀd is below the rounding error of f (converged to machine precision, which matters
    in float32). The first trial step is
    t = min(1, 2.02 (fₖ − fₖ₋₁)/∇fᵀd), with fₖ₋₁ = f₀ + ‖∇f₀‖/2 at the start (as scipy).
    If d is not a descent direction (H lost definiteness to rounding) H is reset to I.

    Non-finite values stop the run with status 3 and a message naming them (f or ∇f at x0,
    or at every trial point of a line search); the result holds the last finite iterate.

    Small problems on the CPU (as for :func:`run_lbfgs`: float32 / float64, at most 1024
    entries, H, g and a tensor ``lr`` on the CPU in x's dtype) run the same iteration on NumPy
    views of the tensors, where each vector operation costs a fraction of a torch operation's
    dispatch; the iterates agree with the tensor path to rounding.

    Args:
        fg: ``fg(x) -> (f, ∇f)`` on flat vectors (0-d tensor or float, (n,) tensor).
        x0: starting point, shape (n,).
        gtol: gradient tolerance.
        norm: the order of the gradient norm (``inf`` = max-abs).
        c1: sufficient-decrease constant of the line search.
        c2: curvature constant of the line search.
        max_iter: iteration limit (200 n by default).
        max_evals: limit on evaluations of ``fg`` (unlimited by default).
        xrtol: relative step tolerance.
        hess_inv0: initial H, shape (n, n) (identity by default).
        lr: a scalar or a per-coordinate tensor (n,) multiplying the direction.
        f0: f(x0), if already known (with ``g0``), to save an evaluation.
        g0: ∇f(x0).
        f_prev: f at the previous iterate, for the first trial step (f0 + ‖∇f0‖/2 by default).
        callback: called after each iteration with an :class:`OptimizeResult`; returning
            True stops the run.
        fg_numpy: ``fg`` on flat NumPy arrays, ``x ↦ (f, ∇f)`` as a float and an array, for
            the host path (by default ``fg`` wrapped with views of the arrays).

    Returns:
        An :class:`OptimizeResult` with ``hess_inv`` (``nhev`` = 0).
    """
    n = x0.numel()
    max_iter = 200 * n if max_iter is None else max_iter
    eval_cap = math.inf if max_evals is None else max_evals
    x = x0.detach().reshape(-1).clone()
    fv: Tensor | float
    if f0 is None or g0 is None:
        fv, g = fg(x)
        nfev = 1
    else:
        fv, g = f0, g0.detach().reshape(-1)
        nfev = 0
    f = float(fv)
    g = g.reshape(-1)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    h = eye.clone() if hess_inv0 is None else hess_inv0.to(dtype=x.dtype, device=x.device).clone()
    plain_lr = isinstance(lr, (int, float)) and float(lr) == 1.0
    k = 0
    status = Status.SUCCESS
    message: str | None = None
    ops: Any = _TensorSpace

    def result(st: int, msg: str | None = None) -> OptimizeResult:
        return OptimizeResult(
            ops.tensor(x), f, ops.tensor(g), k, nfev, nfev, 0, st == Status.SUCCESS, st,
            msg or STATUS_MESSAGES[st], ops.tensor(h),
        )  # fmt: skip

    if not math.isfinite(f):
        return result(Status.NON_FINITE, non_finite_message("the objective", 0))
    if not all_finite(g):
        return result(Status.NON_FINITE, non_finite_message("the gradient", 0))
    if not all_finite(h):
        h = eye.clone()
    if f_prev is None:
        f_prev = f + float(torch.linalg.vector_norm(g)) / 2.0
    update: Any = bfgs_update
    if host_eligible(x, g, lr, (h,)):  # the same iteration on NumPy views
        ops, update = _HostSpace, functools.partial(_bfgs_update_host, skip_tol=float(np.finfo(x.numpy().dtype).eps))
        fg = lbfgs_host.host_fg(fg) if fg_numpy is None else fg_numpy  # type: ignore[assignment]
        x, g, h, eye = x.numpy(), g.numpy(), h.numpy(), eye.numpy()  # type: ignore[assignment]
        lr = lr.numpy() if isinstance(lr, Tensor) else lr  # type: ignore[assignment]
    dot, gnorm = ops.dot, functools.partial(ops.norm_of_order, order=norm)
    gn = gnorm(g)
    while gn > gtol:
        if k >= max_iter:
            status = Status.MAX_ITER
            break
        if nfev >= eval_cap:
            status = Status.MAX_EVALS
            break
        d = -(h @ g) if plain_lr else -(h @ g) * lr
        gtd = dot(g, d)
        if not gtd < 0.0:
            h = ops.copy(eye)
            d = -g if plain_lr else -g * lr
            gtd = dot(g, d)
        if below_resolution(f, gtd, x0.dtype):
            break
        step = initial_step_from_decrease(f, f_prev, gtd)
        ls = wolfe_with_fallback(fg, x, d, f, g, step, c1, c2, 1e-100, 1e100)
        nfev += ls.nfev
        if not ls.success:
            status, message = line_search_status(ls, k)
            break
        assert ls.g is not None
        s = ls.x - x
        y = ls.g - g
        f_prev, f = f, ls.f
        x, g = ls.x, ls.g
        k += 1
        if callback is not None and callback(result(Status.SUCCESS)) is True:
            status = Status.CALLBACK
            break
        gn = gnorm(g)
        if gn <= gtol:
            break
        if ls.step * ops.norm(d) <= xrtol * (xrtol + ops.norm(x)):
            break
        h, _ = update(h, s, y)
    return result(status, message)


def run_lbfgs(
    fg: FG,
    x0: Tensor,
    *,
    history_size: int = 10,
    gtol: float = 1e-5,
    ftol: float = 2.220446049250313e-09,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_iter: int = 15000,
    max_evals: int = 15000,
    max_ls_evals: int = 20,
    line_search: str | None = "strong_wolfe",
    lr: float | Tensor = 1.0,
    memory: LBFGSMemory | None = None,
    f0: Tensor | float | None = None,
    g0: Tensor | None = None,
    callback: Callback | None = None,
    fg_numpy: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
) -> tuple[OptimizeResult, LBFGSMemory]:
    """Minimise f by L-BFGS with a strong Wolfe line search (N&W Algorithm 7.5).

    d = −H ∇f by :func:`lbfgs_direction`, t from the Moré–Thuente search (c1, c2, at most
    ``max_ls_evals`` evaluations), then (s, y) pushed by :func:`lbfgs_push`. The first step
    of a run with an empty memory is t = 1/‖d‖₂ (as L-BFGS-B); later steps try t = 1 first.

    Stopping rules (those of L-BFGS-B): ‖∇f‖_∞ ≤ gtol, or
    0 ≤ (fₖ − fₖ₊₁) / max(|fₖ|, |fₖ₊₁|, 1) ≤ ftol (a fixed step that increased f goes on), or the
    iteration / evaluation limits.

    Small problems on the CPU (float32 / float64, at most 1024 entries; g, a tensor ``lr`` and
    ``memory`` on the CPU in x's dtype) run the same iteration on NumPy views of the tensors, H
    applied in its compact form (module ``natrl.optim.lbfgs_host``): the iterates agree with the
    tensor path to rounding, for a fraction of the per-iteration cost; ``fg`` still receives and
    returns tensors.

    Recovery instead of NaN: trial points with a non-finite f are never accepted (the line
    search shrinks the step); if the line search fails the memory is dropped and the search
    is retried along −∇f; if that fails too, the run stops with status 2 at the last accepted
    iterate, which is always finite (status 3, with a message naming the value, when f or ∇f
    is not finite at x0 or at every trial point).

    Args:
        fg: ``fg(x) -> (f, ∇f)`` on flat vectors.
        x0: starting point, shape (n,).
        history_size: m, the number of pairs kept.
        gtol: max-abs gradient tolerance.
        ftol: relative reduction tolerance.
        c1: sufficient-decrease constant.
        c2: curvature constant.
        max_iter: iteration limit.
        max_evals: limit on evaluations of ``fg`` (including the one at x0 unless ``f0`` given).
        max_ls_evals: limit on evaluations per line search.
        line_search: ``"strong_wolfe"``, or None for fixed steps t = 1 (scaled by ``lr``).
        lr: a scalar or a per-coordinate tensor (n,) multiplying the direction.
        memory: pairs from an earlier run to continue with (empty by default).
        f0: f(x0), if already known (with ``g0``), to save an evaluation.
        g0: ∇f(x0).
        callback: called after each iteration; returning True stops the run.
        fg_numpy: ``fg`` on flat NumPy arrays, ``x ↦ (f, ∇f)`` as a float and an array, for
            the host path (by default ``fg`` wrapped with views of the arrays).

    Returns:
        ``(result, memory)``; the memory can seed the next run.
    """
    if line_search not in ("strong_wolfe", None):
        raise ValueError(f"lbfgs: unknown line_search {line_search!r}; valid: 'strong_wolfe', None")
    memory = lbfgs_init() if memory is None else memory
    x = x0.detach().reshape(-1).clone()
    nfev = 0
    fv: Tensor | float
    if f0 is None or g0 is None:
        fv, g = fg(x)
        nfev = 1
    else:
        fv, g = f0, g0.detach().reshape(-1)
    f = float(fv)
    g = g.reshape(-1)

    def result(st: int, msg: str | None = None) -> OptimizeResult:
        return OptimizeResult(x, f, g, 0, nfev, nfev, 0, st == Status.SUCCESS, st, msg or STATUS_MESSAGES[st])

    if not math.isfinite(f):
        return result(Status.NON_FINITE, non_finite_message("the objective", 0)), memory
    if not all_finite(g):
        return result(Status.NON_FINITE, non_finite_message("the gradient", 0)), memory
    if float(torch.linalg.vector_norm(g, ord=math.inf)) <= gtol:
        return result(Status.SUCCESS), memory
    space: _Space
    xv: Any
    gv: Any
    lrv: Any
    if host_eligible(x, g, lr, memory.s + memory.y):
        space = _HostSpace(fg, x.numel(), x.numpy().dtype, max(history_size, len(memory.s)), memory, fg_numpy)
        xv, gv, lrv = x.numpy(), g.numpy(), lr.numpy() if isinstance(lr, Tensor) else lr
    else:
        space = _TensorSpace(fg, memory)
        xv, gv, lrv = x, g, lr
    out = _lbfgs_loop(
        space, xv, f, gv, nfev, history_size, gtol, ftol, c1, c2, max_iter, max_evals, max_ls_evals, line_search,
        lrv, callback,
    )  # fmt: skip
    return out, space.memory()


class _TensorSpace:
    """The L-BFGS loop's vector operations on tensors (any device), pairs in an :class:`LBFGSMemory`.

    :func:`run_bfgs` uses the static operations (dot, norms, copy) of this class and of
    :class:`_HostSpace` as its tensor and host arithmetic.
    """

    def __init__(self, fg: FG, memory: LBFGSMemory) -> None:
        self.fg = fg
        self.mem = memory

    @staticmethod
    def dot(a: Tensor, b: Tensor) -> float:
        return float(torch.dot(a, b))

    @staticmethod
    def amax(a: Tensor) -> float:
        return float(torch.linalg.vector_norm(a, ord=math.inf))

    @staticmethod
    def norm(a: Tensor) -> float:
        return float(torch.linalg.vector_norm(a))

    @staticmethod
    def norm_of_order(a: Tensor, order: float) -> float:
        return float(torch.linalg.vector_norm(a, ord=order))

    @staticmethod
    def finite(a: Tensor) -> bool:
        return all_finite(a)

    @staticmethod
    def copy(a: Tensor) -> Tensor:
        return a.clone()

    @staticmethod
    def tensor(a: Tensor) -> Tensor:
        return a

    @property
    def size(self) -> int:
        return len(self.mem.s)

    def clear(self) -> None:
        self.mem = lbfgs_init()

    def direction(self, g: Tensor) -> Tensor:
        return lbfgs_direction(g, self.mem)

    def push(self, s: Tensor, y: Tensor, history_size: int) -> bool:
        self.mem, skipped = lbfgs_push(self.mem, s, y, history_size=history_size)
        return skipped

    def memory(self) -> LBFGSMemory:
        return self.mem


class _HostSpace(lbfgs_host.HostHistory):
    """The same operations on NumPy views of CPU tensors (:mod:`natrl.optim.lbfgs_host`)."""

    dot = staticmethod(lbfgs_host.dot)
    amax = staticmethod(lbfgs_host.amax)
    norm = staticmethod(lbfgs_host.norm)
    norm_of_order = staticmethod(lbfgs_host.norm_of_order)
    finite = staticmethod(lbfgs_host.finite)
    copy = staticmethod(np.copy)
    tensor = staticmethod(torch.from_numpy)

    def __init__(
        self, fg: FG, n: int, dtype: Any, capacity: int, memory: LBFGSMemory, fg_numpy: Callable[..., Any] | None
    ) -> None:
        super().__init__(n, dtype, capacity)
        self.fg = lbfgs_host.host_fg(fg) if fg_numpy is None else fg_numpy
        if memory.s:
            self.load(tuple(s.numpy() for s in memory.s), tuple(y.numpy() for y in memory.y), memory.gamma)

    def memory(self) -> LBFGSMemory:
        if not self.size:
            return lbfgs_init()
        s, y = self.pairs()
        return LBFGSMemory(s, y, tuple(self.rho), self.gamma)


_Space = _TensorSpace | _HostSpace


def _lbfgs_loop(
    space: _Space,
    x: Any,
    f: float,
    g: Any,
    nfev: int,
    history_size: int,
    gtol: float,
    ftol: float,
    c1: float,
    c2: float,
    max_iter: int,
    max_evals: int,
    max_ls_evals: int,
    line_search: str | None,
    lr: Any,
    callback: Callback | None,
) -> OptimizeResult:
    """The iterations of :func:`run_lbfgs` from a finite (x, f, g), in ``space``'s vectors."""
    fg: Any = space.fg
    direction: Any = space.direction
    push, dot = space.push, space.dot
    k = 0
    message: str | None = None

    def result(st: int, msg: str | None = None) -> OptimizeResult:
        return OptimizeResult(
            space.tensor(x), f, space.tensor(g), k, nfev, nfev, 0, st == Status.SUCCESS, st,
            msg or STATUS_MESSAGES[st],
        )  # fmt: skip

    plain_lr = isinstance(lr, (int, float)) and float(lr) == 1.0
    host = isinstance(space, _HostSpace) and line_search is not None
    zero = space.zero if host else None  # type: ignore[union-attr]
    accepted: tuple[Any, float, Any] | None = None  # a first trial taken without the general search
    status = Status.SUCCESS
    d: Any
    while True:
        if k >= max_iter:
            status = Status.MAX_ITER
            break
        if nfev >= max_evals:
            status = Status.MAX_EVALS
            break
        restarted = False
        while True:
            d = direction(g) if plain_lr else direction(g) * lr
            gtd = dot(g, d)
            if not (gtd < 0.0 and math.isfinite(gtd)):  # not a descent direction: restart
                space.clear()
                d = -g if plain_lr else -g * lr
            step = 1.0
            if not space.size:  # the first step of a run: t = 1/‖d‖₂
                dnorm = space.norm(d)
                step = 1.0 / dnorm if 0.0 < dnorm < math.inf else 1.0
            step = min(step, 1e10)
            if line_search is None:
                xt = x + step * d
                ft, gt = fg(xt)
                ok = math.isfinite(float(ft)) and space.finite(gt) and space.finite(xt)
                ls = LineSearchResult(step, float(ft), gt, 1, ok, "fixed step" if ok else NON_FINITE_TRIALS, xt)
            else:
                budget = int(min(max_ls_evals, max_evals - nfev))
                if budget < 1:
                    status = Status.MAX_EVALS
                    break
                search_fg = fg
                if host:
                    # Most searches accept their first trial: evaluate it and test the strong Wolfe
                    # conditions here, with the same float expressions as the Moré–Thuente search
                    # (which, when the trial fails them, starts from this evaluation again);
                    # x + 1·d is x + d, one operation less.
                    xt = x + d if step == 1.0 else x + step * d
                    ft, gt = fg(xt)
                    if math.isfinite(ft):
                        dt = float(gt.dot(d))
                        if (
                            ft <= f + step * (c1 * gtd)
                            and abs(dt) <= c2 * -gtd
                            and math.isfinite(dt)
                            and math.isfinite(xt.dot(zero))
                        ):
                            nfev += 1
                            accepted = (xt, ft, gt)
                            break
                    search_fg = lbfgs_host.replay(fg, ft, gt)
                ls = strong_wolfe(search_fg, x, d, f0=f, g0=g, step=step, c1=c1, c2=c2, max_evals=budget, step_max=1e10)
            nfev += ls.nfev
            if ls.success or restarted or not space.size or nfev >= max_evals:
                break
            space.clear()  # drop the memory, retry along −∇f
            restarted = True
        if status != Status.SUCCESS:
            break
        if accepted is not None:
            x_new, f_new, g_new = accepted
            accepted = None
        elif not ls.success:
            status, message = line_search_status(ls, k)
            if status != Status.NON_FINITE and nfev >= max_evals:
                status = Status.MAX_EVALS
            break
        else:
            assert ls.g is not None
            x_new, f_new, g_new = ls.x, ls.f, (ls.g if ls.g.ndim == 1 else ls.g.reshape(-1))
        s = x_new - x
        y = g_new - g
        f_old = f
        x, f, g = x_new, f_new, g_new
        k += 1
        push(s, y, history_size)
        if callback is not None and callback(result(Status.SUCCESS)) is True:
            status = Status.CALLBACK
            break
        if space.amax(g) <= gtol:
            break
        # scipy's relative-reduction test; a fixed step (no line search) that increased f has not converged
        if 0.0 <= (f_old - f) <= ftol * max(abs(f_old), abs(f), 1.0):
            break
    return result(status, message)
