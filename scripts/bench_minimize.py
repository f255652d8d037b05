"""Benchmark: ``natrl.optim.minimize`` against ``scipy.optimize.minimize`` on small CPU problems.

Both solvers take the same path on these problems (natrl mirrors scipy's BFGS and L-BFGS-B
line searches and stopping rules; the evaluation counts are printed side by side), so the
wall-time ratio measures the per-iteration cost of each implementation. Problems, float64:

* extended Rosenbrock, n = 10, 30, 100, from x = (−1.2, 1, −1.2, 1, ...);
* L2-regularised logistic regression on scikit-learn's breast cancer (569 × 30, standardised,
  λ = 1e-3), from zero.

natrl is timed twice: with the objective as a plain torch function (the gradient by autograd,
``autograd`` column) and as ``fun(x) -> (loss, grad)`` with the same analytic gradient scipy
gets (``analytic`` column); scipy gets NumPy functions with analytic gradients. ``per eval``
is each objective alone (value and gradient), timed outside the solvers, so
``wall − nfev · per eval`` is the solver's own overhead. scipy is also timed with natrl's
torch objective behind NumPy views (``x ↦ fg(torch.from_numpy(x))`` as ``(loss.item(),
grad.numpy())``, what a torch user hands scipy): ``ratio, same objective`` compares the two
solvers at an equal cost per evaluation.

Usage::

    python scripts/bench_minimize.py                 # 1 thread, the fastest of 7 runs (each solver in turn)
    python scripts/bench_minimize.py --repeats 21 --profile   # + a cProfile of natrl's L-BFGS
    python scripts/bench_minimize.py --clock cpu --method lbfgs   # process CPU time, L-BFGS only

Runs with ``torch.set_num_threads(1)`` and prints a markdown table. On a machine shared with
other jobs, ``--clock cpu`` (``time.process_time``) counts this process's time only; to compare
two versions of natrl, run the script alternately with each on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.optimize as so
import torch
from torch import Tensor

import natrl
from natrl.optim import minimize

LAM = 1e-3


def rosen_np(x: np.ndarray) -> tuple[float, np.ndarray]:
    a, b = x[:-1], x[1:]
    f = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a * a)
    return f, g


def rosen_torch(x: Tensor) -> Tensor:
    a, b = x[:-1], x[1:]
    return (100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2).sum()


def rosen_torch_fg(x: Tensor) -> tuple[Tensor, Tensor]:
    a, b = x[:-1], x[1:]
    r = b - a * a
    f = (100.0 * r * r + (1.0 - a) ** 2).sum()
    g = torch.zeros_like(x)
    g[:-1] = -400.0 * a * r - 2.0 * (1.0 - a)
    g[1:] += 200.0 * r
    return f, g


def logreg_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return x, y.astype(np.float64)


def logreg_np(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    n = x.shape[0]

    def fg(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        f = float(np.sum(np.logaddexp(0.0, z) - y * z) / n + 0.5 * LAM * w @ w)
        p = 1.0 / (1.0 + np.exp(-z))
        return f, x.T @ (p - y) / n + LAM * w

    return fg


def logreg_torch(x: Tensor, y: Tensor) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Any]]:
    n = x.shape[0]

    def f(w: Tensor) -> Tensor:
        z = x @ w
        return (torch.nn.functional.softplus(z) - y * z).sum() / n + 0.5 * LAM * w @ w

    def fg(w: Tensor) -> tuple[Tensor, Tensor]:
        z = x @ w
        loss = (torch.nn.functional.softplus(z) - y * z).sum() / n + 0.5 * LAM * w @ w
        return loss, x.T @ (torch.sigmoid(z) - y) / n + LAM * w

    return f, fg


CLOCK = time.perf_counter


def best_of_each(repeats: int, runs: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """The fastest of ``repeats`` runs of each and its last result, the runs taken in turn (run 1
    of each, then run 2 of each, ...), so that on a shared machine each sees the same load."""
    best: dict[str, tuple[float, Any]] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = CLOCK()
            out = run()
            t = CLOCK() - t0
            best[name] = (min(t, best[name][0]) if name in best else t, out)
    return best


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of ``repeats`` runs (the steadiest statistic on a shared machine) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = CLOCK()
        out = run()
        times.append(CLOCK() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time or process CPU time")
    ap.add_argument("--method", choices=("both", "bfgs", "lbfgs"), default="both")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    xs, ys = logreg_data()
    xt, yt = torch.tensor(xs), torch.tensor(ys)
    lf, lfg = logreg_torch(xt, yt)
    problems: dict[str, tuple[np.ndarray, Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {}
    for n in (10, 30, 100):
        x0 = np.tile([-1.2, 1.0], n // 2)
        problems[f"Rosenbrock n={n}"] = (x0, rosen_np, rosen_torch, rosen_torch_fg)
    problems["logistic regression (569 x 30)"] = (np.zeros(30), logreg_np(xs, ys), lf, lfg)
    methods = {"bfgs": "BFGS", "lbfgs": "L-BFGS-B"}
    if args.method != "both":
        methods = {args.method: methods[args.method]}
    print(
        f"natrl from {natrl.__file__}, torch {torch.__version__}, 1 thread, {args.clock} clock, "
        f"fastest of {args.repeats} runs, times in ms\n"
    )
    print(
        "| problem | method | scipy nit / nfev | natrl nit / nfev (autograd) | scipy | natrl analytic | natrl autograd "
        "| ratio analytic | ratio autograd | per eval scipy / torch fg / autograd | overhead per iter scipy / natrl "
        "| scipy, torch objective | ratio, same objective |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pname, (x0, np_fg, t_f, t_fg) in problems.items():
        x0t = torch.tensor(x0)
        t_np = best_of(200, lambda np_fg=np_fg, x0=x0: np_fg(x0))[0]
        t_tfg = best_of(200, lambda t_fg=t_fg, x0t=x0t: t_fg(x0t))[0]

        def autograd_eval(t_f: Callable[[Tensor], Tensor] = t_f, x0t: Tensor = x0t) -> None:
            x = x0t.clone().requires_grad_(True)
            torch.autograd.grad(t_f(x), x)

        t_auto = best_of(200, autograd_eval)[0]

        def torch_fg_on_numpy(x: np.ndarray, t_fg: Callable[..., Any] = t_fg) -> tuple[float, np.ndarray]:
            f, g = t_fg(torch.from_numpy(x))
            return f.item(), g.numpy()

        for ours, theirs in methods.items():
            timed = best_of_each(
                args.repeats,
                {
                    "scipy": partial(so.minimize, np_fg, x0, jac=True, method=theirs),
                    "analytic": partial(minimize, t_fg, x0t, jac=True, method=ours),
                    "autograd": partial(minimize, t_f, x0t, method=ours),
                    "scipy, torch objective": partial(so.minimize, torch_fg_on_numpy, x0, jac=True, method=theirs),
                },
            )
            (t_sp, rs), (t_an, ra), (t_ag, rg), (t_st, rt) = timed.values()
            over_sp = (t_sp - rs.nfev * t_np) / max(rs.nit, 1)
            over_nt = (t_an - ra.nfev * t_tfg) / max(ra.nit, 1)
            print(
                f"| {pname} | {ours} | {rs.nit} / {rs.nfev} | {ra.nit} / {ra.nfev} ({rg.nit} / {rg.nfev}) | "
                f"{t_sp * 1e3:.2f} | {t_an * 1e3:.2f} | {t_ag * 1e3:.2f} | {t_an / t_sp:.2f} | {t_ag / t_sp:.2f} | "
                f"{t_np * 1e6:.0f} / {t_tfg * 1e6:.0f} / {t_auto * 1e6:.0f} µs | "
                f"{over_sp * 1e6:.0f} / {over_nt * 1e6:.0f} µs | {t_st * 1e3:.2f} ({rt.nit} / {rt.nfev}) | "
                f"{t_an / t_st:.2f} |"
            )
    if args.profile:
        x0t = torch.tensor(np.tile([-1.2, 1.0], 50))
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20):
            minimize(rosen_torch_fg, x0t, jac=True, method="lbfgs")
            minimize(rosen_torch_fg, x0t, jac=True, method="bfgs")
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
