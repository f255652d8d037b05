"""Conjugate gradient against dense solves and hand-computed iterates."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from natrl.linalg import CGResult, conjugate_gradient


def random_spd(n: int, cond: float, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Q diag(λ) Qᵀ with eigenvalues log-spaced in [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0.0, math.log10(cond), n, dtype=torch.float64)
    return ((q * eig) @ q.T).to(dtype)


def random_damped_gram(n: int, seed: int) -> Tensor:
    """X Xᵀ / 2n + ½ I: a random SPD matrix shaped like a damped empirical Fisher."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2 * n, generator=g, dtype=torch.float64)
    return x @ x.T / (2 * n) + 0.5 * torch.eye(n, dtype=torch.float64)


def rand_vec(n: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_solve_on_random_spd(seed: int) -> None:
    n = 30
    a = random_damped_gram(n, seed)
    b = rand_vec(n, seed + 100)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=n, tol=1e-12)
    expected = torch.linalg.solve(a, b)
    assert isinstance(res, CGResult)
    assert res.converged and not res.negative_curvature
    assert 1 <= res.iterations <= n
    assert (torch.linalg.norm(res.x - expected) / torch.linalg.norm(expected)).item() < 1e-8
    # residual_norm is the absolute residual of the returned x
    true_residual = torch.linalg.norm(b - a @ res.x).item()
    assert res.residual_norm == pytest.approx(true_residual, rel=1e-3, abs=1e-13)
    assert res.residual_norm <= 1e-12 * torch.linalg.norm(b).item()
    assert res.x.dtype == torch.float64 and res.x.shape == (n,)


def test_stops_at_first_iteration_meeting_relative_tolerance() -> None:
    n, tol = 30, 1e-3
    a = random_spd(n, cond=1e3, seed=3)
    # relative criterion: the scale of b must not matter (a power of two scales exactly, so the
    # iterates are the same bits up to the scale; 1e6 would perturb the rounding)
    b = rand_vec(n, 4) * 2.0**20
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=200, tol=tol)
    b_norm = torch.linalg.norm(b).item()
    assert res.converged
    assert torch.linalg.norm(b - a @ res.x).item() <= tol * b_norm * (1 + 1e-6)
    earlier = conjugate_gradient(lambda v: a @ v, b, max_iter=res.iterations - 1, tol=tol)
    assert not earlier.converged
    assert earlier.iterations == res.iterations - 1
    assert torch.linalg.norm(b - a @ earlier.x).item() > tol * b_norm
    rescaled = conjugate_gradient(lambda v: a @ v, b / 2.0**20, max_iter=200, tol=tol)
    assert rescaled.iterations == res.iterations
    assert torch.equal(rescaled.x * 2.0**20, res.x)


def test_max_iter_reached_reports_not_converged() -> None:
    n = 30
    a = random_spd(n, cond=100.0, seed=5)
    b = rand_vec(n, 6)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=3, tol=1e-12)
    assert res.iterations == 3 and not res.converged and not res.negative_curvature
    assert res.residual_norm == pytest.approx(torch.linalg.norm(b - a @ res.x).item(), rel=1e-8)


def test_first_iterate_by_hand() -> None:
    # One CG step from 0 is the exact line minimiser along b: x₁ = (bᵀb / bᵀAb) b.
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=1)
    step = (b @ b) / (b @ a @ b)  # 5 / 20
    torch.testing.assert_close(res.x, 0.25 * b, rtol=0, atol=1e-15)
    torch.testing.assert_close(res.x, step * b)
    # and two steps solve a 2 × 2 SPD system exactly
    res2 = conjugate_gradient(lambda v: a @ v, b, max_iter=2)
    torch.testing.assert_close(res2.x, torch.linalg.solve(a, b), rtol=1e-12, atol=1e-12)
    assert res2.converged and res2.iterations == 2


def test_jacobi_preconditioner_needs_fewer_iterations() -> None:
    n = 60
    g = torch.Generator().manual_seed(7)
    diag = torch.logspace(0.0, 4.0, n, dtype=torch.float64)
    off = 0.1 * torch.randn(n, n, generator=g, dtype=torch.float64)
    off = 0.5 * (off + off.T)
    off.fill_diagonal_(0.0)
    a = torch.diag(diag) + off  # diagonally dominant, condition number ≈ 1e4
    assert torch.linalg.eigvalsh(a).min() > 0
    b = rand_vec(n, 8)
    expected = torch.linalg.solve(a, b)
    d = torch.diagonal(a)

    plain = conjugate_gradient(lambda v: a @ v, b, max_iter=20 * n, tol=1e-10)
    jacobi = conjugate_gradient(lambda v: a @ v, b, max_iter=20 * n, tol=1e-10, preconditioner=lambda v: v / d)
    assert jacobi.converged
    assert jacobi.iterations < plain.iterations / 2
    rel_err = torch.linalg.norm(jacobi.x - expected) / torch.linalg.norm(expected)
    assert rel_err.item() < 1e-8


