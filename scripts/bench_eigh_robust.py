"""Micro-benchmark: ``natrl.optim.kfac.eigh_robust`` against a plain ``torch.linalg.eigh``.

``eigh_robust`` decomposes ½(M + Mᵀ) with ``torch.linalg.eigh`` and builds its fallbacks (the
jittered copies M + j·(tr M / n)·I and the float64 copy) only when that fails. For comparison
this script also times ``fallbacks_first``, a version that builds those copies (and checks the
factor's finiteness) before the first try, as natrl did before. K-FAC factors of size n = 65,
257 and 513 (a 64-, 256- or 512-wide layer with a bias), float32, PSD with a decaying spectrum.

Usage::

    python scripts/bench_eigh_robust.py          # 1 thread, the fastest of 30 interleaved rounds
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from natrl.optim.kfac import eigh_robust


def fallbacks_first(m: Tensor, jitters: tuple[float, ...] = (1e-6, 1e-4, 1e-2)) -> tuple[Tensor, Tensor] | None:
    """Every attempt's matrix built up front, then the first that decomposes (the old order)."""
    if not bool(torch.isfinite(m).all()):
        return None
    sym = 0.5 * (m + m.T)
    scale = float(sym.diagonal().abs().mean()) or 1.0
    eye = torch.eye(sym.shape[0], dtype=sym.dtype)
    attempts = [sym] + [sym + j * scale * eye for j in jitters] + [sym.double()]
    for mat in attempts:
        vals, vecs = torch.linalg.eigh(mat)
        if bool(torch.isfinite(vals).all()) and bool(torch.isfinite(vecs).all()):
            return vals.to(m.dtype).clamp_min(0.0), vecs.to(m.dtype)
    return None


def main() -> None:
    torch.set_num_threads(1)
    print("1 thread, float32, fastest of 30 interleaved rounds, ms\n")
    print("| n | torch.linalg.eigh | eigh_robust | fallbacks built first |")
    print("|---|---|---|---|")
    for n in (65, 257, 513):
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, 4 * n, generator=g) * torch.logspace(0, -3, 4 * n)
        m = x @ x.T / (4 * n)
        cands: dict[str, Callable[[], object]] = {
            "eigh": lambda m=m: torch.linalg.eigh(m),
            "robust": lambda m=m: eigh_robust(m),
            "first": lambda m=m: fallbacks_first(m),
        }
        best = dict.fromkeys(cands, float("inf"))
        for _ in range(30):
            for name, run in cands.items():
                t0 = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - t0)
        print(f"| {n} | {best['eigh'] * 1e3:.2f} | {best['robust'] * 1e3:.2f} | {best['first'] * 1e3:.2f} |")


if __name__ == "__main__":
    main()
