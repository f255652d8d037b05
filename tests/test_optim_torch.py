"""torch.optim shims (LBFGS, BFGS, Newton, NaturalGradient) against scipy and dense references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.optimize as so
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from natrl.curvature import ggn_vp
from natrl.optim import BFGS, LBFGS, NaturalGradient, Newton, minimize
from natrl.params import flatten, functional


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


# A small L2-regularised logistic regression: data, torch model/closure, scipy reference.
N, D, LAM = 400, 6, 1e-2


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    y = ((x @ w + 0.5 * torch.randn(N, generator=g, dtype=torch.float64)) > 0).double()
    return x, y


X, Y = _data()


def _loss_of(model: nn.Linear) -> torch.Tensor:
    logits = model(X).squeeze(1)
    reg = 0.5 * LAM * (model.weight**2).sum()
    return nn.functional.binary_cross_entropy_with_logits(logits, Y) + reg


def _scipy_solution() -> np.ndarray:
    xn, yn = X.numpy(), Y.numpy()

    def f(th: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = th[:D], th[D]
        z = xn @ w + b
        p = 1 / (1 + np.exp(-z))
        loss = np.mean(np.logaddexp(0, z) - yn * z) + 0.5 * LAM * w @ w
        gz = (p - yn) / len(yn)
        return loss, np.concatenate([xn.T @ gz + LAM * w, [gz.sum()]])

    return so.minimize(f, np.zeros(D + 1), jac=True, method="L-BFGS-B", options={"gtol": 1e-11, "ftol": 0.0}).x


THETA_STAR = _scipy_solution()


def _model() -> nn.Linear:
    m = nn.Linear(D, 1).double()
    nn.init.zeros_(m.weight)
    nn.init.zeros_(m.bias)
    return m


def _closure(model: nn.Module, opt: torch.optim.Optimizer, counter: list[int] | None = None):  # type: ignore[no-untyped-def]
    def closure() -> torch.Tensor:
        if counter is not None:
            counter.append(1)
        opt.zero_grad()
        loss = _loss_of(model)  # type: ignore[arg-type]
        loss.backward()
        return loss

    return closure


def _theta(model: nn.Module) -> np.ndarray:
    return flatten(model.parameters()).detach().numpy()


# ---------------------------------------------------------------------------------------------
# LBFGS
# ---------------------------------------------------------------------------------------------


def test_lbfgs_reaches_scipy_minimiser_and_reports_status() -> None:
    model = _model()
    opt = LBFGS(model.parameters(), max_iter=200, tolerance_grad=1e-9, tolerance_change=0.0)
    opt.step(_closure(model, opt))
    assert opt.result is not None and opt.result.success and opt.result.status == 0
    np.testing.assert_allclose(_theta(model), THETA_STAR, atol=1e-6)
    # same iterates as the functional core on the flat problem
    f = functional(model)

    def flat_loss(th: torch.Tensor) -> torch.Tensor:
        logits = f(th, X).squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(logits, Y) + 0.5 * LAM * (th[:D] ** 2).sum()

    ref = minimize(flat_loss, torch.zeros(D + 1, dtype=torch.float64), method="lbfgs",
                   options={"gtol": 1e-9, "ftol": 0.0, "max_ls_evals": 25, "max_evals": 250},
                   max_iter=200)  # fmt: skip
    assert opt.result.nit == ref.nit
    np.testing.assert_allclose(_theta(model), ref.x.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("max_eval", [1, 2, 3, 7, 15])
def test_lbfgs_honours_max_eval(max_eval: int) -> None:
    model = _model()
    calls: list[int] = []
    opt = LBFGS(model.parameters(), max_iter=100, max_eval=max_eval)
    opt.step(_closure(model, opt, calls))
    assert len(calls) <= max_eval
    assert opt.result is not None and opt.result.nfev == len(calls)
    if max_eval < 10:
        assert opt.result.status in (1, 4) and not opt.result.success
    assert torch.isfinite(flatten(model.parameters())).all()


def test_lbfgs_long_run_after_convergence_stays_finite() -> None:
    """pytorch#5953: repeated steps at a converged point must not produce NaN."""
    model = _model()
    opt = LBFGS(model.parameters(), max_iter=50, tolerance_grad=0.0, tolerance_change=0.0)
    closure = _closure(model, opt)
    for _ in range(40):
        opt.step(closure)
    theta = flatten(model.parameters()).detach()
    assert torch.isfinite(theta).all()
    np.testing.assert_allclose(theta.numpy(), THETA_STAR, atol=1e-6)


