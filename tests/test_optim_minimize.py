"""natrl.optim.minimize against scipy.optimize.minimize, dense references and hand calculations."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.optimize as so
import torch
from threadpoolctl import threadpool_limits

from natrl.optim import OptimizeResult, minimize
from natrl.optim.newton import damped_cholesky, truncated_cg
from natrl.optim.quasi_newton import bfgs_update, lbfgs_direction, lbfgs_init, lbfgs_push
from natrl.optim.trust_region import steihaug_cg


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    """Small dense problems run fastest single-threaded (and the test machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# Problems: the same objective written for torch (autograd) and for scipy (NumPy, analytic)
# ---------------------------------------------------------------------------------------------


@dataclass
class Problem:
    name: str
    torch_fun: Callable[[torch.dtype], Callable[[torch.Tensor], torch.Tensor]]
    f: Callable[[np.ndarray], float]
    grad: Callable[[np.ndarray], np.ndarray]
    hessp: Callable[[np.ndarray, np.ndarray], np.ndarray]
    x0: np.ndarray


def _rosen_torch(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    return f


def _logreg_data(n: int = 5000, d: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    y = np.where(x @ w + rng.normal(size=n) > 0, 1.0, -1.0)
    return x, y


LAM = 1e-3
_X, _Y = _logreg_data()


def _lr_f(w: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, -_Y * (_X @ w))) + 0.5 * LAM * w @ w)


def _lr_sigma(w: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(_Y * (_X @ w)))  # σ(−y xᵀw)


def _lr_grad(w: np.ndarray) -> np.ndarray:
    return _X.T @ (-_Y * _lr_sigma(w)) / len(_Y) + LAM * w


def _lr_hessp(w: np.ndarray, p: np.ndarray) -> np.ndarray:
    s = _lr_sigma(w)
    return _X.T @ (s * (1 - s) * (_X @ p)) / len(_Y) + LAM * p


def _lr_torch(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    xt, yt = torch.tensor(_X, dtype=dtype), torch.tensor(_Y, dtype=dtype)

    def f(w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(-yt * (xt @ w)).mean() + 0.5 * LAM * (w @ w)

    return f


PROBLEMS = {
    "rosen5": Problem(
        "rosen5",
        _rosen_torch,
        so.rosen,
        so.rosen_der,
        so.rosen_hess_prod,
        np.array([1.3, 0.7, 0.8, 1.9, 1.2]),
    ),
    "rosen100": Problem(
        "rosen100",
        _rosen_torch,
        so.rosen,
        so.rosen_der,
        so.rosen_hess_prod,
        np.tile([-1.2, 1.0], 50),
    ),
    "logreg": Problem("logreg", _lr_torch, _lr_f, _lr_grad, _lr_hessp, np.zeros(50)),
}
SCIPY_NAME = {
    "bfgs": "BFGS",
    "lbfgs": "L-BFGS-B",
    "newton-cg": "Newton-CG",
    "trust-ncg": "trust-ncg",
}
# Tolerances reachable in float32 (scipy runs with the same options in float64): near f ≈ 0
# on rosen100, gtol = 1e-5 is below the rounding noise of a float32 gradient.
F32_OPTIONS = {("rosen100", "bfgs"): {"gtol": 1e-4}}
# Newton-CG stops on a step-size test: with the default xtol (1e-5) both scipy's and natrl's
# end point on rosen100 moves by up to 0.07 under 1e-9 perturbations of x0 (measured over 40
# perturbed starts), so the comparison there runs both to a tight xtol where both reach x*.
NCG_OPTIONS = {"rosen100": {"xtol": 1e-8}}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", list(SCIPY_NAME))
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_against_scipy(problem: str, method: str, dtype: torch.dtype) -> None:
    """Same minimiser as scipy's matching method, with nfev ≤ 1.1 × scipy's."""
    p = PROBLEMS[problem]
    opts = F32_OPTIONS.get((problem, method), {}) if dtype == torch.float32 else {}
    if method == "newton-cg":
        opts = {**opts, **NCG_OPTIONS.get(problem, {})}
    kw = {"hessp": p.hessp} if method in ("newton-cg", "trust-ncg") else {}
    ref = so.minimize(p.f, p.x0, jac=p.grad, method=SCIPY_NAME[method], options=opts, **kw)
    assert ref.success
    res = minimize(p.torch_fun(dtype), torch.tensor(p.x0, dtype=dtype), method=method, options=opts)
    assert isinstance(res, OptimizeResult)
    assert res.success, res.message
    assert res.x.dtype == dtype and res.x.shape == (p.x0.size,)
    x_tol = 2e-3 if dtype == torch.float32 else 1e-3
    np.testing.assert_allclose(res.x.double().numpy(), ref.x, atol=x_tol)
    assert res.fun == pytest.approx(ref.fun, abs=1e-6)
    assert res.nfev <= math.ceil(1.1 * ref.nfev), (res.nfev, ref.nfev)
    # grad is the gradient at x (computed here independently of the solver's bookkeeping)
    np.testing.assert_allclose(
        res.grad.double().numpy(),
        p.grad(res.x.double().numpy()),
        rtol=1e-3,
        atol=1e-5 if dtype == torch.float64 else 5e-4,
    )
    if method == "trust-ncg":
        assert res.nhev <= math.ceil(1.1 * ref.nhev)
    if method == "newton-cg":
        # natrl's CG tests curvature relative to ‖p‖², so it keeps solving the Newton system
        # where scipy's absolute floor (pᵀHp ≤ 3ε) ends CG: a few more products, and a final
        # gradient at least as small as scipy's
        assert res.nhev <= math.ceil(1.25 * ref.nhev), (res.nhev, ref.nhev)
        if dtype == torch.float64:
            assert float(res.grad.abs().max()) <= np.abs(ref.jac).max() * 1.01


@pytest.mark.parametrize("scale", [1e-6, 1e-10])
def test_newton_cg_is_invariant_to_scaling_the_objective(scale: float) -> None:
    """Newton's step is invariant to f → s·f; natrl's Newton-CG keeps that where scipy's does not.

    scipy's Newton-CG ends CG when pᵀHp ≤ 3ε (absolute): with f scaled by 1e-6 it stops at x0
    (|∇f| = 0.18, measured with scipy 1.17), so it is the unscaled scipy run that is the reference.
    """
    p = PROBLEMS["logreg"]
    ref = so.minimize(p.f, p.x0, jac=p.grad, hessp=p.hessp, method="Newton-CG")
    fun = p.torch_fun(torch.float64)
    res = minimize(lambda x: scale * fun(x), torch.tensor(p.x0), method="newton-cg")
    assert res.success, res.message
    np.testing.assert_allclose(res.x.numpy(), ref.x, atol=1e-5)
    assert float(res.fun) / scale == pytest.approx(ref.fun, abs=1e-9)
    assert res.nit <= ref.nit + 1


def test_newton_one_step_on_strictly_convex_quadratic() -> None:
    """f = ½ xᵀAx − bᵀx + c, A SPD: Newton lands on A⁻¹b in one iteration, one Hessian."""
    rng = np.random.default_rng(1)
    m = rng.normal(size=(8, 8))
    a = m @ m.T + 0.5 * np.eye(8)
    b = rng.normal(size=8)
    at, bt = torch.tensor(a), torch.tensor(b)
    res = minimize(
        lambda x: 0.5 * x @ at @ x - bt @ x + 3.0,
        torch.zeros(8, dtype=torch.float64),
        method="newton",
    )
    assert res.success and res.nit == 1 and res.nhev == 1 and res.nfev == 2
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(a, b), rtol=1e-10)


def test_newton_with_indefinite_hessian_uses_levenberg_marquardt_shift() -> None:
    """f = x² − y² + y⁴ from (1, 0.1), where ∇²f = diag(2, −2 + 12 y²) is indefinite;
    the minimisers are (0, ±1/√2)."""

    def f(v: torch.Tensor) -> torch.Tensor:
        return v[0] ** 2 - v[1] ** 2 + v[1] ** 4

    res = minimize(f, torch.tensor([1.0, 0.1], dtype=torch.float64), method="newton")
    assert res.success
    np.testing.assert_allclose(res.x.numpy(), [0.0, 1 / math.sqrt(2)], atol=1e-8)
    assert res.fun == pytest.approx(-0.25, abs=1e-12)


def test_damped_cholesky_shift() -> None:
    h = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalues 3, −1
    chol, tau = damped_cholesky(h)
    assert tau > 1.0  # needs τ > 1 to make H + τI positive definite
    torch.testing.assert_close(chol @ chol.T, h + tau * torch.eye(2, dtype=torch.float64))
    spd = torch.eye(2, dtype=torch.float64) * 2
    assert damped_cholesky(spd)[1] == 0.0


def test_bfgs_update_matches_dense_formula_and_secant_equation() -> None:
    torch.manual_seed(0)
    n = 6
    m = torch.randn(n, n, dtype=torch.float64)
    h = m @ m.T + torch.eye(n, dtype=torch.float64)
    s, y = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    if float(s @ y) < 0:
        y = -y
    h_new, skipped = bfgs_update(h, s, y)
    rho = 1.0 / float(s @ y)
    eye = torch.eye(n, dtype=torch.float64)
    dense = (eye - rho * torch.outer(s, y)) @ h @ (eye - rho * torch.outer(y, s)) + rho * torch.outer(s, s)
    assert not skipped
    torch.testing.assert_close(h_new, dense)
    torch.testing.assert_close(h_new @ y, s)  # secant equation H₊ y = s
    h_same, skipped = bfgs_update(h, s, -y)  # yᵀs < 0: skip
    assert skipped and torch.equal(h_same, h)


def test_lbfgs_two_loop_equals_dense_bfgs_from_scaled_identity() -> None:
    """The two-loop recursion applies the same H as m dense BFGS updates of γI (N&W §7.2)."""
    torch.manual_seed(1)
    n, m = 7, 4
    a = torch.randn(n, n, dtype=torch.float64)
    a = a @ a.T + torch.eye(n, dtype=torch.float64)
    mem = lbfgs_init()
    pairs = []
    for _ in range(6):  # more pairs than the memory holds: only the last m count
        s = torch.randn(n, dtype=torch.float64)
        y = a @ s
        mem, skipped = lbfgs_push(mem, s, y, history_size=m)
        assert not skipped
        pairs.append((s, y))
    assert len(mem.s) == m
    s_last, y_last = pairs[-1]
    h = float(s_last @ y_last) / float(y_last @ y_last) * torch.eye(n, dtype=torch.float64)
    for s, y in pairs[-m:]:
        h, _ = bfgs_update(h, s, y)
    g = torch.randn(n, dtype=torch.float64)
    torch.testing.assert_close(lbfgs_direction(g, mem), -(h @ g))


def test_lbfgs_steps_satisfy_strong_wolfe() -> None:
    """Every accepted L-BFGS step s = x₊ − x satisfies f₊ ≤ f + c1 gᵀs and
    |g₊ᵀs| ≤ c2 |gᵀs| (the conditions are invariant to the scaling of d)."""
    f = _rosen_torch(torch.float64)
    x0 = torch.tensor(PROBLEMS["rosen100"].x0)
    trace: list[tuple[torch.Tensor, float, torch.Tensor]] = []

    def grad_at(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x)
        return g

    trace.append((x0, float(f(x0)), grad_at(x0)))
    c1, c2 = 1e-4, 0.5
    res = minimize(
        f,
        x0,
        method="lbfgs",
        options={"c1": c1, "c2": c2},
        callback=lambda r: trace.append((r.x.clone(), r.fun, r.grad.clone())),
    )
    assert res.success and len(trace) == res.nit + 1 > 100
    for (x, fx, g), (x1, f1, g1) in itertools.pairwise(trace):
        s = x1 - x
        gts = float(g @ s)
        assert gts < 0
        assert f1 <= fx + c1 * gts
        assert abs(float(g1 @ s)) <= c2 * abs(gts) + 1e-12
        torch.testing.assert_close(g1, grad_at(x1))  # recorded gradient is the true one


def test_truncated_cg_solves_spd_system_and_falls_back_on_negative_curvature() -> None:
    torch.manual_seed(2)
    m = torch.randn(5, 5, dtype=torch.float64)
    a = m @ m.T + torch.eye(5, dtype=torch.float64)
    g = torch.randn(5, dtype=torch.float64)
    res = truncated_cg(lambda v: a @ v, g, forcing=1e-12)
    assert res.converged and not res.negative_curvature
    torch.testing.assert_close(res.x, -torch.linalg.solve(a, g))
    neg = truncated_cg(lambda v: -v, g)  # H = −I: negative curvature at once
    assert neg.negative_curvature and neg.iterations == 1
    torch.testing.assert_close(neg.x, -g)  # −(gᵀg / |gᵀHg|) g = −g


def test_steihaug_cg() -> None:
    torch.manual_seed(3)
    m = torch.randn(6, 6, dtype=torch.float64)
    b = m @ m.T + torch.eye(6, dtype=torch.float64)
    g = torch.randn(6, dtype=torch.float64)
    newton = -torch.linalg.solve(b, g)
    big = steihaug_cg(lambda v: b @ v, g, radius=1e6)
    assert not big.hits_boundary
    # the forcing term stops CG at ‖r‖ < min(0.5, √‖g‖)‖g‖: an inexact Newton step
    assert float(torch.linalg.vector_norm(b @ big.p + g)) < 0.5 * float(torch.linalg.vector_norm(g))
    small_radius = 0.1 * float(torch.linalg.vector_norm(newton))
    small = steihaug_cg(lambda v: b @ v, g, radius=small_radius)
    assert small.hits_boundary
    assert float(torch.linalg.vector_norm(small.p)) == pytest.approx(small_radius, rel=1e-10)
    for r in (big, small):  # model decrease tracked along CG equals −(gᵀp + ½pᵀBp)
        assert r.model_decrease == pytest.approx(-float(g @ r.p + 0.5 * r.p @ b @ r.p), rel=1e-10)
    indefinite = steihaug_cg(lambda v: -v, g, radius=2.0)
    assert indefinite.hits_boundary
    assert float(torch.linalg.vector_norm(indefinite.p)) == pytest.approx(2.0)


def test_fun_may_return_loss_and_grad() -> None:
    """A NumPy objective returning (loss, grad): the same path and counts as scipy's BFGS."""
    p = PROBLEMS["rosen5"]

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        xn = x.numpy()
        return float(p.f(xn)), torch.from_numpy(p.grad(xn))

    ref = so.minimize(p.f, p.x0, jac=p.grad, method="BFGS")
    res = minimize(fun, torch.tensor(p.x0), method="bfgs")
    assert res.nit == ref.nit and res.nfev == ref.nfev
    np.testing.assert_allclose(res.x.numpy(), ref.x, rtol=1e-8)
    res_j = minimize(
        lambda x: float(p.f(x.numpy())),
        torch.tensor(p.x0),
        method="lbfgs",
        jac=lambda x: torch.from_numpy(p.grad(x.numpy())),
    )
    np.testing.assert_allclose(res_j.x.numpy(), np.ones(5), atol=1e-3)


def test_hessp_is_used_and_x0_shape_is_kept() -> None:
    calls = []
    a = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))

    def hessp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return (a @ v.reshape(-1)).reshape(v.shape)

    x0 = torch.ones(2, 3, dtype=torch.float64)
    res = minimize(lambda x: 0.5 * x.reshape(-1) @ a @ x.reshape(-1), x0, method="trust-ncg", hessp=hessp)
    assert res.x.shape == (2, 3) and res.grad.shape == (2, 3)
    assert len(calls) == res.nhev > 0
    assert float(res.x.abs().max()) < 1e-4


