"""Micro-benchmark: one exact Fisher-vector product vs one gradient vs one KL-Hessian product.

For tanh MLP policies of TRPO size, times one call of each of the following (the
median over ``--repeats`` rounds, or the minimum with ``--stat min``, steadier on a
shared machine; the candidates run interleaved round-robin so that background load
hits all of them alike):

* grad: one gradient of the importance-sampled surrogate −mean(exp(log π − log π_old)·Â),
  forward + ``loss.backward()`` on the ``nn.Module`` (the reference for the ratios);
* grad θ: the same through the flat-parameter function ``natrl.params.functional``
  and ``torch.autograd.grad`` (how natrl's TRPO computes it);
* linearise: building ``natrl.curvature.fisher_vp`` (forward with graph + the recorded
  backward, once per TRPO update);
* fisher mv: one exact Fisher matvec F v after that;
* kl build / kl mv: building ``kl_hvp`` (forward + backward with ``create_graph``) and one
  KL-Hessian matvec by double backprop (the form TRPO peers use) after that.

A TRPO update builds the operator once and calls it ≈11 times (10 CG iterations + xᵀFx).

Usage::

    python scripts/bench_fvp.py                 # 1 thread (the default), CPU
    python scripts/bench_fvp.py --threads 2 --repeats 50
    python scripts/bench_fvp.py --device cuda

Runs with ``torch.set_num_threads(--threads)`` (1 by default, so numbers do not depend on
what else the machine runs) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from natrl.curvature import fisher_vp, kl_hvp
from natrl.distributions import Categorical, DiagGaussian
from natrl.params import flatten, functional


@dataclass(frozen=True)
class Case:
    env: str
    obs_dim: int
    n_act: int
    gaussian: bool
    hidden: tuple[int, ...]
    batch: int


class Policy(nn.Module):
    """MLP policy returning the distribution's output parameters (batch-first)."""

    def __init__(self, obs_dim: int, n_act: int, hidden: tuple[int, ...], gaussian: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, n_act))
        self.net = nn.Sequential(*layers)
        self.gaussian = gaussian
        self.log_std = nn.Parameter(torch.full((n_act,), -0.5)) if gaussian else None

    def forward(self, obs: Tensor) -> tuple[Tensor, ...]:
        out = self.net(obs)
        if self.log_std is None:
            return (out,)
        return out, self.log_std.expand_as(out)


def timed(fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None], stat: str) -> dict[str, float]:
    """Seconds per call (median or min), calls interleaved round-robin, 2 warm-up rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 2):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r >= 2:
                times[k].append(time.perf_counter() - t0)
    reduce = statistics.median if stat == "median" else min
    return {k: reduce(v) for k, v in times.items()}


def bench(case: Case, repeats: int, device: torch.device, seed: int, stat: str) -> dict[str, float]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    policy = Policy(case.obs_dim, case.n_act, case.hidden, case.gaussian).to(device)
    dist = DiagGaussian if case.gaussian else Categorical
    obs = torch.randn(case.batch, case.obs_dim, generator=gen).to(device)
    adv = torch.randn(case.batch, generator=gen).to(device)
    with torch.no_grad():
        old = dist(*policy(obs))
        actions = old.sample()
        old_logp = old.log_prob(actions)
    f = functional(policy)
    params = list(policy.parameters())
    theta = flatten(params).detach()

    def surrogate(d: DiagGaussian | Categorical) -> Tensor:
        return -(torch.exp(d.log_prob(actions) - old_logp) * adv).mean()

    def grad_module() -> None:
        for p in params:
            p.grad = None
        surrogate(dist(*policy(obs))).backward()

    def grad_flat() -> Tensor:
        th = theta.detach().requires_grad_(True)
        return torch.autograd.grad(surrogate(dist(*f(th, obs))), th)[0]  # type: ignore[misc]

    fvp = fisher_vp(f, theta, obs, dist)  # type: ignore[arg-type]
    khvp = kl_hvp(f, theta, obs, dist)  # type: ignore[arg-type]
    v = torch.randn(theta.numel(), generator=gen).to(device)
    err = float((fvp(v) - khvp(v)).norm() / khvp(v).norm())
    if err > 1e-3:  # same matrix at θ_old: a wrong operator would make timings meaningless
        raise RuntimeError(f"fisher_vp and kl_hvp disagree on {case}: relative error {err:.2e}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = timed(
        {
            "grad": grad_module,
            "grad_flat": grad_flat,
            "linearise": lambda: fisher_vp(f, theta, obs, dist),  # type: ignore[arg-type]
            "fisher_mv": lambda: fvp(v),
            "kl_build": lambda: kl_hvp(f, theta, obs, dist),  # type: ignore[arg-type]
            "kl_mv": lambda: khvp(v),
        },
        repeats,
        sync,
        stat,
    )
    t["P"] = theta.numel()
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per case")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batches", default="2048,8192", help="comma-separated batch sizes")
    parser.add_argument("--widths", default="64,256", help="comma-separated hidden widths (two hidden layers each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stat", choices=["median", "min"], default="median", help="statistic over the rounds")
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    envs = [
        ("Hopper-like (17 obs, 6-d Gaussian)", 17, 6, True),
        ("CartPole-like (4 obs, 2 actions)", 4, 2, False),
    ]
    cases = [
        Case(env, obs_dim, n_act, gaussian, hidden, batch)
        for env, obs_dim, n_act, gaussian in envs
        for hidden in [(w, w) for w in widths]
        for batch in batches
    ]
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"float32, {args.stat} of {args.repeats} interleaved rounds; (×) = ratio to grad\n"
    )
    print(
        "| policy | hidden | batch | P | grad ms | grad θ ms | linearise ms | fisher mv ms "
        "| kl build ms | kl mv ms | kl mv / fisher mv |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        t = bench(case, args.repeats, device, args.seed, args.stat)
        g = t["grad"]

        def cell(key: str, t: dict[str, float] = t, g: float = g) -> str:
            return f"{t[key] * 1e3:.2f} ({t[key] / g:.2f}×)"

        print(
            f"| {case.env} | {case.hidden} | {case.batch} | {int(t['P'])} | {g * 1e3:.2f} "
            f"| {cell('grad_flat')} | {cell('linearise')} | {cell('fisher_mv')} "
            f"| {cell('kl_build')} | {cell('kl_mv')} | {t['kl_mv'] / t['fisher_mv']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
