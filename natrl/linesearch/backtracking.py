"""KL-constrained backtracking line search, the last stage of a TRPO update.

Given the current flat parameters θ, a proposed full step s (the scaled
natural-gradient direction β F⁻¹g) and its predicted improvement
e = −gᵀs > 0 of the surrogate loss L, the search tries

    θₖ = θ + ηᵏ s,   k = 0, 1, …, max_backtracks   (η = ``shrink``)

and accepts the first θₖ with finite L(θₖ) and KL(θₖ), and

    KL(θ_old ‖ θₖ) ≤ max_kl · kl_slack,
    L(θ) − L(θₖ) > accept_ratio · ηᵏ · e    (and > 0).

With ``accept_ratio = 0`` this is "any improvement", as in Schulman et al.
(2015) and sb3-contrib; ``accept_ratio > 0`` is the Armijo-style sufficient
decrease used by the original TRPO code (0.1). When every trial fails the
search returns the original θ, the very tensor passed in: the caller's
parameters are never left at a rejected trial point.

Reference: Schulman et al. (2015), "Trust Region Policy Optimization", ICML,
§6 and Appendix C (line search on the surrogate with the KL constraint);
Nocedal & Wright (2006), "Numerical Optimization", 2nd ed., Algorithm 3.1
(backtracking with sufficient decrease).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["BacktrackingResult", "backtracking"]


class BacktrackingResult(NamedTuple):
    """Outcome of :func:`backtracking`; all numbers describe the returned point.

    Attributes:
        params: the accepted θ + ηᵏ s (a new tensor), or, if no trial was
            accepted, the original ``params`` tensor itself (same object).
        accepted: whether a trial was accepted.
        step_fraction: ηᵏ for the accepted trial; 0.0 if none.
        n_trials: how many trial points were evaluated (the evaluation of the
            loss at ``params`` for ``loss0`` is not counted).
        loss: the surrogate loss at the returned point (``loss0`` if none was
            accepted).
        kl: the mean KL at the returned point (0.0 if none was accepted).
        improvement: loss0 − loss (0.0 if none was accepted).
        expected_improvement: the predicted improvement of the returned step,
            step_fraction · expected_improvement (0.0 if none was accepted).
        reason: "accepted …", or why the last trial failed, for example
            "KL 0.031 > max_kl 0.01 after 10 backtracks".
    """

    params: Tensor
    accepted: bool
    step_fraction: float
    n_trials: int
    loss: float
    kl: float
    improvement: float
    expected_improvement: float
    reason: str


def backtracking(
    evaluate: Callable[[Tensor], tuple[Tensor | float, Tensor | float]],
    params: Tensor,
    full_step: Tensor,
    *,
    expected_improvement: float,
    max_kl: float,
    kl_slack: float = 1.0,
    shrink: float = 0.5,
    max_backtracks: int = 10,
    accept_ratio: float = 0.0,
    loss0: float | None = None,
) -> BacktrackingResult:
    """Backtrack along ``full_step`` until the KL constraint holds and the loss improves.

    Trial k = 0, 1, …, ``max_backtracks`` evaluates θₖ = params + shrinkᵏ · full_step
    (so at most ``max_backtracks + 1`` trials) and is accepted when its loss and
    KL are finite, KL ≤ max_kl · kl_slack and

        improvement = loss0 − loss > max(0, accept_ratio · shrinkᵏ · expected_improvement).

    Trial points are new tensors: ``params`` and ``full_step`` are never
    modified. ``evaluate`` runs in the caller's autograd mode; wrap its body in
    ``torch.no_grad()`` to save memory.

    Args:
        evaluate: θ ↦ (surrogate loss to minimise, mean KL(π_old ‖ π_θ)) at a
            flat parameter vector θ; each a Python number or a one-element tensor.
        params: the current parameters θ (the old policy), any shape, floating point.
        full_step: the full step s, same shape and dtype as ``params``, finite.
        expected_improvement: e = −gᵀs, the first-order predicted decrease of
            the loss for the full step; finite and ≥ 0.
        max_kl: the trust-region radius δ > 0.
        kl_slack: accept KL up to ``max_kl · kl_slack``; ≥ 1 (the original TRPO
            code used 1.5).
        shrink: the backtracking factor η, 0 < η < 1.
        max_backtracks: how many times to shrink the step, an int ≥ 0.
        accept_ratio: the Armijo fraction c, 0 ≤ c < 1 (0: any improvement).
        loss0: the loss at ``params``; computed with ``evaluate(params)`` if None.

    Returns:
        A :class:`BacktrackingResult`.

    Raises:
        TypeError: if ``params``/``full_step`` are not floating-point tensors of
            the same dtype, or ``evaluate`` returns something other than a pair
            of real scalars.
        ValueError: if a hyperparameter is out of range, the shapes differ,
            ``full_step`` is not finite, or the loss at ``params`` is not finite.

    Example:
        >>> def evaluate(theta):
        ...     return (theta - 1.0).pow(2).sum(), 0.5 * theta.pow(2).sum()
        >>> res = backtracking(evaluate, torch.zeros(2), torch.full((2,), 2.0),
        ...                    expected_improvement=8.0, max_kl=1.0)
        >>> res.accepted, res.step_fraction
        (True, 0.5)
    """
    _check_arguments(
        params,
        full_step,
        expected_improvement,
        max_kl,
        kl_slack,
        shrink,
        max_backtracks,
        accept_ratio,
    )
    if loss0 is None:
        loss0_f = _evaluate(evaluate, params.detach())[0]
    else:
        loss0_f = _scalar("loss0", loss0)
    if not math.isfinite(loss0_f):
        raise ValueError(
            f"backtracking: the loss at the starting parameters is not finite ({loss0_f!r}); "
            "no step can improve on it, check the surrogate"
        )
    kl_bound = max_kl * kl_slack
    start = params.detach()
    step = full_step.detach()

    reason = ""
    for k in range(max_backtracks + 1):
        fraction = shrink**k
        with torch.no_grad():
            theta = torch.add(start, step, alpha=fraction)
        loss, kl = _evaluate(evaluate, theta)
        failures: list[str] = []
        if not math.isfinite(loss):
            failures.append(f"non-finite loss ({loss!r})")
        if not math.isfinite(kl):
            failures.append(f"non-finite KL ({kl!r})")
        if not failures:
            improvement = loss0_f - loss
            required = max(0.0, accept_ratio * fraction * expected_improvement)
            if kl > kl_bound:
                failures.append(f"KL {kl:.3g} > max_kl {kl_bound:.3g}")
            if improvement <= 0.0:
                failures.append(f"no improvement (loss {loss:.6g} ≥ loss0 {loss0_f:.6g})")
            elif improvement <= required:
                failures.append(
                    f"insufficient improvement {improvement:.3g} ≤ accept_ratio {accept_ratio:g} "
                    f"× expected {fraction * expected_improvement:.3g}"
                )
            if not failures:
                return BacktrackingResult(
                    params=theta,
                    accepted=True,
                    step_fraction=fraction,
                    n_trials=k + 1,
                    loss=loss,
                    kl=kl,
                    improvement=improvement,
                    expected_improvement=fraction * expected_improvement,
                    reason=f"accepted after {k} backtracks (step fraction {fraction:g})",
                )
        reason = f"{' and '.join(failures)} after {k} backtracks"
    return BacktrackingResult(
        params=params,
        accepted=False,
        step_fraction=0.0,
        n_trials=max_backtracks + 1,
        loss=loss0_f,
        kl=0.0,
        improvement=0.0,
        expected_improvement=0.0,
        reason=reason,
    )


def _evaluate(
    evaluate: Callable[[Tensor], tuple[Tensor | float, Tensor | float]], theta: Tensor
) -> tuple[float, float]:
    out = evaluate(theta)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"backtracking: evaluate(theta) must return a pair (loss, kl), got {type(out).__name__}")
    return _scalar("evaluate's loss", out[0]), _scalar("evaluate's KL", out[1])


def _scalar(name: str, value: object) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(
                f"backtracking: {name} must be a real scalar, got a tensor of shape "
                f"{tuple(value.shape)} and dtype {value.dtype}"
            )
        return float(value.detach().item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"backtracking: {name} must be a real number, got {type(value).__name__}")
    return float(value)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__


def _check_arguments(
    params: object,
    full_step: object,
    expected_improvement: object,
    max_kl: object,
    kl_slack: object,
    shrink: object,
    max_backtracks: object,
    accept_ratio: object,
) -> None:
    if not isinstance(params, Tensor) or not params.dtype.is_floating_point:
        raise TypeError(f"backtracking: params must be a floating-point Tensor, got {_describe(params)}")
    if not isinstance(full_step, Tensor) or not full_step.dtype.is_floating_point:
        raise TypeError(f"backtracking: full_step must be a floating-point Tensor, got {_describe(full_step)}")
    if full_step.shape != params.shape:
        raise ValueError(
            f"backtracking: full_step has shape {tuple(full_step.shape)} but params has shape "
            f"{tuple(params.shape)}; they must match"
        )
    if full_step.dtype != params.dtype:
        raise TypeError(
            f"backtracking: full_step has dtype {full_step.dtype} but params has dtype "
            f"{params.dtype}; convert one of them"
        )
    if not bool(torch.isfinite(full_step).all()):
        raise ValueError("backtracking: full_step contains non-finite values (NaN or inf)")

    e = _scalar("expected_improvement", expected_improvement)
    if not (math.isfinite(e) and e >= 0.0):
        raise ValueError(
            f"backtracking: expected_improvement must be finite and ≥ 0 (it is −gᵀ·full_step, "
            f"the predicted decrease of the loss), got {e!r}; check the sign of the step"
        )
    m = _scalar("max_kl", max_kl)
    if not (math.isfinite(m) and m > 0.0):
        raise ValueError(f"backtracking: max_kl must be finite and > 0, got {m!r}")
    s = _scalar("kl_slack", kl_slack)
    if not (math.isfinite(s) and s >= 1.0):
        raise ValueError(f"backtracking: kl_slack must be finite and ≥ 1, got {s!r}")
    sh = _scalar("shrink", shrink)
    if not (0.0 < sh < 1.0):
        raise ValueError(f"backtracking: shrink must lie in (0, 1), got {sh!r}")
    if isinstance(max_backtracks, bool) or not isinstance(max_backtracks, int):
        raise TypeError(f"backtracking: max_backtracks must be an int, got {type(max_backtracks).__name__}")
    if max_backtracks < 0:
        raise ValueError(f"backtracking: max_backtracks must be ≥ 0, got {max_backtracks}")
    a = _scalar("accept_ratio", accept_ratio)
    if not (0.0 <= a < 1.0):
        raise ValueError(f"backtracking: accept_ratio must lie in [0, 1), got {a!r}")
