"""Pieces of a line-search descent iteration shared by the BFGS, L-BFGS and Newton drivers.

The drivers (:mod:`natrl.optim.quasi_newton`, :mod:`natrl.optim.newton`) take steps x₊ = x + t d along a
descent direction d; this module holds what they do alike around the step: scipy's first trial step, the
strong Wolfe search with its fallback, the test that a step cannot decrease f representably, and the status of
a run whose search failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from natrl.linesearch.wolfe import NON_FINITE_TRIALS, PRECISION_LOSS, LineSearchResult, strong_wolfe
from natrl.optim.result import Status, non_finite_message

__all__ = [
    "all_finite",
    "below_resolution",
    "initial_step_from_decrease",
    "line_search_status",
    "wolfe_with_fallback",
]

FG = Callable[[Tensor], tuple[Tensor, Tensor]]


def all_finite(v: Tensor) -> bool:
    """Whether every entry of ``v`` is finite."""
    return bool(torch.isfinite(v).all())


def line_search_status(ls: LineSearchResult, k: int) -> tuple[int, str | None]:
    """The status (and message) of a run whose line search failed at iteration k."""
    if ls.message == NON_FINITE_TRIALS:
        return Status.NON_FINITE, non_finite_message("the objective or its gradient at every trial step", k)
    return Status.LINE_SEARCH_FAILED, None


def below_resolution(f: float, gtd: float, dtype: torch.dtype) -> bool:
    """Whether the predicted decrease −½∇fᵀd of a full step is below the rounding of f.

    Then no step along d can decrease f representably in ``dtype``: the iterate is converged
    to machine precision (this ends float32 runs where scipy's float64 tolerances cannot be
    met, instead of failing their last line search).
    """
    return -0.5 * gtd <= float(torch.finfo(dtype).eps) * abs(f)


def initial_step_from_decrease(f: float, f_prev: float | None, gtd: float) -> float:
    """scipy's guess t = min(1, 1.01 · 2 (f − f_prev) / gᵀd) (N&W eq. 3.60)."""
    if f_prev is None or gtd == 0.0:
        return 1.0
    t = min(1.0, 1.01 * 2.0 * (f - f_prev) / gtd)
    return 1.0 if t <= 0.0 or not math.isfinite(t) else t


def wolfe_with_fallback(
    fg: FG,
    x: Tensor,
    d: Tensor,
    f: float,
    g: Tensor,
    step: float,
    c1: float,
    c2: float,
    step_min: float,
    step_max: float,
    max_evals: int = 100,
) -> LineSearchResult:
    """Moré–Thuente first, the zoom search if it fails (as scipy's ``_line_search_wolfe12``)."""
    ls = strong_wolfe(
        fg,
        x,
        d,
        f0=f,
        g0=g,
        step=step,
        c1=c1,
        c2=c2,
        max_evals=max_evals,
        step_min=step_min,
        step_max=step_max,
    )
    if ls.success or ls.message == PRECISION_LOSS:
        return ls
    ls2 = strong_wolfe(
        fg,
        x,
        d,
        f0=f,
        g0=g,
        step=1.0,
        c1=c1,
        c2=c2,
        max_evals=20,
        step_max=min(step_max, 1e10),
        method="zoom",
    )
    return ls2._replace(nfev=ls.nfev + ls2.nfev)
