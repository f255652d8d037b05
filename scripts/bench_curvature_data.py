"""Data-set-scale curvature operators against dense matrices, and Hutch++ against Hutchinson.

Part 1. A tanh MLP 64-8-10 (610 parameters, float64) trained briefly on scikit-learn's digits
(1,257 training images). For the Hessian (``hvp``), the GGN (``ggn_vp``, cross-entropy), the
Fisher (``fisher_vp``, Categorical) and the empirical Fisher (``empirical_fisher_vp``), the
operator of ``over_batches`` over a ``DataLoader`` (batch 100: twelve batches of 100 and one
of 57) is materialised with ``to_dense`` and compared with the same operator built on the
whole training set in one batch: relative Frobenius error, and the relative error a plain
mean over batches (every batch weighted 1/13) would make.

Part 2. Trace estimators at equal numbers of matrix-vector products m: Hutchinson (m
Rademacher probes) and Hutch++ (m/3 sketch, m/3 products with Q, m/3 residual probes), over
``--seeds`` generator seeds; the matrices: the GGN of part 1, and synthetic PSD matrices
(n = 500, random eigenvectors) with eigenvalues j^-1 and j^-2. Products with the dense
matrix (the operators are the same linear maps; this keeps 200 seeds fast). Reported: the
mean and the 90th percentile of |estimate − tr M| / tr M.

Usage::

    python scripts/bench_curvature_data.py            # about a minute on one CPU thread
    python scripts/bench_curvature_data.py --seeds 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from digits_data import digits  # scripts/digits_data.py
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from natrl.curvature import (
    empirical_fisher_vp,
    fisher_vp,
    ggn_vp,
    hutchinson_trace,
    hutchpp_trace,
    hvp,
    over_batches,
    to_dense,
)
from natrl.distributions import Categorical
from natrl.params import flatten, functional

DT = torch.float64


def model() -> tuple[nn.Module, Tensor, Tensor]:
    data = digits(DT)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)).to(DT)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):  # a few full-batch steps: away from the random initialisation
        opt.zero_grad()
        F.cross_entropy(net(data.x_train), data.y_train).backward()
        opt.step()
    return net, data.x_train, data.y_train


def part1(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    f = functional(net)
    theta = flatten(net.parameters()).detach()
    p = theta.numel()
    loader = DataLoader(TensorDataset(x, y), batch_size=100)

    def per_sample(th: Tensor, xi: Tensor, yi: Tensor) -> Tensor:
        return F.cross_entropy(f(th, xi[None]), yi[None])

    makers = {
        "Hessian (hvp)": lambda th, xb, yb: hvp(lambda t: F.cross_entropy(f(t, xb), yb), th),
        "GGN (ggn_vp, cross-entropy)": lambda th, xb, yb: ggn_vp(f, th, xb, yb, loss="cross_entropy"),
        "Fisher (fisher_vp, Categorical)": lambda th, xb, yb: fisher_vp(lambda t, b: (f(t, b),), th, xb, Categorical),
        "empirical Fisher": lambda th, xb, yb: empirical_fisher_vp(per_sample, th, xb, yb),
    }
    print(f"Part 1: MLP 64-8-10 on digits, P = {p}, N = {x.shape[0]}, DataLoader batch 100 (12 x 100 + 57)\n")
    print("| operator | ‖over_batches − whole‖ / ‖whole‖ | plain mean of batches: same error | seconds (to_dense) |")
    print("|---|---|---|---|")
    ggn = torch.empty(0)
    for name, make in makers.items():
        t0 = time.perf_counter()
        dense = to_dense(over_batches(lambda th, b, make=make: make(th, *b), theta, loader), p, dtype=DT, device="cpu")
        seconds = time.perf_counter() - t0
        whole = to_dense(make(theta, x, y), p, dtype=DT, device="cpu")
        plain = sum(to_dense(make(theta, xb, yb), p, dtype=DT, device="cpu") for xb, yb in loader) / len(loader)
        err = float((dense - whole).norm() / whole.norm())
        err_plain = float((plain - whole).norm() / whole.norm())  # type: ignore[union-attr]
        print(f"| {name} | {err:.1e} | {err_plain:.1e} | {seconds:.1f} |")
        if name.startswith("GGN"):
            ggn = whole
    return ggn


def synthetic(n: int, power: float) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=DT))
    return (q * torch.arange(1, n + 1, dtype=DT) ** -power) @ q.T


def part2(ggn: Tensor, seeds: int) -> None:
    mats = {
        f"GGN of part 1 (n = {ggn.shape[0]})": ggn,
        "synthetic, λⱼ = j^-1 (n = 500)": synthetic(500, 1.0),
        "synthetic, λⱼ = j^-2 (n = 500)": synthetic(500, 2.0),
    }
    print(f"\nPart 2: relative trace error over {seeds} seeds (mean / 90th percentile)\n")
    print("| matrix | matvecs m | Hutchinson | Hutch++ | Hutchinson / Hutch++ (mean) |")
    print("|---|---|---|---|---|")
    for name, m in mats.items():
        n = m.shape[0]
        exact = float(torch.trace(m))

        def mv(v: Tensor, m: Tensor = m) -> Tensor:
            return m @ v

        for budget in (12, 30, 99, 300):
            errs: dict[str, list[float]] = {"h": [], "pp": []}
            for s in range(seeds):
                h = hutchinson_trace(mv, n, samples=budget, generator=torch.Generator().manual_seed(s), dtype=DT)
                pp = hutchpp_trace(mv, n, matvecs=budget, generator=torch.Generator().manual_seed(s), dtype=DT)
                errs["h"].append(abs(h.trace - exact) / exact)
                errs["pp"].append(abs(pp.trace - exact) / exact)
            cells = []
            for key in ("h", "pp"):
                v = sorted(errs[key])
                cells.append(f"{statistics.fmean(v):.2e} / {v[int(0.9 * len(v))]:.2e}")
            ratio = statistics.fmean(errs["h"]) / max(statistics.fmean(errs["pp"]), 1e-300)
            print(f"| {name} | {budget} | {cells[0]} | {cells[1]} | {ratio:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, x, y = model()
    ggn = part1(net, x, y)
    part2(ggn, args.seeds)


if __name__ == "__main__":
    main()
