"""natrl's recurrent PPO update against sb3-contrib RecurrentPPO's ``train`` on one identical rollout: the gradient of
the full-rollout PPO loss, parameter tensor by parameter tensor (scripts/recurrent_grad_check.py holds the harness)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("sb3_contrib")

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "recurrent_grad_check.py"


def _harness():
    spec = importlib.util.spec_from_file_location("recurrent_grad_check", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_rollout_gradient_equals_recurrent_ppo_train() -> None:
    """RecurrentPPO collects two rollouts on TMaze-v0 at natrl's preset (8 envs × 64 steps, LSTM 32), so the second
    starts mid-episode from carried LSTM states and holds episode starts inside every env's sequence; natrl's
    ``PPO._update`` on that rollout (cut by ``batch_from_rollout``) and RecurrentPPO's ``train`` on its buffer, each
    with one minibatch of all 512 steps, give the same gradient of every parameter tensor (float32 rounding)."""
    r = _harness().full_batch_gradients("TMaze-v0", seed=0, rollouts=2)
    batch = r["batch"]
    assert batch.seq is not None and bool(batch.seq.starts[:, 1:].any())  # resets inside the sequences
    assert bool(batch.seq.actor_state.abs().sum() > 0)  # the rollout begins from carried, non-zero states
    assert r["gae_err"] < 1e-6  # natrl's GAE on the buffer's rewards and values gives the buffer's advantages
    assert len(r["tensors"]) == 16
    for name, (mine, theirs) in r["tensors"].items():
        assert float(theirs.norm()) > 0, name
        err = float((mine - theirs).norm() / theirs.norm())
        assert err < 1e-4, f"{name}: relative error {err:.1e}"
    # the comparison can tell: the same update from zero states at the sequences' first steps (the states carried
    # into the rollout dropped) gives another gradient of the recurrent weights
    h = _harness()
    zeroed = dataclasses.replace(batch, seq=dataclasses.replace(batch.seq, actor_state=torch.zeros_like(
        batch.seq.actor_state), critic_state=torch.zeros_like(batch.seq.critic_state)))  # fmt: skip
    params = [p for _, p, _ in r["pairs"]]
    (g_zero,) = h.natrl_minibatch_grads(r["agent"], zeroed, params, len(batch), 1)
    err = float((g_zero - r["g_sb3"]).norm() / r["g_sb3"].norm())
    assert err > 1e-3, f"relative error {err:.1e}"
