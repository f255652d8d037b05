"""Experiment 2: L-BFGS vs Adam vs gradient descent with momentum on the Rosenbrock function.

f(x, y) = (1 − x)² + 100 (y − x²)², minimum f = 0 at (1, 1), at the end of a curved narrow
valley: the Hessian there has eigenvalues ≈ 1001.6 and 0.4 (κ ≈ 2500, printed below by
Lanczos on the Hessian-vector product).

* L-BFGS: ``natrl.optim.minimize(method="lbfgs")`` (history 10, strong Wolfe line search),
  no step size to tune.
* Adam and SGD with momentum 0.9 (``torch.optim``): the learning rate is the best of a small
  grid (Adam {0.01, 0.05, 0.1}, momentum {1e-4, 2e-4, 5e-4, 1e-3}): the fewest total
  iterations to f ≤ 1e-8 among the rates that get there from every start; the sweep is printed.

Each run starts from four points and stops at f ≤ 1e-8 (or after 6 000 iterations). Wall
time is measured per iteration with ``time.perf_counter`` on one CPU thread; an L-BFGS
iteration costs several function evaluations (its line search), the others one.

Run: ``python scripts/exp_rosenbrock.py`` (under a minute); writes
``docs/img/exp_rosenbrock.png`` and prints the tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from figures import save  # scripts/figures.py
from torch import Tensor

from natrl.curvature import hvp
from natrl.curvature.spectrum import condition_number
from natrl.optim import OptimizeResult, minimize

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "exp_rosenbrock.png"
STARTS = ((-1.2, 1.0), (-1.5, 2.5), (1.5, -0.5), (0.0, -1.0))
TARGET = 1e-8
MAX_ITER = 6_000
DT = torch.float64
GRID = {"Adam": (0.01, 0.05, 0.1), "GD + momentum 0.9": (1e-4, 2e-4, 5e-4, 1e-3)}


def rosenbrock(z: Tensor) -> Tensor:
    return (1 - z[0]) ** 2 + 100 * (z[1] - z[0] ** 2) ** 2


class Run(NamedTuple):
    path: np.ndarray  # (T + 1, 2) iterates
    loss: np.ndarray  # (T + 1,)
    seconds: np.ndarray  # (T + 1,) wall time since the start
    nfev: int

    @property
    def hit(self) -> int | None:
        idx = np.nonzero(self.loss <= TARGET)[0]
        return int(idx[0]) if idx.size else None


def run_torch(make: Callable[[Tensor], torch.optim.Optimizer], start: tuple[float, float]) -> Run:
    p = torch.tensor(start, dtype=DT, requires_grad=True)
    opt = make(p)
    path, loss, secs = [list(start)], [float(rosenbrock(p.detach()))], [0.0]
    t0 = time.perf_counter()
    for _ in range(MAX_ITER):
        opt.zero_grad()
        f = rosenbrock(p)
        f.backward()
        opt.step()
        with torch.no_grad():
            value = float(rosenbrock(p))
        secs.append(time.perf_counter() - t0)
        path.append(p.detach().tolist())
        loss.append(value)
        if value <= TARGET or not np.isfinite(value):
            break
    return Run(np.array(path), np.array(loss), np.array(secs), len(loss) - 1)


def run_lbfgs(start: tuple[float, float]) -> Run:
    path, loss, secs = [list(start)], [float(rosenbrock(torch.tensor(start, dtype=DT)))], [0.0]
    t0 = time.perf_counter()

    def record(r: OptimizeResult) -> bool:
        secs.append(time.perf_counter() - t0)
        path.append(r.x.tolist())
        loss.append(r.fun)
        return r.fun <= TARGET

    res = minimize(rosenbrock, torch.tensor(start, dtype=DT), method="lbfgs", callback=record,
                   options={"gtol": 0.0, "ftol": 0.0}, max_iter=MAX_ITER)  # fmt: skip
    return Run(np.array(path), np.array(loss), np.array(secs), res.nfev)


def thin(n: int) -> np.ndarray:
    """Indices 0 … n−1: all of the first 200, then about 300 per decade (keeps the PNG small)."""
    if n <= 200:
        return np.arange(n)
    tail = np.unique(np.geomspace(200, n - 1, 900).astype(int))
    return np.concatenate([np.arange(200), tail])


def makers(name: str, lr: float) -> Callable[[Tensor], torch.optim.Optimizer]:
    if name == "Adam":
        return lambda p: torch.optim.Adam([p], lr=lr)
    return lambda p: torch.optim.SGD([p], lr=lr, momentum=0.9)


def main() -> None:
    torch.set_num_threads(1)
    star = torch.ones(2, dtype=DT)
    c = condition_number(hvp(rosenbrock, star), 2, dtype=DT)
    print(f"Hessian at (1, 1): λ_max = {c.largest:.2f}, λ_min = {c.smallest:.4f}, κ = {c.condition_number:.0f}")

    print("\nLearning-rate sweep (iterations to f ≤ 1e-8 per start; '-' = not within the budget or diverged)")
    print("| method | lr | " + " | ".join(str(s) for s in STARTS) + " | total |")
    print("|---|---|" + "---|" * (len(STARTS) + 1))
    runs: dict[str, list[Run]] = {"L-BFGS": [run_lbfgs(s) for s in STARTS]}
    labels = {"L-BFGS": "L-BFGS (natrl)"}
    for name, lrs in GRID.items():
        best: tuple[float, float, list[Run]] | None = None
        for lr in lrs:
            rs = [run_torch(makers(name, lr), s) for s in STARTS]
            hits = [r.hit for r in rs]
            total = math.inf if None in hits else sum(h for h in hits if h is not None)
            print(f"| {name} | {lr:g} | " + " | ".join("-" if h is None else str(h) for h in hits) + f" | {total} |")
            if best is None or total < best[0]:
                best = (total, lr, rs)
        assert best is not None
        runs[name] = best[2]
        labels[name] = f"{name} (lr {best[1]:g})"

    print("\nIterations, function evaluations and wall time to f ≤ 1e-8")
    print("| start | method | iterations | f evaluations | wall time (ms) | final f |")
    print("|---|---|---|---|---|---|")
    for i, s in enumerate(STARTS):
        for name, rs in runs.items():
            r = rs[i]
            it = "-" if r.hit is None else str(r.hit)
            ms = 1e3 * (r.seconds[r.hit] if r.hit is not None else r.seconds[-1])
            print(f"| {s} | {labels[name]} | {it} | {r.nfev} | {ms:.1f} | {r.loss[-1]:.1e} |")

    colors = {"L-BFGS": "tab:blue", "Adam": "tab:orange", "GD + momentum 0.9": "tab:red"}
    markers = ["o", "s", "^", "D"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.25, 1, 1]})
    ax = axes[0]
    xs, ys = np.meshgrid(np.linspace(-2.0, 2.0, 300), np.linspace(-1.5, 3.2, 300))
    zs = (1 - xs) ** 2 + 100 * (ys - xs**2) ** 2
    ax.contourf(xs, ys, np.log10(zs + 1e-3), levels=12, cmap="Blues_r", alpha=0.35)
    ax.contour(xs, ys, np.log10(zs + 1e-3), levels=12, colors="k", linewidths=0.3, alpha=0.4)
    for name, rs in runs.items():
        for i, r in enumerate(rs):
            top = name == "L-BFGS"  # drawn over the others, with its iterates marked
            ax.plot(r.path[:, 0], r.path[:, 1], color=colors[name], lw=2.0 if top else 1.1, alpha=0.9,
                    marker="." if top else None, ms=4, zorder=4 if top else 2,
                    label=labels[name] if i == 0 else None)  # fmt: skip
            ax.plot(*r.path[0], marker=markers[i], color="k", ms=6)
    ax.plot(1, 1, "*", color="gold", ms=14, mec="k", label="minimum (1, 1)")
    ax.set_xlim(-2, 2)
    ax.set_ylim(-1.5, 3.2)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("paths over log₁₀ f (black markers: starts)")
    ax.legend(fontsize=8, loc="upper right")
    for name, rs in runs.items():
        for i, r in enumerate(rs):
            lab = labels[name] if i == 0 else None
            idx = thin(len(r.loss))
            axes[1].loglog(idx + 1, r.loss[idx], color=colors[name], lw=1, alpha=0.8, label=lab)
            idx = idx[idx > 0]
            axes[2].loglog(r.seconds[idx] * 1e3, r.loss[idx], color=colors[name], lw=1, alpha=0.8, label=lab)
    for ax, xl in ((axes[1], "iteration + 1"), (axes[2], "wall time (ms, 1 CPU thread)")):
        ax.axhline(TARGET, color="gray", ls=":", lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel("f(x, y)")
        ax.set_ylim(1e-12, 3e3)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_title("loss vs iterations (4 starts each)")
    axes[2].set_title("loss vs wall time")
    fig.suptitle("Rosenbrock: L-BFGS reaches f ≤ 1e-8 in tens of iterations; Adam and momentum need thousands")
    fig.tight_layout()
    save(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