def test_exact_inverse_preconditioner_converges_in_one_iteration() -> None:
    n = 20
    a = random_spd(n, cond=1e3, seed=9)
    a_inv = torch.linalg.inv(a)
    b = rand_vec(n, 10)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=n, tol=1e-10, preconditioner=lambda v: a_inv @ v)
    assert res.converged and res.iterations == 1
    torch.testing.assert_close(res.x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-9)


def test_negative_curvature_returns_last_iterate() -> None:
    # A = diag(3, 1, −2), b = (1, 1, 1). By hand: p₀ = b, p₀ᵀAp₀ = 2 > 0,
    # x₁ = (3/2) b, r₁ = (−3.5, −0.5, 4), β₀ = 28.5/3, p₁ = (6, 9, 13.5),
    # p₁ᵀAp₁ = 108 + 81 − 364.5 < 0: stop and return x₁.
    a = torch.diag(torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64))
    b = torch.ones(3, dtype=torch.float64)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=10)
    assert res.negative_curvature and not res.converged
    assert res.iterations == 2
    assert torch.isfinite(res.x).all()
    x1 = (b @ b) / (b @ a @ b) * b
    torch.testing.assert_close(res.x, x1)
    assert res.residual_norm == pytest.approx(torch.linalg.norm(b - a @ x1).item())


@pytest.mark.parametrize("scale", [-1.0, 0.0])
def test_negative_curvature_on_first_iteration_falls_back_to_b(scale: float) -> None:
    n = 5
    a = scale * torch.eye(n, dtype=torch.float64)  # −I (negative) and 0 (pᵀAp = 0, would be 0/0)
    b = rand_vec(n, 11)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=10)
    assert res.negative_curvature and not res.converged and res.iterations == 1
    assert torch.isfinite(res.x).all()
    torch.testing.assert_close(res.x, b)  # documented fallback: x₀ + p₀ = b
    assert res.residual_norm == pytest.approx(torch.linalg.norm(b - a @ b).item())


def test_negative_curvature_fallback_is_preconditioned_direction() -> None:
    n = 4
    m = torch.tensor([1.0, 2.0, 0.5, 4.0], dtype=torch.float64)
    b = rand_vec(n, 12)
    res = conjugate_gradient(lambda v: -v, b, preconditioner=lambda v: m * v)
    assert res.negative_curvature
    torch.testing.assert_close(res.x, m * b)


def test_indefinite_random_matrix_gives_finite_result() -> None:
    n = 30
    g = torch.Generator().manual_seed(13)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.linspace(-1.0, 5.0, n, dtype=torch.float64)
    a = (q * eig) @ q.T
    flagged = 0
    for seed in range(5):
        res = conjugate_gradient(lambda v: a @ v, rand_vec(n, 100 + seed), max_iter=n, tol=1e-12)
        assert torch.isfinite(res.x).all()
        flagged += res.negative_curvature
    assert flagged >= 1


def test_x0_is_respected() -> None:
    n = 30
    a = random_spd(n, cond=100.0, seed=14)
    b = rand_vec(n, 15)
    solution = torch.linalg.solve(a, b)

    exact = conjugate_gradient(lambda v: a @ v, b, x0=solution, tol=1e-8)
    assert exact.iterations == 0 and exact.converged
    torch.testing.assert_close(exact.x, solution, rtol=0, atol=0)

    # one step from x0 is x0 + α r₀ with r₀ = b − A x0, α = r₀ᵀr₀ / r₀ᵀAr₀ (by hand)
    x0 = rand_vec(n, 16)
    res = conjugate_gradient(lambda v: a @ v, b, x0=x0, max_iter=1)
    r0 = b - a @ x0
    torch.testing.assert_close(res.x, x0 + (r0 @ r0) / (r0 @ a @ r0) * r0)

    # a start near the solution needs fewer iterations than the zero start
    near = solution + 1e-6 * rand_vec(n, 17)
    from_zero = conjugate_gradient(lambda v: a @ v, b, max_iter=200, tol=1e-10)
    from_near = conjugate_gradient(lambda v: a @ v, b, x0=near, max_iter=200, tol=1e-10)
    assert from_near.converged and from_near.iterations < from_zero.iterations


def test_deterministic_and_inputs_untouched() -> None:
    n = 20
    a = random_spd(n, cond=10.0, seed=18)
    b = rand_vec(n, 19)
    x0 = rand_vec(n, 20)
    b_copy, x0_copy = b.clone(), x0.clone()
    torch.manual_seed(0)
    first = conjugate_gradient(lambda v: a @ v, b, x0=x0, max_iter=5)
    torch.manual_seed(123)
    torch.randn(100)
    second = conjugate_gradient(lambda v: a @ v, b, x0=x0, max_iter=5)
    assert torch.equal(first.x, second.x)
    assert torch.equal(b, b_copy) and torch.equal(x0, x0_copy)


