"""torch.optim classes over the functional solvers: LBFGS, BFGS, Newton and NaturalGradient.

Each class sees the parameters of all its groups as one flat vector θ (on the device of the
first parameter, the "home" device; parameters may live on several devices, their values and
gradients are copied to and from it), runs a functional core of :mod:`natrl.optim` on it, and
writes the result back. Hyperparameters are keyword-only; groups may differ only in ``lr``,
which scales their block of the search direction. Solver state (L-BFGS pairs, the BFGS
matrix, the damping) lives in ``self.state`` under a string key, so ``state_dict`` /
``load_state_dict`` round-trip it, and every ``step`` leaves a report in ``self.result`` or
``self.stats``.

Guards: every numeric hyperparameter is checked at construction (and each group's ``lr`` at
every step, which a scheduler may edit); a ValueError / TypeError names it, its value and
the valid range. No step leaves a parameter or the solver state non-finite: a step that meets
a non-finite loss, gradient, curvature product or new parameter value is skipped (the
parameters keep their last finite values), reported (``result.status == 3`` with a message,
or ``stats.skipped``) and counted in ``nonfinite_steps``, which ``state_dict`` keeps.

Closures:

* :class:`LBFGS`, :class:`BFGS` — the torch convention: ``closure()`` zeroes the gradients,
  computes the loss, calls ``loss.backward()`` and returns the loss.
* :class:`Newton` — ``closure()`` computes and returns the loss *without* calling backward
  (Newton differentiates it twice itself); for ``curvature="ggn"`` it returns
  ``(loss, outputs)``, the model outputs the loss was computed from.
* :class:`NaturalGradient` — the torch convention, or no closure after ``loss.backward()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from natrl.linalg import LevenbergMarquardt, NonFiniteError, conjugate_gradient
from natrl.linesearch.wolfe import NON_FINITE_TRIALS, armijo
from natrl.optim.newton import truncated_cg
from natrl.optim.quasi_newton import LBFGSMemory, lbfgs_init, run_bfgs, run_lbfgs
from natrl.optim.result import OptimizeResult, Status, non_finite_message
from natrl.optim.validation import check_int, check_real
from natrl.params import ParamSpec, unflatten

__all__ = [
    "BFGS",
    "LBFGS",
    "NaturalGradient",
    "NaturalGradientStats",
    "Newton",
    "NewtonStats",
]

Matvec = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# A flat view of an optimizer's parameters
# ---------------------------------------------------------------------------------------------


class _FlatParams:
    """All parameters of all groups as one flat vector on the home device."""

    def __init__(self, optimizer: Optimizer, where: str) -> None:
        params: list[Tensor] = [p for g in optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            if not p.requires_grad:
                raise ValueError(
                    f"{where}: parameter {i} (shape {tuple(p.shape)}) does not require "
                    "gradients; pass only trainable parameters (p.requires_grad=True)"
                )
            if not p.dtype.is_floating_point:
                raise ValueError(f"{where}: parameter {i} has non-floating dtype {p.dtype}")
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError(f"{where}: all parameters must share one dtype, got {dtypes}")
        self.where = where
        self.params = params
        self.spec = ParamSpec.of(params)
        self.home = params[0].device
        self.dtype = params[0].dtype

    def get(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1).to(self.home) for p in self.params])

    @torch.no_grad()
    def set(self, flat: Tensor) -> None:
        for p, chunk in zip(self.params, unflatten(flat, self.spec), strict=True):
            p.copy_(chunk)

    def grad(self) -> Tensor:
        if all(p.grad is None for p in self.params):
            raise RuntimeError(
                f"{self.where}: no parameter has a gradient; the closure must call "
                "loss.backward() (or call it before step())"
            )
        return torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(self.home) for p in self.params]
        )

    @torch.no_grad()
    def set_grad(self, flat: Tensor) -> None:
        for p, chunk in zip(self.params, unflatten(flat, self.spec), strict=True):
            if p.grad is None:
                p.grad = chunk.to(p.device).clone()
            else:
                p.grad.copy_(chunk)

    def split(self, flat: Tensor) -> list[Tensor]:
        """Per-parameter pieces of a flat vector, each on its parameter's device."""
        return [c.to(p.device) for p, c in zip(self.params, unflatten(flat, self.spec), strict=True)]

    def cat(self, tensors: Iterable[Tensor | None]) -> Tensor:
        return torch.cat(
            [
                (t if t is not None else torch.zeros_like(p)).reshape(-1).to(self.home)
                for p, t in zip(self.params, tensors, strict=True)
            ]
        )

    def group_scale(self, optimizer: Optimizer, key: str = "lr") -> float | Tensor:
        """The groups' ``key`` as a scalar, or per coordinate when the groups differ."""
        values = [float(g[key]) for g in optimizer.param_groups]
        if len(set(values)) == 1:
            return values[0]
        return torch.cat(
            [
                torch.full((sum(p.numel() for p in g["params"]),), float(g[key]), dtype=self.dtype, device=self.home)
                for g in optimizer.param_groups
            ]
        )


