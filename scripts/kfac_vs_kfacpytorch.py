"""natrl's K-FAC side by side with gpauloski's kfac-pytorch on scikit-learn's digits.

kfac-pytorch (``pip install --no-deps`` of its source; it is not on PyPI) is a preconditioner in
front of ``torch.optim.SGD``; natrl's :class:`~natrl.optim.KFAC` is run as the optimizer itself
with ``scale="batch_mean"`` and ``factor_init="identity"`` (kfac-pytorch's G scaling and
moving-average start), so that both take the same damping, factor decay, KL clip, learning
rate and momentum. Both start from the same initialisation and see the same minibatches.

* the check: after one step from the same state (the digits MLP and CNN in float64, the first
  minibatch; kfac-pytorch decomposes in float32, its default ``inv_dtype``), the relative
  Frobenius differences of every layer's A and G (kfac-pytorch's ``state_dict()["layers"]``)
  and of the preconditioned gradients (the ``.grad`` each leaves). On conv layers
  kfac-pytorch's A and G are natrl's divided by L² each (L output locations), so they are
  compared after multiplying by L².
* the run: ``--epochs`` epochs of minibatch ``--batch`` for each task, decomposition interval
  (``--intervals``, kfac-pytorch's ``inv_update_steps`` = natrl's ``inverse_interval``) and seed;
  the two libraries alternate epoch by epoch so that background load hits both alike. Recorded:
  the training loss on the full set after every epoch, wall and CPU seconds per step (the
  loss evaluation outside the timer).
* a control (``--libs natrl,natrl-f64 --name kfac-vs-natrl-f64``): natrl against itself with
  float64 factors and decompositions (``factor_dtype=torch.float64``), a difference of rounding
  only, to see how far rounding alone separates two curves of this training.

Writes ``<out>/<name>.json`` and prints a Markdown table.

    python scripts/kfac_vs_kfacpytorch.py [--tasks mlp,cnn] [--intervals 1,10] [--seeds 0,1,2] [--epochs 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from bench_kfac_digits import load  # the same standardised digits (this script's folder is on sys.path)
from torch import nn

from natrl.optim import KFAC

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "NVIDIA Apex is not installed", on import
    import kfac  # kfac-pytorch

warnings.filterwarnings("ignore", message="Full backward hook is firing")  # its hook on the first layer


def make_model(task: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if task == "mlp":
        return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 16, 10))  # fmt: skip


# output locations L of each conv layer of the CNN (8×8 maps); 1 for Linear layers
LOCATIONS = {"cnn": {"1": 64, "3": 64}, "mlp": {}}


def make_step(lib: str, model: nn.Module, hp: dict[str, float], interval: int) -> Callable[[], Any]:
    """The optimizer step of one library (called after ``loss.backward()``) and its zero_grad."""
    if lib.startswith("natrl"):
        opt = KFAC(model, lr=hp["lr"], momentum=hp["momentum"], damping=hp["damping"],
                   factor_decay=hp["factor_decay"], kl_clip=hp["kl_clip"], inverse_interval=interval,
                   scale="batch_mean", factor_init="identity",
                   factor_dtype=torch.float64 if lib == "natrl-f64" else None)  # fmt: skip
        return opt.step
    pre = kfac.preconditioner.KFACPreconditioner(
        model, factor_update_steps=1, inv_update_steps=interval, damping=hp["damping"],
        factor_decay=hp["factor_decay"], kl_clip=hp["kl_clip"], lr=hp["lr"],
    )  # fmt: skip
    sgd = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"])

    def step() -> None:
        pre.step()
        sgd.step()

    return step


class Run:
    """One library training one model; :meth:`epoch` runs one timed epoch."""

    def __init__(self, lib: str, task: str, hp: dict[str, float], interval: int, x: torch.Tensor,
                 y: torch.Tensor, batch: int, seed: int) -> None:  # fmt: skip
        self.lib, self.x, self.y, self.batch = lib, x, y, batch
        self.model = make_model(task, seed)
        self.step = make_step(lib, self.model, hp, interval)
        self.gen = torch.Generator().manual_seed(seed)  # the same minibatches for both libraries
        self.loss = [self.full_loss()]
        self.wall: list[float] = []  # seconds per step, one value per epoch
        self.cpu: list[float] = []

    def full_loss(self) -> float:
        # eval mode: kfac-pytorch's forward hook takes statistics from any pass in training mode,
        # no_grad included (natrl's only from passes that record gradients)
        self.model.eval()
        with torch.no_grad():
            loss = float(nn.functional.cross_entropy(self.model(self.x), self.y))
        self.model.train()
        return loss

    def epoch(self) -> None:
        x, y, model = self.x, self.y, self.model
        perm = torch.randperm(len(x), generator=self.gen)
        steps = range(0, len(x) - self.batch + 1, self.batch)  # remainder dropped: equal batches
        t0, c0 = time.perf_counter(), time.process_time()
        for i in steps:
            idx = perm[i : i + self.batch]
            model.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            self.step()
        self.wall.append((time.perf_counter() - t0) / len(steps))
        self.cpu.append((time.process_time() - c0) / len(steps))
        self.loss.append(self.full_loss())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def check(task: str, hp: dict[str, float], x: torch.Tensor, y: torch.Tensor, batch: int) -> dict[str, Any]:
    """Relative differences of A, G (kfac-pytorch's × L² on conv layers) and the preconditioned
    gradients after one step from the same state (kfac-pytorch's factors start at I like natrl's
    ``factor_init="identity"``; the identity part is taken out before scaling)."""
    model = make_model(task, 0).double()  # float64: the comparison is not limited by float32 cancellation
    x, y = x[:batch].double(), y[:batch]
    theirs, ours = copy.deepcopy(model), copy.deepcopy(model)
    pre = kfac.preconditioner.KFACPreconditioner(theirs, factor_update_steps=1, inv_update_steps=1,
                                                 damping=hp["damping"], factor_decay=hp["factor_decay"],
                                                 kl_clip=hp["kl_clip"], lr=hp["lr"])  # fmt: skip
    opt = KFAC(ours, lr=hp["lr"], damping=hp["damping"], factor_decay=hp["factor_decay"], kl_clip=hp["kl_clip"],
               inverse_interval=1, scale="batch_mean", factor_init="identity", preconditioner_only=True)  # fmt: skip
    for m in (theirs, ours):
        nn.functional.cross_entropy(m(x), y).backward()
    pre.step()
    opt.step()
    eps = hp["factor_decay"]
    out: dict[str, Any] = {"factors": {}, "grad": {}}
    their_layers = pre.state_dict()["layers"]
    for name, (a, g) in opt.factors().items():
        assert a is not None and g is not None
        scale = LOCATIONS[task].get(name, 1) ** 2
        errs = []
        for theirs_f, ours_f in ((their_layers[name]["A"], a), (their_layers[name]["G"], g)):
            eye = torch.eye(ours_f.shape[0], dtype=ours_f.dtype)
            errs.append(_rel(eps * eye + (theirs_f - eps * eye) * scale, ours_f))
        out["factors"][name] = errs
    for (name, p_theirs), p_ours in zip(theirs.named_parameters(), ours.parameters(), strict=True):
        assert p_theirs.grad is not None and p_ours.grad is not None
        out["grad"][name] = _rel(p_theirs.grad, p_ours.grad)
    assert opt.stats is not None
    out["kl_scale"] = opt.stats.kl_scale
    return out


def metadata() -> dict[str, Any]:
    """Date, natrl commit (and whether the work tree had changes) and command line, as ``natrl bench --index`` reads."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "natrl", "scripts")),
            "command": "python " + " ".join(sys.argv), "torch": torch.__version__,
            "machine": f"{platform.machine()}, 1 torch thread"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="mlp,cnn")
    ap.add_argument("--intervals", default="1,10", help="decomposition intervals (steps)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--damping", type=float, default=1e-2, help="kfac-pytorch's default 1e-3 oscillates here")
    ap.add_argument("--factor-decay", type=float, default=0.95, help="kfac-pytorch's default")
    ap.add_argument("--kl-clip", type=float, default=1e-4, help="kfac-pytorch's default 1e-3 oscillates here")
    ap.add_argument("--libs", default="natrl,kfac-pytorch", help="the first is the reference of the agreement")
    ap.add_argument("--name", default="kfac-vs-kfacpytorch", help="the JSON's name")
    ap.add_argument("--check-only", action="store_true", help="only the one-step agreement")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    hp = {"lr": args.lr, "momentum": args.momentum, "damping": args.damping, "factor_decay": args.factor_decay,
          "kl_clip": args.kl_clip}  # fmt: skip
    x, y = load()
    tasks = args.tasks.split(",")
    checks = {task: check(task, hp, x, y, args.batch) for task in tasks}
    for task, c in checks.items():
        fac = ", ".join(f"{n}: A {a:.1e} G {g:.1e}" for n, (a, g) in c["factors"].items())
        grad = max(c["grad"].values())
        print(f"one step, {task}: factors {fac}; preconditioned gradient max {grad:.1e} (ν = {c['kl_scale']:.3g})")
    meta = metadata() | {"kfac_pytorch": kfac.__version__, "args": vars(args)}
    result: dict[str, Any] = {"metadata": meta, "check": checks, "runs": []}
    if not args.check_only:
        for task in tasks:
            for interval in (int(i) for i in args.intervals.split(",")):
                for seed in (int(s) for s in args.seeds.split(",")):
                    runs = [Run(lib, task, hp, interval, x, y, args.batch, seed) for lib in args.libs.split(",")]
                    for _ in range(args.epochs):
                        for run in runs:
                            run.epoch()
                    for run in runs:
                        result["runs"].append({"task": task, "interval": interval, "seed": seed, "library": run.lib,
                                               "loss": run.loss, "wall": run.wall, "cpu": run.cpu})  # fmt: skip
                    finals = ", ".join(f"{run.lib} {run.loss[-1]:.3e}" for run in runs)
                    print(f"{task} every {interval} seed {seed}: final loss {finals}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result))
    if result["runs"]:
        print(table(result))


def _agree(a: list[float], b: list[float], rtol: float = 0.01) -> int:
    """How many leading entries of two loss curves agree to ``rtol``."""
    for i, (u, v) in enumerate(zip(a, b, strict=True)):
        if abs(u - v) > rtol * abs(v):
            return i
    return len(a)


def table(result: dict[str, Any]) -> str:
    """Mean over seeds of the loss after epochs 1, 5, 10, 20 (the last), and of the per-epoch step times
    (epochs 2 on: the first includes one-off allocations)."""
    runs = result["runs"]
    epochs = result["metadata"]["args"]["epochs"]
    marks = sorted({e for e in (1, 5, 10, epochs) if e <= epochs})
    lines = [
        "| task | decomposition every | library | " + " | ".join(f"loss, epoch {e}" for e in marks)
        + " | ms/step wall | ms/step CPU | epochs within 1% of the first row's, per seed |",
        "|---|---|---|" + "---|" * (len(marks) + 3),
    ]  # fmt: skip
    keys = sorted({(r["task"], r["interval"]) for r in runs}, key=lambda k: (k[0] != "mlp", k[1]))
    libs = result["metadata"]["args"]["libs"].split(",")
    for task, interval in keys:
        for lib in libs:
            rs = [r for r in runs if (r["task"], r["interval"], r["library"]) == (task, interval, lib)]
            loss = [statistics.mean(r["loss"][e] for r in rs) for e in marks]
            wall = 1e3 * statistics.mean(statistics.mean(r["wall"][1:] or r["wall"]) for r in rs)
            cpu = 1e3 * statistics.mean(statistics.mean(r["cpu"][1:] or r["cpu"]) for r in rs)
            same = ""
            if lib != libs[0]:  # per seed: the leading epochs whose losses agree to 1 % with the first library's
                ref = {r["seed"]: r["loss"] for r in runs
                       if (r["task"], r["interval"], r["library"]) == (task, interval, libs[0])}  # fmt: skip
                same = ", ".join(str(_agree(r["loss"], ref[r["seed"]]) - 1) for r in rs)
            lines.append(f"| {task} | {interval} | {lib} | " + " | ".join(f"{v:.2e}" for v in loss)
                         + f" | {wall:.2f} | {cpu:.2f} | {same} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
