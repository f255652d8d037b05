"""Experiment 1: gradient descent vs Newton, CG and L-BFGS on quadratics of growing condition number.

f(x) = ½ xᵀAx − bᵀx on R¹⁰⁰, A = Q diag(λ) Qᵀ with λ log-spaced in [1, κ] and a random
orthogonal Q, for κ = 10, 100, 1000. Every method starts at x₀ = 0 and stops when
‖∇f(x)‖ ≤ 1e-6 ‖∇f(x₀)‖. The constants the first-order methods need (L = λ_max, μ = λ_min)
are not read off the construction: they are estimated by Lanczos on the matvec
(``natrl.curvature.spectrum.condition_number``), as one would for a real model.

* GD, step 1/L: error ∝ (1 − 1/κ)ᵗ, so ≈ κ ln(1/tol) iterations.
* Heavy-ball momentum with Polyak's optimal constants: ≈ √κ ln(1/tol).
* Linear conjugate gradient (``natrl.linalg.conjugate_gradient``): ≤ √κ ln(2/tol) / 2, and
  at most n in exact arithmetic.
* L-BFGS (``natrl.optim.minimize(method="lbfgs")``, history 10).
* Newton (``minimize(method="newton")``): one step, whatever κ.

Run: ``python scripts/exp_quadratic_conditioning.py`` (a few seconds); writes
``docs/img/exp_quadratic_conditioning.png`` and prints the table.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from figures import save  # scripts/figures.py
from torch import Tensor

from natrl.curvature.spectrum import condition_number
from natrl.linalg import conjugate_gradient
from natrl.optim import OptimizeResult, minimize

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "exp_quadratic_conditioning.png"
N = 100
TOL = 1e-6
KAPPAS = (10, 100, 1000)
DT = torch.float64
MAX_GD = 50_000


def problem(kappa: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=DT))
    lam = torch.logspace(0, math.log10(kappa), N, dtype=DT)
    a = q @ torch.diag(lam) @ q.t()
    return (a + a.t()) / 2, torch.randn(N, generator=g, dtype=DT)


def first_below(curve: list[float]) -> int | None:
    """Iterations to reach TOL: the index of the first relative gradient norm ≤ TOL."""
    return next((i for i, r in enumerate(curve) if r <= TOL), None)


def run_gd(a: Tensor, b: Tensor, lr: float, momentum: float = 0.0) -> list[float]:
    x, x_prev = torch.zeros(N, dtype=DT), torch.zeros(N, dtype=DT)
    g0 = float(b.norm())
    curve = [1.0]
    for _ in range(MAX_GD):
        grad = a @ x - b
        x, x_prev = x - lr * grad + momentum * (x - x_prev), x
        curve.append(float((a @ x - b).norm()) / g0)
        if curve[-1] <= TOL:
            break
    return curve


def run_cg(a: Tensor, b: Tensor) -> list[float]:
    g0 = float(b.norm())
    curve = [1.0]
    for k in range(1, 3 * N):
        res = conjugate_gradient(lambda v: a @ v, b, max_iter=k, tol=0.0)
        curve.append(float((a @ res.x - b).norm()) / g0)
        if curve[-1] <= TOL:
            break
    return curve


def run_minimize(a: Tensor, b: Tensor, method: str) -> list[float]:
    g0 = float(b.norm())
    curve = [1.0]

    def record(r: OptimizeResult) -> bool:
        curve.append(float(r.grad.norm()) / g0)
        return curve[-1] <= TOL

    options = {"gtol": 0.0, "ftol": 0.0} if method == "lbfgs" else {"gtol": 0.0}
    minimize(lambda x: 0.5 * x @ (a @ x) - b @ x, torch.zeros(N, dtype=DT), method=method, max_iter=1000,
             callback=record, options=options)  # fmt: skip
    return curve


def main() -> None:
    torch.set_num_threads(1)
    curves: dict[int, dict[str, list[float]]] = {}
    rows = []
    for kappa in KAPPAS:
        a, b = problem(kappa)
        est = condition_number(lambda v, a=a: a @ v, N, generator=torch.Generator().manual_seed(1), dtype=DT)
        big_l, mu = est.largest, est.smallest
        sk = math.sqrt(big_l / mu)
        c = {
            "GD (step 1/L)": run_gd(a, b, 1.0 / big_l),
            "heavy ball (Polyak)": run_gd(
                a, b, 4.0 / (math.sqrt(big_l) + math.sqrt(mu)) ** 2, ((sk - 1) / (sk + 1)) ** 2
            ),
            "conjugate gradient": run_cg(a, b),
            "L-BFGS (m=10)": run_minimize(a, b, "lbfgs"),
            "Newton": run_minimize(a, b, "newton"),
        }
        curves[kappa] = c
        rows.append((kappa, est.condition_number, est.iterations, {k: first_below(v) for k, v in c.items()}))

    methods = list(curves[KAPPAS[0]])
    header = f"| κ (true) | κ (Lanczos, matvecs) | {' | '.join(methods)} |"
    print(f"Iterations to ‖∇f‖ ≤ {TOL:g}·‖∇f(x₀)‖ on f = ½xᵀAx − bᵀx, n = {N}")
    print(header)
    print("|" + "---|" * (len(methods) + 2))
    for kappa, est_kappa, its, counts in rows:
        cells = " | ".join(str(counts[m]) if counts[m] is not None else f">{MAX_GD}" for m in methods)
        print(f"| {kappa} | {est_kappa:.1f} ({its}) | {cells} |")

    colors = dict(zip(methods, ["tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple"], strict=True))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.9))
    for ax, kappa in zip(axes[:3], KAPPAS, strict=True):
        for m, curve in curves[kappa].items():
            ax.loglog(range(1, len(curve) + 1), curve, color=colors[m], label=m, lw=1.6,
                      marker="o" if len(curve) < 4 else None, ms=4)  # fmt: skip
        ax.axhline(TOL, color="gray", ls=":", lw=1)
        ax.set_title(f"κ = {kappa}")
        ax.set_xlabel("iteration + 1")
        ax.set_ylabel("‖∇f(x)‖ / ‖∇f(x₀)‖")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    ax = axes[3]
    ks = list(KAPPAS)
    for m in methods:
        its = [first_below(curves[k][m]) or MAX_GD for k in ks]
        ax.loglog(ks, its, "o-", color=colors[m], label=m)
    ax.loglog(ks, [k * math.log(1 / TOL) for k in ks], "k--", lw=0.8, label="κ·ln(1/tol)")
    ax.loglog(ks, [math.sqrt(k) * math.log(2 / TOL) / 2 for k in ks], "k:", lw=0.8, label="√κ·ln(2/tol)/2")
    ax.set_title("iterations to tolerance vs κ")
    ax.set_xlabel("condition number κ")
    ax.set_ylabel("iterations")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("Quadratic f(x) = ½xᵀAx − bᵀx, n = 100: GD's iteration count grows with κ, Newton's does not")
    fig.tight_layout()
    save(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