def test_lbfgs_recovers_from_nan_losses() -> None:
    """The loss is NaN when any weight exceeds 0.8 in magnitude; the optimum is inside."""
    target = torch.linspace(-0.6, 0.6, 8, dtype=torch.float64)
    w = nn.Parameter(torch.zeros(8, dtype=torch.float64))
    opt = LBFGS([w], max_iter=100, tolerance_change=0.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (((w - target) ** 2) * torch.arange(1.0, 9.0, dtype=torch.float64)).sum()
        loss = torch.where(w.abs().max() > 0.8, torch.full_like(loss, math.nan), loss)
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.detach(), target, atol=1e-6, rtol=0)


def test_lbfgs_parameter_groups() -> None:
    """Two groups with equal lr give bit-identical iterates to one group; different lr still
    converge to the same minimiser."""
    m1, m2, m3 = _model(), _model(), _model()
    o1 = LBFGS(m1.parameters(), max_iter=30)
    o2 = LBFGS([{"params": [m2.weight]}, {"params": [m2.bias]}], max_iter=30)
    o1.step(_closure(m1, o1))
    o2.step(_closure(m2, o2))
    assert torch.equal(flatten(m1.parameters()), flatten(m2.parameters()))
    o3 = LBFGS([{"params": [m3.weight]}, {"params": [m3.bias], "lr": 0.3}], max_iter=200,
               tolerance_grad=1e-9, tolerance_change=0.0)  # fmt: skip
    o3.step(_closure(m3, o3))
    np.testing.assert_allclose(_theta(m3), THETA_STAR, atol=1e-6)
    with pytest.raises(ValueError, match="may differ only in 'lr'"):
        LBFGS([{"params": [m1.weight]}, {"params": [m1.bias], "history_size": 3}])


def test_lbfgs_state_dict_round_trip() -> None:
    ma, mb = _model(), _model()
    oa = LBFGS(ma.parameters(), max_iter=3, max_eval=10)
    oa.step(_closure(ma, oa))
    mb.load_state_dict(ma.state_dict())
    ob = LBFGS(mb.parameters(), max_iter=3, max_eval=10)
    ob.load_state_dict(oa.state_dict())
    assert len(ob.state["lbfgs"]["s"]) == 3
    oa.step(_closure(ma, oa))
    ob.step(_closure(mb, ob))
    assert torch.equal(flatten(ma.parameters()), flatten(mb.parameters()))


def test_lbfgs_bad_input() -> None:
    frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="does not require gradients"):
        LBFGS([frozen])
    w = nn.Parameter(torch.ones(2))
    opt = LBFGS([w])
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()
    with pytest.raises(RuntimeError, match=r"loss\.backward"):
        opt.step(lambda: (w**2).sum())  # forgot backward

    def vector_closure() -> torch.Tensor:
        opt.zero_grad()
        out = w**2
        out.sum().backward()
        return out

    with pytest.raises(ValueError, match="scalar loss"):
        opt.step(vector_closure)
    with pytest.raises(ValueError, match="valid"):
        LBFGS([w], line_search="backtracking")


def _lbfgs_run(steps: int = 3, **kw: object) -> np.ndarray:
    """The parameters after ``steps`` LBFGS steps on the logistic regression, from zero."""
    model = _model()
    opt = LBFGS(model.parameters(), **kw)  # type: ignore[arg-type]
    closure = _closure(model, opt)
    for _ in range(steps):
        opt.step(closure)
    return _theta(model)


def test_lbfgs_accepts_torchs_line_search_fn() -> None:
    """torch.optim.LBFGS's keyword line_search_fn means natrl's line_search (same values)."""
    # lr = 3 overshoots: the strong Wolfe search shortens the steps, fixed steps keep them
    kw = {"steps": 1, "lr": 3.0, "max_iter": 5}
    wolfe = _lbfgs_run(line_search="strong_wolfe", **kw)
    assert np.array_equal(_lbfgs_run(line_search_fn="strong_wolfe", **kw), wolfe)
    assert np.array_equal(_lbfgs_run(**kw), wolfe)
    fixed = _lbfgs_run(line_search=None, **kw)
    assert np.array_equal(_lbfgs_run(line_search_fn=None, **kw), fixed)
    assert np.abs(fixed - wolfe).max() > 0.1
    # torch's LBFGS with the same keyword reaches the same minimiser
    model = _model()
    topt = torch.optim.LBFGS(
        model.parameters(), max_iter=200, tolerance_grad=1e-10, tolerance_change=0.0, line_search_fn="strong_wolfe"
    )
    topt.step(_closure(model, topt))
    np.testing.assert_allclose(_lbfgs_run(max_iter=200, line_search_fn="strong_wolfe"), THETA_STAR, atol=1e-6)
    np.testing.assert_allclose(_theta(model), THETA_STAR, atol=1e-6)
    # the value kept in the param groups is a plain str: state_dict loads with weights_only=True
    opt = LBFGS(_model().parameters(), line_search_fn="strong_wolfe")
    assert type(opt.defaults["line_search"]) is str and type(opt.param_groups[0]["line_search"]) is str
    assert LBFGS(_model().parameters(), line_search_fn=None).defaults["line_search"] is None


