"""L-BFGS on the host: the solver's vector arithmetic in NumPy for small problems on the CPU.

On a small problem each torch operation costs more in dispatch than in arithmetic, and an
L-BFGS iteration issues dozens of them; NumPy's dispatch is cheaper. For a CPU
tensor of at most :data:`HOST_MAX_N` entries, :func:`~natrl.optim.quasi_newton.run_lbfgs`
therefore runs the same iteration on NumPy views of the same memory (no copies): the
objective still receives and returns tensors (``torch.from_numpy`` / ``Tensor.numpy`` are
views), the result holds tensors again.

The direction d = −H g comes from the compact representation of the L-BFGS matrix (Byrd,
Nocedal & Schnabel, 1994, Theorem 2.2), the same H as the two-loop recursion: with the m
pairs as rows of S and Y (oldest first), R = triu(S Yᵀ), D = diag(sᵢᵀyᵢ) and H₀ = γ I,

    H g = γ g + Wᵀ M W g,   W = [S; Y],
    M = [[R⁻ᵀ (D + γ Y Yᵀ) R⁻¹, −γ R⁻ᵀ], [−γ R⁻¹, 0]],

so a direction costs three matrix-vector products once M (2m × 2m) is formed at each new pair.
R⁻¹ is kept from pair to pair: dropping the oldest pair drops the first row and column of
R⁻¹, adding one appends the column −R⁻¹ c / (sᵀy), c = S y, and the entry 1/(sᵀy).

:func:`~natrl.optim.quasi_newton.run_bfgs` runs its small CPU problems on the host too, with
the same eligibility test, objective wrapper and vector helpers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["HOST_MAX_N", "HostHistory", "host_eligible", "host_fg", "replay"]

HOST_MAX_N = 1024
"""The largest problem (number of entries of x) that runs on the host."""

_HOST_DTYPES = (torch.float32, torch.float64)


def host_eligible(x: Tensor, g: Tensor, lr: float | Tensor, pairs: tuple[Tensor, ...]) -> bool:
    """Whether an L-BFGS run over x (gradient g, step scale lr, stored pairs) can run on the host.

    True for CPU tensors of a float32 / float64 dtype with at most :data:`HOST_MAX_N`
    entries, when g, a tensor lr and the stored pairs are CPU tensors of the same dtype.
    """
    if x.device.type != "cpu" or x.dtype not in _HOST_DTYPES or x.numel() > HOST_MAX_N or x.requires_grad:
        return False
    same = [g, *pairs] + ([lr] if isinstance(lr, Tensor) else [])
    return all(t.device.type == "cpu" and t.dtype == x.dtype and not t.requires_grad for t in same)


def host_fg(fg: Callable[[Tensor], tuple[Tensor | float, Tensor]]) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``fg`` seen from NumPy: ``x ↦ (f, g)`` with x and g flat arrays sharing the tensors' memory."""

    def fg_host(x: np.ndarray) -> tuple[float, np.ndarray]:
        fv, gv = fg(torch.from_numpy(x))
        if gv.requires_grad:
            gv = gv.detach()
        if gv.dim() != 1:
            gv = gv.reshape(-1)
        return (fv.item() if isinstance(fv, Tensor) else float(fv)), gv.numpy()

    return fg_host


