"""Benchmark: K-FAC vs Adam vs SGD on scikit-learn's digits (shipped with sklearn, no download).

Two tasks on the 1797 standardised 8×8 digits, minibatches of ``--batch`` examples:

* ``mlp``: a 64-128-128-10 tanh MLP, cross-entropy;
* ``autoencoder``: a 64-128-32-128-64 tanh autoencoder, mean squared reconstruction error.

Each optimizer trains for ``--epochs`` epochs (K-FAC for ``--kfac-epochs``) from the same
initialisation; the training loss on the full set is recorded after every epoch (outside the
timer). The target is Adam's training loss after ``--epochs`` epochs; the table reports, per
optimizer, the first epoch and the wall time at which its training loss is at or below that
target (median over ``--seeds``). Adam and SGD use the best learning rate of a small grid
(``--tune``; chosen on seed 0 by the final training loss).

Writes ``kfac_digits.md``, ``kfac_digits.json`` and ``kfac_digits_<task>.png`` (loss vs
epoch and vs wall time) into ``--out`` (default ``bench-out/``).

Usage::

    python scripts/bench_kfac_digits.py [--epochs 100] [--kfac-epochs 30] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from natrl.optim import KFAC


def load() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = d.data.astype(np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    return torch.tensor(x), torch.tensor(d.target)


def make_model(task: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if task == "mlp":
        return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                             nn.Linear(128, 10))  # fmt: skip
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 32), nn.Tanh(),
                         nn.Linear(32, 128), nn.Tanh(), nn.Linear(128, 64))  # fmt: skip


def loss_fn(task: str, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "mlp":
        return nn.functional.cross_entropy(out, y)
    return nn.functional.mse_loss(out, x)


def make_opt(name: str, model: nn.Module, hp: dict[str, float]) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=hp["lr"])
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9)
    return KFAC(model, lr=hp["lr"], momentum=hp.get("momentum", 0.9), damping=hp["damping"],
                kl_clip=hp.get("kl_clip"), inverse_interval=int(hp.get("inverse_interval", 10)),
                factor_decay=hp.get("factor_decay", 0.95),
                fisher="sampled" if hp.get("sampled") else "empirical")  # fmt: skip


class Run:
    """One optimizer training one model; :meth:`epoch` runs one timed epoch."""

    def __init__(self, task: str, name: str, hp: dict[str, float], x: torch.Tensor,
                 y: torch.Tensor, batch: int, seed: int) -> None:  # fmt: skip
        self.task, self.name, self.x, self.y, self.batch = task, name, x, y, batch
        self.model = make_model(task, seed)
        self.opt = make_opt(name, self.model, hp)
        self.gen = torch.Generator().manual_seed(seed)
        self.curve: dict[str, list[float]] = {"loss": [self.full_loss()], "time": [0.0],
                                              "cpu": [0.0]}  # fmt: skip

    def full_loss(self) -> float:
        with torch.no_grad():
            return float(loss_fn(self.task, self.model(self.x), self.x, self.y))

    def epoch(self) -> None:
        x, y, opt, model = self.x, self.y, self.opt, self.model
        perm = torch.randperm(len(x), generator=self.gen)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(x), self.batch):
            idx = perm[i : i + self.batch]
            opt.zero_grad()
            out = model(x[idx])
            if isinstance(opt, KFAC) and opt.fisher == "sampled":
                # true Fisher: backpropagate a loss with targets sampled from the model
                opt.sampled_fisher_backward(out, "categorical" if self.task == "mlp" else "gaussian")
            loss = loss_fn(self.task, out, x[idx], y[idx])
            loss.backward()
            opt.step()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.curve["time"].append(self.curve["time"][-1] + wall)
        self.curve["cpu"].append(self.curve["cpu"][-1] + cpu)
        self.curve["loss"].append(self.full_loss())


def train_interleaved(runs: list[tuple[Run, int]]) -> None:
    """Run epochs round-robin over (run, epochs) pairs, so that background load on a shared
    machine hits all optimizers alike."""
    done = dict.fromkeys(range(len(runs)), 0)
    while any(done[i] < ep for i, (_, ep) in enumerate(runs)):
        for i, (run, ep) in enumerate(runs):
            if done[i] < ep:
                run.epoch()
                done[i] += 1


def train(
    task: str, name: str, hp: dict[str, float], x: torch.Tensor, y: torch.Tensor, epochs: int,
    batch: int, seed: int,
) -> dict[str, list[float]]:  # fmt: skip
    run = Run(task, name, hp, x, y, batch, seed)
    for _ in range(epochs):
        run.epoch()
    return run.curve


def first_reach(curve: dict[str, list[float]], target: float) -> tuple[int | None, float | None, float | None]:
    """(epoch, wall s, CPU s) at which the training loss first reaches ``target``."""
    for epoch, loss in enumerate(curve["loss"]):
        if loss <= target:
            return epoch, curve["time"][epoch], curve["cpu"][epoch]
    return None, None, None


# K-FAC settings (chosen by hand on seed 0; ACKTR-like: large lr, KL clip bounds the step).
DEFAULT_HP: dict[str, dict[str, dict[str, float]]] = {
    "mlp": {"kfac": {"lr": 1.0, "momentum": 0.0, "damping": 1e-2, "kl_clip": 1e-3}},
    "autoencoder": {
        "kfac": {"lr": 3.0, "momentum": 0.5, "damping": 3e-2, "kl_clip": 3e-2, "factor_decay": 0.99, "sampled": 1}
    },
}
GRIDS = {"adam": [1e-3, 3e-3, 1e-2, 3e-2, 0.1], "sgd": [0.03, 0.1, 0.3, 1.0]}


def run_task(task: str, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    seeds = [int(s) for s in args.seeds.split(",")]
    hps: dict[str, dict[str, float]] = {"kfac": DEFAULT_HP[task]["kfac"]}
    tuning: dict[str, dict[str, float]] = {}
    for name, grid in GRIDS.items():
        if args.tune:
            finals = {lr: train(task, name, {"lr": lr}, x, y, args.epochs, args.batch, seeds[0])
                      ["loss"][-1] for lr in grid}  # fmt: skip
            tuning[name] = {str(k): v for k, v in finals.items()}
            best = min(finals, key=lambda k: finals[k] if np.isfinite(finals[k]) else np.inf)
            hps[name] = {"lr": best}
        else:
            hps[name] = {"lr": {"adam": 1e-3, "sgd": 0.03}[name]}
    curves: dict[str, list[dict[str, list[float]]]] = {k: [] for k in ("adam", "sgd", "kfac")}
    for seed in seeds:
        runs = [(Run(task, name, hps[name], x, y, args.batch, seed),
                 args.kfac_epochs if name == "kfac" else args.epochs) for name in curves]  # fmt: skip
        train_interleaved(runs)
        for run, _ in runs:
            curves[run.name].append(run.curve)
    summary = {}
    targets = [c["loss"][-1] for c in curves["adam"]]
    for name, cs in curves.items():
        reach = [first_reach(c, t) for c, t in zip(cs, targets, strict=True)]
        summary[name] = {
            "hp": hps[name],
            "epochs_run": len(cs[0]["loss"]) - 1,
            "final_loss": statistics.median(c["loss"][-1] for c in cs),
            "total_time": statistics.median(c["time"][-1] for c in cs),
            "total_cpu": statistics.median(c["cpu"][-1] for c in cs),
            "epochs_to_target": [r[0] for r in reach],
            "time_to_target": [r[1] for r in reach],
            "cpu_to_target": [r[2] for r in reach],
        }
    return {"task": task, "targets": targets, "summary": summary, "curves": curves,
            "tuning": tuning}  # fmt: skip


def _med(vals: list[Any]) -> str:
    if any(v is None for v in vals):
        ok = [v for v in vals if v is not None]
        return f"{len(ok)}/{len(vals)} reached" + (f" (median {statistics.median(ok):.3g})" if ok else "")
    return f"{statistics.median(vals):.3g}"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"adam": "tab:blue", "sgd": "tab:gray", "kfac": "tab:red"}
    labels = {"adam": "Adam", "sgd": "SGD+momentum", "kfac": "K-FAC (natrl)"}
    for name, cs in result["curves"].items():
        for i, c in enumerate(cs):
            kw: dict[str, Any] = {"color": colors[name], "alpha": 0.8,
                                  "label": labels[name] if i == 0 else None}  # fmt: skip
            axes[0].semilogy(range(len(c["loss"])), c["loss"], **kw)
            axes[1].semilogy(c["time"], c["loss"], **kw)
    target = statistics.median(result["targets"])
    for ax in axes:
        ax.axhline(target, color="k", ls=":", lw=1, label="Adam's final loss")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("wall time (s)")
    axes[0].set_ylabel("training loss (full set)")
    axes[0].legend()
    fig.suptitle(f"digits {result['task']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--kfac-epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", default="mlp,autoencoder")
    ap.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = load()
    results = [run_task(task, args, x, y) for task in args.tasks.split(",")]
    lines = [
        f"digits, minibatch {args.batch}, {args.threads} thread(s), seeds {args.seeds}; target = "
        f"Adam's training loss after {args.epochs} epochs (per seed); medians over seeds.",
        "",
        "| task | optimizer | hyperparameters | epochs run | final training loss | "
        "epochs to target | wall s to target | CPU s to target | wall s total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, s in r["summary"].items():
            hp = ", ".join(
                "fisher=sampled" if k == "sampled" else f"{k}={v:g}" for k, v in s["hp"].items() if v is not None
            )
            lines.append(
                f"| {r['task']} | {name} | {hp} | {s['epochs_run']} | {s['final_loss']:.2e} | "
                f"{_med(s['epochs_to_target'])} | {_med(s['time_to_target'])} | "
                f"{_med(s['cpu_to_target'])} | {s['total_time']:.2f} |"
            )
        plot(r, out / f"kfac_digits_{r['task']}.png")
    if args.tune:
        lines.append("")
        for r in results:
            grid = "; ".join(
                f"{name} " + ", ".join(f"lr={lr} → {loss:.2e}" for lr, loss in finals.items())
                for name, finals in r["tuning"].items()
            )
            lines.append(f"Learning-rate grid, {r['task']} (final training loss, seed 0): {grid}.")
    table = "\n".join(lines)
    (out / "kfac_digits.md").write_text(table + "\n")
    (out / "kfac_digits.json").write_text(json.dumps(results))
    print(table)


if __name__ == "__main__":
    main()
