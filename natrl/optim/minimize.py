"""``minimize``: scipy-style unconstrained minimisation of a function of a torch tensor.

    >>> res = minimize(lambda x: ((x - 3.0) ** 2).sum(), torch.zeros(4), method="lbfgs")
    >>> res.x, res.success, res.nfev

The objective runs on whatever device x0 lives on (CPU or GPU) and in x0's dtype; gradients
come from autograd unless ``fun`` returns ``(loss, grad)`` or ``jac`` is given, and
Hessian-vector products from autograd unless ``hessp`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from natrl.optim.newton import run_newton, run_newton_cg
from natrl.optim.objective import Objective
from natrl.optim.quasi_newton import run_bfgs, run_lbfgs
from natrl.optim.result import OptimizeResult
from natrl.optim.trust_region import run_trust_ncg
from natrl.optim.validation import check_int, check_real

__all__ = ["METHODS", "minimize"]

# Method → its options and their defaults (scipy's defaults for the matching method).
METHODS: dict[str, dict[str, Any]] = {
    "bfgs": {
        "gtol": 1e-5,
        "norm": math.inf,
        "c1": 1e-4,
        "c2": 0.9,
        "xrtol": 0.0,
        "hess_inv0": None,
        "max_evals": None,
    },
    "lbfgs": {
        "history_size": 10,
        "gtol": 1e-5,
        "ftol": 2.220446049250313e-09,
        "c1": 1e-4,
        "c2": 0.9,
        "max_evals": 15000,
        "max_ls_evals": 20,
        "line_search": "strong_wolfe",
    },
    "newton-cg": {"xtol": 1e-5, "c1": 1e-4, "c2": 0.9, "cg_max_iter": None},
    "trust-ncg": {
        "gtol": 1e-4,
        "initial_trust_radius": 1.0,
        "max_trust_radius": 1000.0,
        "eta": 0.15,
    },
    "newton": {"gtol": 1e-5, "c1": 1e-4, "c2": 0.9, "beta": 1e-3},
}
_ALIASES = {
    "l-bfgs": "lbfgs",
    "l-bfgs-b": "lbfgs",
    "newtoncg": "newton-cg",
    "trust_ncg": "trust-ncg",
    "newton_cg": "newton-cg",
}
# scipy's option names that are natrl's options under another name, per method: scipy name →
# natrl name (L-BFGS-B's maxfun, maxcor, maxls). scipy's ``maxiter`` is natrl's ``max_iter``
# argument, accepted in ``options`` for every method.
_SCIPY_OPTIONS: dict[str, dict[str, str]] = {
    "lbfgs": {"maxfun": "max_evals", "maxcor": "history_size", "maxls": "max_ls_evals"},
}
# The message of a run stopped by a callback that raised StopIteration (scipy's message).
_STOP_ITERATION_MESSAGE = "`callback` raised `StopIteration`."
# The option that the ``tol`` argument sets, per method (as scipy does).
_TOL_OPTIONS = {
    "bfgs": ("gtol",),
    "lbfgs": ("gtol", "ftol"),
    "newton-cg": ("xtol",),
    "trust-ncg": ("gtol",),
    "newton": ("gtol",),
}


Check = Callable[[str, str, Any], Any]


def _nonneg(where: str, name: str, value: Any) -> float:
    return check_real(where, name, value, low=0.0)


def _positive(where: str, name: str, value: Any) -> float:
    return check_real(where, name, value, low=0.0, low_open=True)


def _unit(where: str, name: str, value: Any) -> float:
    return check_real(where, name, value, low=0.0, high=1.0, low_open=True, high_open=True)


def _count(where: str, name: str, value: Any) -> int:
    return check_int(where, name, value, minimum=1)


def _optional_count(where: str, name: str, value: Any) -> int | None:
    return None if value is None else check_int(where, name, value, minimum=1)


def _norm(where: str, name: str, value: Any) -> float:
    return check_real(where, name, value, low=0.0, low_open=True, allow_inf=True)


def _eta(where: str, name: str, value: Any) -> float:
    return check_real(where, name, value, low=0.0, high=0.25, high_open=True)


def _line_search(where: str, name: str, value: Any) -> str | None:
    if value not in ("strong_wolfe", None):
        raise ValueError(f"{where}: {name} must be 'strong_wolfe' or None, got {value!r}")
    return value


def _any(where: str, name: str, value: Any) -> Any:
    return value  # hess_inv0: checked against x0 in minimize


# The check of each option: a value of the wrong type is a TypeError, out of range a ValueError.
_CHECKS: dict[str, Check] = {
    "gtol": _nonneg,
    "ftol": _nonneg,
    "xtol": _nonneg,
    "xrtol": _nonneg,
    "norm": _norm,
    "c1": _unit,
    "c2": _unit,
    "beta": _positive,
    "eta": _eta,
    "initial_trust_radius": _positive,
    "max_trust_radius": _positive,
    "history_size": _count,
    "max_ls_evals": _count,
    "max_evals": _optional_count,
    "cg_max_iter": _optional_count,
    "line_search": _line_search,
    "hess_inv0": _any,
}


def _check_options(name: str, opts: dict[str, Any], x0: Tensor) -> None:
    """Check every option of ``opts`` (in place: numbers become Python floats / ints)."""
    where = f"minimize(method={name!r})"
    for key, value in opts.items():
        opts[key] = _CHECKS[key](where, f"options[{key!r}]", value)
    if "c1" in opts and not opts["c1"] < opts["c2"]:
        raise ValueError(f"{where}: need 0 < c1 < c2 < 1, got c1={opts['c1']!r}, c2={opts['c2']!r}")
    if "max_trust_radius" in opts and not opts["initial_trust_radius"] < opts["max_trust_radius"]:
        raise ValueError(
            f"{where}: need 0 < initial_trust_radius < max_trust_radius, got "
            f"{opts['initial_trust_radius']!r} and {opts['max_trust_radius']!r}"
        )
    if name == "lbfgs" and opts["max_evals"] is None:
        raise ValueError(f"{where}: options['max_evals'] must be an int >= 1, got None")
    h0 = opts.get("hess_inv0")
    if h0 is not None:
        n = x0.numel() if isinstance(x0, Tensor) else -1
        if not isinstance(h0, Tensor):
            raise TypeError(f"{where}: options['hess_inv0'] must be a tensor of shape ({n}, {n}) or None")
        if tuple(h0.shape) != (n, n) or not bool(torch.isfinite(h0).all()):
            raise ValueError(
                f"{where}: options['hess_inv0'] must be a finite tensor of shape ({n}, {n}), got shape "
                f"{tuple(h0.shape)}{'' if bool(torch.isfinite(h0).all()) else ' with non-finite entries'}"
            )


def minimize(
    fun: Callable[..., Any],
    x0: Tensor,
    *,
    method: str = "bfgs",
    args: Any = (),
    jac: Callable[..., Tensor] | bool | None = None,
    hessp: Callable[..., Tensor] | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    callback: Callable[[OptimizeResult], object] | None = None,
    options: Mapping[str, Any] | None = None,
) -> OptimizeResult:
    """Minimise a scalar function of a tensor.

    Methods (references: Nocedal & Wright, *Numerical Optimization*, 2nd ed.):

    * ``"bfgs"`` — dense inverse-Hessian BFGS, strong Wolfe line search (Algorithm 6.1).
      Options: gtol (1e-5), norm (inf), c1 (1e-4), c2 (0.9), xrtol (0), hess_inv0, max_evals.
    * ``"lbfgs"`` — limited-memory BFGS, two-loop recursion, strong Wolfe (Algorithms 7.4,
      7.5). Options: history_size (10), gtol (1e-5, max-abs), ftol (2.2e-9, relative
      reduction), c1, c2, max_evals (15000), max_ls_evals (20), line_search.
    * ``"newton-cg"`` — line-search truncated Newton-CG with a forcing term (Algorithm 7.1).
      Options: xtol (1e-5), c1, c2, cg_max_iter (20 n).
    * ``"trust-ncg"`` — trust-region Newton with Steihaug CG (Algorithms 4.1 and 7.2).
      Options: gtol (1e-4), initial_trust_radius (1), max_trust_radius (1000), eta (0.15).
    * ``"newton"`` — dense Hessian, Cholesky solve, Levenberg–Marquardt shift when the Hessian
      is not positive definite (Algorithm 3.3), strong Wolfe from t = 1. Options: gtol
      (1e-5), c1, c2, beta (1e-3). For small n: it forms the n × n Hessian.

    scipy's spellings are accepted too: ``options={"maxiter": n}`` is ``max_iter=n`` (every
    method), and for lbfgs ``maxfun``, ``maxcor`` and ``maxls`` are ``max_evals``,
    ``history_size`` and ``max_ls_evals``; giving both names of one setting is a ValueError.

    Args:
        fun: ``fun(x, *args) -> loss`` (a scalar tensor differentiable by autograd) or
            ``fun(x, *args) -> (loss, grad)``; ``x`` has the shape, dtype and device of ``x0``.
        x0: the starting point, a floating-point tensor of any shape on any device.
        method: one of the names above (case-insensitive; scipy's "L-BFGS-B" and
            "Newton-CG" are accepted); "bfgs" by default, scipy's choice for a problem
            without bounds or constraints.
        args: extra arguments passed on to ``fun``, ``jac`` and ``hessp`` (after ``x``, and
            after ``p`` for ``hessp``), as scipy does; a value that is not a tuple is passed as
            the one extra argument.
        jac: ``jac(x, *args) -> grad``, or True when ``fun`` returns ``(loss, grad)``;
            autograd by default.
        hessp: ``hessp(x, p, *args) -> ∇²f(x) p`` for newton-cg, trust-ncg and newton;
            autograd (double backward through ``fun``) by default.
        tol: sets the method's main tolerance (gtol, xtol; and ftol for lbfgs) as scipy does.
        max_iter: iteration limit (method default when None); scipy's ``options["maxiter"]``.
        callback: ``callback(intermediate: OptimizeResult)`` after each iteration; return
            True, or raise ``StopIteration`` as with scipy, to stop: the result is then the
            iterate the callback saw, with ``success=False`` and status 5 (scipy's status 99;
            the message is scipy's "`callback` raised `StopIteration`." for the latter).
        options: method options (see above).

    Returns:
        An :class:`OptimizeResult`; ``x`` and ``grad`` have x0's shape.

    Non-finite values (a NaN gradient from ``jac``, a NaN ``hessp``, …) never loop and never
    "succeed": the run stops with ``success=False``, status 3 and a message naming the value
    and the iteration, and ``x`` is the last finite iterate.

    Raises:
        ValueError: unknown method or option (the message lists the valid ones); ``tol``,
            ``max_iter`` or an option out of its range (NaN, inf, a negative tolerance, c1 ≥ c2,
            …; the message names it and the range); ``fun`` returning a non-scalar, a value
            that is not finite at x0, a value on another device than x0, or a value with no
            gradient with respect to x.
        TypeError: x0 not a floating-point tensor; ``tol``, ``max_iter`` or an option of the
            wrong type (a string or a bool for a number, a float for a count).
    """
    name = _ALIASES.get(method.lower(), method.lower()) if isinstance(method, str) else method
    if name not in METHODS:
        raise ValueError(f"minimize: unknown method {method!r}; valid methods: {sorted(METHODS)}")
    opts = dict(METHODS[name])
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"minimize: options must be a dict of method options, got {type(options).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"minimize: callback must be callable (or None), got {type(callback).__name__}")
    if isinstance(x0, Tensor) and x0.numel() == 0:
        raise ValueError("minimize: x0 has no elements; there is nothing to minimise over")
    given = dict(options or {})
    if "maxiter" in given:
        if max_iter is not None:
            raise ValueError("minimize: max_iter and options['maxiter'] both given; they are the same limit, give one")
        max_iter = check_int("minimize", "options['maxiter']", given.pop("maxiter"), minimum=0)
    for scipy_key, key in _SCIPY_OPTIONS.get(name, {}).items():
        if scipy_key in given:
            if key in given:
                raise ValueError(
                    f"minimize: options[{scipy_key!r}] and options[{key!r}] both given; they are the "
                    "same option (scipy's and natrl's name), give one"
                )
            given[key] = given.pop(scipy_key)
    unknown = sorted(set(given) - set(opts))
    if unknown:
        raise ValueError(f"minimize: unknown option(s) {unknown} for method {name!r}; valid options: {sorted(opts)}")
    if tol is not None:
        tol = check_real("minimize", "tol", tol, low=0.0)
        for key in _TOL_OPTIONS[name]:
            opts[key] = tol
    opts.update(given)
    if max_iter is not None:
        max_iter = check_int("minimize", "max_iter", max_iter, minimum=0)
    _check_options(name, opts, x0)

    if not isinstance(args, tuple):
        args = (args,)  # as scipy: a single extra argument
    if args:
        fun, jac, hessp = _with_args(fun, jac, hessp, args)
    obj = Objective(fun, x0, jac=jac, hessp=hessp, where=f"minimize({name})")
    flat0 = x0.detach().reshape(-1)

    cb = None
    raised_stop = False
    if callback is not None:
        user_cb = callback

        def cb(r: OptimizeResult) -> object:
            nonlocal raised_stop
            try:
                return user_cb(_shaped(r, x0, obj))
            except StopIteration:  # scipy's way to stop: a stop like returning True
                raised_stop = True
                return True

    if name == "bfgs":
        res = run_bfgs(obj.fg, flat0, max_iter=max_iter, callback=cb, fg_numpy=obj.fg_numpy, **opts)
    elif name == "lbfgs":
        res, _ = run_lbfgs(
            obj.fg, flat0, max_iter=15000 if max_iter is None else max_iter, callback=cb, fg_numpy=obj.fg_numpy, **opts
        )
    elif name == "newton-cg":
        res = run_newton_cg(obj.fg, obj.hvp, flat0, max_iter=max_iter, callback=cb, **opts)
    elif name == "trust-ncg":
        res = run_trust_ncg(obj.fg, obj.hvp, flat0, max_iter=max_iter, callback=cb, **opts)
    else:
        res, _ = run_newton(obj.fg, obj.hessian, flat0, max_iter=max_iter, callback=cb, **opts)
    if raised_stop:
        res = res._replace(message=_STOP_ITERATION_MESSAGE)
    return _shaped(res, x0, obj)


def _with_args(
    fun: Callable[..., Any],
    jac: Callable[..., Tensor] | bool | None,
    hessp: Callable[..., Tensor] | None,
    args: tuple[Any, ...],
) -> tuple[Any, Any, Any]:
    """``fun``, ``jac`` and ``hessp`` with ``args`` bound after x (and p); what is not callable
    is returned as it is, for :class:`Objective` to refuse."""

    def fun_args(x: Tensor) -> Any:
        return fun(x, *args)

    def jac_args(x: Tensor) -> Tensor:
        return jac(x, *args)  # type: ignore[misc,operator]

    def hessp_args(x: Tensor, p: Tensor) -> Tensor:
        return hessp(x, p, *args)  # type: ignore[misc]

    return (
        fun_args if callable(fun) else fun,
        jac_args if callable(jac) else jac,
        hessp_args if callable(hessp) else hessp,
    )


def _shaped(res: OptimizeResult, x0: Tensor, obj: Objective) -> OptimizeResult:
    """Give x and grad the shape of x0 and take the evaluation counts from the objective."""
    return res._replace(
        x=res.x.detach().reshape(x0.shape),
        grad=res.grad.detach().reshape(x0.shape),
        nfev=obj.nfev,
        njev=obj.njev,
        nhev=obj.nhev,
    )