def test_lbfgs_line_search_fn_bad_input() -> None:
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"^LBFGS: line_search and line_search_fn .* both given; give one$"):
        LBFGS([w], line_search="strong_wolfe", line_search_fn=None)
    with pytest.raises(ValueError, match=r"^LBFGS: unknown line_search_fn 'backtracking'; valid"):
        LBFGS([w], line_search_fn="backtracking")


# ---------------------------------------------------------------------------------------------
# BFGS
# ---------------------------------------------------------------------------------------------


def test_bfgs_shim_matches_scipy_minimiser() -> None:
    model = _model()
    opt = BFGS(model.parameters(), max_iter=100, tolerance_grad=1e-9)
    opt.step(_closure(model, opt))
    assert opt.result is not None and opt.result.success
    np.testing.assert_allclose(_theta(model), THETA_STAR, atol=1e-6)
    h = opt.state["bfgs"]["hess_inv"]
    assert h.shape == (D + 1, D + 1)
    assert torch.linalg.eigvalsh(h).min() > 0  # positive definite
    with pytest.raises(ValueError, match="max_params"):
        BFGS(nn.Linear(200, 200).parameters())


# ---------------------------------------------------------------------------------------------
# Newton
# ---------------------------------------------------------------------------------------------


def test_newton_hessian_mode_converges_quadratically() -> None:
    model = _model()
    opt = Newton(model.parameters(), damping=1e-8, cg_max_iter=50, forcing=1e-10)

    def closure() -> torch.Tensor:
        return _loss_of(model)

    errs, steps = [], []
    for _ in range(8):
        opt.step(closure)
        errs.append(float(np.abs(_theta(model) - THETA_STAR).max()))
        assert opt.stats is not None
        steps.append(opt.stats.step_size)
    assert errs[-1] < 1e-8
    assert steps[:5] == [1.0] * 5  # full Newton steps until rounding noise
    # quadratic convergence: the error roughly squares once close
    close = [e for e in errs if 1e-9 < e < 1e-2]
    for a, b in itertools.pairwise(close):
        assert b < 10 * a * a + 1e-12


def test_newton_ggn_is_exact_for_linear_least_squares() -> None:
    """For a linear model with MSE the Gauss-Newton matrix is the Hessian: one step (with
    tiny damping) lands on the least-squares solution from numpy."""
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(50, 4, generator=g, dtype=torch.float64)
    ys = torch.randn(50, 2, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 2).double()
    opt = Newton(model.parameters(), damping=1e-10, curvature="ggn", forcing=1e-12,
                 line_search=None, adaptive_damping=False)  # fmt: skip

    def closure() -> tuple[torch.Tensor, torch.Tensor]:
        out = model(xs)
        return nn.functional.mse_loss(out, ys), out

    opt.step(closure)
    a = np.hstack([xs.numpy(), np.ones((50, 1))])
    sol, *_ = np.linalg.lstsq(a, ys.numpy(), rcond=None)
    np.testing.assert_allclose(model.weight.detach().numpy(), sol[:4].T, atol=1e-8)
    np.testing.assert_allclose(model.bias.detach().numpy(), sol[4], atol=1e-8)