def test_callback_stops_run() -> None:
    seen: list[int] = []

    def cb(r: OptimizeResult) -> bool:
        seen.append(r.nit)
        return r.nit >= 3

    res = minimize(
        _rosen_torch(torch.float64),
        torch.tensor(PROBLEMS["rosen5"].x0),
        method="lbfgs",
        callback=cb,
    )
    assert seen == [1, 2, 3] and res.nit == 3 and res.status == 5 and not res.success


@pytest.mark.parametrize("method", [*SCIPY_NAME, "newton"])
def test_callback_raising_stop_iteration_stops_like_scipy(method: str) -> None:
    """scipy ≥ 1.11 stops cleanly when the callback raises StopIteration: success False, the
    iterate the callback saw, "`callback` raised `StopIteration`." (natrl's status 5 for a
    callback stop, where scipy says 99)."""
    p = PROBLEMS["rosen5"]
    seen: list[torch.Tensor] = []

    def cb(r: OptimizeResult) -> None:
        seen.append(r.x.clone())
        if r.nit == 3:
            raise StopIteration

    res = minimize(_rosen_torch(torch.float64), torch.tensor(p.x0), method=method, callback=cb)
    assert (res.success, res.status, res.nit, len(seen)) == (False, 5, 3, 3)
    assert res.message == "`callback` raised `StopIteration`."
    assert torch.equal(res.x, seen[-1])
    if method == "newton":  # no scipy counterpart: the run cut at 3 iterations
        assert torch.equal(
            res.x, minimize(_rosen_torch(torch.float64), torch.tensor(p.x0), method=method, max_iter=3).x
        )
        return
    calls: list[int] = []

    def scipy_cb(intermediate_result: so.OptimizeResult) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise StopIteration

    kw = {"hessp": p.hessp} if method in ("newton-cg", "trust-ncg") else {}
    ref = so.minimize(p.f, p.x0, jac=p.grad, method=SCIPY_NAME[method], callback=scipy_cb, **kw)
    assert (ref.success, ref.status, ref.nit, ref.message) == (False, 99, 3, res.message)
    np.testing.assert_allclose(res.x.numpy(), ref.x, rtol=1e-9)
    assert res.fun == pytest.approx(ref.fun, rel=1e-9)


