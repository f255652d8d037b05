"""Experiment 6: Adam's second moment as a diagonal Fisher, and full vs K-FAC vs diagonal natural gradient.

Model: a tanh MLP 64-16-10 (1 210 parameters, float64) on scikit-learn's digits, stratified
70/30 split (1 257 training images), standardised pixels, cross-entropy loss.

Part A, Adam's preconditioner. Adam divides by √v̂, v̂ an exponential average of squared
mini-batch gradients g_B². At a fixed θ, E[g_B²] = ḡ² + (diag F̃ − ḡ²)/B (up to the
finite-population factor), with F̃ = (1/N) Σᵢ gᵢgᵢᵀ the *empirical* Fisher, so B·v̂ ≈ diag F̃
once ḡ is small. The Fisher F = (1/N) Σᵢ Jᵢᵀ(diag pᵢ − pᵢpᵢᵀ)Jᵢ (labels drawn from the model,
``natrl.curvature.fisher_vp``, materialised with ``to_dense``) is a different matrix
(Kunstner, Balles & Hennig 2019). After 20 epochs of Adam (lr 1e-3, batch 32), θ is frozen
and Adam runs 2 000 more steps with lr = 0 so that v̂ converges at that θ; B·v̂ is then
compared with diag F̃ (per-sample gradients) and diag F, entry by entry.

Then, at the initialisation and at the trained θ, the full-batch gradient g is
preconditioned five ways and compared (cosine) with the exact damped natural gradient
(F + λI)⁻¹g, λ = 1e-3: K-FAC ((G ⊗ A + λI)⁻¹ per layer, ``natrl.optim.KFAC`` as a
preconditioner, G from one sampled label per example), the diagonal (diag F + λ)⁻¹, Adam's
1/(√v̂ + ε), and no preconditioner.

Part B, training with each natural gradient from the same initialisation, batch 128,
damping λ = 1e-3, no momentum, 10 epochs:

* full Fisher: ``natrl.optim.NaturalGradient`` with ``fisher_vp`` of the batch, 20 CG steps;
* K-FAC: ``natrl.optim.KFAC`` (``fisher="sampled"``, factor decay 0.95, inverses every step,
  no KL clip, momentum 0);
* diagonal Fisher: θ ← θ − η g / (diag F_B + λ), diag F_B exact on the batch (per-sample
  Jacobians);
* Adam and SGD for reference.

The learning rate of each is the best final training loss over a small grid (printed).

Run: ``python scripts/exp_adam_fisher.py`` (2-3 minutes); writes
``docs/img/exp_adam_fisher.png`` and prints the tables.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from digits_data import Split, digits, train_epochs  # scripts/digits_data.py
from figures import save  # scripts/figures.py
from torch import Tensor, nn
from torch.func import grad, jacrev, vmap

from natrl.curvature import fisher_vp, to_dense
from natrl.distributions import Categorical
from natrl.optim import KFAC, NaturalGradient
from natrl.params import flatten, functional, write_back

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "exp_adam_fisher.png"
DT = torch.float64
LAMBDA = 1e-3
BATCH_A = 32
BATCH_B = 128
EPOCHS_B = 10
GRIDS = {
    "natural gradient (full Fisher, CG)": (0.1, 0.3, 0.5, 1.0),
    "K-FAC (sampled Fisher)": (0.01, 0.03, 0.1, 0.3),
    "diagonal Fisher": (0.01, 0.03, 0.05, 0.1),
    "Adam": (3e-3, 1e-2, 3e-2, 0.1, 0.3),
    "SGD": (0.3, 1.0, 3.0, 10.0, 30.0),
}


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).to(DT)


def fisher_diag(f: Callable[..., Tensor], theta: Tensor, x: Tensor) -> Tensor:
    """diag F = (1/N) Σᵢ [Σ_k p_ik J_ik² − (Σ_k p_ik J_ik)²], J_i = ∂logits_i/∂θ (per-sample Jacobians)."""
    out = torch.zeros_like(theta)
    for chunk in x.split(256):
        jac = vmap(jacrev(lambda th, xi: f(th, xi[None])[0]), in_dims=(None, 0))(theta, chunk)  # (B, K, P)
        p = torch.softmax(f(theta, chunk), dim=-1).detach()[..., None]
        out += ((p * jac**2).sum(1) - (p * jac).sum(1) ** 2).sum(0)
    return out / x.shape[0]


def empirical_fisher_diag(f: Callable[..., Tensor], theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """diag F̃ = (1/N) Σᵢ gᵢ², gᵢ the per-sample gradient of the loss."""

    def one(th: Tensor, xi: Tensor, yi: Tensor) -> Tensor:
        return nn.functional.cross_entropy(f(th, xi[None]), yi[None])

    grads = vmap(grad(one), in_dims=(None, 0, 0))(theta, x, y)
    return (grads**2).mean(0)


def full_loss(net: nn.Module, data: Split) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(net(data.x_train), data.y_train))


def adam_v_at(net: nn.Module, data: Split, steps: int = 2000) -> tuple[Tensor, float]:
    """Adam's bias-corrected v̂ after ``steps`` steps with lr = 0 at the current θ; and its ε."""
    opt = torch.optim.Adam(net.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(5)
    n = data.y_train.numel()
    for _ in range(steps):
        idx = torch.randint(0, n, (BATCH_A,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
    beta2 = opt.param_groups[0]["betas"][1]
    v = flatten(opt.state[p]["exp_avg_sq"] for p in net.parameters()) / (1 - beta2**steps)
    return v, opt.param_groups[0]["eps"]


def kfac_direction(net: nn.Module, data: Split) -> Tensor:
    """(G ⊗ A + λI)⁻¹ g per layer from factors of the full training set (one sampled label each)."""
    kfac = KFAC(net, lr=1.0, damping=LAMBDA, kl_clip=None, fisher="sampled", factor_decay=0.0,
                inverse_interval=1, preconditioner_only=True)  # fmt: skip
    net.zero_grad()
    out = net(data.x_train)
    kfac.sampled_fisher_backward(out, generator=torch.Generator().manual_seed(7))
    nn.functional.cross_entropy(out, data.y_train).backward()
    kfac.step()
    kfac.remove_hooks()
    return flatten(p.grad for p in net.parameters()).detach().clone()  # type: ignore[misc]


def directions(net: nn.Module, data: Split, v: Tensor, eps: float) -> dict[str, float]:
    f = functional(net)
    theta = flatten(net.parameters()).detach()
    p = theta.numel()
    fisher = to_dense(fisher_vp(f, theta, data.x_train, Categorical), p, dtype=DT, device="cpu")
    net.zero_grad()
    nn.functional.cross_entropy(net(data.x_train), data.y_train).backward()
    g = flatten(q.grad for q in net.parameters()).detach().clone()  # type: ignore[misc]
    exact = torch.linalg.solve(fisher + LAMBDA * torch.eye(p, dtype=DT), g)
    dirs = {
        "K-FAC": kfac_direction(net, data),
        "diagonal Fisher": g / (fisher.diagonal() + LAMBDA),
        "Adam 1/(√v̂+ε)": g / (v.sqrt() + eps),
        "gradient (SGD)": g,
    }
    return {k: float(torch.nn.functional.cosine_similarity(d, exact, dim=0)) for k, d in dirs.items()}


class Curve(NamedTuple):
    loss: np.ndarray
    seconds: np.ndarray
    test_acc: float


def train_b(method: str, lr: float, data: Split) -> Curve:
    net = make_net(1)
    f = functional(net)
    params = list(net.parameters())
    n = data.y_train.numel()
    g = torch.Generator().manual_seed(3)
    sample_g = torch.Generator().manual_seed(4)
    batch: dict[str, Tensor] = {}
    opt: torch.optim.Optimizer | None = None
    kfac: KFAC | None = None
    if method.startswith("natural"):
        opt = NaturalGradient(params, lr=lr, curvature=lambda th: fisher_vp(f, th, batch["x"], Categorical),
                              damping=LAMBDA, cg_max_iter=20)  # fmt: skip
    elif method.startswith("K-FAC"):
        kfac = KFAC(net, lr=lr, momentum=0.0, damping=LAMBDA, kl_clip=None, fisher="sampled", inverse_interval=1)
    elif method == "Adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif method == "SGD":
        opt = torch.optim.SGD(params, lr=lr)
    losses, secs = [full_loss(net, data)], [0.0]
    elapsed = 0.0
    for _ in range(EPOCHS_B):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, BATCH_B):
            idx = perm[i : i + BATCH_B]
            batch["x"], batch["y"] = data.x_train[idx], data.y_train[idx]
            t0 = time.perf_counter()
            net.zero_grad()
            out = net(batch["x"])
            if kfac is not None:
                kfac.sampled_fisher_backward(out, generator=sample_g)
            nn.functional.cross_entropy(out, batch["y"]).backward()
            if kfac is not None:
                kfac.step()
            elif opt is not None:
                opt.step()
            else:  # diagonal natural gradient
                theta = flatten(params).detach()
                gr = flatten(p.grad for p in params).detach()  # type: ignore[misc]
                write_back(params, theta - lr * gr / (fisher_diag(f, theta, batch["x"]) + LAMBDA))
            elapsed += time.perf_counter() - t0
            losses.append(full_loss(net, data))
            secs.append(elapsed)
    if kfac is not None:
        kfac.remove_hooks()
    with torch.no_grad():
        acc = float((net(data.x_test).argmax(1) == data.y_test).double().mean())
    return Curve(np.array(losses), np.array(secs), acc)


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
    data = digits(DT)

    # ---- Part A: Adam's v̂ vs diagonal Fishers, and preconditioned directions
    net = make_net(0)
    f = functional(net)
    v0, eps = adam_v_at(make_net(0), data)
    cos_init = directions(net, data, v0, eps)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    train_epochs(net, opt, data, epochs=20, batch=BATCH_A, seed=2)
    print(f"Part A: Adam (lr 1e-3, batch {BATCH_A}) for 20 epochs: train loss {full_loss(net, data):.4f}")
    v, eps = adam_v_at(net, data)
    theta = flatten(net.parameters()).detach()
    d_emp = empirical_fisher_diag(f, theta, data.x_train, data.y_train)
    d_fisher = fisher_diag(f, theta, data.x_train)
    dense_diag = to_dense(fisher_vp(f, theta, data.x_train, Categorical), theta.numel(), dtype=DT, device="cpu")
    assert torch.allclose(d_fisher, dense_diag.diagonal(), rtol=1e-8, atol=1e-12)  # two ways agree
    bv = BATCH_A * v
    live = (d_fisher > 0) & (d_emp > 0) & (bv > 0)  # weights of always-zero pixels have no gradient at all
    bv, d_emp, d_fisher = bv[live], d_emp[live], d_fisher[live]
    print(f"{int((~live).sum())} of {live.numel()} parameters never get a gradient (constant-zero pixels): left out")
    print("\nB·v̂ (Adam, lr = 0 for 2 000 steps at the trained θ) against diagonal Fishers, per parameter")
    print("| reference | corr(log B·v̂, log ref) | median B·v̂ / ref | share within 2x |")
    print("|---|---|---|---|")
    for name, ref in (("diag empirical Fisher F̃", d_emp), ("diag Fisher F", d_fisher)):
        ratio = bv / ref
        corr = np.corrcoef(bv.log10().numpy(), ref.log10().numpy())[0, 1]
        share = float(((ratio > 0.5) & (ratio < 2)).double().mean())
        print(f"| {name} | {corr:.3f} | {float(ratio.median()):.2f} | {share:.2f} |")
    cos_trained = directions(net, data, v, eps)
    print(f"\nCosine with the exact natural gradient (F + λI)⁻¹g, λ = {LAMBDA:g}, full training set")
    print("| direction | at initialisation | after 20 epochs of Adam |")
    print("|---|---|---|")
    for k in cos_init:
        print(f"| {k} | {cos_init[k]:.3f} | {cos_trained[k]:.3f} |")

    # ---- Part B: training with full / K-FAC / diagonal natural gradient
    print(f"\nPart B: batch {BATCH_B}, {EPOCHS_B} epochs, damping {LAMBDA:g}; final full training loss per lr")
    print("| method | lr: final loss | chosen lr | train loss | test acc | time/step |")
    print("|---|---|---|---|---|---|")
    curves: dict[str, tuple[float, Curve]] = {}
    for method, lrs in GRIDS.items():
        runs = {lr: train_b(method, lr, data) for lr in lrs}
        final = {lr: c.loss[-1] if np.isfinite(c.loss[-1]) else np.inf for lr, c in runs.items()}
        best = min(lrs, key=lambda lr: final[lr])
        curves[method] = (best, runs[best])
        c = runs[best]
        cells = ", ".join(f"{lr:g}: {final[lr]:.3g}" for lr in lrs)
        per_step = c.seconds[-1] / (len(c.seconds) - 1)
        print(f"| {method} | {cells} | {best:g} | {c.loss[-1]:.4f} | {c.test_acc:.3f} | {per_step * 1e3:.1f} ms |")

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    for ax, ref, name in (
        (axes[0], d_emp, "diag of the empirical Fisher F̃"),
        (axes[1], d_fisher, "diag of the Fisher F"),
    ):
        ax.loglog(ref.numpy(), bv.numpy(), ".", ms=3, alpha=0.5, color="tab:blue")
        lo = float(min(ref.min(), bv.min()))
        hi = float(max(ref.max(), bv.max()))
        ax.loglog([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        ax.set_xlabel(name)
        ax.set_ylabel(f"B·v̂ (Adam's second moment × batch {BATCH_A})")
        corr = np.corrcoef(bv.log10().numpy(), ref.log10().numpy())[0, 1]
        ax.set_title(f"Adam's B·v̂ vs {name.split(' of ')[1]} (log-corr {corr:.2f})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:red"]
    for (method, (lr, c)), col in zip(curves.items(), colors, strict=True):
        lab = f"{method}, lr {lr:g}"
        axes[2].semilogy(np.arange(len(c.loss)), c.loss, color=col, lw=1.4, label=lab)
        axes[3].semilogy(c.seconds, c.loss, color=col, lw=1.4, label=lab)
    for ax, xl in ((axes[2], "iteration (batch 128)"), (axes[3], "wall time (s, 1 CPU thread)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("full training loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7.5)
    axes[2].set_title("natural gradient: full Fisher vs K-FAC vs diagonal")
    axes[3].set_title("the same against wall time")
    fig.suptitle("Digits MLP 64-16-10: Adam's second moment is a (scaled) diagonal empirical Fisher; "
                 "full, K-FAC and diagonal natural gradient")  # fmt: skip
    fig.tight_layout()
    save(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
