"""Spectral diagnostics against ``torch.linalg.eigvalsh`` of dense matrices.

Two kinds of operators:

* random symmetric matrices A = Q diag(λ) Qᵀ with a chosen spectrum λ (Q from the QR of a
  Gaussian matrix), as a matvec v -> A v;
* the Hessian, GGN and Fisher of a tiny tanh MLP (float64), built with
  :mod:`natrl.curvature` and materialised with :func:`natrl.curvature.to_dense`.

Relative error targets (|λ̂ − λ| / |λ|, or as stated in each test):

* Lanczos, float64, well-separated extremes: 1e-10 (default tol √ε ≈ 1.5e-8 on the residual,
  the eigenvalue error is ≈ residual² / gap); float32: 1e-5.
* Power iteration with tol = 1e-6 on the residual: 1e-8.
* Condition number (float64): 1e-8.
* Hutchinson: the exact trace lies within 4 standard errors, the 95% interval covers it in
  90-99% of 400 seeded repetitions, and the sample variance matches the closed form within
  15%.
* SLQ with m = n steps: Ritz nodes equal the eigenvalues to 1e-9 absolute; with m < n the
  smoothed density is within 0.1 in L1 of the smoothed exact spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import scipy.stats
import torch
from torch import Tensor, nn

from natrl.curvature import fisher_vp, ggn_vp, hvp, to_dense
from natrl.curvature.spectrum import (
    condition_number,
    hutchinson_trace,
    lanczos,
    power_iteration,
    spectral_density,
    student_t_quantile,
)
from natrl.distributions import Categorical
from natrl.params import flatten, functional

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny matrices: intra-op threads only add contention (2 threads on a loaded 2-core box ran 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_spectrum(eigenvalues: list[float] | Tensor, seed: int = 0, dtype: torch.dtype = DT) -> Tensor:
    """A = Q diag(λ) Qᵀ with a random orthogonal Q."""
    lam = torch.as_tensor(eigenvalues, dtype=DT)
    n = lam.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen(seed), dtype=DT))
    a = q @ torch.diag(lam) @ q.t()
    return ((a + a.t()) / 2).to(dtype)


def rel(a: Tensor | float, b: Tensor | float) -> float:
    a, b = torch.as_tensor(a, dtype=DT), torch.as_tensor(b, dtype=DT)
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


# A spectrum with separated extremes on both ends and a dense bulk in [-1, 2].
BULK = torch.linspace(-1.0, 2.0, 194).tolist()
SPECTRUM = sorted([-6.0, -4.5, -3.0, *BULK, 7.0, 9.0, 12.0])
N = len(SPECTRUM)  # 200


# --------------------------------------------------------------------------- Lanczos


@pytest.mark.parametrize(
    ("which", "k", "expected"),
    [
        ("largest", 3, [12.0, 9.0, 7.0]),
        ("smallest", 3, [-6.0, -4.5, -3.0]),
        ("both", 4, [-6.0, -4.5, 9.0, 12.0]),
        ("both", 3, [-6.0, 9.0, 12.0]),
    ],
)
def test_lanczos_random_matrix(which: str, k: int, expected: list[float]) -> None:
    a = with_spectrum(SPECTRUM, seed=1)
    exact = torch.linalg.eigvalsh(a)
    res = lanczos(lambda v: a @ v, N, k=k, which=which, generator=gen(2), dtype=DT)  # type: ignore[arg-type]
    assert res.converged
    assert res.iterations < N  # converged before exhausting the space
    assert rel(res.eigenvalues, torch.tensor(expected, dtype=DT)) < 1e-10
    for lam in res.eigenvalues:  # each is an eigenvalue of the dense matrix
        assert float((exact - lam).abs().min()) < 1e-9
    vecs = res.eigenvectors
    assert vecs.shape == (N, k)
    assert torch.allclose(vecs.t() @ vecs, torch.eye(k, dtype=DT), atol=1e-10)
    residual = (a @ vecs - vecs * res.eigenvalues).norm(dim=0)
    assert float(residual.max()) <= math.sqrt(torch.finfo(DT).eps) * 12.0  # tol · ‖A‖
    assert torch.allclose(residual, res.residual_norms, atol=1e-7)


def test_lanczos_float32() -> None:
    a = with_spectrum(SPECTRUM, seed=3, dtype=torch.float32)
    exact = torch.linalg.eigvalsh(a.double())
    res = lanczos(lambda v: a @ v, N, k=2, which="both", generator=gen(4), dtype=torch.float32)
    assert res.eigenvalues.dtype == torch.float32 and res.eigenvectors.dtype == torch.float32
    assert res.converged
    assert rel(res.eigenvalues, torch.stack([exact[0], exact[-1]])) < 1e-5


def test_lanczos_full_space_is_exact() -> None:
    lam = torch.randn(30, generator=gen(5), dtype=DT)
    a = with_spectrum(lam, seed=6)
    res = lanczos(lambda v: a @ v, 30, k=30, generator=gen(7), dtype=DT)
    assert res.converged and res.iterations == 30
    assert torch.allclose(res.eigenvalues, torch.linalg.eigvalsh(a).flip(0), atol=1e-10)


@pytest.mark.parametrize(
    ("spectrum", "k", "expected"),
    [
        ([5.0, 5.0, 5.0] + [1.0] * 97, 4, [5.0, 5.0, 5.0, 1.0]),  # a triple eigenvalue
        ([1.0] * 50, 3, [1.0, 1.0, 1.0]),  # the identity: breakdown after one step
        ([5.0] + [1.0] * 99, 2, [5.0, 1.0]),
    ],
)
def test_lanczos_repeated_eigenvalues(spectrum: list[float], k: int, expected: list[float]) -> None:
    """A single Krylov chain sees each distinct eigenvalue once; restarts recover multiplicity."""
    a = with_spectrum(spectrum, seed=8)
    n = len(spectrum)
    res = lanczos(lambda v: a @ v, n, k=k, generator=gen(9), dtype=DT)
    assert res.converged
    assert res.iterations < n
    assert torch.allclose(res.eigenvalues, torch.tensor(expected, dtype=DT), atol=1e-10)
    assert torch.allclose(res.eigenvectors.t() @ res.eigenvectors, torch.eye(k, dtype=DT), atol=1e-10)


def test_lanczos_reports_non_convergence() -> None:
    """Clustered smallest eigenvalues of an ill-conditioned matrix cannot converge in 20 steps."""
    a = with_spectrum(torch.logspace(0, 4, 300), seed=10)
    res = lanczos(lambda v: a @ v, 300, k=1, which="smallest", max_iter=20, generator=gen(11), dtype=DT)
    assert not res.converged
    assert res.iterations == 20
    assert float(res.eigenvalues[0]) > 1.0 + 1e-3  # a Ritz value lies inside the spectrum


def test_lanczos_deterministic_and_global_rng_untouched() -> None:
    a = with_spectrum(SPECTRUM, seed=12)
    state = torch.random.get_rng_state()
    r1 = lanczos(lambda v: a @ v, N, k=2, generator=gen(13), dtype=DT)
    r2 = lanczos(lambda v: a @ v, N, k=2, generator=gen(13), dtype=DT)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(r1.eigenvalues, r2.eigenvalues) and torch.equal(r1.eigenvectors, r2.eigenvectors)
    r3 = lanczos(lambda v: a @ v, N, k=2, generator=gen(14), dtype=DT)
    assert not torch.equal(r1.eigenvectors, r3.eigenvectors)  # another start vector


# --------------------------------------------------------------------------- power iteration


def test_power_iteration_top_by_magnitude() -> None:
    spectrum = [-10.0, 6.0, *torch.linspace(-2.0, 2.0, 98).tolist()]
    a = with_spectrum(spectrum, seed=15)
    res = power_iteration(lambda v: a @ v, 100, k=2, tol=1e-6, generator=gen(16), dtype=DT)
    assert res.converged
    assert rel(res.eigenvalues, torch.tensor([-10.0, 6.0], dtype=DT)) < 1e-8
    assert float((a @ res.eigenvectors - res.eigenvectors * res.eigenvalues).norm(dim=0).max()) < 1e-4
    lz = lanczos(lambda v: a @ v, 100, k=1, which="smallest", generator=gen(16), dtype=DT)
    assert lz.iterations < res.iterations  # Lanczos needs fewer matvecs


def test_power_iteration_max_iter() -> None:
    a = with_spectrum([1.0, 0.999, *([0.1] * 48)], seed=17)  # ratio 0.999: hopeless
    res = power_iteration(lambda v: a @ v, 50, max_iter=30, tol=1e-8, generator=gen(18), dtype=DT)
    assert not res.converged and res.iterations == 30


# --------------------------------------------------------------------------- Hutchinson


def test_student_t_quantile_against_scipy() -> None:
    for df in [1, 2, 3, 4, 7, 10, 29, 30, 99, 500]:
        for p in [0.025, 0.1, 0.6, 0.95, 0.995]:
            assert math.isclose(student_t_quantile(p, df), scipy.stats.t.ppf(p, df), rel_tol=1e-9)
    assert math.isclose(student_t_quantile(0.975, 5000), scipy.stats.t.ppf(0.975, 5000), rel_tol=1e-3)


def test_hutchinson_diagonal_is_exact_with_rademacher() -> None:
    d = torch.randn(40, generator=gen(19), dtype=DT)
    est = hutchinson_trace(lambda v: d * v, 40, samples=5, generator=gen(20), dtype=DT)
    assert math.isclose(est.trace, float(d.sum()), rel_tol=1e-12)
    assert est.stderr < 1e-12 and est.samples == 5


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_variance_matches_formula(distribution: str) -> None:
    a = with_spectrum(torch.linspace(0.5, 3.0, 30), seed=21)
    est = hutchinson_trace(lambda v: a @ v, 30, samples=3000, generator=gen(22), distribution=distribution, dtype=DT)  # type: ignore[arg-type]
    fro2 = float((a**2).sum())
    expected = 2 * (fro2 - float((a.diagonal() ** 2).sum())) if distribution == "rademacher" else 2 * fro2
    assert abs(float(est.values.var()) / expected - 1) < 0.15
    assert abs(est.trace - float(a.trace())) <= 4 * est.stderr
    assert est.ci_low < float(a.trace()) < est.ci_high


def test_hutchinson_confidence_interval_coverage() -> None:
    a = with_spectrum(torch.linspace(-1.0, 4.0, 20), seed=23)
    true = float(a.trace())
    g = gen(24)
    hits = 0
    for _ in range(400):
        est = hutchinson_trace(lambda v: a @ v, 20, samples=30, generator=g, dtype=DT)
        hits += est.ci_low <= true <= est.ci_high
    assert 0.90 <= hits / 400 <= 0.99


def test_hutchinson_early_stop() -> None:
    a = with_spectrum(torch.linspace(1.0, 2.0, 50), seed=25)
    est = hutchinson_trace(lambda v: a @ v, 50, samples=1000, rtol=0.01, generator=gen(26), dtype=DT)
    assert 10 <= est.samples < 1000
    assert (est.ci_high - est.ci_low) / 2 <= 0.01 * abs(est.trace)
    assert abs(est.trace / float(a.trace()) - 1) < 0.03


# --------------------------------------------------------------------------- SLQ


def test_slq_full_steps_recover_the_spectrum() -> None:
    lam = torch.randn(40, generator=gen(27), dtype=DT)
    a = with_spectrum(lam, seed=28)
    d = spectral_density(lambda v: a @ v, 40, runs=3, steps=40, generator=gen(29), dtype=DT)
    exact = torch.linalg.eigvalsh(a)
    for r in range(3):
        assert torch.allclose(d.nodes[r], exact, atol=1e-9)
    assert torch.allclose(d.weights.sum(dim=1), torch.ones(3, dtype=DT), atol=1e-12)
    # m = n: the Gauss rule is exact, so n Σ τ θ is exactly Hutchinson's zᵀAz for the same z
    assert abs(d.trace_of(lambda x: x) - float(a.trace())) < 3 * math.sqrt(2 * float((a**2).sum()) / 3)


def test_slq_density_matches_smoothed_spectrum() -> None:
    lam = torch.cat([torch.linspace(0.0, 1.0, 300), torch.linspace(4.0, 5.0, 100)]).to(DT)
    a = with_spectrum(lam, seed=30)
    n = lam.numel()
    d = spectral_density(lambda v: a @ v, n, runs=20, steps=40, sigma=0.1, generator=gen(31), dtype=DT)
    step = float(d.grid[1] - d.grid[0])
    assert abs(float(d.density.sum()) * step - 1) < 1e-3  # a probability density
    exact = torch.exp(-0.5 * ((d.grid[:, None] - lam[None, :]) / 0.1) ** 2).sum(1) / (n * 0.1 * math.sqrt(2 * math.pi))
    l1 = float((d.density - exact).abs().sum()) * step
    assert l1 < 0.1
    # the mass near each cluster: 3/4 and 1/4
    low = float(d.density[d.grid < 2.5].sum()) * step
    assert abs(low - 0.75) < 0.05
    # tr log(A + I) within 2% (Ubaru et al.'s log-determinant use)
    assert rel(d.trace_of(lambda x: torch.log1p(x)), float(torch.log1p(lam).sum())) < 0.02


# --------------------------------------------------------------------------- condition number


def test_condition_number() -> None:
    a = with_spectrum(torch.logspace(0, 3, 200), seed=32)
    c = condition_number(lambda v: a @ v, 200, generator=gen(33), dtype=DT)
    assert c.converged
    assert rel(c.condition_number, 1000.0) < 1e-8
    assert rel(c.largest, 1000.0) < 1e-10 and rel(c.smallest, 1.0) < 1e-8
    b = with_spectrum([-1.0, *torch.linspace(1.0, 2.0, 49).tolist()], seed=34)
    assert condition_number(lambda v: b @ v, 50, generator=gen(35), dtype=DT).condition_number == math.inf


# --------------------------------------------------------------------------- small models


def tiny_mlp() -> tuple[callable, Tensor, Tensor, Tensor]:  # type: ignore[valid-type]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(32, 4, generator=gen(36), dtype=DT)
    y = torch.randint(0, 3, (32,), generator=gen(37))
    return functional(net), flatten(net.parameters()).detach(), x, y  # P = 67


def test_model_hessian_ggn_fisher_against_dense() -> None:
    f, theta, x, y = tiny_mlp()
    p = theta.numel()

    def loss(th: Tensor) -> Tensor:
        return nn.functional.cross_entropy(f(th, x), y)

    operators = {
        "hessian": hvp(loss, theta),
        "ggn": ggn_vp(f, theta, x, y, loss="cross_entropy"),
        "fisher": fisher_vp(f, theta, x, Categorical, damping=1e-3),
    }
    for name, mv in operators.items():
        exact = torch.linalg.eigvalsh(to_dense(mv, p, dtype=DT, device="cpu"))
        top = lanczos(mv, p, k=3, generator=gen(38), dtype=DT)
        assert top.converged, name
        assert rel(top.eigenvalues, exact.flip(0)[:3]) < 1e-10, name
        both = lanczos(mv, p, k=2, which="both", generator=gen(39), dtype=DT)
        assert both.converged, name
        assert abs(float(both.eigenvalues[0] - exact[0])) < 1e-8 * float(exact.abs().max()), name
        tr = hutchinson_trace(mv, p, samples=200, generator=gen(40), dtype=DT)
        assert abs(tr.trace - float(exact.sum())) <= 4 * tr.stderr, name
        pw = power_iteration(mv, p, tol=1e-6, generator=gen(41), dtype=DT)
        top_abs = exact[exact.abs().argmax()]
        assert rel(pw.eigenvalues[0], top_abs) < 1e-8, name
    # Hessian indefinite away from a minimum; the damped Fisher is positive definite
    fisher_dense = torch.linalg.eigvalsh(to_dense(operators["fisher"], p, dtype=DT, device="cpu"))
    c = condition_number(operators["fisher"], p, generator=gen(42), dtype=DT, max_iter=p)
    assert rel(c.condition_number, float(fisher_dense[-1] / fisher_dense[0])) < 1e-8


def test_model_float32_operator() -> None:
    f, theta, x, y = tiny_mlp()
    theta32, x32 = theta.float(), x.float()
    mv = ggn_vp(lambda th, inp: f(th.double(), inp.double()).float(), theta32, x32, y, loss="cross_entropy")
    exact = torch.linalg.eigvalsh(to_dense(mv, theta.numel(), dtype=torch.float32, device="cpu").double())
    res = lanczos(mv, theta.numel(), k=1, generator=gen(43), dtype=torch.float32)
    assert res.eigenvalues.dtype == torch.float32
    assert rel(res.eigenvalues[0], exact[-1]) < 1e-5


# --------------------------------------------------------------------------- arguments


def test_bad_arguments() -> None:
    a = torch.eye(5, dtype=DT)

    def mv(v: Tensor) -> Tensor:
        return a @ v

    with pytest.raises(ValueError, match="k=6 exceeds"):
        lanczos(mv, 5, k=6, dtype=DT)
    with pytest.raises(ValueError, match="which"):
        lanczos(mv, 5, which="middle", dtype=DT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be an int >= 2"):
        lanczos(mv, 5, k=1, which="both", dtype=DT)
    with pytest.raises(ValueError, match="tol"):
        power_iteration(mv, 5, tol=0.0, dtype=DT)
    with pytest.raises(ValueError, match="confidence"):
        hutchinson_trace(mv, 5, confidence=1.5, dtype=DT)
    with pytest.raises(ValueError, match="shape"):
        lanczos(lambda v: v[:3], 5, dtype=DT)
    with pytest.raises(ValueError, match="non-finite"):
        hutchinson_trace(lambda v: v * math.nan, 5, dtype=DT)
    with pytest.raises(ValueError, match="n must be"):
        spectral_density(mv, 0, dtype=DT)
