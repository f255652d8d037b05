"""Data-set-scale curvature operators, estimators and the scipy export, against dense references.

* :func:`over_batches` over a DataLoader with an unequal last batch equals the operator of the
  whole data set in one batch (materialised with ``to_dense``), and the Hessian equals
  ``torch.func.hessian`` of the mean loss over all samples.
* Hutch++ is exact on a low-rank matrix, unbiased, and more accurate than Hutchinson at equal
  matvecs on a decaying spectrum (over seeds); the diagonal estimator is unbiased.
* ``as_linear_operator`` against numpy's dense ``eigh`` and ``solve`` through scipy's ``eigsh`` and ``cg``.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.data import DataLoader, TensorDataset

from natrl.curvature import (
    as_linear_operator,
    empirical_fisher_vp,
    fisher_vp,
    ggn_vp,
    hutchinson_diagonal,
    hutchinson_trace,
    hutchpp_trace,
    hvp,
    over_batches,
    to_dense,
)
from natrl.distributions import Categorical
from natrl.params import flatten, functional

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

DT = torch.float64
N, D_IN, K = 30, 3, 3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def problem() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D_IN, 4), nn.Tanh(), nn.Linear(4, K)).to(DT)
    x = torch.randn(N, D_IN, generator=gen(1), dtype=DT)
    y = torch.randint(0, K, (N,), generator=gen(2))
    return net, flatten(net.parameters()).detach(), x, y


def loader(x: Tensor, y: Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=8)  # batches 8, 8, 8, 6


@pytest.mark.parametrize("kind", ["hvp", "ggn_ce", "ggn_mse", "fisher", "empirical_fisher"])
@pytest.mark.parametrize("cache", [False, True])
def test_over_batches_equals_whole_data_operator(kind: str, cache: bool) -> None:
    net, theta, x, y = problem()
    f = functional(net)
    p = theta.numel()
    y_mse = torch.randn(N, K, generator=gen(3), dtype=DT)

    def ce(th: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(f(th, xb), yb)

    def per_sample(th: Tensor, xi: Tensor, yi: Tensor) -> Tensor:
        return F.cross_entropy(f(th, xi[None]), yi[None])

    def make(th: Tensor, xb: Tensor, yb: Tensor, ymse: Tensor) -> object:
        if kind == "hvp":
            return hvp(lambda t: ce(t, xb, yb), th)
        if kind == "ggn_ce":
            return ggn_vp(f, th, xb, yb, loss="cross_entropy")
        if kind == "ggn_mse":
            return ggn_vp(f, th, xb, ymse, loss="mse")
        if kind == "fisher":
            return fisher_vp(lambda t, b: (f(t, b),), th, xb, Categorical)
        return empirical_fisher_vp(per_sample, th, xb, yb)

    data = DataLoader(TensorDataset(x, y, y_mse), batch_size=8)
    op = over_batches(lambda th, b: make(th, *b), theta, data, cache=cache, damping=0.1)  # type: ignore[arg-type, return-value]
    got = to_dense(op, p, dtype=DT, device="cpu")
    whole = to_dense(make(theta, x, y, y_mse), p, dtype=DT, device="cpu")  # type: ignore[arg-type]
    assert rel_err(got, whole + 0.1 * torch.eye(p, dtype=DT)) < 1e-12
    # a plain mean of the four batch operators would weight the last batch 8/6 too much
    plain = sum(to_dense(make(theta, *b), p, dtype=DT, device="cpu") for b in data) / 4  # type: ignore[arg-type]
    assert rel_err(plain + 0.1 * torch.eye(p, dtype=DT), got) > 1e-3
    if kind == "hvp":
        ref = torch.func.hessian(lambda t: ce(t, x, y))(theta)
        assert rel_err(got - 0.1 * torch.eye(p, dtype=DT), ref) < 1e-10


def test_over_batches_refuses_bad_loaders_and_vectors() -> None:
    net, theta, x, y = problem()
    f = functional(net)

    def make(th: Tensor, b: list[Tensor]) -> object:
        return ggn_vp(f, th, b[0], b[1], loss="cross_entropy")

    shuffled = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True, generator=gen(0))
    with pytest.raises(ValueError, match="different batches"):
        over_batches(make, theta, shuffled, check_deterministic=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no batch"):
        over_batches(make, theta, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iterable of batches"):
        over_batches(make, theta, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="damping"):
        over_batches(make, theta, loader(x, y), damping=-1.0)  # type: ignore[arg-type]
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    op = over_batches(make, theta, batches)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected a vector"):
        op(torch.ones(theta.numel() + 1, dtype=DT))
    batches.append((x[:3], y[:3]))  # the data changed between passes
    with pytest.raises(ValueError, match="more batches on this pass"):
        op(torch.ones(theta.numel(), dtype=DT))


def test_over_batches_moves_batches_to_the_params_device_and_reads_dicts() -> None:
    net, theta, x, y = problem()
    f = functional(net)
    dicts = [{"x": x[:11], "y": y[:11]}, {"x": x[11:], "y": y[11:]}]
    op = over_batches(lambda th, b: ggn_vp(f, th, b["x"], b["y"], loss="cross_entropy"), theta, dicts)
    whole = ggn_vp(f, theta, x, y, loss="cross_entropy")
    v = torch.randn(theta.numel(), generator=gen(4), dtype=DT)
    assert rel_err(op(v), whole(v)) < 1e-12


# ------------------------------------------------------------------------------ hvp mode


class OnceCube(torch.autograd.Function):
    """x³ whose backward cannot be differentiated again."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        return grad * 3.0 * x * x

    @staticmethod
    def jvp(ctx, tangent):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError


