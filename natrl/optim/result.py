"""The result of :func:`natrl.optim.minimize`: a scipy-like ``OptimizeResult`` over tensors."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["STATUS_MESSAGES", "OptimizeResult", "Status", "non_finite_message"]


class Status:
    """Termination codes of :class:`OptimizeResult` (scipy's codes where they exist)."""

    SUCCESS = 0
    MAX_ITER = 1
    LINE_SEARCH_FAILED = 2
    NON_FINITE = 3
    MAX_EVALS = 4
    CALLBACK = 5
    NOT_POSITIVE_DEFINITE = 6
    BAD_MODEL = 7


STATUS_MESSAGES: dict[int, str] = {
    Status.SUCCESS: "Optimization terminated successfully.",
    Status.MAX_ITER: "Maximum number of iterations has been exceeded.",
    Status.LINE_SEARCH_FAILED: (
        "Desired error not necessarily achieved due to precision loss (the line search failed)."
    ),
    Status.NON_FINITE: "Non-finite (NaN or inf) value encountered.",
    Status.MAX_EVALS: "Maximum number of function evaluations has been exceeded.",
    Status.CALLBACK: "Stopped by the callback.",
    Status.NOT_POSITIVE_DEFINITE: ("CG iterations did not converge: the Hessian is not positive definite."),
    Status.BAD_MODEL: "A bad approximation caused failure to predict improvement.",
}


def non_finite_message(what: str, iteration: int) -> str:
    """The message of a run stopped with :attr:`Status.NON_FINITE`, naming what was not finite.

    Args:
        what: the value, e.g. ``"the gradient"`` or ``"the Hessian-vector product"``.
        iteration: the iteration at which it was met.

    Example:
        >>> non_finite_message("the gradient", 3)
        'Non-finite (NaN or inf) value encountered: the gradient is not finite at iteration 3.'
    """
    return f"{STATUS_MESSAGES[Status.NON_FINITE][:-1]}: {what} is not finite at iteration {iteration}."


class OptimizeResult(NamedTuple):
    """Outcome of a minimisation (fields as in :class:`scipy.optimize.OptimizeResult`).

    Attributes:
        x: the solution, shape and dtype of ``x0``, on ``x0``'s device.
        fun: f(x), a Python float.
        grad: ∇f(x), shape of ``x`` (also available as ``jac``, scipy's name).
        nit: number of iterations.
        nfev: number of evaluations of the objective.
        njev: number of evaluations of its gradient.
        nhev: number of Hessian(-vector) products (a dense Hessian counts once).
        success: whether the stopping criterion was met.
        status: a :class:`Status` code.
        message: a description of the cause of termination.
        hess_inv: the final inverse-Hessian approximation (``bfgs`` only), shape (n, n).
    """

    x: Tensor
    fun: float
    grad: Tensor
    nit: int
    nfev: int
    njev: int
    nhev: int
    success: bool
    status: int
    message: str
    hess_inv: Tensor | None = None

    @property
    def jac(self) -> Tensor:
        """scipy's name for :attr:`grad`."""
        return self.grad
