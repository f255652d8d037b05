"""Benchmark: EKFAC against K-FAC, Adam and SGD on three small supervised tasks (CPU, one thread).

Tasks (minibatches of ``--batch`` examples):

* ``mlp``: scikit-learn's digits (shipped with sklearn, no download; standardised, a fixed
  80/20 split), a 64-128-128-10 tanh MLP, cross-entropy;
* ``cnn``: the same digits as 1 × 8 × 8 images, conv 3×3 (16) → tanh → conv 3×3 (32) → tanh
  → 2×2 average pool → linear, cross-entropy;
* ``transformer``: sort 6 tokens from a vocabulary of 8 with one pre-norm transformer block
  (embedding + learned positions, LayerNorm, single-head attention written with four
  ``nn.Linear`` projections, a GELU feed-forward block, a linear read-out; width 32);
  per-token cross-entropy on fresh random sequences each step, an "epoch" being 25 steps,
  evaluated on 512 fixed held-out sequences.

Every optimizer trains for ``--epochs`` epochs from the same initialisation per seed. K-FAC
(``method="eigen"``) and EKFAC (``method="ekfac"``) share every setting (learning rate 1,
damping 0.01, factor decay 0.95, eigenbasis every 10 steps, empirical Fisher) and the same
grid of six (momentum, KL clip) pairs; SGD (momentum 0.9) and Adam get a grid of four
learning rates. Each optimizer's setting is the best of its grid on seed 0 by the final
training loss (``mlp``, ``cnn``) or held-out loss (``transformer``). Reported per task and
optimizer: mean ± std over ``--seeds`` of the final training loss, of the held-out loss and
accuracy, and of the training wall time.

Writes ``<name>-results.json`` and ``<name>-table.md`` into ``--out`` (default
``bench-out/``; ``--name`` default ``kfac-ekfac``).

Usage::

    python scripts/bench_ekfac.py [--epochs 20] [--seeds 0,1,2] [--out docs/bench]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from natrl.optim import KFAC

# (momentum, KL clip) pairs at learning rate 1: the KL clip bounds K-FAC's step (at these settings it is
# active at nearly every step, so it, not the learning rate, sets the step length); momentum amplifies it
KFAC_GRID = tuple((0.9, kl) for kl in (1e-5, 1e-4, 1e-3)) + tuple((0.0, kl) for kl in (1e-3, 1e-2, 1e-1))
GRIDS: dict[str, tuple[Any, ...]] = {
    "sgd": (0.03, 0.1, 0.3, 1.0),
    "adam": (1e-3, 3e-3, 1e-2, 3e-2),
    "kfac": KFAC_GRID,
    "ekfac": KFAC_GRID,
}
KFAC_COMMON = {"lr": 1.0, "damping": 1e-2, "factor_decay": 0.95, "inverse_interval": 10}
LABELS = {"sgd": "SGD + momentum", "adam": "Adam", "kfac": "K-FAC", "ekfac": "EKFAC"}
VOCAB, LENGTH, WIDTH = 8, 6, 32
STEPS_PER_EPOCH = 25  # transformer


def digits(seed: int = 0) -> tuple[torch.Tensor, ...]:
    d = load_digits()
    x = d.data.astype(np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    xt, yt = torch.tensor(x[order]), torch.tensor(d.target[order])
    return xt[:cut], yt[:cut], xt[cut:], yt[cut:]


class Block(nn.Module):
    """One pre-norm transformer block with a hand-written single-head attention."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(0.1 * torch.randn(LENGTH, WIDTH))
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))
        self.out = nn.Linear(WIDTH, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx) + self.pos
        z = self.norm1(h)
        att = torch.softmax(self.q(z) @ self.k(z).transpose(1, 2) / math.sqrt(WIDTH), -1)
        h = h + self.o(att @ self.v(z))
        h = h + self.ff(self.norm2(h))
        return self.out(h)


def make_model(task: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if task == "mlp":
        return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))
    if task == "cnn":
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(),
                             nn.Conv2d(16, 32, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                             nn.Linear(32 * 16, 10))  # fmt: skip
    return Block()


def sort_batch(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, VOCAB, (n, LENGTH), generator=gen)
    return x, torch.sort(x, dim=1).values


def loss_and_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        out = model(x)
        out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
        return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


def make_opt(name: str, model: nn.Module, hp: Any) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hp, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=hp)
    momentum, kl = hp
    with warnings.catch_warnings():  # the transformer's positional table keeps its plain gradient
        warnings.simplefilter("ignore", UserWarning)
        return KFAC(model, momentum=momentum, kl_clip=kl, method="ekfac" if name == "ekfac" else "eigen", **KFAC_COMMON)


def train(task: str, name: str, lr: Any, seed: int, epochs: int, batch: int, data: tuple[torch.Tensor, ...]) -> dict:
    model = make_model(task, seed)
    opt = make_opt(name, model, lr)
    gen = torch.Generator().manual_seed(seed)
    seconds = 0.0
    curve = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        if task == "transformer":
            batches = [sort_batch(gen, batch) for _ in range(STEPS_PER_EPOCH)]
        else:
            xtr, ytr = data[0], data[1]
            perm = torch.randperm(len(xtr), generator=gen)
            batches = [(xtr[perm[i : i + batch]], ytr[perm[i : i + batch]]) for i in range(0, len(xtr), batch)]
        for xb, yb in batches:
            out = model(xb)
            loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - t0
        if task == "transformer":
            curve.append(loss_and_acc(model, data[2], data[3])[0])
        else:
            curve.append(loss_and_acc(model, data[0], data[1])[0])
    train_loss = curve[-1] if task != "transformer" else float("nan")
    test_loss, test_acc = loss_and_acc(model, data[2], data[3])
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return {"task": task, "optimizer": name, "hp": _hp(lr), "seed": seed, "train_loss": train_loss,
            "test_loss": test_loss, "test_acc": test_acc, "seconds": seconds, "curve": curve,
            "finite": finite}  # fmt: skip