def test_scipy_option_names() -> None:
    """scipy's maxiter (every method) and L-BFGS-B's maxfun, maxcor, maxls are natrl's max_iter,
    max_evals, history_size, max_ls_evals; the same limits as scipy's."""
    f, x0 = _rosen_torch(torch.float64), torch.tensor(PROBLEMS["rosen100"].x0)
    p = PROBLEMS["rosen100"]
    for method in ("bfgs", "lbfgs", "newton-cg", "trust-ncg", "newton"):
        a = minimize(f, x0, method=method, options={"maxiter": 4})
        b = minimize(f, x0, method=method, max_iter=4)
        assert torch.equal(a.x, b.x) and (a.nit, a.status) == (4, 1), method
    ref = so.minimize(p.f, p.x0, jac=p.grad, method="BFGS", options={"maxiter": 4})
    assert ref.nit == 4
    np.testing.assert_allclose(minimize(f, x0, options={"maxiter": 4}).x.numpy(), ref.x, rtol=1e-9)
    scipy_opts = {"maxfun": 30, "maxcor": 3, "maxls": 5}
    a = minimize(f, x0, method="L-BFGS-B", options=scipy_opts)
    b = minimize(f, x0, method="lbfgs", options={"max_evals": 30, "history_size": 3, "max_ls_evals": 5})
    assert torch.equal(a.x, b.x) and a.status == 4 and a.nfev <= 30
    assert not torch.equal(a.x, minimize(f, x0, method="lbfgs", options={"max_evals": 30}).x)  # maxcor is used
    with pytest.raises(ValueError, match=r"^minimize: max_iter and options\['maxiter'\] both given; .* give one$"):
        minimize(f, x0, max_iter=3, options={"maxiter": 3})
    with pytest.raises(ValueError, match=r"options\['maxfun'\] and options\['max_evals'\] both given"):
        minimize(f, x0, method="lbfgs", options={"maxfun": 3, "max_evals": 3})
    with pytest.raises(TypeError, match=r"options\['maxiter'\]"):
        minimize(f, x0, options={"maxiter": 2.5})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['maxfun'\] for method 'bfgs'"):
        minimize(f, x0, method="bfgs", options={"maxfun": 3})  # scipy's BFGS has no maxfun either