def test_hvp_auto_is_reverse_over_reverse_and_refuses_what_no_mode_can_do() -> None:
    theta = torch.randn(6, generator=gen(5), dtype=DT)

    def loss(th: Tensor) -> Tensor:
        return (th.sin() * th).sum() * th.square().sum()

    ref = torch.func.hessian(loss)(theta)
    calls = {"n": 0}

    def counted(th: Tensor) -> Tensor:
        calls["n"] += 1
        return loss(th)

    for mode, loss_calls in (("auto", 1), ("reverse-over-reverse", 1), ("forward-over-reverse", 6)):
        calls["n"] = 0
        got = to_dense(hvp(counted, theta, mode=mode), 6, dtype=DT, device="cpu")  # type: ignore[arg-type]
        assert rel_err(got, ref) < 1e-12
        assert calls["n"] == loss_calls  # reverse: one graph for all products; forward: one pass each

    def once(th: Tensor) -> Tensor:
        return OnceCube.apply(th).sum() * th.sum()  # neither mode can differentiate it twice

    with pytest.raises(ValueError, match="differentiated twice"):
        hvp(once, theta, mode="reverse-over-reverse")
    op = hvp(once, theta)
    with pytest.raises(ValueError, match="differentiated twice"):  # forward mode fails too
        op(torch.ones_like(theta))


def test_hvp_auto_falls_back_to_forward_over_reverse() -> None:
    """A loss whose backward is once_differentiable but whose forward mode works."""

    class OnceSquare(torch.autograd.Function):
        @staticmethod
        def forward(x):  # type: ignore[no-untyped-def, override]
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def, override]
            (ctx.x,) = inputs
            ctx.save_for_forward(inputs[0])

        @staticmethod
        @once_differentiable
        def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
            return grad * 2.0 * ctx.x

        @staticmethod
        def jvp(ctx, tangent):  # type: ignore[no-untyped-def, override]
            return 2.0 * ctx.x * tangent

    theta = torch.randn(4, generator=gen(6), dtype=DT)
    a = torch.randn(4, 4, generator=gen(7), dtype=DT)

    def loss(th: Tensor) -> Tensor:
        return (a @ OnceSquare.apply(th)).sum() + (th**3).sum()

    ref = torch.func.hessian(lambda th: (a @ (th * th)).sum() + (th**3).sum())(theta)
    got = to_dense(hvp(loss, theta), 4, dtype=DT, device="cpu")
    assert rel_err(got, ref) < 1e-12


# ------------------------------------------------------------------------------ estimators


