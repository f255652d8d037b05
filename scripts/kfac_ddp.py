"""Data-parallel K-FAC on scikit-learn's digits: replica drift, agreement with one process, step time.

P gloo ranks (spawned on this machine, one thread each) train a DistributedDataParallel MLP
64-128-128-10 with natrl's KFAC, each on its 1/P slice of every minibatch; then one process
trains the same model on the whole minibatches. Printed:

* drift: max |θ_rank − θ_rank0| over the ranks' parameters after the run (0 = bit-identical);
* vs one process: max |θ_rank0 − θ_single| and the same relative to max |θ_single|;
* mean time per step on rank 0 after 5 warm-up steps (forward, backward with DDP's gradient all-reduce, K-FAC step), the
  share of K-FAC's own collectives (``KFACStats.comm_seconds``: factor all-reduce, decomposition
  broadcasts, including waiting for the rank that decomposes) and of DDP's gradient all-reduce
  (timed apart: all-reduces of one buffer of the gradient's size), and one process's time per
  step on the whole batch.

``--no-kfac-comm`` builds KFAC with ``process_group=None`` (each rank keeps its own factors, as
natrl did before data-parallel K-FAC) to show the drift that the factor all-reduce removes.
``--model cnn`` trains the digits CNN (two 3×3 convs, 16 and 32 channels, average pooling, a
Linear read-out) instead of the MLP.

``--kaisa`` sweeps the placement of the eigendecompositions (KAISA, Pauloski et al. 2021) for
the MLP and the CNN at 2 and 4 ranks, ``--steps`` steps each, and prints one table: natrl's
``grad_worker_fraction`` 1/P (memory-optimal: each layer's decompositions on one rank, which
preconditions the layer and broadcasts the preconditioned gradient), 1/2 (hybrid, at 4 ranks) and
1 (``assignment="round_robin"``: each decomposition on one rank, broadcast to all, which is
KAISA's communication-optimal end), its ``assignment="compute_all"`` (every rank decomposes
everything, nothing broadcast), the bytes of decompositions each rank holds after the run
(``KFAC.decomposition_bytes``) and, where kfac-pytorch is installed, its ``grad_worker_fraction`` 1/P
(memory-optimal: one rank decomposes and preconditions each layer, then broadcasts the
preconditioned gradient), 1/2 (hybrid) and 1 (communication-optimal). For these runs both
libraries take kfac-pytorch's conventions and the settings of ``kfac_vs_kfacpytorch.py`` (natrl
with ``scale="batch_mean"`` and ``factor_init="identity"``; lr 0.1, momentum 0.9, damping 1e-2,
KL clip 1e-3, decompositions every ``--inverse-interval`` steps), so the single-process
comparison is left out. natrl's
communication is ``KFACStats.comm_seconds``; kfac-pytorch's collectives are asynchronous, so
after its timed steps each rank runs the same number of steps again with ``all_reduce`` and
``broadcast`` made blocking and timed (its overlap with computation is then lost: that run's
step time is shown too).

    python scripts/kfac_ddp.py [--world 2] [--steps 100] [--batch 64] [--assignment round_robin] [--model mlp]
                               [--grad-worker-fraction 1]
    python scripts/kfac_ddp.py --kaisa [--steps 60] [--inverse-interval 10] [--out docs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import load_digits
from torch import nn

from natrl.optim import KFAC


def load() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = d.data.astype(np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    return torch.tensor(x), torch.tensor(d.target)


def make_model(seed: int, kind: str = "mlp") -> nn.Module:
    torch.manual_seed(seed)
    if kind == "cnn":
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(),
                             nn.Conv2d(16, 32, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                             nn.Linear(32 * 16, 10))  # fmt: skip
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))


_COMM = [0.0]  # seconds blocked in kfac-pytorch's collectives (the blocking phase)


def _blocking(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (``dist.all_reduce`` or ``dist.broadcast``) waited for and timed into ``_COMM``."""

    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        work = fn(*a, **kw)
        if work is not None:
            work.wait()
        _COMM[0] += time.perf_counter() - t0
        return work

    return wrapper


