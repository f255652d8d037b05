"""Experiment 3: sharpness (top Hessian eigenvalue, Hessian trace) of a digits MLP after SGD, Adam or K-FAC.

Model: a tanh MLP 64-32-10 (2 410 parameters) on scikit-learn's digits, a stratified 70/30
train/test split (1 257 / 540 images), pixels standardised with the training statistics,
cross-entropy loss, no weight decay. Each optimizer trains for 30 epochs with two learning
rates and two batch sizes (32 and 256), seed 0:

* SGD (``torch.optim.SGD``, no momentum), lr ∈ {0.05, 0.2};
* Adam (``torch.optim.Adam``), lr ∈ {1e-3, 1e-2};
* K-FAC (``natrl.optim.KFAC``, momentum 0.9, damping 1e-2, KL clip 1e-3), lr ∈ {0.01, 0.05}.

At the end, on the full training loss (float64):

* λ_max of the Hessian: ``natrl.curvature.spectrum.lanczos`` on ``natrl.curvature.hvp``;
* tr(H): ``hutchinson_trace`` with 100 Rademacher probes and its 95% interval;
* the eigenvalue density of three of the Hessians (batch 32, the larger lr):
  ``spectral_density`` (SLQ, 8 runs × 40 steps, one kernel width for all).

With cross-entropy the Hessian shrinks as the fit improves (softmax saturates: the GGN term
is Σ Jᵀ(diag p − ppᵀ)J → 0 as p → one-hot), so λ_max and tr(H) are compared with the training
loss as well as with test accuracy.

Run: ``python scripts/exp_sharpness.py`` (1-2 minutes); writes ``docs/img/exp_sharpness.png``
and prints the table.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from digits_data import Split, digits, train_epochs  # scripts/digits_data.py
from figures import save  # scripts/figures.py
from torch import Tensor, nn

from natrl.curvature import hvp
from natrl.curvature.spectrum import Density, hutchinson_trace, lanczos, spectral_density
from natrl.optim import KFAC
from natrl.params import flatten, functional

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "exp_sharpness.png"
EPOCHS = 30
CONFIGS = {
    "SGD": (0.05, 0.2),
    "Adam": (1e-3, 1e-2),
    "K-FAC": (0.01, 0.05),
}
BATCHES = (32, 256)
DT = torch.float64
DENSITY_GRID = torch.linspace(-0.03, 0.3, 700, dtype=DT)
DENSITY_SIGMA = 0.003


class Outcome(NamedTuple):
    optimizer: str
    lr: float
    batch: int
    train_loss: float
    test_loss: float
    test_acc: float
    lam_max: float
    lanczos_steps: int
    trace: float
    trace_half: float
    density: Density | None


def make_optimizer(name: str, net: nn.Module, lr: float) -> torch.optim.Optimizer:
    if name == "SGD":
        return torch.optim.SGD(net.parameters(), lr=lr)
    if name == "Adam":
        return torch.optim.Adam(net.parameters(), lr=lr)
    return KFAC(net, lr=lr, momentum=0.9, damping=1e-2, kl_clip=1e-3)


def train(name: str, lr: float, batch: int, data: Split, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = make_optimizer(name, net, lr)
    train_epochs(net, opt, data, epochs=EPOCHS, batch=batch, seed=seed)
    if isinstance(opt, KFAC):
        opt.remove_hooks()  # its forward hooks must not run inside the torch.func transforms of hvp
    return net


def measure(name: str, lr: float, batch: int, net: nn.Module, data: Split, with_density: bool) -> Outcome:
    net = net.to(DT)
    f = functional(net)
    theta = flatten(net.parameters()).detach()
    x, y = data.x_train.to(DT), data.y_train

    def loss(th: Tensor) -> Tensor:
        return nn.functional.cross_entropy(f(th, x), y)

    with torch.no_grad():
        test_logits = f(theta, data.x_test.to(DT))
        test_loss = float(nn.functional.cross_entropy(test_logits, data.y_test))
        test_acc = float((test_logits.argmax(1) == data.y_test).double().mean())
    h = hvp(loss, theta)
    p = theta.numel()
    top = lanczos(h, p, k=1, tol=1e-6, generator=torch.Generator().manual_seed(1), dtype=DT)
    tr = hutchinson_trace(h, p, samples=100, generator=torch.Generator().manual_seed(2), dtype=DT)
    dens = (
        spectral_density(
            h,
            p,
            runs=8,
            steps=40,
            generator=torch.Generator().manual_seed(3),
            dtype=DT,
            grid=DENSITY_GRID,
            sigma=DENSITY_SIGMA,
        )
        if with_density
        else None
    )
    return Outcome(
        name, lr, batch, float(loss(theta)), test_loss, test_acc, float(top.eigenvalues[0]), top.iterations,
        tr.trace, tr.ci_high - tr.trace, dens,
    )  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
    data = digits(torch.float32)
    results: list[Outcome] = []
    for name, lrs in CONFIGS.items():
        for lr in lrs:
            for batch in BATCHES:
                net = train(name, lr, batch, data)
                results.append(measure(name, lr, batch, net, data, with_density=(lr == lrs[1] and batch == 32)))

    print(f"Digits MLP 64-32-10 (2 410 parameters), {EPOCHS} epochs; Hessian of the full training loss")
    print("| optimizer | lr | batch | train loss | test loss | test acc | λ_max (Lanczos steps) | tr(H) ± 95% CI |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.optimizer} | {r.lr:g} | {r.batch} | {r.train_loss:.4f} | {r.test_loss:.3f} | {r.test_acc:.3f} | "
              f"{r.lam_max:.3g} ({r.lanczos_steps}) | {r.trace:.3g} ± {r.trace_half:.2g} |")  # fmt: skip
    lam = np.array([r.lam_max for r in results])
    acc = np.array([r.test_acc for r in results])
    trc = np.array([r.trace for r in results])
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    print(f"Spearman rank correlation with test accuracy: λ_max {np.corrcoef(rank(lam), rank(acc))[0, 1]:+.2f}, "
          f"tr(H) {np.corrcoef(rank(trc), rank(acc))[0, 1]:+.2f} (n = {len(results)})")  # fmt: skip

    colors = {"SGD": "tab:red", "Adam": "tab:orange", "K-FAC": "tab:blue"}
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6))
    for r in results:
        marker = "o" if r.batch == 32 else "s"
        fill = colors[r.optimizer] if r.lr == CONFIGS[r.optimizer][1] else "white"
        style = {"s": 60, "marker": marker, "edgecolor": colors[r.optimizer], "facecolor": fill, "linewidth": 1.8,
                 "zorder": 3}  # fmt: skip
        axes[0].scatter(r.lam_max, 100 * r.test_acc, **style)
        axes[1].scatter(r.trace, 100 * r.test_acc, **style)
        axes[1].errorbar(r.trace, 100 * r.test_acc, xerr=r.trace_half, color=colors[r.optimizer], lw=0.8, zorder=2)
        axes[2].scatter(r.train_loss, r.lam_max, **style)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", ms=8, label=k) for k, c in colors.items()]
    handles += [
        plt.Line2D([], [], color="k", marker="o", ls="", mfc="white", label="batch 32"),
        plt.Line2D([], [], color="k", marker="s", ls="", mfc="white", label="batch 256"),
        plt.Line2D([], [], color="gray", marker="o", ls="", label="filled: larger lr"),
    ]
    for ax, xl, yl, title in (
        (axes[0], "top Hessian eigenvalue λ_max (Lanczos)", "test accuracy (%)", "sharpness λ_max vs test accuracy"),
        (axes[1], "Hessian trace (Hutchinson, 100 probes, 95% CI)", "test accuracy (%)", "tr(H) vs test accuracy"),
        (axes[2], "training loss", "λ_max", "λ_max vs training loss (cross-entropy)"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(handles=handles, fontsize=8, loc="lower left")
    ax = axes[3]
    for r in results:
        if r.density is None:
            continue
        ax.semilogy(r.density.grid, r.density.density + 1e-8, color=colors[r.optimizer],
                    label=f"{r.optimizer} (lr {r.lr:g}, batch {r.batch})")  # fmt: skip
    ax.set_ylim(1e-4, None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel(f"density (SLQ, Gaussian kernel σ = {DENSITY_SIGMA:g})")
    ax.set_title("Hessian eigenvalue density (8 × 40 Lanczos steps)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Digits MLP after 30 epochs: curvature at the solution found by each optimizer")
    fig.tight_layout()
    save(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