def test_args_are_passed_on_as_scipy_does() -> None:
    """args reach fun, jac and hessp after x (and p); a non-tuple is the one extra argument."""
    p = PROBLEMS["rosen5"]
    x0 = torch.tensor(p.x0)

    def fun(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
        return a * _rosen_torch(torch.float64)(x) + b

    res = minimize(fun, x0, args=(2.0, 1.0))
    ref = minimize(lambda x: 2.0 * _rosen_torch(torch.float64)(x) + 1.0, x0)
    assert torch.equal(res.x, ref.x) and res.nfev == ref.nfev

    def f_np(x: np.ndarray, a: float) -> float:
        return a * p.f(x)

    def g_np(x: np.ndarray, a: float) -> np.ndarray:
        return a * p.grad(x)

    def hp_np(x: np.ndarray, v: np.ndarray, a: float) -> np.ndarray:
        return a * p.hessp(x, v)

    sref = so.minimize(f_np, p.x0, args=3.0, jac=g_np, hessp=hp_np, method="Newton-CG")
    nres = minimize(
        lambda x, a: a * _rosen_torch(torch.float64)(x),
        x0,
        args=3.0,
        method="newton-cg",
        jac=lambda x, a: torch.from_numpy(g_np(x.numpy(), a)),
        hessp=lambda x, v, a: torch.from_numpy(hp_np(x.numpy(), v.numpy(), a)),
    )
    assert nres.success and nres.nhev > 0
    np.testing.assert_allclose(nres.x.numpy(), sref.x, atol=1e-6)
    with pytest.raises(TypeError):  # too few arguments for fun: Python's own error, as in scipy
        minimize(fun, x0, args=(2.0,))


def test_default_method_is_bfgs_as_scipy() -> None:
    """Without bounds or constraints scipy's default method is BFGS; natrl's too."""
    p = PROBLEMS["rosen5"]

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        xn = x.numpy()
        return float(p.f(xn)), torch.from_numpy(p.grad(xn))

    ref = so.minimize(lambda x: (p.f(x), p.grad(x)), p.x0, jac=True)
    res = minimize(fun, torch.tensor(p.x0), jac=True)
    assert (res.nit, res.nfev) == (ref.nit, ref.nfev)
    np.testing.assert_allclose(res.x.numpy(), ref.x, rtol=1e-8)
    assert torch.equal(res.x, minimize(fun, torch.tensor(p.x0), jac=True, method="bfgs").x)


def test_max_iter_status() -> None:
    res = minimize(
        _rosen_torch(torch.float64),
        torch.tensor(PROBLEMS["rosen100"].x0),
        method="bfgs",
        max_iter=5,
    )
    assert res.nit == 5 and res.status == 1 and not res.success


def test_lbfgs_recovers_instead_of_nan() -> None:
    """The objective is NaN outside the box |xᵢ| ≤ 3.5; its minimiser (3, …, 3) is inside."""

    def f(x: torch.Tensor) -> torch.Tensor:
        v = ((x - 3.0) ** 2 * torch.arange(1.0, 11.0, dtype=x.dtype)).sum()
        return torch.where(x.abs().max() > 3.5, torch.full_like(v, math.nan), v)

    res = minimize(f, torch.zeros(10, dtype=torch.float64), method="lbfgs")
    assert torch.isfinite(res.x).all() and math.isfinite(res.fun)
    assert res.success
    torch.testing.assert_close(res.x, torch.full((10,), 3.0, dtype=torch.float64), atol=1e-5, rtol=0)


def test_method_aliases() -> None:
    f = _rosen_torch(torch.float64)
    x0 = torch.tensor(PROBLEMS["rosen5"].x0)
    a = minimize(f, x0, method="L-BFGS-B")
    b = minimize(f, x0, method="lbfgs")
    assert torch.equal(a.x, b.x)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid methods: \['bfgs', 'lbfgs', 'newton'"):
        minimize(lambda x: (x**2).sum(), torch.zeros(2), method="nelder-mead")


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['history'\].*'history_size'"):
        minimize(lambda x: (x**2).sum(), torch.zeros(2), method="lbfgs", options={"history": 5})


def test_non_scalar_fun() -> None:
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: x**2, torch.zeros(2), method="bfgs")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_fun_at_x0(bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        minimize(lambda x: (x**2).sum() * bad, torch.ones(2), method="lbfgs")


def test_x0_on_other_device_than_fun() -> None:
    """The 'meta' device stands in for a GPU: fun uses tensors x0 is not next to."""
    a = torch.ones(3, 3, device="meta")
    with pytest.raises(ValueError, match="device"):
        minimize(lambda x: (a @ x).sum(), torch.zeros(3), method="bfgs")
    with pytest.raises(ValueError, match="device"):
        minimize(lambda x: (x.to("meta") ** 2).sum(), torch.zeros(3), method="bfgs")


def test_fun_without_gradient() -> None:
    with pytest.raises(ValueError, match="does not depend on x through autograd"):
        minimize(lambda x: torch.tensor(float((x.detach() ** 2).sum())), torch.ones(2), method="bfgs")
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="no gradient with respect to x"):
        minimize(lambda x: (w**2).sum(), torch.ones(2), method="lbfgs")


def test_integer_x0() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        minimize(lambda x: (x**2).sum(), torch.zeros(2, dtype=torch.int64), method="bfgs")


def test_lbfgs_without_a_line_search_does_not_call_an_increase_convergence() -> None:
    # the first fixed step t = 1/‖d‖ overshoots this quadratic's minimum: f rises, which the relative-reduction
    # rule must not read as converged; the run goes on to the minimiser A⁻¹b
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64)
    a, b = m @ m.T + 6 * torch.eye(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    res = minimize(lambda w: 0.5 * w @ a @ w - b @ w, torch.zeros(6, dtype=torch.float64), method="lbfgs",
                   options={"line_search": None})  # fmt: skip
    assert res.success and res.nit > 1
    torch.testing.assert_close(res.x, torch.linalg.solve(a, b), rtol=0, atol=1e-5)
