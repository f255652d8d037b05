"""Benchmark: L2-regularised logistic regression with natrl's solvers, torch.optim.LBFGS and scipy.

Data ship inside scikit-learn (no download): breast cancer (569 × 30, binary) and digits
(1797 × 64, 10 classes, multinomial). Features are standardised; the objective is

    f(W, b) = mean_i CE(softmax(W xᵢ + b), yᵢ) + (λ/2) ‖W‖²,   λ = 1e-3,

in float64. Every solver starts at zero and stops at ‖∇f‖_∞ ≤ 1e-5 (scipy's default gtol; for
Newton-CG scipy's step test xtol = 1e-5). Solvers:

* natrl ``minimize``: ``newton-cg``, ``trust-ncg``, ``lbfgs``, ``bfgs`` (torch, autograd);
* natrl ``optim.LBFGS`` on an ``nn.Linear`` (one ``step`` with a large ``max_iter``);
* ``torch.optim.LBFGS`` with ``line_search_fn="strong_wolfe"`` on the same model;
* scipy ``L-BFGS-B`` and ``Newton-CG`` with analytic NumPy gradients / Hessian products.

Reported: iterations, function(+gradient) evaluations, Hessian-vector products, the median
wall time over ``--repeats`` runs, the final loss and ‖∇f‖_∞. Writes ``logreg.md`` and
``logreg.json`` into ``--out`` (default ``bench-out/``).

Usage::

    python scripts/bench_logreg.py [--repeats 5] [--threads 1] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize as so
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from threadpoolctl import threadpool_limits
from torch import nn

import natrl.optim as nopt

LAM = 1e-3
GTOL = 1e-5


def load(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    data = load_breast_cancer() if name == "breast_cancer" else load_digits()
    x = data.data.astype(np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    y = data.target.astype(np.int64)
    return x, y, int(y.max()) + 1


# --- the objective in NumPy (scipy) -----------------------------------------------------------


def numpy_objective(
    x: np.ndarray, y: np.ndarray, k: int
) -> tuple[Callable[[np.ndarray], tuple[float, np.ndarray]], Callable[..., np.ndarray]]:
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(k)[y]
    mask = np.ones((d + 1, k))
    mask[d] = 0.0  # no penalty on the bias

    def probs(theta: np.ndarray) -> np.ndarray:
        z = xb @ theta.reshape(d + 1, k)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta.reshape(d + 1, k)
        z = xb @ w
        zmax = z.max(1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(1))
        loss = np.mean(lse - (z * onehot).sum(1)) + 0.5 * LAM * ((w * mask) ** 2).sum()
        grad = xb.T @ (probs(theta) - onehot) / n + LAM * w * mask
        return float(loss), grad.ravel()

    def hessp(theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        p = probs(theta)
        u = xb @ v.reshape(d + 1, k)
        ju = p * u - p * (p * u).sum(1, keepdims=True)  # (diag(p) − ppᵀ) u per row
        return (xb.T @ ju / n + LAM * v.reshape(d + 1, k) * mask).ravel()

    return fg, hessp


# --- the same objective in torch ----------------------------------------------------------------


def torch_objective(x: np.ndarray, y: np.ndarray, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    n, d = x.shape
    xb = torch.tensor(np.hstack([x, np.ones((n, 1))]))
    yt = torch.tensor(y)
    mask = torch.ones(d + 1, k, dtype=torch.float64)
    mask[d] = 0.0

    def f(theta: torch.Tensor) -> torch.Tensor:
        w = theta.reshape(d + 1, k)
        return nn.functional.cross_entropy(xb @ w, yt) + 0.5 * LAM * ((w * mask) ** 2).sum()

    return f


def module_problem(x: np.ndarray, y: np.ndarray, k: int) -> tuple[nn.Linear, Callable[[], torch.Tensor]]:
    xt, yt = torch.tensor(x), torch.tensor(y)
    model = nn.Linear(x.shape[1], k).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(xt), yt) + 0.5 * LAM * (model.weight**2).sum()

    return model, loss


# --- runners ------------------------------------------------------------------------------------


def run_natrl_minimize(method: str, x: np.ndarray, y: np.ndarray, k: int) -> dict[str, Any]:
    f = torch_objective(x, y, k)
    theta0 = torch.zeros((x.shape[1] + 1) * k, dtype=torch.float64)
    opts: dict[str, Any] = {"xtol": GTOL} if method == "newton-cg" else {"gtol": GTOL}
    if method == "lbfgs":
        opts["ftol"] = 0.0  # stop on the gradient only, like the others
    res = nopt.minimize(f, theta0, method=method, options=opts)
    return {"nit": res.nit, "nfev": res.nfev, "nhev": res.nhev, "theta": res.x, "status": res.status}


def run_lbfgs_module(kind: str, x: np.ndarray, y: np.ndarray, k: int) -> dict[str, Any]:
    model, loss_fn = module_problem(x, y, k)
    calls = [0]
    opt: torch.optim.Optimizer
    if kind == "natrl":
        opt = nopt.LBFGS(model.parameters(), max_iter=10_000, max_eval=20_000,
                         tolerance_grad=GTOL, tolerance_change=0.0)  # fmt: skip
    else:
        opt = torch.optim.LBFGS(model.parameters(), max_iter=10_000, max_eval=20_000,
                                tolerance_grad=GTOL, tolerance_change=0.0,
                                history_size=10, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        calls[0] += 1
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    if kind == "natrl":
        assert isinstance(opt, nopt.LBFGS) and opt.result is not None
        nit, status = opt.result.nit, opt.result.status
    else:
        st = opt.state[opt.param_groups[0]["params"][0]]
        nit, status = int(st["n_iter"]), -1
    theta = torch.cat([model.weight.detach().T, model.bias.detach()[None]], 0).reshape(-1)
    return {"nit": nit, "nfev": calls[0], "nhev": 0, "theta": theta, "status": status}


def run_scipy(method: str, x: np.ndarray, y: np.ndarray, k: int) -> dict[str, Any]:
    fg, hessp = numpy_objective(x, y, k)
    theta0 = np.zeros((x.shape[1] + 1) * k)
    if method == "Newton-CG":
        res = so.minimize(fg, theta0, jac=True, hessp=hessp, method=method, options={"xtol": GTOL})
    else:
        res = so.minimize(fg, theta0, jac=True, method=method, options={"gtol": GTOL, "ftol": 0.0})
    return {"nit": res.nit, "nfev": res.nfev, "nhev": getattr(res, "nhev", 0),
            "theta": torch.tensor(res.x), "status": res.status}  # fmt: skip


SOLVERS: dict[str, Callable[[np.ndarray, np.ndarray, int], dict[str, Any]]] = {
    "natrl minimize newton-cg": lambda x, y, k: run_natrl_minimize("newton-cg", x, y, k),
    "natrl minimize trust-ncg": lambda x, y, k: run_natrl_minimize("trust-ncg", x, y, k),
    "natrl minimize lbfgs": lambda x, y, k: run_natrl_minimize("lbfgs", x, y, k),
    "natrl minimize bfgs": lambda x, y, k: run_natrl_minimize("bfgs", x, y, k),
    "natrl optim.LBFGS (nn.Linear)": lambda x, y, k: run_lbfgs_module("natrl", x, y, k),
    "torch.optim.LBFGS strong_wolfe (nn.Linear)": lambda x, y, k: run_lbfgs_module("torch", x, y, k),
    "scipy L-BFGS-B": lambda x, y, k: run_scipy("L-BFGS-B", x, y, k),
    "scipy Newton-CG": lambda x, y, k: run_scipy("Newton-CG", x, y, k),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--datasets", default="breast_cancer,digits")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with threadpool_limits(args.threads):
        for ds in args.datasets.split(","):
            x, y, k = load(ds)
            fg, _ = numpy_objective(x, y, k)
            for name, solver in SOLVERS.items():
                times, res = [], None
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    res = solver(x, y, k)
                    times.append(time.perf_counter() - t0)
                assert res is not None
                loss, grad = fg(res["theta"].numpy())
                rows.append({
                    "dataset": ds, "solver": name, "nit": res["nit"], "nfev": res["nfev"],
                    "nhev": res["nhev"], "time_ms": 1e3 * statistics.median(times),
                    "loss": loss, "grad_inf": float(np.abs(grad).max()), "status": res["status"],
                })  # fmt: skip
    lines = [
        f"Logistic regression, λ = {LAM:g}, float64, stop at ‖∇f‖∞ ≤ {GTOL:g} (Newton-CG: scipy's "
        f"step test), median of {args.repeats} runs, {args.threads} thread(s).",
        "",
        "| data | solver | iterations | f+∇f evals | Hessian-vector products | wall ms | final loss | ‖∇f‖∞ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shape = "569×30, 2 classes" if r["dataset"] == "breast_cancer" else "1797×64, 10 classes"
        lines.append(
            f"| {r['dataset']} ({shape}) | {r['solver']} | {r['nit']} | {r['nfev']} | "
            f"{r['nhev'] or '–'} | {r['time_ms']:.1f} | {r['loss']:.8f} | {r['grad_inf']:.1e} |"
        )
    table = "\n".join(lines)
    (out / "logreg.md").write_text(table + "\n")
    (out / "logreg.json").write_text(json.dumps(rows, indent=1))
    print(table)


if __name__ == "__main__":
    main()
