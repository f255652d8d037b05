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

    python scripts/kfac_ddp.py [--world 2] [--steps 100] [--batch 64] [--assignment round_robin]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
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


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))


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
    model = make_model(args.seed)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    group = "default" if world > 1 and not args.no_kfac_comm else None
    opt = KFAC(net, lr=args.lr, momentum=0.0, damping=args.damping, kl_clip=args.kl_clip, inverse_interval=10,
               assignment=args.assignment, process_group=group)  # fmt: skip
    share = args.batch // world
    step_s, comm_s, losses = [], [], []
    for idx in batches(len(y), args.batch, args.steps, args.seed):
        idx = idx[rank * share : (rank + 1) * share]
        if world > 1:
            dist.barrier()  # time each step from a common start
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
        assert opt.stats is not None
        comm_s.append(opt.stats.comm_seconds)
        losses.append(float(loss.detach()))
    out = {"params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]), "step_s": step_s,
           "comm_s": comm_s, "loss": losses}  # fmt: skip
    if world > 1:  # DDP's gradient all-reduce, timed apart on a buffer of the gradient's size
        buf = torch.zeros_like(out["params"])
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            dist.all_reduce(buf)
        out["grad_allreduce_s"] = (time.perf_counter() - t0) / args.steps
    return out


def worker(rank: int, world: int, args: argparse.Namespace, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(train(args, rank, world), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # every rank done communicating before any tears gloo down
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64, help="whole minibatch (each rank gets batch / world)")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--damping", type=float, default=1e-2)
    p.add_argument("--kl-clip", type=float, default=1e-3)
    p.add_argument("--assignment", choices=["round_robin", "compute_all"], default="round_robin")
    p.add_argument("--no-kfac-comm", action="store_true", help="KFAC(process_group=None): per-rank factors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    if args.batch % args.world:
        p.error("--batch must be a multiple of --world")

    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(worker, args=(args.world, args, os.path.join(tmp, "rendezvous"), tmp),
                                 nprocs=args.world, join=False, start_method="spawn")  # fmt: skip
        deadline = time.monotonic() + args.timeout
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {args.world} ranks did not finish in {args.timeout:.0f} s")
        finally:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
        runs = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(args.world)]
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
    comm = "per-rank factors (process_group=None)" if args.no_kfac_comm else f"assignment={args.assignment}"
    print(f"digits MLP 64-128-128-10, {args.world} gloo ranks x batch {args.batch // args.world}, "
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
