"""The recurrent core's fused path (torch's nn.LSTM / nn.GRU over the segments between episode starts) against
its written-out cells, the exact Fisher through time through either, and the default sequence length."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from natrl import PPO, TRPO
from natrl.curvature import fisher_vp, to_dense
from natrl.rl.batch import Batch, Sequences
from natrl.rl.natural import PolicyObjective
from natrl.rl.policies import build_policy
from natrl.rl.policies.recurrent import RecurrentCore
from natrl.rl.ppo import PPOConfig
from natrl.rl.trpo import TRPOConfig


def _starts(S: int, L: int) -> torch.Tensor:
    starts = torch.zeros(S, L, dtype=torch.bool)
    starts[0, 3] = starts[0, 4] = True  # a one-step segment
    starts[1, 0] = starts[1, L - 1] = True  # an episode start at the head and at the last step
    starts[3, 1::3] = True  # many short segments
    return starts  # sequence 2: no start at all


def _cells(core: RecurrentCore, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    core.fused = False
    try:
        return core(*args)
    finally:
        core.fused = True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("kind", "layers"), [("lstm", 1), ("lstm", 2), ("gru", 2)])
def test_fused_outputs_equal_the_written_out_cells(kind: str, layers: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    core = RecurrentCore(3, 6, num_layers=layers, kind=kind).to(dtype)
    S, L = 4, 11
    x = torch.randn(S, L, 3, dtype=dtype)
    state = torch.randn(S, *core.state_shape, dtype=dtype)
    starts = _starts(S, L)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    y_cells, _ = _cells(core, x, starts, state)
    torch.testing.assert_close(core.outputs(x, starts, state), y_cells, rtol=0, atol=tol)
    # without starts after the first step, forward is one fused call: outputs and final state
    head_only = torch.zeros(S, L, dtype=torch.bool)
    head_only[1, 0] = True
    y_ref, final_ref = _cells(core, x, head_only, state)
    y, final = core(x, head_only, state)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=tol)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=tol)
    # gradients through the segments equal the cells' (inputs, state and weights)
    for fused in (True, False):
        core.fused = fused
        core.zero_grad()
        xs, st = x.clone().requires_grad_(True), state.clone().requires_grad_(True)
        (core.outputs(xs, starts, st) ** 2).sum().backward()
        grads = [xs.grad, st.grad, *(p.grad for p in core.parameters())]
        if fused:
            fused_grads = grads
    core.fused = True
    for a, b in zip(fused_grads, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=tol * 50)


def _fisher(actor, batch: Batch) -> torch.Tensor:
    objective = PolicyObjective(actor, batch)
    theta0 = objective.theta()
    fvp = fisher_vp(objective.model_fn, theta0, objective.inputs, objective.output_fisher())
    return to_dense(fvp, theta0.numel(), dtype=theta0.dtype, device=theta0.device)


def test_float32_fisher_through_the_fused_layer_equals_the_cells() -> None:
    """On float32 the CPU's fused LSTM is oneDNN's layer; its double backward gives the Fisher through time of
    the written-out cells (the float64 Fisher is checked against a dense KL Hessian in test_recurrent.py)."""
    torch.manual_seed(2)
    env = gym.make("CartPole-v1")
    actor, _ = build_policy(
        "MlpLstmPolicy", dict(lstm_hidden_size=5, net_arch=[4]), env.observation_space, env.action_space
    )
    S, L = 4, 9
    obs = torch.randn(S * L, 4)
    starts = _starts(S, L)
    state = torch.randn(S, *actor.core.state_shape) * 0.5
    with torch.no_grad():
        dist = actor.distribution(obs.unflatten(0, (S, L)), starts, state)
        actions = dist.sample()
    n = S * L
    seq = Sequences(L, starts, state, torch.zeros(S, 1))
    batch = Batch(obs, actions, dist.log_prob(actions), torch.zeros(n), torch.randn(n), torch.zeros(n), seq=seq)
    fused = _fisher(actor, batch)
    actor.core.fused = False
    cells = _fisher(actor, batch)
    assert float(cells.abs().max()) > 1e-3
    torch.testing.assert_close(fused, cells, rtol=0, atol=1e-5 * float(cells.abs().max()))


def test_default_sequence_length_is_a_divisor_of_n_steps_at_most_the_minibatch() -> None:
    assert PPOConfig().sequence_steps() == 64  # RecurrentPPO's defaults: n_steps 2048, batch_size 64
    assert TRPOConfig().sequence_steps() == 128  # critic_batch_size 128
    assert PPOConfig(n_steps=32, batch_size=256).sequence_steps() == 32  # a short rollout stays whole
    assert PPOConfig(n_steps=100, batch_size=64).sequence_steps() == 50
    assert PPOConfig(n_steps=2048, batch_size=1000).sequence_steps() == 128
    assert PPOConfig(n_steps=97, batch_size=64).sequence_steps() == 97  # a prime: the whole rollout
    assert PPOConfig(n_steps=2048, batch_size=1).sequence_steps() == 1
    assert PPOConfig(n_steps=2048, sequence_length=2048).sequence_steps() == 2048


@pytest.mark.parametrize("cls", [PPO, TRPO])
def test_default_sequences_cut_the_rollout_into_chunks(cls) -> None:
    agent = cls("CartPole-v1", policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=8), n_steps=256, seed=0)
    batch, _ = agent._make_batch()
    L = 64 if cls is PPO else 128
    assert batch.seq is not None and batch.seq.length == L and len(batch.seq) == 256 // L
    agent.learn(256)
    assert all(bool(torch.isfinite(p).all()) for p in agent.actor.parameters())