def make_kfac_pytorch(net: nn.Module, args: argparse.Namespace, world: int) -> Callable[[], None]:
    """kfac-pytorch's preconditioner and SGD with its defaults; the step to call after backward."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "NVIDIA Apex is not installed", on import
        import kfac

    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    pre = kfac.preconditioner.KFACPreconditioner(
        net, factor_update_steps=1, inv_update_steps=args.inverse_interval, damping=1e-2, factor_decay=0.95,
        kl_clip=1e-3, lr=0.1, grad_worker_fraction=max(args.grad_worker_fraction, 1.0 / world),
    )  # fmt: skip
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step() -> None:
        pre.step()
        sgd.step()

    return step


def batches(n: int, batch: int, steps: int, seed: int) -> list[torch.Tensor]:
    """``steps`` minibatch index sets: shuffled passes over the n examples (remainders dropped)."""
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=g)
        out += [perm[i : i + batch] for i in range(0, n - batch + 1, batch)]
    return out[:steps]


def train(args: argparse.Namespace, rank: int, world: int) -> dict[str, Any]:
    """Train on rows [rank·B/P, (rank+1)·B/P) of each minibatch; world 1 is the whole batch."""
    x, y = load()
    model = make_model(args.seed, args.model)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    group = "default" if world > 1 and not args.no_kfac_comm else None
    opt: KFAC | None = None
    step: Callable[[], Any]
    if args.lib == "kfac-pytorch":
        step = make_kfac_pytorch(net, args, world)
    elif args.kaisa:  # kfac-pytorch's conventions and defaults
        opt = KFAC(net, lr=0.1, momentum=0.9, damping=1e-2, kl_clip=1e-3, inverse_interval=args.inverse_interval,
                   scale="batch_mean", factor_init="identity", assignment=args.assignment,
                   grad_worker_fraction=args.grad_worker_fraction, process_group=group)  # fmt: skip
    else:
        opt = KFAC(net, lr=args.lr, momentum=0.0, damping=args.damping, kl_clip=args.kl_clip,
                   inverse_interval=args.inverse_interval, assignment=args.assignment,
                   grad_worker_fraction=args.grad_worker_fraction, process_group=group)  # fmt: skip
    if opt is not None:
        step = opt.step
    share = args.batch // world
    step_s, comm_s, losses, cpu_s = [], [], [], []
    plan = batches(len(y), args.batch, args.steps, args.seed)
    if args.lib == "kfac-pytorch" and world > 1:
        plan = plan + plan  # a second pass with blocking, timed collectives
    originals = dist.all_reduce, dist.broadcast
    try:
        for k, idx in enumerate(plan):
            if k == args.steps:
                dist.all_reduce = _blocking(originals[0])
                dist.broadcast = _blocking(originals[1])
            idx = idx[rank * share : (rank + 1) * share]
            if world > 1:
                dist.barrier()  # time each step from a common start
            _COMM[0] = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            net.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            step()
            step_s.append(time.perf_counter() - t0)
            cpu_s.append(time.process_time() - c0)
            comm_s.append(opt.stats.comm_seconds if opt is not None and opt.stats is not None else _COMM[0])
            losses.append(float(loss.detach()))
    finally:
        dist.all_reduce, dist.broadcast = originals
    out: dict[str, Any] = {"params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]), "step_s": step_s,
           "comm_s": comm_s, "cpu_s": cpu_s, "loss": losses,
           "decomposition_bytes": opt.decomposition_bytes() if opt is not None else None}  # fmt: skip
    if world > 1:  # DDP's gradient all-reduce, timed apart on a buffer of the gradient's size
        buf = torch.zeros_like(out["params"])
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            dist.all_reduce(buf)
        out["grad_allreduce_s"] = (time.perf_counter() - t0) / args.steps
    return out


def worker(rank: int, world: int, args: argparse.Namespace | list[argparse.Namespace], init_file: str,
           out_dir: str) -> None:  # fmt: skip
    """One rank: :func:`train` for ``args`` (or for each of a list, in one process group)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if isinstance(args, list):
            out: Any = []
            for a in args:
                out.append(train(a, rank, world))
                dist.barrier()
        else:
            out = train(args, rank, world)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # every rank done communicating before any tears gloo down
    finally:
        dist.destroy_process_group()


