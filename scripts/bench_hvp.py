"""Micro-benchmark: Hessian-vector products, forward-over-reverse vs reverse-over-reverse.

``natrl.curvature.hvp`` computes H v either as a jvp of ``torch.func.grad`` (forward-over-reverse:
a fresh forward and backward per product, nothing stored) or as one backward pass through a
gradient graph recorded once with ``create_graph=True`` (reverse-over-reverse). This script
times, for a few models (MLPs and a small CNN on digits-shaped data, cross-entropy loss):

* build: constructing the operator (for reverse-over-reverse the forward + backward with
  ``create_graph``; forward-over-reverse builds nothing);
* first: the first product (forward-over-reverse tests forward-mode AD support there);
* mv: one product after the first (the median, or the minimum with ``--stat min``);
* k=10: build + 10 products, the cost of a short CG or Lanczos run.

Candidates run interleaved round-robin so background load hits both alike.

Usage::

    python scripts/bench_hvp.py                     # 1 thread, CPU, markdown table
    python scripts/bench_hvp.py --repeats 50 --stat min
    python scripts/bench_hvp.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from natrl.curvature import hvp
from natrl.params import flatten, functional


def mlp(hidden: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = []
    d = 64
    for h in hidden:
        layers += [nn.Linear(d, h), nn.Tanh()]
        d = h
    layers.append(nn.Linear(d, 10))
    return nn.Sequential(*layers)


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 64, 10),
    )


CASES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "MLP 64-32-10, batch 256": (lambda: mlp((32,)), 256),
    "MLP 64-256-256-10, batch 1024": (lambda: mlp((256, 256)), 1024),
    "tanh MLP 64-64-64-10, batch 64": (lambda: mlp((64, 64)), 64),
    "CNN 2 conv + linear, batch 256": (cnn, 256),
}


def timed(f: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    f()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(
    loss: Callable[[Tensor], Tensor], theta: Tensor, v: Tensor, ref: Tensor, mode: str, device: torch.device
) -> tuple[float, float, list[float], float]:
    """Seconds to build, for the first product and for 9 more; relative error against ``ref``."""
    box: dict[str, Callable[[Tensor], Tensor]] = {}

    def build() -> None:
        box["op"] = hvp(loss, theta, mode=mode)  # type: ignore[arg-type]

    def product() -> None:
        box["out"] = box["op"](v)

    t_build = timed(build, device)
    t_first = timed(product, device)
    rest = [timed(product, device) for _ in range(9)]
    return t_build, t_first, rest, float((box["out"] - ref).norm() / ref.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    stat = statistics.median if args.stat == "median" else min
    modes = ("forward-over-reverse", "reverse-over-reverse")
    print(f"device {device}, {args.dtype}, {args.threads} thread(s), {args.stat} of {args.repeats}, times in ms\n")
    print("| model | P | mode | build | first mv | mv | build + 10 mv | agree |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (make, batch) in CASES.items():
        torch.manual_seed(0)
        net = make().to(device, dtype)
        f = functional(net)
        theta = flatten(net.parameters()).detach()
        x = torch.randn(batch, 64, device=device, dtype=dtype)
        y = torch.randint(0, 10, (batch,), device=device)

        def loss(th: Tensor, f: Callable[..., Tensor] = f, x: Tensor = x, y: Tensor = y) -> Tensor:
            return nn.functional.cross_entropy(f(th, x), y)

        v = torch.randn(theta.numel(), device=device, dtype=dtype)
        ref = hvp(loss, theta, mode="reverse-over-reverse")(v)
        times: dict[str, dict[str, list[float]]] = {m: {"build": [], "first": [], "mv": [], "k10": []} for m in modes}
        agree = {}
        for _ in range(args.repeats):
            for m in modes:
                build, first, rest, err = measure(loss, theta, v, ref, m, device)
                times[m]["build"].append(build)
                times[m]["first"].append(first)
                times[m]["mv"].append(statistics.median(rest))
                times[m]["k10"].append(build + first + sum(rest))
                agree[m] = err
        for m in modes:
            row = [stat(times[m][k]) * 1e3 for k in ("build", "first", "mv", "k10")]
            cells = " | ".join(f"{t:.2f}" for t in row)
            print(f"| {name} | {theta.numel():,} | {m} | {cells} | {agree[m]:.1e} |")


if __name__ == "__main__":
    main()