def _check_groups(optimizer: Optimizer, defaults: dict[str, Any], where: str) -> None:
    for i, group in enumerate(optimizer.param_groups):
        for key, value in defaults.items():
            if key != "lr" and group.get(key, value) != value:
                raise ValueError(
                    f"{where}: parameter groups may differ only in 'lr'; group {i} sets "
                    f"{key!r}={group[key]!r} (pass it to the constructor instead)"
                )
    _check_lrs(optimizer, where)


def _check_lrs(optimizer: Optimizer, where: str) -> None:
    """Each group's lr is a finite number > 0 (checked again at each step: schedulers edit it)."""
    for i, group in enumerate(optimizer.param_groups):
        check_real(where, f"lr (parameter group {i})", group["lr"], low=0.0, low_open=True)


def _positive(where: str, name: str, value: Any) -> float:
    return check_real(where, name, value, low=0.0, low_open=True)


def _nonneg(where: str, name: str, value: Any) -> float:
    return check_real(where, name, value, low=0.0)


def _check_wolfe(where: str, c1: Any, c2: Any) -> None:
    for name, value in (("c1", c1), ("c2", c2)):
        check_real(where, name, value, low=0.0, high=1.0, low_open=True, high_open=True)
    if not c1 < c2:
        raise ValueError(f"{where}: need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")


