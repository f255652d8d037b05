"""Nothing hangs, nothing NaN "succeeds": non-finite values and bad options in natrl.optim.

Every solver stops with ``success=False``, status 3 and a message naming what was not finite;
every torch.optim class leaves its parameters and state finite, skips and counts such steps;
every numeric option is refused at construction with one line naming it and its range.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from natrl.linalg import NonFiniteError, conjugate_gradient
from natrl.linesearch import armijo, strong_wolfe
from natrl.linesearch.wolfe import NON_FINITE_TRIALS
from natrl.optim import BFGS, KFAC, LBFGS, NaturalGradient, Newton, minimize
from natrl.optim.kfac import kl_clip_scale
from natrl.optim.newton import truncated_cg
from natrl.optim.result import Status
from natrl.optim.trust_region import steihaug_cg

METHODS = ["bfgs", "lbfgs", "newton-cg", "trust-ncg", "newton"]
SECOND_ORDER = ["newton-cg", "trust-ncg", "newton"]
NAN = math.nan


def _quadratic(x: torch.Tensor) -> torch.Tensor:
    return ((x - 3.0) ** 2).sum()


def _x0() -> torch.Tensor:
    return torch.zeros(3, dtype=torch.float64)


def _nan_like(v: torch.Tensor) -> torch.Tensor:
    return torch.full_like(v, NAN)


def _assert_non_finite(res, what: str) -> None:  # type: ignore[no-untyped-def]
    assert not res.success
    assert res.status == Status.NON_FINITE
    assert what in res.message and "not finite at iteration" in res.message, res.message
    assert torch.isfinite(res.x).all()


# ---------------------------------------------------------------------------------------------
# minimize: non-finite values
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_trust_ncg_with_nan_hessp_stops() -> None:
    """Was an unbounded loop: CG-Steihaug never met its tests with NaN curvature."""
    res = minimize(_quadratic, _x0(), method="trust-ncg", hessp=lambda x, p: _nan_like(p))
    _assert_non_finite(res, "the Hessian-vector product")
    assert res.nit == 0 and torch.equal(res.x, _x0())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", SECOND_ORDER)
def test_nan_hessp_fails(method: str) -> None:
    res = minimize(_quadratic, _x0(), method=method, hessp=lambda x, p: _nan_like(p))
    _assert_non_finite(res, "the Hessian" if method == "newton" else "the Hessian-vector product")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", SECOND_ORDER)
def test_nan_autograd_curvature_fails(method: str) -> None:
    """f and ∇f are finite at 0, ∇²f is NaN there (|x|^1.5)."""

    def fun(x: torch.Tensor) -> torch.Tensor:
        return ((x - 1.0) ** 2).sum() + x.abs().pow(1.5).sum()

    res = minimize(fun, _x0(), method=method)
    _assert_non_finite(res, "the Hessian")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", METHODS)
def test_nan_jac_fails(method: str) -> None:
    """Was success=True with x unchanged for bfgs, trust-ncg and newton."""
    res = minimize(_quadratic, _x0(), method=method, jac=lambda x: _nan_like(x))
    _assert_non_finite(res, "the gradient is not finite at iteration 0")
    assert torch.equal(res.x, _x0())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", METHODS)
def test_nan_jac_returned_with_the_loss_fails(method: str) -> None:
    res = minimize(lambda x: (_quadratic(x), _nan_like(x)), _x0(), method=method, jac=True)
    _assert_non_finite(res, "the gradient")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", METHODS)
def test_inf_gradient_fails(method: str) -> None:
    res = minimize(_quadratic, _x0(), method=method, jac=lambda x: torch.full_like(x, math.inf))
    _assert_non_finite(res, "the gradient")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", METHODS)
def test_objective_non_finite_everywhere_but_x0_fails(method: str) -> None:
    """Every trial step is NaN: a bounded number of evaluations, then status 3 at x0."""

    def fun(x: torch.Tensor) -> torch.Tensor:
        v = _quadratic(x)
        return torch.where(x.abs().max() > 0, torch.full_like(v, NAN), v)

    res = minimize(fun, _x0(), method=method)
    _assert_non_finite(res, "every trial")
    assert torch.equal(res.x, _x0()) and res.nfev < 200


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["newton-cg", "trust-ncg"])
def test_hessp_turning_nan_later_keeps_the_last_finite_iterate(method: str) -> None:
    def fun(x: torch.Tensor) -> torch.Tensor:
        return (x**4).sum() + ((x - 3.0) ** 2).sum()

    def hessp(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        h = (12.0 * x**2 + 2.0) * p
        return h if float(x.abs().max()) < 0.5 else _nan_like(p)

    res = minimize(fun, _x0(), method=method, hessp=hessp)
    _assert_non_finite(res, "the Hessian-vector product")
    assert res.nit >= 1 and float(res.fun) < float(fun(_x0()))


def test_inner_solvers_stop_on_nan_products() -> None:
    g = torch.ones(4, dtype=torch.float64)
    tr = steihaug_cg(lambda v: _nan_like(v), g, 1.0)
    assert tr.non_finite and tr.iterations == 1 and torch.isfinite(tr.p).all()
    tc = truncated_cg(lambda v: _nan_like(v), g)
    assert tc.non_finite and tc.iterations == 1 and torch.isfinite(tc.x).all()
    assert steihaug_cg(lambda v: v, _nan_like(g), 1.0).non_finite
    assert truncated_cg(lambda v: v, _nan_like(g)).non_finite
    with pytest.raises(NonFiniteError, match="non-finite"):
        conjugate_gradient(lambda v: _nan_like(v), g)
    # a finite but indefinite-free operator still reaches the usual exits
    assert not steihaug_cg(lambda v: 2.0 * v, g, 10.0).non_finite


def test_line_searches_report_non_finite_trials() -> None:
    x = torch.zeros(2, dtype=torch.float64)
    g0 = torch.ones(2, dtype=torch.float64)

    def fg(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(NAN, dtype=z.dtype), z

    for method in ("more-thuente", "zoom"):
        ls = strong_wolfe(fg, x, -g0, f0=0.0, g0=g0, max_evals=15, method=method)
        assert not ls.success and ls.message == NON_FINITE_TRIALS and ls.nfev <= 15
        assert torch.equal(ls.x, x)
    ar = armijo(lambda z: torch.tensor(math.inf), x, -g0, f0=0.0, g0=g0, max_evals=7)
    assert not ar.success and ar.message == NON_FINITE_TRIALS and torch.equal(ar.x, x)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"step": NAN}, ValueError, r"step \(the initial step\) must be a finite number > 0, got nan"),
        ({"step": math.inf}, ValueError, "step"),
        ({"step": "1"}, TypeError, "step must be a real number"),
        ({"max_evals": 0}, ValueError, "max_evals must be an int >= 1, got 0"),
        ({"max_evals": 2.5}, TypeError, "max_evals must be an int"),
        ({"max_evals": math.inf}, TypeError, "max_evals must be an int"),
    ],
)
def test_line_search_options_refused(kwargs, exc, match) -> None:  # type: ignore[no-untyped-def]
    x = torch.zeros(2)
    g0 = torch.ones(2)
    with pytest.raises(exc, match=match):
        strong_wolfe(lambda z: (z.sum(), torch.ones_like(z)), x, -g0, f0=0.0, g0=g0, **kwargs)
    with pytest.raises(exc, match=match):
        armijo(lambda z: z.sum(), x, -g0, f0=0.0, g0=g0, **kwargs)


# ---------------------------------------------------------------------------------------------
# minimize: options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs", "exc", "match"),
    [
        ("bfgs", {"tol": NAN}, ValueError, r"minimize: tol must be a finite number >= 0, got nan"),
        ("lbfgs", {"tol": math.inf}, ValueError, "tol must be a finite number >= 0, got inf"),
        ("bfgs", {"tol": -1.0}, ValueError, "tol must be a finite number >= 0, got -1.0"),
        ("bfgs", {"tol": "1e-5"}, TypeError, "tol must be a real number, got str '1e-5'"),
        ("bfgs", {"tol": True}, TypeError, "tol must be a real number, got bool"),
        ("bfgs", {"max_iter": -1}, ValueError, "max_iter must be an int >= 0, got -1"),
        ("bfgs", {"max_iter": 10.0}, TypeError, "max_iter must be an int >= 0, got float"),
        ("bfgs", {"options": {"gtol": NAN}}, ValueError, r"options\['gtol'\] must be a finite number >= 0, got nan"),
        ("bfgs", {"options": {"norm": 0}}, ValueError, r"options\['norm'\] must be a number > 0"),
        ("bfgs", {"options": {"c1": 0.95}}, ValueError, "need 0 < c1 < c2 < 1"),
        ("bfgs", {"options": {"c2": 1.0}}, ValueError, r"options\['c2'\] must be a finite number in \(0, 1\)"),
        ("bfgs", {"options": {"max_evals": 0}}, ValueError, r"options\['max_evals'\] must be an int >= 1"),
        ("bfgs", {"options": {"hess_inv0": torch.eye(2)}}, ValueError, r"hess_inv0'\] must be a finite tensor"),
        ("lbfgs", {"options": {"history_size": 0}}, ValueError, r"history_size'\] must be an int >= 1, got 0"),
        ("lbfgs", {"options": {"history_size": True}}, TypeError, r"options\['history_size'\] must be an int"),
        ("lbfgs", {"options": {"ftol": -1e-9}}, ValueError, r"options\['ftol'\] must be a finite number >= 0"),
        ("lbfgs", {"options": {"max_ls_evals": 0}}, ValueError, r"options\['max_ls_evals'\] must be an int >= 1"),
        ("lbfgs", {"options": {"line_search": "armijo"}}, ValueError, r"options\['line_search'\] must be"),
        ("newton-cg", {"options": {"cg_max_iter": -3}}, ValueError, r"options\['cg_max_iter'\] must be an int >= 1"),
        ("newton-cg", {"options": {"xtol": "0"}}, TypeError, r"options\['xtol'\] must be a real number"),
        ("newton", {"options": {"beta": -1.0}}, ValueError, r"options\['beta'\] must be a finite number > 0, got -1.0"),
        ("trust-ncg", {"options": {"eta": 0.3}}, ValueError, r"eta'\] must be a finite number in \[0, 0.25\)"),
        ("trust-ncg", {"options": {"max_trust_radius": math.inf}}, ValueError, r"options\['max_trust_radius'\]"),
        ("trust-ncg", {"options": {"initial_trust_radius": 0.0}}, ValueError, r"options\['initial_trust_radius'\]"),
    ],
)
def test_minimize_refuses_bad_options(method, kwargs, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        minimize(_quadratic, _x0(), method=method, **kwargs)


def test_minimize_accepts_boundary_options() -> None:
    assert minimize(_quadratic, _x0(), method="bfgs", tol=0, max_iter=0).nit == 0
    res = minimize(_quadratic, _x0(), method="bfgs", options={"norm": math.inf, "max_evals": None, "xrtol": 0})
    assert res.success
    assert minimize(_quadratic, _x0(), method="newton-cg", options={"cg_max_iter": None}).success


# ---------------------------------------------------------------------------------------------
# torch.optim classes: options
# ---------------------------------------------------------------------------------------------


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(3))]


def _curv(theta: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda v: v


@pytest.mark.parametrize(
    ("cls", "kwargs", "exc", "match"),
    [
        (BFGS, {"lr": -1.0}, ValueError, r"BFGS: lr must be a finite number > 0, got -1.0"),
        (BFGS, {"lr": 0.0}, ValueError, r"BFGS: lr must be a finite number > 0, got 0.0"),
        (BFGS, {"lr": NAN}, ValueError, "lr must be a finite number > 0, got nan"),
        (BFGS, {"lr": math.inf}, ValueError, "lr must be a finite number > 0, got inf"),
        (BFGS, {"lr": "1"}, TypeError, "BFGS: lr must be a real number, got str '1'"),
        (BFGS, {"lr": True}, TypeError, "lr must be a real number, got bool"),
        (BFGS, {"max_iter": 0}, ValueError, "max_iter must be an int >= 1, got 0"),
        (BFGS, {"max_eval": -1}, ValueError, "max_eval must be an int >= 1"),
        (BFGS, {"tolerance_grad": NAN}, ValueError, "tolerance_grad must be a finite number >= 0"),
        (BFGS, {"c1": NAN}, ValueError, r"c1 must be a finite number in \(0, 1\)"),
        (BFGS, {"max_params": 0}, ValueError, "max_params must be an int >= 1"),
        (LBFGS, {"lr": 0}, ValueError, "LBFGS: lr must be a finite number > 0, got 0"),
        (LBFGS, {"lr": "1"}, TypeError, "LBFGS: lr must be a real number"),
        (LBFGS, {"history_size": 0}, ValueError, "LBFGS: history_size must be an int >= 1, got 0"),
        (LBFGS, {"history_size": 2.0}, TypeError, "history_size must be an int >= 1, got float"),
        (LBFGS, {"max_iter": -5}, ValueError, "max_iter must be an int >= 1"),
        (LBFGS, {"max_ls_evals": 0}, ValueError, "max_ls_evals must be an int >= 1"),
        (LBFGS, {"tolerance_change": -1.0}, ValueError, "tolerance_change must be a finite number >= 0"),
        (LBFGS, {"c1": 0.9, "c2": 0.1}, ValueError, "need 0 < c1 < c2 < 1"),
        (Newton, {"lr": -1.0}, ValueError, "Newton: lr must be a finite number > 0"),
        (Newton, {"damping": NAN}, ValueError, "damping must be a finite number > 0, got nan"),
        (Newton, {"cg_max_iter": -3}, ValueError, "Newton: cg_max_iter must be an int >= 1, got -3"),
        (Newton, {"forcing": -1.0}, ValueError, r"Newton: forcing must be a finite number in \(0, 1\), got -1.0"),
        (Newton, {"forcing": 1.5}, ValueError, "forcing must be"),
        (Newton, {"max_ls_evals": 0}, ValueError, "max_ls_evals must be an int >= 1"),
        (Newton, {"adaptive_damping": 1}, TypeError, "adaptive_damping must be True or False"),
        (NaturalGradient, {"lr": 0.0}, ValueError, "NaturalGradient: lr must be a finite number > 0"),
        (NaturalGradient, {"damping": -1.0}, ValueError, "damping must be a finite number >= 0, got -1.0"),
        (NaturalGradient, {"cg_max_iter": 0}, ValueError, "cg_max_iter must be an int >= 1"),
        (NaturalGradient, {"cg_tol": NAN}, ValueError, "cg_tol must be a finite number >= 0"),
        (NaturalGradient, {"max_kl": 0.0}, ValueError, "max_kl must be a finite number > 0"),
    ],
)
def test_optimizers_refuse_bad_options(cls, kwargs, exc, match) -> None:  # type: ignore[no-untyped-def]
    extra = {"curvature": _curv} if cls is NaturalGradient else {}
    with pytest.raises(exc, match=match):
        cls(_params(), **extra, **kwargs)


def test_group_lr_is_checked_at_construction_and_at_each_step() -> None:
    p1, p2 = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"lr \(parameter group 1\) must be a finite number > 0, got -1.0"):
        LBFGS([{"params": [p1]}, {"params": [p2], "lr": -1.0}])
    opt = LBFGS([p1])
    opt.param_groups[0]["lr"] = 0.0  # as a scheduler would

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (p1**2).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=r"lr \(parameter group 0\) must be a finite number > 0, got 0.0"):
        opt.step(closure)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"lr": "1"}, TypeError, "KFAC: lr must be a real number"),
        ({"damping": 0.0}, ValueError, "KFAC: damping must be a finite number > 0, got 0.0"),
        ({"factor_decay": 1.0}, ValueError, r"factor_decay must be a finite number in \[0, 1\), got 1.0"),
        ({"factor_decay": NAN}, ValueError, "factor_decay must be a finite number"),
        ({"factor_interval": 0}, ValueError, "factor_interval must be an int >= 1, got 0"),
        ({"inverse_interval": 1.5}, TypeError, "inverse_interval must be an int >= 1, got float"),
        ({"damping_interval": -1}, ValueError, "damping_interval must be an int >= 1"),
        ({"kl_clip": 0.0}, ValueError, "kl_clip must be a finite number > 0, got 0.0"),
        ({"kl_clip": math.inf}, ValueError, "kl_clip must be a finite number > 0, got inf"),
        ({"preconditioner_only": "yes"}, TypeError, "preconditioner_only must be True or False"),
    ],
)
def test_kfac_refuses_bad_options(kwargs, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        KFAC(nn.Linear(2, 2), **kwargs)


# ---------------------------------------------------------------------------------------------
# torch.optim classes: non-finite steps are skipped, counted and visible
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LBFGS, BFGS])
def test_quasi_newton_skips_a_step_with_nan_gradients(cls) -> None:  # type: ignore[no-untyped-def]
    w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = cls([w])
    poison = [True]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = ((w - 3.0) ** 2).sum()
        loss.backward()
        if poison[0]:
            w.grad.fill_(NAN)  # type: ignore[union-attr]
        return loss

    before = w.detach().clone()
    opt.step(closure)
    assert torch.equal(w.detach(), before)
    assert opt.result is not None and not opt.result.success and opt.result.status == Status.NON_FINITE
    assert "the gradient" in opt.result.message
    assert opt.nonfinite_steps == 1
    poison[0] = False
    opt.step(closure)
    assert opt.result.success and opt.nonfinite_steps == 1  # type: ignore[union-attr]
    torch.testing.assert_close(w.detach(), torch.full((2,), 3.0, dtype=torch.float64))
    fresh = cls([nn.Parameter(w.detach().clone())])
    fresh.load_state_dict(opt.state_dict())
    assert fresh.nonfinite_steps == 1


@pytest.mark.parametrize("cls", [LBFGS, BFGS])
def test_quasi_newton_skips_a_step_with_a_nan_loss(cls) -> None:  # type: ignore[no-untyped-def]
    w = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = cls([w])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (w**2).sum() * NAN
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.equal(w.detach(), torch.ones(2, dtype=torch.float64))
    assert opt.result is not None and opt.result.status == Status.NON_FINITE and "the objective" in opt.result.message
    assert opt.nonfinite_steps == 1


def test_newton_skips_a_nan_curvature_step() -> None:
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = Newton([w])

    def closure() -> torch.Tensor:
        return ((w - 1.0) ** 2).sum() + w.abs().pow(1.5).sum()  # ∇² is NaN at 0

    opt.step(closure)
    assert torch.equal(w.detach(), torch.zeros(3, dtype=torch.float64))
    assert opt.stats is not None and opt.stats.skipped and opt.stats.step_size == 0.0
    assert opt.nonfinite_steps == 1


def test_newton_skips_a_step_that_overflows_the_parameters() -> None:
    w = nn.Parameter(torch.full((3,), 1e10))
    opt = Newton([w], lr=1e30, line_search=None, adaptive_damping=False)
    opt.step(lambda: (w**2).sum())
    assert torch.equal(w.detach(), torch.full((3,), 1e10))
    assert opt.stats is not None and opt.stats.skipped and opt.nonfinite_steps == 1


def test_newton_skips_a_nan_loss() -> None:
    w = nn.Parameter(torch.ones(2))
    opt = Newton([w])
    opt.step(lambda: (w**2).sum() * NAN)
    assert torch.equal(w.detach(), torch.ones(2))
    assert opt.stats is not None and opt.stats.skipped and opt.nonfinite_steps == 1


def test_natural_gradient_skips_nan_curvature_and_nan_gradients() -> None:
    w = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = NaturalGradient([w], curvature=lambda th: lambda v: _nan_like(v))
    (w**2).sum().backward()
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3, dtype=torch.float64))
    assert opt.stats is not None and opt.stats.skipped and opt.nonfinite_steps == 1

    ok = NaturalGradient([w], curvature=_curv)
    w.grad.fill_(math.inf)  # type: ignore[union-attr]
    ok.step()
    assert torch.equal(w.detach(), torch.ones(3, dtype=torch.float64))
    assert ok.stats is not None and ok.stats.skipped and ok.nonfinite_steps == 1


# ---------------------------------------------------------------------------------------------
# KFAC
# ---------------------------------------------------------------------------------------------


def _kfac_run(kl_clip: float | None, steps: int = 3) -> tuple[nn.Module, KFAC, list[float]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = KFAC(model, lr=1e6, kl_clip=kl_clip, inverse_interval=1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    losses = []
    for _ in range(steps):
        loss = 1e36 * ((model(x) - y) ** 2).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt.step()
    return model, opt, losses


def _finite_state(model: nn.Module, opt: KFAC) -> bool:
    tensors = list(model.parameters())
    tensors += [t for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
    tensors += [f for a, g in opt.factors().values() for f in (a, g) if f is not None]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def test_kfac_huge_lr_on_a_huge_loss_keeps_everything_finite() -> None:
    """lr=1e6 on a 1e36-scaled loss made every parameter NaN on the first step."""
    model, opt, losses = _kfac_run(kl_clip=1e-3)
    assert _finite_state(model, opt)
    assert all(math.isfinite(v) for v in losses)
    # the KL clip (now in float64) shrinks the step to a finite one that lowers the loss
    assert opt.stats is not None and 0.0 < opt.stats.kl_scale < 1e-30
    assert losses[-1] < losses[0]


def test_kfac_skips_and_counts_a_step_that_overflows() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = KFAC(model, lr=1e6, kl_clip=None, momentum=0.9)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = 1e36 * ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    with pytest.warns(RuntimeWarning, match="step is skipped"):
        opt.step()
    assert opt.stats is not None and opt.stats.skipped
    assert opt.nonfinite_steps == 1
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert all("momentum_buffer" not in opt.state[p] for p in model.parameters())
    assert _finite_state(model, opt)
    restored = KFAC(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)), lr=1.0)
    restored.load_state_dict(opt.state_dict())
    assert restored.nonfinite_steps == 1


def test_kfac_does_not_update_factors_from_a_non_finite_batch() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    opt = KFAC(layer, lr=0.1, inverse_interval=1)
    x = torch.randn(8, 3)
    layer(x).pow(2).mean().backward()
    opt.step()
    a, g = (t.clone() for t in opt.factors()["<root>"])  # type: ignore[union-attr]
    weights = layer.weight.detach().clone()
    opt.zero_grad()
    layer(torch.full((8, 3), NAN)).pow(2).mean().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        opt.step()
    a2, g2 = opt.factors()["<root>"]
    assert torch.equal(a, a2) and torch.equal(g, g2)  # type: ignore[arg-type]
    assert opt.stats is not None and opt.stats.skipped and opt.nonfinite_steps == 1
    assert torch.equal(layer.weight.detach(), weights)


def test_kl_clip_scale_of_an_unbounded_step_is_zero() -> None:
    assert kl_clip_scale(math.inf, 1.0, 1e-3) == 0.0
    assert kl_clip_scale(NAN, 1.0, 1e-3) == 1.0
    assert kl_clip_scale(0.0, 1.0, 1e-3) == 1.0
    assert kl_clip_scale(4.0, 1.0, 1.0) == 0.5