def replay(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray]], f: float, g: np.ndarray
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``fg`` whose first call returns ``(f, g)`` without evaluating: a trial already evaluated at that point."""
    pending: list[tuple[float, np.ndarray]] = [(f, g)]

    def fg_replay(x: np.ndarray) -> tuple[float, np.ndarray]:
        return pending.pop() if pending else fg(x)

    return fg_replay


def dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.dot(b))


def amax(a: np.ndarray) -> float:
    """‖a‖∞ (NaN if a holds one: argmax stops at the first NaN; it costs less than a max reduction)."""
    b = np.abs(a)
    return float(b[b.argmax()])


def norm(a: np.ndarray) -> float:
    """‖a‖₂ (what ``np.linalg.norm`` computes for a real vector, without its dispatch)."""
    return float(np.sqrt(a.dot(a)))


def norm_of_order(a: np.ndarray, order: float) -> float:
    """The vector norm of the given order (as ``torch.linalg.vector_norm``: inf, −inf, 0, p)."""
    if order == math.inf:
        return amax(a)
    if order == 2.0:
        return norm(a)
    return float(np.linalg.norm(a, ord=order))


def finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


class HostHistory:
    """The L-BFGS pairs as NumPy arrays, with the compact-form matrix M (see the module docstring).

    The pairs live in a buffer of 2 × ``capacity`` slots, interleaved (s₀, y₀, s₁, y₁, ...):
    the stored ones are always a contiguous window, W, in that order, and a new pair is
    written after the newest; once the buffer's end is reached, the window is moved back to
    its start (one copy every ``capacity`` pairs). M is stored in the same interleaved order.

    Args:
        n: the dimension.
        dtype: NumPy dtype of the vectors.
        capacity: the most pairs held at once.
    """

    def __init__(self, n: int, dtype: Any, capacity: int) -> None:
        self.n = n
        self.dtype = dtype
        self.eps = float(np.finfo(dtype).eps)
        # x·0 is 0 when every entry of x is finite, NaN otherwise: a finiteness test in one BLAS call
        self.zero = np.zeros(n, dtype=dtype)
        self.buf = np.zeros((2 * capacity, 2, n), dtype=dtype)
        self.clear()

    def clear(self) -> None:
        """Drop every pair (the next direction is steepest descent)."""
        self.end = 0  # the window is buf[end - size : end]
        self.w = self.buf[:0].reshape(0, self.n)
        self.rinv = np.empty((0, 0), dtype=self.dtype)  # R⁻¹, m × m
        self.yy = np.empty((0, 0), dtype=self.dtype)  # Y Yᵀ
        self.sy = np.empty(0, dtype=self.dtype)  # sᵢᵀyᵢ, the diagonal of R
        self.rho: list[float] = []
        self.gamma = 1.0
        self.m_mat = np.empty((0, 0), dtype=self.dtype)
        self._ry = np.empty((2, 0, 0), dtype=self.dtype)  # R⁻¹ and Y Yᵀ, stacked
        self._inner = self._inner_diag = self.sy  # scratch for D + γ Y Yᵀ and its diagonal

    @property
    def size(self) -> int:
        return len(self.rho)

    def push(self, s: np.ndarray, y: np.ndarray, history_size: int) -> bool:
        """Add (s, y) unless yᵀs ≤ ε yᵀy (as :func:`~natrl.optim.quasi_newton.lbfgs_push`).

        Returns:
            Whether the pair was skipped.
        """
        ys = float(y.dot(s))
        yy = float(y.dot(y))
        if not (math.isfinite(ys) and math.isfinite(yy)) or ys <= self.eps * yy or yy == 0.0:
            return True
        self._append(s, y, ys, yy, ys / yy, max(len(self.rho) - (history_size - 1), 0))
        return False

    def load(self, s: tuple[np.ndarray, ...], y: tuple[np.ndarray, ...], gamma: float) -> None:
        """Take stored pairs (oldest first) as they are, and H₀ = γ I."""
        for si, yi in zip(s, y, strict=True):
            self._append(si, yi, float(yi.dot(si)), float(yi.dot(yi)), gamma, 0)

    def _append(self, s: np.ndarray, y: np.ndarray, ys: float, yy: float, gamma: float, drop: int) -> None:
        # ndarray.dot rather than @: for these small operands NumPy's matmul costs more in dispatch
        m = len(self.rho)
        k = m - drop + 1
        wy = self.w.dot(y)  # sᵢᵀy (even entries) and yᵢᵀy (odd entries) of the stored pairs
        # the dropped rows' columns of R⁻¹ are zero below the diagonal: R⁻¹[drop:, :] c = R⁻¹[drop:, drop:] c[drop:]
        col = self.rinv.dot(wy[0::2])
        if drop == 1 and k == m:
            # A full memory: the matrices keep their size and shift by one pair in place (R⁻¹
            # and Y Yᵀ are stacked, one copy for both). R⁻¹'s last row stays (0, ..., 0, ·) as
            # it is upper triangular; M's zero block stays zero.
            ry, rinv, ymat, sy, mm = self._ry, self.rinv, self.yy, self.sy, self.m_mat
            ry[:, :-1, :-1] = ry[:, 1:, 1:]
            sy[:-1] = sy[1:]
        else:
            ry = np.zeros((2, k, k), dtype=self.dtype)
            rinv, ymat = ry
            rinv[:-1, :-1] = self.rinv[drop:, drop:]
            ymat[:-1, :-1] = self.yy[drop:, drop:]
            sy = np.empty(k, dtype=self.dtype)
            sy[:-1] = self.sy[drop:]
            mm = np.zeros((2 * k, 2 * k), dtype=self.dtype)
            self._ry, self.rinv, self.yy, self.sy, self.m_mat = ry, rinv, ymat, sy, mm
            self._inner = np.empty((k, k), dtype=self.dtype)
            self._inner_diag = self._inner.ravel()[:: k + 1]
        np.multiply(col[drop:], -1.0 / ys, out=rinv[:-1, -1])
        rinv[-1, -1] = 1.0 / ys
        ymat[-1, :-1] = ymat[:-1, -1] = wy[2 * drop + 1 :: 2]
        ymat[-1, -1] = yy
        sy[-1] = ys
        if self.end == len(self.buf):  # move the kept window to the start of the buffer
            self.buf[: k - 1] = self.buf[self.end - (k - 1) : self.end]
            self.end = k - 1
        self.buf[self.end, 0] = s
        self.buf[self.end, 1] = y
        self.end += 1
        self.w = self.buf[self.end - k : self.end].reshape(2 * k, self.n)
        self.rho = [*self.rho[drop:], 1.0 / ys]
        self.gamma = gamma
        inner = np.multiply(ymat, gamma, out=self._inner)
        self._inner_diag += sy  # D + γ Y Yᵀ
        mm[0::2, 0::2] = rinv.T.dot(inner).dot(rinv)
        b = rinv * -gamma
        mm[1::2, 0::2] = b
        mm[0::2, 1::2] = b.T

    def direction(self, g: np.ndarray) -> np.ndarray:
        """d = −H g (steepest descent −g while empty)."""
        if not self.rho:
            return -g
        d = g * -self.gamma
        d -= self.m_mat.dot(self.w.dot(g)).dot(self.w)
        return d

    def pairs(self) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Copies of the stored s and y as tensors, oldest first."""
        m = len(self.rho)
        w = self.w.copy()
        return (
            tuple(torch.from_numpy(w[2 * i]) for i in range(m)),
            tuple(torch.from_numpy(w[2 * i + 1]) for i in range(m)),
        )
