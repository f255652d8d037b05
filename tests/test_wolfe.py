"""Armijo and strong Wolfe line searches against scipy's and against the conditions themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import line_search as scipy_line_search
from scipy.optimize import rosen, rosen_der
from scipy.optimize._linesearch import line_search_wolfe1  # MINPACK dcsrch (Moré–Thuente)

from natrl.linesearch import LineSearchResult, armijo, strong_wolfe


def _fg_rosen(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xn = x.double().numpy()
    return torch.tensor(rosen(xn), dtype=x.dtype), torch.from_numpy(rosen_der(xn)).to(x.dtype)


def _rosen_torch(x: torch.Tensor) -> torch.Tensor:
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _fg_autograd(f):  # type: ignore[no-untyped-def]
    def fg(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        v = f(x)
        (g,) = torch.autograd.grad(v, x)
        return v.detach(), g

    return fg


def _cases(n_cases: int, dim: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_cases):
        x = rng.normal(size=dim)
        d = -rosen_der(x) * rng.uniform(1e-3, 1.0)  # badly scaled descent directions
        out.append((x, d))
    return out


def _assert_strong_wolfe(fg, x, d, res: LineSearchResult, c1: float, c2: float, rtol: float = 0.0):  # type: ignore[no-untyped-def]
    f0, g0 = fg(x)
    gtd0 = float(torch.dot(g0, d))
    f1, g1 = fg(x + res.step * d)
    assert float(f1) <= float(f0) + c1 * res.step * gtd0 + rtol * abs(float(f0))
    assert abs(float(torch.dot(g1, d))) <= c2 * abs(gtd0) * (1 + rtol)


@pytest.mark.parametrize("dim", [2, 5, 20])
def test_zoom_matches_scipy_line_search(dim: int) -> None:
    """method="zoom" is N&W Alg. 3.5/3.6 as in scipy.optimize.line_search: the same step, or
    (where scipy's safeguard uses a signed interval width and ours |width|) another step
    that satisfies the strong Wolfe conditions too."""
    same = 0
    for x, d in _cases(8, dim, seed=dim):
        ref = scipy_line_search(rosen, rosen_der, x, d, c1=1e-4, c2=0.9)
        xt, dt = torch.from_numpy(x), torch.from_numpy(d)
        f0, g0 = _fg_rosen(xt)
        res = strong_wolfe(_fg_rosen, xt, dt, f0=f0, g0=g0, method="zoom")
        assert res.success
        _assert_strong_wolfe(_fg_rosen, xt, dt, res, 1e-4, 0.9)
        if ref[0] is not None:
            _assert_strong_wolfe(_fg_rosen, xt, dt, res._replace(step=ref[0]), 1e-4, 0.9)
            if res.step == pytest.approx(ref[0], rel=1e-8):
                # scipy also counts its evaluation of f(x); we were given f0.
                assert res.nfev == ref[1] - 1
                same += 1
    assert same >= 5


@pytest.mark.parametrize("dim", [2, 5, 20])
def test_more_thuente_matches_minpack_dcsrch(dim: int) -> None:
    """The default method reproduces scipy's MINPACK dcsrch (line_search_wolfe1) step by step."""
    for x, d in _cases(8, dim, seed=100 + dim):
        ref = line_search_wolfe1(rosen, rosen_der, x, d, gfk=rosen_der(x), old_fval=rosen(x), c1=1e-4, c2=0.9)
        xt, dt = torch.from_numpy(x), torch.from_numpy(d)
        f0, g0 = _fg_rosen(xt)
        res = strong_wolfe(_fg_rosen, xt, dt, f0=f0, g0=g0, max_evals=100, step_max=50.0, step_min=1e-8)
        assert ref[0] is not None and res.success
        assert res.step == pytest.approx(ref[0], rel=1e-8)
        assert res.nfev == ref[1]
        assert res.f == pytest.approx(ref[3], rel=1e-12)
        assert torch.allclose(res.g, torch.from_numpy(ref[5]), rtol=1e-10)
        assert torch.equal(res.x, xt + res.step * dt)


@pytest.mark.parametrize("method", ["more-thuente", "zoom"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c2", [0.1, 0.9])
def test_accepted_points_satisfy_strong_wolfe(method: str, dtype: torch.dtype, c2: float) -> None:
    torch.manual_seed(0)
    fg = _fg_autograd(_rosen_torch)
    n_success = 0
    for _ in range(20):
        x = torch.randn(6, dtype=dtype)
        _, g = fg(x)
        d = -g * torch.rand((), dtype=dtype) * 0.5
        f0, g0 = fg(x)
        res = strong_wolfe(fg, x, d, f0=f0, g0=g0, c2=c2, method=method, max_evals=50)
        if res.success:
            n_success += 1
            # float32: allow rounding in re-evaluation of the accepted point.
            _assert_strong_wolfe(fg, x, d, res, 1e-4, c2, rtol=1e-5 if dtype == torch.float32 else 0)
        else:  # a failed search still never returns a worse point
            assert res.f <= float(f0)
    assert n_success >= 18


def test_strong_wolfe_extrapolates_for_short_initial_step() -> None:
    """On f = ½‖x‖² from x with d = −x/100 the minimiser along d is t = 100."""
    fg = _fg_autograd(lambda x: 0.5 * (x**2).sum())
    x = torch.tensor([3.0, -4.0], dtype=torch.float64)
    d = -x / 100
    f0, g0 = fg(x)
    for method in ("more-thuente", "zoom"):
        res = strong_wolfe(fg, x, d, f0=f0, g0=g0, c2=0.1, method=method)
        assert res.success and res.step > 50.0
        _assert_strong_wolfe(fg, x, d, res, 1e-4, 0.1)


def test_strong_wolfe_never_accepts_non_finite_values() -> None:
    """f is NaN beyond x = 1.5 along the line; the exact line minimiser is x = 1 (t = 1)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        v = ((x - 1.0) ** 2).sum()
        return torch.where(x.max() > 1.5, torch.full_like(v, math.nan), v)

    fg = _fg_autograd(f)
    x = torch.zeros(3, dtype=torch.float64)
    d = torch.ones(3, dtype=torch.float64)
    f0, g0 = fg(x)
    for method in ("more-thuente", "zoom"):
        res = strong_wolfe(fg, x, d, f0=f0, g0=g0, step=10.0, method=method)
        assert res.success, res.message
        assert math.isfinite(res.f) and res.step < 1.5
        assert torch.isfinite(res.g).all()


def test_strong_wolfe_rejects_ascent_direction_without_evaluating() -> None:
    calls = []

    def fg(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return (x**2).sum(), 2 * x

    x = torch.ones(2)
    res = strong_wolfe(fg, x, torch.ones(2), f0=torch.tensor(2.0), g0=2 * x)
    assert not res.success and res.nfev == 0 and not calls and res.step == 0.0
    assert torch.equal(res.x, x)


def test_strong_wolfe_bad_arguments() -> None:
    fg = _fg_autograd(lambda x: (x**2).sum())
    x = torch.ones(2)
    with pytest.raises(ValueError, match="c1 < c2"):
        strong_wolfe(fg, x, -x, f0=2.0, g0=2 * x, c1=0.5, c2=0.4)
    with pytest.raises(ValueError, match="valid methods"):
        strong_wolfe(fg, x, -x, f0=2.0, g0=2 * x, method="hager-zhang")
    with pytest.raises(ValueError, match="scalar"):
        strong_wolfe(lambda z: (z, z), x, -x, f0=2.0, g0=2 * x)


def test_armijo_hand_computed() -> None:
    """x = (1, 0), d = (−4, 0), f = ½‖x‖²: t = 1 gives f = 4.5, t = ½ gives 0.5 (> 0.5 − 2e-4),
    t = ¼ gives 0 — accepted after three evaluations."""
    f = lambda x: 0.5 * (x**2).sum()  # noqa: E731
    x = torch.tensor([1.0, 0.0], dtype=torch.float64)
    d = torch.tensor([-4.0, 0.0], dtype=torch.float64)
    res = armijo(f, x, d, f0=f(x), g0=x.clone())
    assert res.success and res.step == 0.25 and res.nfev == 3 and res.f == 0.0
    assert res.g is None
    fail = armijo(f, x, d, f0=f(x), g0=x.clone(), max_evals=2)
    assert not fail.success and fail.step == 0.0 and fail.nfev == 2 and torch.equal(fail.x, x)


def test_armijo_skips_non_finite_values() -> None:
    f = lambda x: torch.where(x.abs().max() > 2, torch.tensor(math.inf), (x**2).sum())  # noqa: E731
    x = torch.tensor([1.0])
    res = armijo(f, x, torch.tensor([-8.0]), f0=f(x), g0=2 * x)
    assert res.success and math.isfinite(res.f) and res.f <= 1.0
