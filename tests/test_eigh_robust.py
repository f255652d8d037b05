"""eigh_robust: the plain decomposition first, the fallbacks only when it fails."""

from __future__ import annotations

import pytest
import torch

from natrl.optim.kfac import eigh_robust


def _psd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2 * n, generator=g)
    return x @ x.T / (2 * n)


def test_plain_path_equals_torch_eigh() -> None:
    m = _psd(17, 0)
    eig, how = eigh_robust(m)
    assert how == "ok" and eig is not None
    vals, vecs = torch.linalg.eigh(0.5 * (m + m.T))
    torch.testing.assert_close(eig.values, vals.clamp_min(0.0), rtol=0, atol=0)
    torch.testing.assert_close(eig.vectors, vecs, rtol=0, atol=0)


def test_non_finite_factor_gives_up() -> None:
    m = _psd(5, 1)
    m[2, 3] = float("nan")
    eig, how = eigh_robust(m)
    assert eig is None and how == "non-finite factor"
    m[2, 3] = float("inf")
    assert eigh_robust(m) == (None, "non-finite factor")


def test_fallback_runs_only_after_plain_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain call sees ½(M + Mᵀ) itself; when it fails, the first jitter is tried."""
    real = torch.linalg.eigh
    seen: list[torch.Tensor] = []

    def failing_first(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(mat.clone())
        if len(seen) == 1:
            raise torch.linalg.LinAlgError("forced failure")
        return real(mat)

    monkeypatch.setattr(torch.linalg, "eigh", failing_first)
    m = _psd(6, 2)
    eig, how = eigh_robust(m)
    assert how == "jitter=1e-06" and eig is not None
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], 0.5 * (m + m.T), rtol=0, atol=0)
    shift = 1e-6 * float(m.diagonal().abs().mean())
    torch.testing.assert_close(seen[1], 0.5 * (m + m.T) + shift * torch.eye(6))
    recon = eig.vectors @ torch.diag(eig.values) @ eig.vectors.T
    torch.testing.assert_close(recon, m + shift * torch.eye(6), atol=1e-5, rtol=1e-5)


def test_float64_fallback_after_every_float32_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.linalg.eigh

    def nan_in_float32(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vals, vecs = real(mat)
        if mat.dtype == torch.float32:
            return vals * float("nan"), vecs
        return vals, vecs

    monkeypatch.setattr(torch.linalg, "eigh", nan_in_float32)
    m = _psd(4, 3)
    eig, how = eigh_robust(m)
    assert how == "float64" and eig is not None
    assert eig.values.dtype == torch.float32
    torch.testing.assert_close(eig.values, real(m.double())[0].float().clamp_min(0.0))