def decaying(n: int, seed: int, power: float = 2.0) -> Tensor:
    """A symmetric PSD matrix with eigenvalues j^-power and random eigenvectors."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen(seed), dtype=DT))
    vals = torch.arange(1, n + 1, dtype=DT) ** -power
    return (q * vals) @ q.T


def test_hutchpp_is_exact_on_a_low_rank_matrix() -> None:
    b = torch.randn(40, 5, generator=gen(8), dtype=DT)
    m = b @ b.T  # rank 5
    est = hutchpp_trace(lambda v: m @ v, 40, matvecs=18, generator=gen(9), dtype=DT)  # k = 6 ≥ 5
    assert est.rank == 6 and est.matvecs == 18
    assert abs(est.trace - float(torch.trace(m))) < 1e-10 * float(torch.trace(m))
    full = hutchpp_trace(lambda v: m @ v, 40, matvecs=200, generator=gen(9), dtype=DT)  # k capped at n
    assert full.rank == 40 and full.matvecs == 80
    assert abs(full.trace - float(torch.trace(m))) < 1e-10 * float(torch.trace(m))


def test_hutchpp_beats_hutchinson_at_equal_matvecs_and_is_unbiased() -> None:
    n, seeds = 100, 60
    m = decaying(n, 10)
    m[0, 1] = m[1, 0] = 0.3  # not diagonal-dominated in the eigenbasis alone
    exact = float(torch.trace(m))

    def mv(v: Tensor) -> Tensor:
        return m @ v

    err: dict[tuple[str, int], list[float]] = {}
    signed: list[float] = []
    for budget in (12, 48):
        for s in range(seeds):
            pp = hutchpp_trace(mv, n, matvecs=budget, generator=gen(100 + s), dtype=DT)
            h = hutchinson_trace(mv, n, samples=budget, generator=gen(100 + s), dtype=DT)
            err.setdefault(("pp", budget), []).append(abs(pp.trace - exact) / exact)
            err.setdefault(("h", budget), []).append(abs(h.trace - exact) / exact)
            if budget == 12:
                signed.append(pp.trace - exact)
    mean = {key: statistics.fmean(v) for key, v in err.items()}
    assert mean[("pp", 12)] < 0.5 * mean[("h", 12)]
    assert mean[("pp", 48)] < 0.5 * mean[("h", 48)]
    assert mean[("pp", 48)] < 0.5 * mean[("pp", 12)]  # faster than 1/√m: 4x the budget
    bias = statistics.fmean(signed)
    se = statistics.stdev(signed) / math.sqrt(seeds)
    assert abs(bias) < 4 * se


def test_hutchinson_diagonal_is_exact_on_diagonal_and_unbiased() -> None:
    d = torch.linspace(0.5, 3.0, 12, dtype=DT)
    est = hutchinson_diagonal(lambda v: d * v, 12, samples=1, generator=gen(11), dtype=DT)
    torch.testing.assert_close(est.diagonal, d, rtol=0, atol=1e-15)
    m = decaying(12, 12, power=1.0) + 0.1
    est = hutchinson_diagonal(lambda v: m @ v, 12, samples=4000, generator=gen(13), dtype=DT)
    z = (est.diagonal - m.diagonal()) / est.stderr
    assert float(z.abs().max()) < 4.5
    off = m - torch.diag(m.diagonal())
    ref_se = (off.square().sum(1) / 4000).sqrt()  # Rademacher variance Σ_{l≠j} M_jl²
    assert rel_err(est.stderr, ref_se) < 0.1


def test_estimators_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="matvecs must be"):
        hutchpp_trace(lambda v: v, 5, matvecs=2)
    with pytest.raises(ValueError, match="samples must be"):
        hutchinson_diagonal(lambda v: v, 5, samples=0)
    with pytest.raises(ValueError, match="distribution"):
        hutchinson_diagonal(lambda v: v, 5, distribution="sphere")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ scipy export


def test_as_linear_operator_with_scipy_eigsh_and_cg() -> None:
    sla = pytest.importorskip("scipy.sparse.linalg")
    net, theta, x, y = problem()
    f = functional(net)
    p = theta.numel()
    op = over_batches(lambda th, b: ggn_vp(f, th, b[0], b[1], loss="cross_entropy"), theta, loader(x, y), damping=0.01)
    lin = as_linear_operator(op, p, dtype=DT)
    dense = to_dense(op, p, dtype=DT, device="cpu").numpy()
    assert lin.shape == (p, p) and lin.dtype == np.float64
    vals = sla.eigsh(lin, k=3, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.linalg.eigvalsh(dense)[-3:], rtol=1e-8)
    b = np.random.default_rng(0).standard_normal(p)
    sol, info = sla.cg(lin, b, rtol=1e-12, maxiter=1000)
    assert info == 0
    np.testing.assert_allclose(sol, np.linalg.solve(dense, b), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(lin.rmatvec(b), dense @ b, rtol=1e-12)
    np.testing.assert_allclose(lin.matmat(np.eye(p)[:, :2]), dense[:, :2], rtol=1e-12)
    single = as_linear_operator(lambda v: 2.0 * v, 4, dtype=torch.float32)
    assert single.dtype == np.float32 and np.allclose(single.matvec(np.ones(4)), 2.0)
    with pytest.raises(ValueError, match="dimension mismatch"):  # scipy checks it
        single.matvec(np.ones(5))
    with pytest.raises(ValueError, match="size must be"):
        as_linear_operator(op, 0, dtype=DT)
    with pytest.raises(ValueError, match="NumPy"):
        as_linear_operator(op, p, dtype=torch.bfloat16)
