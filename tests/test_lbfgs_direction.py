"""The matrix form of the L-BFGS two-loop recursion (small n) equals the loop (large n)."""

from __future__ import annotations

import pytest
import torch

from natrl.optim import quasi_newton
from natrl.optim.quasi_newton import bfgs_update, lbfgs_direction, lbfgs_init, lbfgs_push


@pytest.mark.parametrize("pairs", [1, 3, 10, 14])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matrix_form_equals_loop_and_dense_bfgs(
    pairs: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(pairs)
    n, m = 12, 10
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = a @ a.T + torch.eye(n, dtype=torch.float64)
    mem = lbfgs_init()
    kept = []
    for _ in range(pairs):
        s = torch.randn(n, generator=gen, dtype=torch.float64)
        mem, skipped = lbfgs_push(mem, s.to(dtype), (a @ s).to(dtype), history_size=m)
        assert not skipped
        kept.append((s.to(dtype), (a @ s).to(dtype)))
    g = torch.randn(n, generator=gen, dtype=dtype)
    matrix = lbfgs_direction(g, mem)  # n = 12 ≤ the threshold
    monkeypatch.setattr(quasi_newton, "_SMALL_N", 0)
    loop = lbfgs_direction(g, mem)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(matrix, loop, rtol=tol, atol=tol * float(loop.abs().max()))
    s_last, y_last = kept[-1]
    h = float(s_last @ y_last) / float(y_last @ y_last) * torch.eye(n, dtype=torch.float64)
    for s, y in kept[-m:]:
        h, _ = bfgs_update(h, s.double(), y.double())
    dense = -(h @ g.double())
    torch.testing.assert_close(matrix.double(), dense, rtol=tol * 10, atol=tol * 10 * float(dense.abs().max()))