def test_zero_rhs_returns_zero_without_matvec() -> None:
    calls = []

    def matvec(v: Tensor) -> Tensor:
        calls.append(v)
        return v

    res = conjugate_gradient(matvec, torch.zeros(4), x0=torch.ones(4))
    assert res.converged and res.iterations == 0 and res.residual_norm == 0.0
    assert torch.equal(res.x, torch.zeros(4))
    assert not calls


def test_float32() -> None:
    n = 10
    a64 = random_spd(n, cond=10.0, seed=21)
    b64 = rand_vec(n, 22)
    a, b = a64.float(), b64.float()
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=3 * n, tol=1e-5)
    assert res.x.dtype == torch.float32
    assert res.converged
    expected = torch.linalg.solve(a64, b64)
    rel_err = torch.linalg.norm(res.x.double() - expected) / torch.linalg.norm(expected)
    assert rel_err.item() < 1e-4


def test_hessian_vector_product_matvec_with_autograd() -> None:
    # f(θ) = ½ θᵀAθ + Σ θ⁴/12 has Hessian A + diag(θ²); matvec by double backward.
    n = 8
    a = random_spd(n, cond=10.0, seed=23)
    theta = rand_vec(n, 24).requires_grad_(True)
    f = 0.5 * theta @ a @ theta + (theta**4).sum() / 12.0
    (grad,) = torch.autograd.grad(f, theta, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        (hv,) = torch.autograd.grad(grad, theta, grad_outputs=v, retain_graph=True)
        return hv

    res = conjugate_gradient(hvp, grad, max_iter=n, tol=1e-12)  # b = grad requires grad
    hessian = a + torch.diag(theta.detach() ** 2)
    torch.testing.assert_close(res.x, torch.linalg.solve(hessian, grad.detach()), rtol=1e-9, atol=1e-9)
    assert not res.x.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda(dtype: torch.dtype) -> None:
    n = 30
    a64 = random_spd(n, cond=10.0, seed=25)
    b64 = rand_vec(n, 26)
    a, b = a64.to("cuda", dtype), b64.to("cuda", dtype)
    d = torch.diagonal(a)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=n, tol=1e-5, preconditioner=lambda v: v / d)
    assert res.x.device.type == "cuda" and res.x.dtype == dtype
    expected = torch.linalg.solve(a64, b64)
    assert (torch.linalg.norm(res.x.cpu().double() - expected) / torch.linalg.norm(expected)).item() < 1e-4


def _spd_matvec(v: Tensor) -> Tensor:
    return 2.0 * v


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"b": torch.ones(2, 2)}, ValueError, "1-D"),
        ({"b": torch.tensor([1.0, float("nan")])}, ValueError, "b contains non-finite"),
        ({"b": torch.tensor([1.0, float("inf")])}, ValueError, "b contains non-finite"),
        ({"b": torch.ones(3, dtype=torch.int64)}, TypeError, "floating-point"),
        ({"b": [1.0, 2.0]}, TypeError, "b must be a Tensor"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"max_iter": 2.5}, TypeError, "max_iter"),
        ({"tol": -1e-3}, ValueError, "tol"),
        ({"tol": float("nan")}, ValueError, "tol"),
        ({"x0": torch.ones(5)}, ValueError, "x0 has shape"),
        ({"x0": torch.tensor([1.0, float("nan"), 0.0])}, ValueError, "x0 contains non-finite"),
        ({"matvec": "A"}, TypeError, "matvec must be callable"),
        ({"matvec": lambda v: v * float("nan")}, ValueError, "matvec returned non-finite"),
        ({"matvec": lambda v: torch.ones(4)}, ValueError, "matvec returned shape"),
        ({"preconditioner": lambda v: -v}, ValueError, "preconditioner is not positive definite"),
        ({"preconditioner": lambda v: v * float("inf")}, ValueError, "preconditioner"),
    ],
)
def test_bad_input(kwargs: dict, error: type[Exception], match: str) -> None:
    args = {"matvec": _spd_matvec, "b": torch.ones(3)} | kwargs
    matvec, b = args.pop("matvec"), args.pop("b")
    with pytest.raises(error, match=match):
        conjugate_gradient(matvec, b, **args)


def test_matvec_nan_from_x0_is_reported() -> None:
    with pytest.raises(ValueError, match=r"matvec\(x0\) returned non-finite"):
        conjugate_gradient(lambda v: v * float("nan"), torch.ones(3), x0=torch.ones(3))


def test_max_iter_takes_a_numpy_integer_as_scipy_does() -> None:
    np = pytest.importorskip("numpy")
    a, b = random_damped_gram(10, 0), rand_vec(10, 1)
    ours = conjugate_gradient(lambda v: a @ v, b, max_iter=np.int64(3), tol=1e-12)
    assert ours.iterations == 3
    torch.testing.assert_close(ours.x, conjugate_gradient(lambda v: a @ v, b, max_iter=3, tol=1e-12).x, rtol=0, atol=0)
    with pytest.raises(TypeError, match="max_iter must be an int, got float"):
        conjugate_gradient(lambda v: a @ v, b, max_iter=3.0)