def _hp(hp: Any) -> str:
    return f"momentum {hp[0]:g}, KL clip {hp[1]:g}" if isinstance(hp, tuple) else f"lr {hp:g}"


def objective(run: dict) -> float:
    v = run["test_loss"] if run["task"] == "transformer" else run["train_loss"]
    return v if math.isfinite(v) and run["finite"] else math.inf


def fmt(values: list[float], spec: str) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return format(vals[0], spec)
    return f"{format(statistics.mean(vals), spec)} ± {format(statistics.stdev(vals), spec)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="mlp,cnn,transformer")
    ap.add_argument("--optimizers", default="sgd,adam,kfac,ekfac")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--name", default="kfac-ekfac")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    xtr, ytr, xte, yte = digits()
    gen = torch.Generator().manual_seed(12345)
    held = sort_batch(gen, 512)
    runs: list[dict[str, Any]] = []
    chosen: dict[str, dict[str, float]] = {}
    grids: dict[str, dict[str, dict[str, float]]] = {}
    start = time.perf_counter()
    for task in args.tasks.split(","):
        data = (xtr, ytr, xte, yte) if task != "transformer" else (None, None, *held)
        for name in args.optimizers.split(","):
            tried = {lr: train(task, name, lr, seeds[0], args.epochs, args.batch, data) for lr in GRIDS[name]}
            best = min(tried, key=lambda hp: objective(tried[hp]))
            chosen.setdefault(task, {})[name] = best
            grids.setdefault(task, {})[name] = {_hp(hp): objective(r) for hp, r in tried.items()}
            runs.append(tried[best])
            for seed in seeds[1:]:
                runs.append(train(task, name, best, seed, args.epochs, args.batch, data))
            print(f"{task} {name} {_hp(best)} " + " ".join(f"{objective(r):.4g}" for r in runs[-len(seeds):]),
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    write(args, runs, chosen, grids, seeds, time.perf_counter() - start)


def write(
    args: argparse.Namespace, runs: list[dict], chosen: dict, grids: dict, seeds: list[int], total: float
) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "natrl/optim"], capture_output=True,
                                    text=True, check=True).stdout.strip())  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "", False
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    command = "python " + " ".join(sys.argv)
    meta = {"date": date, "commit": commit, "dirty": dirty, "command": command, "torch": torch.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread", "seconds": round(total, 1),
            "epochs": args.epochs, "batch": args.batch, "seeds": seeds, "kfac": KFAC_COMMON, "grids": GRIDS,
            "chosen_lr": chosen, "grid_objective_seed0": grids}  # fmt: skip
    (out / f"{args.name}-results.json").write_text(json.dumps({"metadata": meta, "rows": runs}, indent=1) + "\n")
    lines = [
        "# EKFAC against K-FAC, Adam and SGD",
        "",
        f"Command: `{command}`  ",
        f"Code: natrl commit `{commit[:12]}`{' (natrl/optim had uncommitted changes)' if dirty else ''}, {date}; "
        f"torch {torch.__version__}, one thread; {total / 60:.1f} min in all (grids included).",
        "",
        "Protocol (see the script's docstring): minibatch "
        f"{args.batch}, {args.epochs} epochs (transformer: {args.epochs} × {STEPS_PER_EPOCH} steps on fresh "
        f"sequences), seeds {', '.join(map(str, seeds))}; mean ± std over seeds. K-FAC and EKFAC share learning "
        "rate 1, damping 0.01, factor decay 0.95, eigenbasis every 10 steps, the empirical Fisher; each optimizer's "
        "setting (learning rate; K-FAC and EKFAC: momentum and KL clip) is the best of its grid on seed 0 "
        "(training loss; transformer: held-out loss). Train "
        "loss: cross-entropy on the whole training split after the last epoch; held out: the digits' 20% test "
        "split, or 512 fixed random sequences (per-token loss and accuracy). Time: training only, on a shared "
        "2-core machine (indicative).",
        "",
        "| task | optimizer | setting | train loss | held-out loss | held-out accuracy | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    task_names = {"mlp": "digits MLP 64-128-128-10", "cnn": "digits CNN (2 conv + linear)",
                  "transformer": "transformer block, sort 6 tokens"}  # fmt: skip
    for task in chosen:
        for name, lr in chosen[task].items():
            rs = [r for r in runs if r["task"] == task and r["optimizer"] == name]
            lines.append(
                f"| {task_names[task]} | {LABELS[name]} | {_hp(lr)} | {fmt([r['train_loss'] for r in rs], '.3g')} | "
                f"{fmt([r['test_loss'] for r in rs], '.3g')} | {fmt([r['test_acc'] for r in rs], '.3f')} | "
                f"{fmt([r['seconds'] for r in rs], '.1f')} |"
            )
    lines += ["", "Grids (seed 0, the selection objective; inf: diverged):", ""]
    for task, per in grids.items():
        cells = "; ".join(f"{LABELS[n]}: " + ", ".join(f"{k} → {v:.3g}" for k, v in g.items()) for n, g in per.items())
        lines.append(f"- {task}: {cells}")
    (out / f"{args.name}-table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