def spawn(args: argparse.Namespace, world: int, configs: list[argparse.Namespace] | None = None) -> list[Any]:
    """Run :func:`train` on ``world`` gloo ranks for ``args`` (or each of ``configs``); each rank's result(s)."""
    with tempfile.TemporaryDirectory() as tmp:
        job = configs if configs is not None else args
        ctx = mp.start_processes(worker, args=(world, job, os.path.join(tmp, "rendezvous"), tmp),
                                 nprocs=world, join=False, start_method="spawn")  # fmt: skip
        deadline = time.monotonic() + args.timeout
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {world} ranks did not finish in {args.timeout:.0f} s")
        finally:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]


def _phase_means(runs: list[dict[str, Any]], key: str, steps: int, second: bool = False) -> float:
    """Mean over ranks of the per-step mean of ``key`` in the first (or second) pass, after 5 warm-up steps."""
    lo = steps if second else 0
    part = slice(lo + min(5, steps - 1), lo + steps)
    return float(np.mean([np.mean(r[key][part]) for r in runs]))


def kaisa(args: argparse.Namespace) -> None:
    """The placement sweep: natrl's and kfac-pytorch's grad_worker_fraction 1/P, 1/2, 1; natrl's compute_all."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import kfac  # noqa: F401

        have_kfac = True
    except ImportError:
        have_kfac = False
    rows: list[dict[str, Any]] = []
    for world in (int(w) for w in args.worlds.split(",")):
        configs: list[argparse.Namespace] = []  # one process group per world size: the ranks start once
        for model in args.models.split(","):
            fractions = [1.0 / world] + ([0.5] if world > 2 else []) + [1.0]
            settings = [("natrl", "round_robin", f) for f in fractions] + [("natrl", "compute_all", 1.0)]
            if have_kfac:
                settings += [("kfac-pytorch", "", f) for f in fractions]
            for lib, assignment, fraction in settings:
                configs.append(argparse.Namespace(**{**vars(args), "model": model, "world": world, "lib": lib,
                                                     "assignment": assignment or "round_robin",
                                                     "grad_worker_fraction": fraction}))  # fmt: skip
        per_rank = spawn(args, world, configs)
        for i, a in enumerate(configs):
            runs = [per_rank[r][i] for r in range(world)]
            theta0 = runs[0]["params"]
            setting = f"grad_worker_fraction={a.grad_worker_fraction:g}"
            if a.lib == "natrl" and a.assignment == "compute_all":
                setting = "assignment=compute_all"
            row = {
                "model": a.model, "world": world, "lib": a.lib, "setting": setting,
                "drift": max(float((r["params"] - theta0).abs().max()) for r in runs),
                "step_ms": 1e3 * _phase_means(runs, "step_s", args.steps),
                "cpu_ms": 1e3 * _phase_means(runs, "cpu_s", args.steps),
                "grad_allreduce_ms": 1e3 * float(np.mean([r["grad_allreduce_s"] for r in runs])),
                "final_loss": float(np.mean([r["loss"][args.steps - 1] for r in runs])),
            }  # fmt: skip
            if a.lib == "natrl":
                row["comm_ms"] = 1e3 * _phase_means(runs, "comm_s", args.steps)
                row["decomposition_kib"] = [r["decomposition_bytes"] / 1024 for r in runs]  # per rank
            else:
                row["blocking_step_ms"] = 1e3 * _phase_means(runs, "step_s", args.steps, second=True)
                row["comm_ms"] = 1e3 * _phase_means(runs, "comm_s", args.steps, second=True)
            rows.append(row)
            print(json.dumps(row), flush=True)
    rows.sort(key=lambda r: (r["model"] != "mlp", r["world"]))

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "natrl", "scripts")),
            "command": "python " + " ".join(sys.argv), "torch": torch.__version__, "steps": args.steps,
            "batch": args.batch, "inverse_interval": args.inverse_interval,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread per rank"}  # fmt: skip
    lines = [
        "| model | ranks | library, placement | ms/step wall | ms/step CPU | K-FAC collectives ms (share) "
        "| DDP gradient all-reduce ms (share) | decompositions KiB per rank | replica drift "
        "| mean minibatch loss, last step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        step = r.get("blocking_step_ms", r["step_ms"])  # the share is of the run in which comm was timed
        blocking = f" (blocking: {r['blocking_step_ms']:.1f})" if "blocking_step_ms" in r else ""
        lines.append(
            f"| {r['model']} | {r['world']} | {r['lib']} {r['setting']} | {r['step_ms']:.1f}{blocking} "
            f"| {r['cpu_ms']:.1f} | {r['comm_ms']:.1f} ({100 * r['comm_ms'] / step:.0f}%) "
            f"| {r['grad_allreduce_ms']:.1f} ({100 * r['grad_allreduce_ms'] / r['step_ms']:.0f}%) "
            f"| {_kib(r.get('decomposition_kib'))} | {r['drift']:.1e} | {r['final_loss']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "kfac-ddp-kaisa.json"), "w") as f:
            json.dump({"metadata": meta, "rows": [r | {"library": r["lib"]} for r in rows]}, f, indent=1)


def _kib(per_rank: list[float] | None) -> str:
    """Per-rank KiB as ``min–max`` (or one value when all are equal); ``–`` when not measured."""
    if not per_rank:
        return "–"
    lo, hi = min(per_rank), max(per_rank)
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64, help="whole minibatch (each rank gets batch / world)")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--damping", type=float, default=1e-2)
    p.add_argument("--kl-clip", type=float, default=1e-3)
    p.add_argument("--inverse-interval", type=int, default=10)
    p.add_argument("--assignment", choices=["round_robin", "compute_all"], default="round_robin")
    p.add_argument("--grad-worker-fraction", type=float, default=1.0, help="KFAC's grad_worker_fraction")
    p.add_argument("--no-kfac-comm", action="store_true", help="KFAC(process_group=None): per-rank factors")
    p.add_argument("--kaisa", action="store_true", help="the placement sweep (see above)")
    p.add_argument("--models", default="mlp,cnn", help="--kaisa: the models")
    p.add_argument("--worlds", default="2,4", help="--kaisa: the numbers of ranks")
    p.add_argument("--out", default="", help="--kaisa: write kfac-ddp-kaisa.json here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    args.lib = "natrl"
    if args.kaisa:
        if args.batch % 4:
            p.error("--batch must be a multiple of 4 for --kaisa")
        kaisa(args)
        return
    if args.batch % args.world:
        p.error("--batch must be a multiple of --world")

    runs = spawn(args, args.world)
    torch.set_num_threads(1)
    single = train(args, 0, 1)

    theta0 = runs[0]["params"]
    drift = max(float((r["params"] - theta0).abs().max()) for r in runs)
    vs_single = float((theta0 - single["params"]).abs().max())
    scale = float(single["params"].abs().max())
    warm = slice(min(5, args.steps - 1), None)  # the first steps include one-off allocations
    step_ms = 1e3 * float(np.mean(runs[0]["step_s"][warm]))  # mean: every 10th step decomposes
    step_med = 1e3 * float(np.median(runs[0]["step_s"][warm]))
    kfac_comm_ms = 1e3 * float(np.mean(runs[0]["comm_s"][warm]))
    grad_ms = 1e3 * runs[0]["grad_allreduce_s"]
    single_ms = 1e3 * float(np.mean(single["step_s"][warm]))
    comm = ("per-rank factors (process_group=None)" if args.no_kfac_comm
            else f"assignment={args.assignment}, grad_worker_fraction={args.grad_worker_fraction:g}")  # fmt: skip
    name = "MLP 64-128-128-10" if args.model == "mlp" else "CNN"
    print(f"digits {name}, {args.world} gloo ranks x batch {args.batch // args.world}, "
          f"{args.steps} K-FAC steps, {comm}, torch {torch.__version__}")  # fmt: skip
    last = float(np.mean([r["loss"][-1] for r in runs]))  # the mean of equal slices' losses: the batch's
    print(f"final minibatch loss: mean over ranks {last:.4f}, one process {single['loss'][-1]:.4f}")
    print(f"replica drift max|θ_r − θ_0|          {drift:.3e}")
    print(f"vs one process, whole batch            {vs_single:.3e} (relative to max|θ| {vs_single / scale:.3e})")
    print(f"time per step (mean, rank 0)           {step_ms:.2f} ms (median {step_med:.2f})")
    print(f"  K-FAC collectives                    {kfac_comm_ms:.2f} ms ({100 * kfac_comm_ms / step_ms:.0f}%)")
    print(f"  DDP gradient all-reduce (timed apart) {grad_ms:.2f} ms ({100 * grad_ms / step_ms:.0f}%)")
    print(f"one process, whole batch               {single_ms:.2f} ms per step (mean)")


if __name__ == "__main__":
    main()
