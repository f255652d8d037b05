"""Experiment 4: full-batch vs mini-batch L-BFGS on digits, and how gradient noise breaks the secant condition.

Model: a tanh MLP 64-32-10 (2 410 parameters, float64) on scikit-learn's digits, stratified
70/30 split, standardised pixels, cross-entropy loss.

L-BFGS builds its inverse-Hessian model from pairs (s, y) = (x₊ − x, ∇f(x₊) − ∇f(x)) and
relies on the secant condition B₊ s = y, i.e. on sᵀy ≈ sᵀ H s > 0 (Nocedal & Wright §6.1).
With mini-batches, ∇f is replaced by a batch gradient:

* natrl's ``LBFGS`` (``natrl.optim.LBFGS``, one iteration per batch: ``max_iter=1``, strong
  Wolfe line search on the batch loss, ``max_eval=26``) forms each pair within one batch,
  y = g_B(x₊) − g_B(x): it is the exact secant pair of the *batch* loss (its curvature, not
  the full loss's);
* ``torch.optim.LBFGS`` with ``max_iter=1`` carries its previous gradient across ``step``
  calls, so y = g_{B'}(x₊) − g_B(x) mixes two batches: the difference of two noisy gradients
  at nearby points is dominated by noise when the step is short.

Runs: batch sizes 1 257 (full), 256, 64 and 16, each for a budget of 25 epochs of gradient
evaluations (line-search evaluations included). Along natrl's mini-batch trajectories the
script also measures, at every step, the curvature sᵀy of the same-batch pair, of the
cross-batch pair y' = g_{B_{k+1}}(x₊) − g_{B_k}(x) and of the full-batch pair, and reports
sᵀy / sᵀy_full (1 = the secant pair of the full loss).

The table also counts the steps that left the parameters unchanged: once torch's strong Wolfe
search returns t = 0 for a cross-batch direction, no new pair enters its memory and every
later step repeats the stale direction.

Run: ``python scripts/exp_minibatch_lbfgs.py`` (about two minutes); writes
``docs/img/exp_minibatch_lbfgs.png`` and prints the tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from digits_data import Split, digits  # scripts/digits_data.py
from figures import save  # scripts/figures.py
from torch import Tensor, nn

from natrl.optim import LBFGS
from natrl.params import flatten

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "exp_minibatch_lbfgs.png"
DT = torch.float64
BATCHES = (1257, 256, 64, 16)
EPOCHS = 25.0


class Trace(NamedTuple):
    epochs: np.ndarray  # data passes of gradient evaluations so far
    loss: np.ndarray  # full training loss
    test_acc: float
    same: np.ndarray  # sᵀy_same / sᵀy_full per step (natrl mini-batch runs only)
    cross: np.ndarray  # sᵀy_cross / sᵀy_full per step
    stalled: int  # steps that left the parameters unchanged (line search returned t = 0)


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).to(DT)


def loss_and_grad(net: nn.Module, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
    net.zero_grad()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    return float(loss.detach()), flatten(p.grad for p in net.parameters()).clone()  # type: ignore[misc]


def batches(n: int, size: int, g: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=g)
    return [perm[i : i + size] for i in range(0, n, size)]


def run(data: Split, batch: int, kind: str, diagnose: bool) -> Trace:
    net = make_net()
    params = list(net.parameters())
    n = data.y_train.numel()
    g = torch.Generator().manual_seed(1)
    if kind == "natrl":
        # max_eval: the first evaluation + a line search of up to 25 (the default, 1.25 max_iter, is 1)
        opt: torch.optim.Optimizer = LBFGS(params, history_size=10, max_iter=1, max_eval=26, line_search="strong_wolfe")
    else:
        opt = torch.optim.LBFGS(params, history_size=10, max_iter=1, line_search_fn="strong_wolfe")
    evals = 0
    idx = torch.arange(n)

    def closure() -> Tensor:
        nonlocal evals
        evals += 1
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
        loss.backward()
        return loss

    full_loss = [loss_and_grad(net, data.x_train, data.y_train)[0]]
    epochs = [0.0]
    same, cross = [], []
    stalled = 0
    queue: list[Tensor] = []
    while epochs[-1] < EPOCHS:
        if not queue:
            queue = batches(n, batch, g)
        idx = queue.pop(0)
        x0 = flatten(params).detach().clone()
        if diagnose:
            _, g_b0 = loss_and_grad(net, data.x_train[idx], data.y_train[idx])
            _, g_f0 = loss_and_grad(net, data.x_train, data.y_train)
        before = evals
        opt.step(closure)
        used = evals - before
        stalled += bool(torch.equal(flatten(params).detach(), x0))
        epochs.append(epochs[-1] + used * idx.numel() / n)
        value, g_f1 = loss_and_grad(net, data.x_train, data.y_train)
        full_loss.append(value if math.isfinite(value) else float("nan"))
        if diagnose:
            s = flatten(params).detach() - x0
            _, g_b1 = loss_and_grad(net, data.x_train[idx], data.y_train[idx])
            nxt = queue[0] if queue else batches(n, batch, torch.Generator().manual_seed(len(epochs)))[0]
            _, g_n1 = loss_and_grad(net, data.x_train[nxt], data.y_train[nxt])
            sy_full = float(s @ (g_f1 - g_f0))
            if float(s.norm()) > 0 and sy_full > 0:
                same.append(float(s @ (g_b1 - g_b0)) / sy_full)
                cross.append(float(s @ (g_n1 - g_b0)) / sy_full)
    with torch.no_grad():
        acc = float((net(data.x_test).argmax(1) == data.y_test).double().mean())
    return Trace(np.array(epochs), np.array(full_loss), acc, np.array(same), np.array(cross), stalled)


def main() -> None:
    torch.set_num_threads(1)
    data = digits(DT)
    traces: dict[tuple[str, int], Trace] = {}
    for batch in BATCHES:
        traces["natrl", batch] = run(data, batch, "natrl", diagnose=batch < 1257)
        if batch < 1257:
            traces["torch", batch] = run(data, batch, "torch", diagnose=False)

    print(f"Digits MLP 64-32-10, L-BFGS (history 10, strong Wolfe), {EPOCHS:g} epochs of gradient evaluations")
    print(
        "| batch | optimizer (pairs) | steps | steps that did not move | final train loss | min train loss | test acc |"
    )
    print("|---|---|---|---|---|---|---|")
    for (kind, batch), t in traces.items():
        label = "natrl LBFGS (same-batch pairs)" if kind == "natrl" else "torch.optim.LBFGS (cross-batch pairs)"
        finite = t.loss[np.isfinite(t.loss)]
        cells = [str(batch), label, str(len(t.loss) - 1), str(t.stalled), f"{t.loss[-1]:.4f}", f"{finite.min():.4f}"]
        print("| " + " | ".join([*cells, f"{t.test_acc:.3f}"]) + " |")

    print("\nSecant curvature along natrl's trajectories: r = sᵀy / sᵀy_full (1 = full-batch secant pair)")
    print("| batch | pair | median r | 10-90% range of r | fraction with sᵀy ≤ 0 |")
    print("|---|---|---|---|---|")
    for batch in BATCHES[1:]:
        t = traces["natrl", batch]
        for name, r in (("same batch", t.same), ("cross batch", t.cross)):
            lo, hi = np.quantile(r, [0.1, 0.9])
            print(f"| {batch} | {name} | {np.median(r):.2f} | [{lo:.2f}, {hi:.2f}] | {np.mean(r <= 0):.2f} |")

    colors = dict(zip(BATCHES, ["k", "tab:blue", "tab:green", "tab:red"], strict=True))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    for (kind, batch), t in traces.items():
        ls = "-" if kind == "natrl" else "--"
        lab = f"batch {batch}" + (" (full)" if batch == 1257 else "") + ("" if kind == "natrl" else ", torch.optim")
        axes[0].semilogy(t.epochs, t.loss, ls, color=colors[batch], lw=1.3, label=lab)
    axes[0].set_xlabel("epochs of gradient evaluations (line search included)")
    axes[0].set_ylabel("full training loss")
    axes[0].set_title("L-BFGS: solid natrl (same-batch pairs), dashed torch (cross-batch)")
    axes[0].set_ylim(1e-6, 10)
    axes[0].grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    for ax, which, title in ((axes[1], "same", "same-batch pairs (natrl)"), (axes[2], "cross", "cross-batch pairs")):
        data_r = [getattr(traces["natrl", b], which) for b in BATCHES[1:]]
        pos = np.arange(len(data_r))
        ax.boxplot([np.clip(r, -50, 50) for r in data_r], positions=pos, widths=0.5, showfliers=True,
                   flierprops={"markersize": 2, "alpha": 0.4})  # fmt: skip
        for i, r in enumerate(data_r):
            ax.text(i, -35, f"{100 * np.mean(r <= 0):.0f}% ≤ 0", ha="center", fontsize=8, color="tab:red")
        ax.axhline(1.0, color="tab:green", lw=1, ls=":", label="full-batch secant pair (r = 1)")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xticks(pos, [f"batch {b}" for b in BATCHES[1:]])
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(-50, 60)
        ax.set_ylabel("sᵀy / sᵀy_full (clipped to ±50)")
        ax.set_title(f"secant curvature, {title}")
        ax.grid(True, alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Mini-batch L-BFGS on digits: noisy curvature pairs and what they do to the loss")
    fig.tight_layout()
    save(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
