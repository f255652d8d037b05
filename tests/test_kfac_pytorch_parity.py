"""natrl's K-FAC with ``scale="batch_mean"`` against gpauloski's kfac-pytorch, where it is installed.

kfac-pytorch is not on PyPI; these tests skip without it. After one step from the same model,
batch and settings, both libraries' A and G factors and the preconditioned gradients (with the
KL clip) are compared through public interfaces: kfac-pytorch's ``state_dict()["layers"]`` and
the ``.grad`` each leaves behind. On conv layers kfac-pytorch divides both patches and output
gradients by the number of output locations L, so its A and G are natrl's divided by L² each.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from natrl.optim import KFAC

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "NVIDIA Apex is not installed", on import
    kfac = pytest.importorskip("kfac")

# kfac-pytorch's full backward hook on the first layer, whose input needs no gradient
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

SETTINGS = {"damping": 3e-3, "factor_decay": 0.9, "kl_clip": 1e-6, "lr": 0.1}


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 5))


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 6, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 5))  # fmt: skip


def _one_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, **changes: float
) -> tuple[dict, dict, nn.Module, nn.Module, KFAC]:
    """Both preconditioners after one step on copies of ``model``: (kfac-pytorch's factors, natrl's, models, KFAC)."""
    hp = SETTINGS | changes
    theirs, ours = copy.deepcopy(model), copy.deepcopy(model)
    pre = kfac.preconditioner.KFACPreconditioner(theirs, factor_update_steps=1, inv_update_steps=1, **hp)
    opt = KFAC(ours, lr=hp["lr"], damping=hp["damping"], factor_decay=hp["factor_decay"], kl_clip=hp["kl_clip"],
               inverse_interval=1, scale="batch_mean", factor_init="identity", preconditioner_only=True)  # fmt: skip
    for m in (theirs, ours):
        nn.functional.cross_entropy(m(x), y).backward()
    pre.step()
    opt.step()
    their_factors = {name: (s["A"], s["G"]) for name, s in pre.state_dict()["layers"].items()}
    return their_factors, opt.factors(), theirs, ours, opt


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_mlp_factors_and_preconditioned_gradient_agree() -> None:
    torch.manual_seed(0)
    model = _mlp().double()
    x, y = torch.randn(24, 12, dtype=torch.float64), torch.randint(0, 5, (24,))
    theirs, ours, m_theirs, m_ours, opt = _one_step(model, x, y)
    assert theirs.keys() == ours.keys() == {"0", "2", "4"}
    for name, (a, g) in ours.items():
        assert a is not None and g is not None
        assert _rel(theirs[name][0], a) < 1e-12
        assert _rel(theirs[name][1], g) < 1e-12
    assert opt.stats is not None and opt.stats.kl_scale < 1.0  # the KL clip binds: ν is compared too
    for p_theirs, p_ours in zip(m_theirs.parameters(), m_ours.parameters(), strict=True):
        assert p_theirs.grad is not None and p_ours.grad is not None
        # kfac-pytorch decomposes in float32 (its inv_dtype), natrl in the factors' float64
        assert _rel(p_theirs.grad, p_ours.grad) < 1e-4


def test_conv_factors_differ_by_the_number_of_output_locations_squared() -> None:
    torch.manual_seed(1)
    model = _cnn().double()
    x, y = torch.randn(10, 1, 6, 6, dtype=torch.float64), torch.randint(0, 5, (10,))
    eps = 0.05  # a small weight on the identity start, so that subtracting it keeps the batch part's digits
    theirs, ours, *_ = _one_step(model, x, y, factor_decay=eps)
    locations = {"0": 36, "2": 16, "5": 1}  # output locations of each layer (6×6, 4×4; Linear: 1)
    for name, (a, g) in ours.items():
        assert a is not None and g is not None
        for theirs_f, ours_f in zip(theirs[name], (a, g), strict=True):
            eye = torch.eye(ours_f.shape[0], dtype=ours_f.dtype)
            # both start at I: F = ε I + (1 − ε) F_batch; compare the batch parts
            batch_theirs, batch_ours = (theirs_f - eps * eye) / (1 - eps), (ours_f - eps * eye) / (1 - eps)
            # G's batch part is ~1e-9 beside ε = 0.05: the subtraction leaves ~7 of float64's digits
            assert _rel(batch_theirs * locations[name] ** 2, batch_ours) < 1e-8