def test_newton_ggn_products_match_dense_gauss_newton() -> None:
    """Jᵀ H_ℓ J v from the optimizer equals the dense GGN built from the Jacobian."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    xs = torch.randn(5, 3, dtype=torch.float64)
    ys = torch.randint(0, 3, (5,))
    opt = Newton(net.parameters(), curvature="ggn")
    out = net(xs)
    loss = nn.functional.cross_entropy(out, ys)
    _, mv = opt._curvature(loss, out)
    f = functional(net)
    theta = flatten(net.parameters()).detach()
    jac = torch.autograd.functional.jacobian(lambda th: f(th, xs), theta).reshape(15, -1)
    p = torch.softmax(out.detach(), dim=1)
    h_out = torch.block_diag(*[(torch.diag(pi) - torch.outer(pi, pi)) / 5 for pi in p])
    dense = jac.T @ h_out @ jac
    n = theta.numel()
    cols = torch.stack([mv(torch.eye(n, dtype=torch.float64)[i]) for i in range(n)], dim=1)
    torch.testing.assert_close(cols, dense, atol=1e-12, rtol=1e-9)
    # and the same operator as natrl.curvature.ggn_vp
    ref = ggn_vp(f, theta, xs, ys, loss="cross_entropy")
    v = torch.randn(n, dtype=torch.float64)
    torch.testing.assert_close(mv(v), ref(v))


def test_newton_adapts_damping_and_rejects_bad_closures() -> None:
    model = _model()
    opt = Newton(model.parameters(), damping=10.0)
    for _ in range(5):
        opt.step(lambda: _loss_of(model))
    assert opt.stats is not None and opt.stats.rho > 0.75
    assert opt.state["newton"]["damping"] < 10.0  # good steps shrink λ
    with pytest.raises(ValueError, match="closure"):
        opt.step()

    def backward_closure() -> torch.Tensor:
        loss = _loss_of(model)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match=r"do not call loss\.backward"):
        opt.step(backward_closure)
    with pytest.raises(ValueError, match="valid"):
        Newton(model.parameters(), curvature="fisher")


# ---------------------------------------------------------------------------------------------
# NaturalGradient
# ---------------------------------------------------------------------------------------------


def test_natural_gradient_solves_quadratic_in_one_step() -> None:
    """loss = ½θᵀAθ − bᵀθ with C = A: θ₁ = θ₀ − A⁻¹(Aθ₀ − b) = A⁻¹b."""
    torch.manual_seed(3)
    m = torch.randn(6, 6, dtype=torch.float64)
    a = m @ m.T + torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    theta = nn.Parameter(torch.randn(6, dtype=torch.float64))
    opt = NaturalGradient([theta], lr=1.0, curvature=lambda th: (lambda v: a @ v), damping=0.0,
                          cg_max_iter=6)  # fmt: skip
    loss = 0.5 * theta @ a @ theta - b @ theta
    loss.backward()
    opt.step()
    torch.testing.assert_close(theta.detach(), torch.linalg.solve(a, b))
    assert opt.stats is not None and opt.stats.step_size == 1.0


def test_natural_gradient_with_ggn_operator_and_kl_limit() -> None:
    torch.manual_seed(4)
    net = nn.Linear(3, 2).double()
    xs = torch.randn(20, 3, dtype=torch.float64)
    ys = torch.randn(20, 2, dtype=torch.float64)
    f = functional(net)
    opt = NaturalGradient(net.parameters(), lr=1.0, damping=1e-3, cg_max_iter=20, max_kl=1e-4,
                          curvature=lambda th: ggn_vp(f, th, xs, ys, loss="mse"))  # fmt: skip
    opt.zero_grad()
    nn.functional.mse_loss(net(xs), ys).backward()
    before = flatten(net.parameters()).detach()
    opt.step()
    assert opt.stats is not None
    # the step is shortened so that ½ η² xᵀ(C + λI)x = max_kl exactly
    assert 0.5 * opt.stats.step_size**2 * opt.stats.quadratic == pytest.approx(1e-4, rel=1e-9)
    moved = flatten(net.parameters()).detach() - before
    assert float(moved.norm()) > 0


def test_lbfgs_with_max_iter_one_still_takes_a_step() -> None:
    # mini-batch use: one iteration per step; the default max_eval must leave room for the line search
    from natrl.optim import LBFGS as NatrlLBFGS

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    opt = NatrlLBFGS(model.parameters(), max_iter=1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = float(closure())
    for _ in range(5):
        opt.step(closure)
    assert float(closure()) < first


@pytest.mark.parametrize("name", ["newton", "natural"])
def test_learning_rate_schedulers_reach_newton_and_natural_gradient(name: str) -> None:
    """A scheduler edits param_groups[i]["lr"]; the step must follow it (half the lr, half the step)."""
    from natrl.optim import NaturalGradient, Newton

    def step(factor: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        x, y = torch.randn(16, 3), torch.randn(16, 1)
        if name == "newton":
            opt = Newton(model.parameters(), lr=1.0)
        else:
            opt = NaturalGradient(model.parameters(), lr=1.0, curvature=lambda theta: lambda v: v)
        torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: factor)
        before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            if name == "natural":  # Newton differentiates the loss itself
                loss.backward()
            return loss

        opt.step(closure)
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - before

    torch.testing.assert_close(step(0.5), 0.5 * step(1.0))


def test_kfac_kl_clip_follows_a_scheduled_learning_rate() -> None:
    from natrl.optim import KFAC

    def step_size(lr_now: float) -> float:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        opt = KFAC(model, lr=1.0, momentum=0.0, kl_clip=1e-3, inverse_interval=1)
        opt.param_groups[0]["lr"] = lr_now  # what a scheduler does
        x, y = torch.randn(32, 4), torch.randn(32, 2)
        before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        return float((torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - before).norm())

    # with the clip active the step is sqrt(κ/<g̃,g>) whatever η is: η ν = √(κ / ⟨g̃, g⟩)
    assert step_size(0.5) == pytest.approx(step_size(1.0), rel=1e-4)