def _check_flag(where: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be True or False, got {type(value).__name__} {value!r}")


def _named_state(optimizer: Optimizer) -> dict[Any, Any]:
    """``optimizer.state``, whose entries under string keys (``"guard"``, ``"lbfgs"``, …) hold a
    shim's own bookkeeping. ``Optimizer.state_dict`` and ``load_state_dict`` keep an entry whose
    key is not a parameter as it is; torch's annotation of ``state`` names tensor keys only."""
    return optimizer.state


def _count_nonfinite(optimizer: Optimizer) -> None:
    guard = _named_state(optimizer)["guard"]
    guard["nonfinite_steps"] = int(guard.get("nonfinite_steps", 0)) + 1


def _nonfinite_steps(optimizer: Optimizer) -> int:
    return int(_named_state(optimizer).get("guard", {}).get("nonfinite_steps", 0))


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _closure_loss(value: Any, where: str) -> Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{where}: the closure must return a scalar loss, got {shape}")
    return value.detach().reshape(())


class _FlatOptimizer(Optimizer):
    """Shared plumbing of the quasi-Newton shims."""

    _where = "optimizer"

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        _check_groups(self, defaults, self._where)
        self._flat = _FlatParams(self, self._where)
        self.result: OptimizeResult | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "_flat"):  # after construction: re-validate, restart the solver
            _check_groups(self, self.defaults, self._where)
            self._flat = _FlatParams(self, self._where)
            self._reset_solver_state()

    def _reset_solver_state(self) -> None:
        raise NotImplementedError

    @property
    def nonfinite_steps(self) -> int:
        """How many ``step`` calls met a non-finite value and stopped at the last finite point."""
        return _nonfinite_steps(self)

    def _fg(self, closure: Callable[[], Any]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        def fg(x: Tensor) -> tuple[Tensor, Tensor]:
            self._flat.set(x)
            with torch.enable_grad():
                loss = _closure_loss(closure(), self._where)
            return loss, self._flat.grad()

        return fg

    def _start(
        self, closure: Callable[[], Any] | None
    ) -> tuple[Callable[[Tensor], tuple[Tensor, Tensor]], Tensor, Tensor, Tensor]:
        if closure is None:
            raise ValueError(
                f"{self._where}: step() needs a closure that zeroes the gradients, computes the "
                "loss, calls loss.backward() and returns the loss"
            )
        _check_lrs(self, self._where)
        fg = self._fg(closure)
        x0 = self._flat.get()
        f0, g0 = fg(x0)  # a non-finite f0 or g0 ends the run at x0 with status 3
        return fg, x0, f0, g0

    def _finish(self, res: OptimizeResult, x0: Tensor, g0: Tensor) -> None:
        if not _finite(res.x):  # never reached through the solvers; kept as the last guard
            what = non_finite_message("the new parameters", res.nit)
            res = res._replace(x=x0, grad=g0, success=False, status=Status.NON_FINITE, message=what)
        if res.status == Status.NON_FINITE:
            _count_nonfinite(self)
        self._flat.set(res.x)
        self._flat.set_grad(res.grad)  # .grad consistent with the parameters left in place
        self.result = res


class _DefaultLineSearch(str):
    """The default of ``LBFGS``'s ``line_search`` and ``line_search_fn``: "strong_wolfe", as an
    object of its own, so that a keyword left at its default is told apart from one given
    (``line_search is _STRONG_WOLFE_DEFAULT``) while the signature still reads 'strong_wolfe'."""


_STRONG_WOLFE_DEFAULT = _DefaultLineSearch("strong_wolfe")


class LBFGS(_FlatOptimizer):
    """Limited-memory BFGS with a strong Wolfe line search, for ``nn.Module`` parameters.

    One ``step(closure)`` runs up to ``max_iter`` iterations of :func:`run_lbfgs`
    (two-loop recursion, N&W Algorithm 7.4; Moré–Thuente strong Wolfe search) and keeps the
    curvature pairs for the next call. Unlike ``torch.optim.LBFGS`` it: honours ``max_eval``
    exactly (the line search gets the remaining budget), never leaves NaN parameters (a failed
    search drops the memory and retries along −∇f, then stops at the last good point), reports
    a status in :attr:`result`, and accepts several parameter groups on any devices.

    Args:
        params: parameters or parameter groups (groups may set only ``lr``).
        lr: scales the direction (per group), > 0; 1 is the natural L-BFGS step.
        history_size: m, curvature pairs kept.
        max_iter: iterations per ``step``.
        max_eval: closure evaluations per ``step`` (including the first); by default
            max(1.25 max_iter, 1 + max_ls_evals), so that ``max_iter=1`` still takes a step.
        tolerance_grad: stop when ‖∇f‖_∞ ≤ this.
        tolerance_change: stop when the relative decrease (fₖ − fₖ₊₁)/max(|fₖ|, |fₖ₊₁|, 1) ≤ this.
        line_search: ``"strong_wolfe"`` or None (fixed steps of length ``lr``).
        line_search_fn: ``torch.optim.LBFGS``'s name for ``line_search``, same values and
            meaning (give one of the two). natrl's default is "strong_wolfe" under either name,
            where torch's is None; with None, natrl's first step is 1/‖d‖₂ (L-BFGS-B's), where
            torch's is min(1, 1/‖∇f‖₁) · lr.
        c1: sufficient-decrease constant.
        c2: curvature constant.
        max_ls_evals: evaluations per line search.

    Attributes:
        result: the :class:`OptimizeResult` of the last ``step`` (x flat on the home device);
            status 3 with a message naming the value when a non-finite loss or gradient stopped
            it (the parameters are then at the last finite iterate, unchanged if it was the first).
        nonfinite_steps: how many steps stopped on a non-finite value.

    Raises:
        ValueError: an option out of its range (lr ≤ 0, history_size < 1, c1 ≥ c2, NaN, inf, …);
            also at ``step`` for a group's lr that a scheduler set out of range.
        TypeError: an option of the wrong type (a string or bool for a number, a float for a count).
    """

    _where = "LBFGS"

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        *,
        history_size: int = 10,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        line_search: str | None = _STRONG_WOLFE_DEFAULT,
        line_search_fn: str | None = _STRONG_WOLFE_DEFAULT,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_ls_evals: int = 25,
    ) -> None:
        name = "line_search"
        if line_search_fn is not _STRONG_WOLFE_DEFAULT:
            if line_search is not _STRONG_WOLFE_DEFAULT:
                raise ValueError("LBFGS: line_search and line_search_fn (torch's name for it) both given; give one")
            line_search, name = line_search_fn, "line_search_fn"
        if line_search not in ("strong_wolfe", None):
            raise ValueError(f"LBFGS: unknown {name} {line_search!r}; valid: 'strong_wolfe', None")
        line_search = None if line_search is None else "strong_wolfe"  # a plain str for state_dict
        w = "LBFGS"
        lr = _positive(w, "lr", lr)
        history_size = check_int(w, "history_size", history_size)
        max_iter = check_int(w, "max_iter", max_iter)
        max_ls_evals = check_int(w, "max_ls_evals", max_ls_evals)
        tolerance_grad = _nonneg(w, "tolerance_grad", tolerance_grad)
        tolerance_change = _nonneg(w, "tolerance_change", tolerance_change)
        _check_wolfe(w, c1, c2)
        # at least one full iteration (first evaluation + a whole line search), even for max_iter=1
        max_eval = max(max_iter * 5 // 4, 1 + max_ls_evals) if max_eval is None else check_int(w, "max_eval", max_eval)
        defaults = {
            "lr": lr, "history_size": history_size, "max_iter": max_iter, "max_eval": max_eval,
            "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
            "line_search": line_search, "c1": c1, "c2": c2, "max_ls_evals": max_ls_evals,
        }  # fmt: skip
        super().__init__(params, defaults)
        self._reset_solver_state()

    def _reset_solver_state(self) -> None:
        _named_state(self)["lbfgs"] = {"s": [], "y": [], "rho": [], "gamma": 1.0}

    def _memory(self) -> LBFGSMemory:
        st = _named_state(self).get("lbfgs")
        if not st or not st["s"]:
            return lbfgs_init()
        dev = self._flat.home
        return LBFGSMemory(
            tuple(t.to(dev) for t in st["s"]), tuple(t.to(dev) for t in st["y"]),
            tuple(st["rho"]), float(st["gamma"]),
        )  # fmt: skip

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Tensor:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; return the loss at the start."""
        d = self.defaults
        fg, x0, f0, g0 = self._start(closure)
        res, memory = run_lbfgs(
            fg, x0, history_size=d["history_size"], gtol=d["tolerance_grad"],
            ftol=d["tolerance_change"], c1=d["c1"], c2=d["c2"], max_iter=d["max_iter"],
            max_evals=d["max_eval"] - 1, max_ls_evals=d["max_ls_evals"],
            line_search=d["line_search"], lr=self._flat.group_scale(self),
            memory=self._memory(), f0=f0, g0=g0,
        )  # fmt: skip
        res = res._replace(nfev=res.nfev + 1, njev=res.njev + 1)
        # lbfgs_push keeps a pair only when yᵀs and yᵀy are finite, so s and y are finite too
        if math.isfinite(memory.gamma) and all(math.isfinite(r) for r in memory.rho):
            _named_state(self)["lbfgs"] = {
                "s": list(memory.s), "y": list(memory.y), "rho": list(memory.rho),
                "gamma": memory.gamma,
            }  # fmt: skip
        else:  # not reached through run_lbfgs; kept as the last guard: restart the memory
            self._reset_solver_state()
        self._finish(res, x0, g0)
        return f0


class BFGS(_FlatOptimizer):
    """Dense BFGS for small models (it stores an n × n inverse-Hessian approximation).

    One ``step(closure)`` runs up to ``max_iter`` iterations of :func:`run_bfgs` (N&W
    Algorithm 6.1, strong Wolfe line search, update skipped when yᵀs is too small) and keeps
    H for the next call.

    Args:
        params: parameters or parameter groups (groups may set only ``lr``).
        lr: scales the direction (per group), > 0.
        max_iter: iterations per ``step``.
        max_eval: closure evaluations per ``step``; max(1.25 max_iter, 26) by default, so that
            ``max_iter=1`` still takes a step.
        tolerance_grad: stop when ‖∇f‖_∞ ≤ this.
        c1: sufficient-decrease constant.
        c2: curvature constant.
        max_params: refuse models with more parameters than this (H has max_params² entries).

    Attributes:
        result: the :class:`OptimizeResult` of the last ``step`` (with ``hess_inv``); status 3
            with a message naming the value when a non-finite loss or gradient stopped it.
        nonfinite_steps: how many steps stopped on a non-finite value.

    Raises:
        ValueError: an option out of its range (lr ≤ 0, max_iter < 1, c1 ≥ c2, NaN, inf, …).
        TypeError: an option of the wrong type.
    """

    _where = "BFGS"

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        *,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_params: int = 20_000,
    ) -> None:
        w = "BFGS"
        lr = _positive(w, "lr", lr)
        max_iter = check_int(w, "max_iter", max_iter)
        max_params = check_int(w, "max_params", max_params)
        tolerance_grad = _nonneg(w, "tolerance_grad", tolerance_grad)
        _check_wolfe(w, c1, c2)
        # at least one full iteration (first evaluation + a whole line search), even for max_iter=1
        max_eval = max(max_iter * 5 // 4, 26) if max_eval is None else check_int(w, "max_eval", max_eval)
        defaults = {
            "lr": lr, "max_iter": max_iter, "max_eval": max_eval,
            "tolerance_grad": tolerance_grad, "c1": c1, "c2": c2, "max_params": max_params,
        }  # fmt: skip
        super().__init__(params, defaults)
        if self._flat.spec.size > max_params:
            raise ValueError(
                f"BFGS: {self._flat.spec.size} parameters exceed max_params={max_params} (the "
                "dense inverse Hessian would hold their square); use LBFGS for large models"
            )
        self._reset_solver_state()

    def _reset_solver_state(self) -> None:
        _named_state(self)["bfgs"] = {"hess_inv": None}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Tensor:  # type: ignore[override]
        """Run up to ``max_iter`` BFGS iterations; return the loss at the start."""
        d = self.defaults
        fg, x0, f0, g0 = self._start(closure)
        res = run_bfgs(
            fg, x0, gtol=d["tolerance_grad"], c1=d["c1"], c2=d["c2"], max_iter=d["max_iter"],
            max_evals=d["max_eval"], hess_inv0=_named_state(self)["bfgs"]["hess_inv"],
            lr=self._flat.group_scale(self), f0=f0, g0=g0,
        )  # fmt: skip
        res = res._replace(nfev=res.nfev + 1, njev=res.njev + 1)
        h = res.hess_inv
        _named_state(self)["bfgs"] = {"hess_inv": h if h is not None and _finite(h) else None}
        self._finish(res, x0, g0)
        return f0


# ---------------------------------------------------------------------------------------------
# Newton-CG with damping
# ---------------------------------------------------------------------------------------------


class NewtonStats(NamedTuple):
    """What one :meth:`Newton.step` did.

    Attributes:
        loss: the loss before the step.
        new_loss: the loss after it (NaN when not evaluated: no line search, no adaptation).
        damping: λ used for this step.
        cg_iterations: curvature-vector products used by CG.
        negative_curvature: CG met a direction of non-positive curvature.
        step_size: the accepted multiple t of the Newton-CG direction (0 = no move).
        rho: the reduction ratio (actual / predicted decrease; NaN when not evaluated).
        skipped: the step was not taken because the loss, the gradient, a curvature product,
            the direction or the new parameters (or, for a fixed step with adaptive damping,
            the loss there) was not finite; the parameters are exactly as before.
    """

    loss: float
    new_loss: float
    damping: float
    cg_iterations: int
    negative_curvature: bool
    step_size: float
    rho: float
    skipped: bool = False


class Newton(Optimizer):
    """Damped Newton-CG (Hessian-free) for ``nn.Module`` parameters.

    Each step solves (B + λI) d = −g by truncated CG with a forcing term (N&W Algorithm 7.1),
    where B is the Hessian (``curvature="hessian"``; Hessian-vector products by double
    backward, Pearlmutter 1994) or the generalised Gauss-Newton matrix Jᵀ ∇²ℓ J of the
    model outputs (``"ggn"``; positive semi-definite for convex losses, Schraudolph 2002),
    then moves θ ← θ + t d with t from Armijo backtracking starting at ``lr`` (or t = lr).
    With ``adaptive_damping`` λ follows the Levenberg–Marquardt rule of Martens (2010, §4.1)
    from ρ = (f(θ) − f(θ + t d)) / −(t gᵀd + ½ t² dᵀBd).

    Args:
        params: parameters (one group; several groups may differ only in ``lr``, scaling d).
        lr: the first trial step, > 0 (1 is the Newton step).
        damping: initial λ > 0.
        curvature: ``"hessian"`` or ``"ggn"``.
        cg_max_iter: CG products per step, ≥ 1.
        forcing: CG stops at ‖r‖ ≤ η‖g‖, η ∈ (0, 1); η = min(0.5, √‖g‖) when None.
        adaptive_damping: adapt λ by Levenberg–Marquardt.
        line_search: ``"armijo"`` or None.
        max_ls_evals: loss evaluations of the line search.

    Attributes:
        stats: :class:`NewtonStats` of the last step (``skipped`` when a value was not finite).
        nonfinite_steps: how many steps were skipped because a value was not finite.

    Raises:
        ValueError: an option out of its range (lr ≤ 0, damping ≤ 0, cg_max_iter < 1,
            forcing ∉ (0, 1), NaN, inf, …).
        TypeError: an option of the wrong type.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        *,
        damping: float = 1e-3,
        curvature: str = "hessian",
        cg_max_iter: int = 50,
        forcing: float | None = None,
        adaptive_damping: bool = True,
        line_search: str | None = "armijo",
        max_ls_evals: int = 20,
    ) -> None:
        if curvature not in ("hessian", "ggn"):
            raise ValueError(f"Newton: unknown curvature {curvature!r}; valid: 'hessian', 'ggn'")
        if line_search not in ("armijo", None):
            raise ValueError(f"Newton: unknown line_search {line_search!r}; valid: 'armijo', None")
        w = "Newton"
        lr = _positive(w, "lr", lr)
        damping = _positive(w, "damping", damping)
        cg_max_iter = check_int(w, "cg_max_iter", cg_max_iter)
        max_ls_evals = check_int(w, "max_ls_evals", max_ls_evals)
        if forcing is not None:
            forcing = check_real(w, "forcing", forcing, low=0.0, high=1.0, low_open=True, high_open=True)
        _check_flag(w, "adaptive_damping", adaptive_damping)
        defaults = {
            "lr": lr, "damping": damping, "curvature": curvature, "cg_max_iter": cg_max_iter,
            "forcing": forcing, "adaptive_damping": adaptive_damping,
            "line_search": line_search, "max_ls_evals": max_ls_evals,
        }  # fmt: skip
        super().__init__(params, defaults)
        _check_groups(self, defaults, "Newton")
        self._flat = _FlatParams(self, "Newton")
        self._lm = LevenbergMarquardt(damping, min_value=min(1e-8, damping))
        _named_state(self)["newton"] = {"damping": damping}
        self.stats: NewtonStats | None = None

    def _curvature(self, loss: Tensor, outputs: Tensor | None) -> tuple[Tensor, Matvec]:
        params = self._flat.params
        kind = self.defaults["curvature"]
        if kind == "hessian":
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            g = self._flat.cat([t.detach() if t is not None else None for t in grads])
            live = [(p, t) for p, t in zip(params, grads, strict=True) if t is not None and t.requires_grad]

            def hess_mv(v: Tensor) -> Tensor:
                if not live:
                    return torch.zeros_like(v)
                vs = dict(zip(map(id, params), self._flat.split(v), strict=True))
                hv = torch.autograd.grad(
                    [t for _, t in live], params, grad_outputs=[vs[id(p)] for p, _ in live],
                    retain_graph=True, allow_unused=True,
                )  # fmt: skip
                return self._flat.cat(hv)

            return g, hess_mv
        if outputs is None:
            raise ValueError("Newton(curvature='ggn'): the closure must return (loss, outputs)")
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        g = self._flat.cat(grads)
        (g_out,) = torch.autograd.grad(loss, outputs, create_graph=True)
        w = torch.zeros_like(outputs, requires_grad=True)
        jt_w = torch.autograd.grad(outputs, params, grad_outputs=w, create_graph=True, allow_unused=True)
        live = [(p, t) for p, t in zip(params, jt_w, strict=True) if t is not None]

        def ggn_mv(v: Tensor) -> Tensor:
            vs = dict(zip(map(id, params), self._flat.split(v), strict=True))
            (jv,) = torch.autograd.grad(
                [t for _, t in live], w, grad_outputs=[vs[id(p)] for p, _ in live],
                retain_graph=True,
            )  # fmt: skip  # J v by the double-vjp trick
            if g_out.requires_grad:
                (hjv,) = torch.autograd.grad(g_out, outputs, grad_outputs=jv, retain_graph=True)
            else:  # loss linear in the outputs
                hjv = torch.zeros_like(jv)
            jthjv = torch.autograd.grad(outputs, params, grad_outputs=hjv, retain_graph=True,
                                        allow_unused=True)  # fmt: skip
            return self._flat.cat(jthjv)

        return g, ggn_mv

    def step(self, closure: Callable[[], Any] | None = None) -> Tensor:  # type: ignore[override]
        """One damped Newton-CG step; return the loss before it."""
        if closure is None:
            raise ValueError(
                "Newton: step() needs a closure that computes and returns the loss (or "
                "(loss, outputs) for curvature='ggn') without calling backward"
            )
        d = self.defaults
        with torch.enable_grad():
            out = closure()
        loss, outputs = out if isinstance(out, tuple) else (out, None)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("Newton: the closure must return a scalar loss tensor")
        loss = loss.reshape(())
        if not loss.requires_grad:
            raise ValueError(
                "Newton: the loss does not require grad; compute it from the parameters inside "
                "the closure, and do not call loss.backward() there"
            )
        f0 = float(loss.detach())
        _check_lrs(self, "Newton")
        lam = self._lm.value
        if not math.isfinite(f0):
            return self._skip(loss, f0, lam, 0, False)
        try:
            g, mv = self._curvature(loss, outputs)
        except RuntimeError as err:
            if "backward through the graph a second time" in str(err):
                raise RuntimeError(
                    "Newton: the closure's graph was freed; do not call loss.backward() inside "
                    "the closure (Newton differentiates the loss itself)"
                ) from err
            raise
        if not _finite(g):
            return self._skip(loss, f0, lam, 0, False)

        def damped(v: Tensor) -> Tensor:
            return mv(v) + lam * v

        scale = self._flat.group_scale(self)
        cg = truncated_cg(damped, g, forcing=d["forcing"], max_iter=d["cg_max_iter"], norm=2.0)
        if cg.non_finite:
            return self._skip(loss, f0, lam, cg.iterations, cg.negative_curvature, g)
        direction = cg.x if isinstance(scale, float) else cg.x * scale
        gtd = float(torch.dot(g, direction))
        if not gtd < 0.0:
            direction = -g if isinstance(scale, float) else -g * scale
            gtd = float(torch.dot(g, direction))
        dbd = float(torch.dot(direction, mv(direction)))
        if not (math.isfinite(gtd) and math.isfinite(dbd)):
            return self._skip(loss, f0, lam, cg.iterations, cg.negative_curvature, g)
        x0 = self._flat.get()

        @torch.no_grad()
        def f_at(x: Tensor) -> Tensor:
            self._flat.set(x)
            o = closure()
            return _closure_loss(o[0] if isinstance(o, tuple) else o, "Newton")

        lr = scale if isinstance(scale, float) else 1.0  # the groups' lr, which a scheduler edits
        t, new_loss = 0.0, math.nan
        all_trials_non_finite = False
        if gtd < 0.0 and d["line_search"] == "armijo":
            ls = armijo(f_at, x0, direction, f0=f0, g0=g, step=lr, max_evals=d["max_ls_evals"])
            t, new_loss = ls.step, ls.f if ls.success else math.nan
            all_trials_non_finite = ls.message == NON_FINITE_TRIALS
            self._flat.set(ls.x)
        elif gtd < 0.0:
            t = lr
            self._flat.set(x0 + t * direction)
            if d["adaptive_damping"]:
                new_loss = float(f_at(x0 + t * direction))
        non_finite_loss = t > 0.0 and d["adaptive_damping"] and not math.isfinite(new_loss)
        if all_trials_non_finite or non_finite_loss or not _finite(self._flat.get()):
            self._flat.set(x0)  # bit for bit the parameters before the step
            if d["adaptive_damping"]:  # a non-finite step is a bad step: more damping next time
                self._lm.update(-math.inf, 0.0)
                _named_state(self)["newton"] = {"damping": self._lm.value}
            return self._skip(loss, f0, lam, cg.iterations, cg.negative_curvature, g)
        rho = math.nan
        if d["adaptive_damping"]:
            predicted = -(t * gtd + 0.5 * t * t * dbd)
            actual = f0 - new_loss if t > 0.0 else -math.inf
            rho = actual / predicted if predicted > 0 and math.isfinite(actual) else -math.inf
            self._lm.update(actual, predicted if t > 0.0 else 0.0)
            _named_state(self)["newton"] = {"damping": self._lm.value}
        self._flat.set_grad(g)
        self.stats = NewtonStats(f0, new_loss, lam, cg.iterations, cg.negative_curvature, t, rho)
        return loss.detach()

    def _skip(
        self, loss: Tensor, f0: float, lam: float, cg_iterations: int, negative: bool, g: Tensor | None = None
    ) -> Tensor:
        """Leave the parameters as they are; report and count a skipped (non-finite) step."""
        if g is not None:
            self._flat.set_grad(g)
        _count_nonfinite(self)
        self.stats = NewtonStats(f0, math.nan, lam, cg_iterations, negative, 0.0, math.nan, skipped=True)
        return loss.detach()

    @property
    def nonfinite_steps(self) -> int:
        """How many steps were skipped because a value was not finite (see :class:`NewtonStats`)."""
        return _nonfinite_steps(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        lam = _named_state(self).get("newton", {}).get("damping")
        if lam is not None:
            self._lm.load_state_dict({"value": lam})


# ---------------------------------------------------------------------------------------------
# Natural gradient with any curvature operator
# ---------------------------------------------------------------------------------------------


class NaturalGradientStats(NamedTuple):
    """What one :meth:`NaturalGradient.step` did.

    Attributes:
        cg_iterations: CG iterations.
        residual_norm: ‖(C + λI)x − g‖ at the end of CG.
        quadratic: xᵀ(C + λI)x for the solution x (2 × the predicted KL for a Fisher C).
        step_size: the multiple of x subtracted from θ (0 when skipped).
        skipped: the step was not taken because the gradient, a curvature product, the
            solution or the new parameters were not finite; the parameters are as before.
    """

    cg_iterations: int
    residual_norm: float
    quadratic: float
    step_size: float
    skipped: bool = False


class NaturalGradient(Optimizer):
    """Preconditioned gradient step θ ← θ − η (C + λI)⁻¹ g with any curvature operator C.

    ``curvature(θ)`` returns the matvec v ↦ C(θ) v at the current flat parameters, e.g.
    ``lambda th: natrl.curvature.fisher_vp(f, th, x, dist)`` or
    ``lambda th: natrl.curvature.ggn_vp(f, th, x, y, loss="cross_entropy")``; the system is
    solved by conjugate gradient (N&W Algorithm 5.2). With ``max_kl`` the step is shortened
    so that the quadratic model of the KL, ½ η² xᵀCx, stays ≤ max_kl (natural policy
    gradient, Kakade 2001; TRPO's step, Schulman et al. 2015, Appendix C).

    Args:
        params: parameters (groups may differ only in ``lr``, scaling x per group).
        lr: η > 0.
        curvature: θ ↦ (v ↦ C(θ) v) on flat vectors.
        damping: λ ≥ 0.
        cg_max_iter: CG iterations, ≥ 1.
        cg_tol: relative CG residual tolerance, ≥ 0.
        max_kl: optional trust region δ > 0 on ½ η² xᵀCx.

    Attributes:
        stats: :class:`NaturalGradientStats` of the last step (``skipped`` when a value was not
            finite).
        nonfinite_steps: how many steps were skipped because a value was not finite.

    Raises:
        ValueError: an option out of its range (lr ≤ 0, damping < 0, NaN, inf, …).
        TypeError: an option of the wrong type.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        *,
        curvature: Callable[[Tensor], Matvec],
        damping: float = 1e-3,
        cg_max_iter: int = 10,
        cg_tol: float = 1e-10,
        max_kl: float | None = None,
    ) -> None:
        if not callable(curvature):
            raise TypeError("NaturalGradient: curvature must be callable θ -> (v -> C v)")
        w = "NaturalGradient"
        lr = _positive(w, "lr", lr)
        damping = _nonneg(w, "damping", damping)
        cg_max_iter = check_int(w, "cg_max_iter", cg_max_iter)
        cg_tol = _nonneg(w, "cg_tol", cg_tol)
        if max_kl is not None:
            max_kl = _positive(w, "max_kl", max_kl)
        defaults = {
            "lr": lr, "damping": damping, "cg_max_iter": cg_max_iter, "cg_tol": cg_tol,
            "max_kl": max_kl,
        }  # fmt: skip
        super().__init__(params, defaults)
        _check_groups(self, defaults, "NaturalGradient")
        self._flat = _FlatParams(self, "NaturalGradient")
        self.curvature = curvature
        self.stats: NaturalGradientStats | None = None

    def step(self, closure: Callable[[], Any] | None = None) -> Tensor | None:  # type: ignore[override]
        """Take one natural-gradient step from the gradients in ``.grad``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        d = self.defaults
        _check_lrs(self, "NaturalGradient")
        g = self._flat.grad()
        if not _finite(g):
            return self._skip(loss, NaturalGradientStats(0, math.nan, math.nan, 0.0, skipped=True))
        theta = self._flat.get()
        op = self.curvature(theta)
        lam = float(d["damping"])

        def damped(v: Tensor) -> Tensor:
            return op(v) + lam * v if lam else op(v)

        try:
            with torch.no_grad():
                cg = conjugate_gradient(damped, g, max_iter=d["cg_max_iter"], tol=d["cg_tol"])
        except NonFiniteError:
            return self._skip(loss, NaturalGradientStats(0, math.nan, math.nan, 0.0, skipped=True))
        x = cg.x
        quad = float(torch.dot(x, damped(x).detach()))
        scale = self._flat.group_scale(self)
        eta = scale if isinstance(scale, float) else 1.0  # the groups' lr, which a scheduler edits
        if d["max_kl"] is not None and quad > 0.0:
            eta = min(eta, math.sqrt(2.0 * float(d["max_kl"]) / quad))
        step = x if isinstance(scale, float) else x * scale
        new = theta - eta * step
        if not (math.isfinite(quad) and _finite(new)):
            return self._skip(loss, NaturalGradientStats(cg.iterations, cg.residual_norm, quad, 0.0, skipped=True))
        with torch.no_grad():
            self._flat.set(new)
        self.stats = NaturalGradientStats(cg.iterations, cg.residual_norm, quad, eta)
        return loss

    def _skip(self, loss: Any, stats: NaturalGradientStats) -> Any:
        """Leave the parameters as they are; report and count a skipped (non-finite) step."""
        _count_nonfinite(self)
        self.stats = stats
        return loss

    @property
    def nonfinite_steps(self) -> int:
        """How many steps were skipped because a value was not finite (see :class:`NaturalGradientStats`)."""
        return _nonfinite_steps(self)
