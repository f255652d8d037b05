"""natrl's recurrent PPO gradient against sb3-contrib RecurrentPPO's on one identical rollout: RecurrentPPO collects
it, natrl's networks get its weights, and for the same minibatch of steps (RecurrentPPO's contiguous slice of the
buffer, split at episode starts and padded; natrl's sequence of the same steps from the stored state at its first
step) the gradients of the two losses agree, natrl's GAE reproduces RecurrentPPO's advantages, and a whole update
on the same minibatches (RecurrentPPO's random split fixed) gives the same parameters."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from natrl import PPO
from natrl.rl.accel import PPOCoefs, PPOMinibatch
from natrl.rl.batch import Batch, Sequences
from natrl.rl.gae import gae


def _linears(*modules: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for module in modules for m in module.modules() if isinstance(m, torch.nn.Linear)]


def _twins(B: int, **natrl_kwargs: object) -> tuple:
    """A RecurrentPPO that collected one rollout (its buffer prepared as its train() prepares it), natrl's PPO
    with its weights, and the rollout as natrl tensors."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from stable_baselines3.common.callbacks import BaseCallback

    class NoOp(BaseCallback):
        def _on_step(self) -> bool:
            return True

    T, H = 256, 16
    model = sb3_contrib.RecurrentPPO(
        "MlpLstmPolicy",
        "CartPoleNoVel-v1",
        n_steps=T,
        batch_size=B,
        policy_kwargs=dict(lstm_hidden_size=H),
        seed=0,
        device="cpu",
    )
    model._setup_learn(T, None)
    callback = NoOp()
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=T)
    buf, pol = model.rollout_buffer, model.policy
    next(buf.get(B))  # RecurrentPPO's own preparation of the buffer (env-major, flattened)

    agent = PPO(
        "CartPoleNoVel-v1", policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=H), seed=0, **natrl_kwargs
    )
    actor, critic = agent.actor, agent.critic
    with torch.no_grad():
        actor.core.rnn.load_state_dict(pol.lstm_actor.state_dict())
        critic.core.rnn.load_state_dict(pol.lstm_critic.state_dict())
        pairs = [
            (_linears(actor.net), _linears(pol.mlp_extractor.policy_net, pol.action_net)),
            (_linears(critic.net), _linears(pol.mlp_extractor.value_net, pol.value_net)),
        ]
        for ours, theirs in pairs:
            assert len(ours) == len(theirs)
            for a, b in zip(ours, theirs, strict=True):
                a.load_state_dict(b.state_dict())

    obs = torch.as_tensor(buf.observations, dtype=torch.float32)
    actions = torch.as_tensor(buf.actions).flatten()
    starts = torch.as_tensor(buf.episode_starts).bool().flatten()
    old_log_probs = torch.as_tensor(buf.log_probs).flatten()
    values = torch.as_tensor(buf.values).flatten()
    advantages = torch.as_tensor(buf.advantages).flatten()
    returns = torch.as_tensor(buf.returns).flatten()

    def state(h: np.ndarray, c: np.ndarray) -> torch.Tensor:  # (T, layers, H) each -> (T, 2, layers, H)
        return torch.stack([torch.as_tensor(h), torch.as_tensor(c)], 1)

    pi_states = state(buf.hidden_states_pi, buf.cell_states_pi)
    vf_states = state(buf.hidden_states_vf, buf.cell_states_vf)
    assert int(starts[1:].sum()) >= 5  # episodes end inside the rollout

    data = dict(obs=obs, actions=actions, starts=starts, log_probs=old_log_probs, values=values)
    data.update(advantages=advantages, returns=returns, pi_states=pi_states, vf_states=vf_states)
    return model, agent, data


def test_ppo_gradient_and_advantages_equal_recurrent_ppo_on_the_same_rollout() -> None:
    B = 32
    model, agent, d = _twins(B)
    buf, pol, actor, critic = model.rollout_buffer, model.policy, agent.actor, agent.critic
    T = len(d["obs"])
    obs, actions, starts, old_log_probs = d["obs"], d["actions"], d["starts"], d["log_probs"]
    values, advantages, returns = d["values"], d["advantages"], d["returns"]
    pi_states, vf_states = d["pi_states"], d["vf_states"]

    # natrl's GAE on RecurrentPPO's rewards and values: its advantages up to the last episode start (after
    # it RecurrentPPO bootstraps from the value of the observation after the rollout, not stored)
    ends = torch.zeros(T, dtype=torch.bool)
    ends[:-1] = starts[1:]
    next_values = torch.cat([values[1:], values.new_zeros(1)])
    adv, _ = gae(
        torch.as_tensor(buf.rewards).flatten()[:, None],
        values[:, None],
        next_values[:, None],
        ends[:, None],
        ends[:, None],
        gamma=model.gamma,
        lam=model.gae_lambda,
    )
    last = int(torch.nonzero(starts).max())
    torch.testing.assert_close(adv[:last, 0], advantages[:last], rtol=1e-5, atol=1e-5)

    rnn_params = [*actor.parameters(), *critic.parameters()]
    sb3_params = [
        *pol.lstm_actor.parameters(),
        *(p for m in (pol.mlp_extractor.policy_net, pol.action_net) for p in m.parameters()),
        *pol.lstm_critic.parameters(),
        *(p for m in (pol.mlp_extractor.value_net, pol.value_net) for p in m.parameters()),
    ]
    assert [p.shape for p in rnn_params] == [p.shape for p in sb3_params]
    clip, vf_coef = 0.2, 0.5
    env_change = np.zeros_like(buf.episode_starts)
    env_change[0] = 1.0
    for first in (0, 13, 3 * B):  # a minibatch at a chunk boundary and one that begins mid-chunk
        inds = np.arange(first, first + B)
        # RecurrentPPO's loss (sb3_contrib.ppo_recurrent.RecurrentPPO.train) on its padded minibatch
        data = buf._get_samples(inds, env_change)
        mask = data.mask > 1e-8
        v, lp, _ = pol.evaluate_actions(
            data.observations, data.actions.flatten(), data.lstm_states, data.episode_starts
        )
        a = data.advantages
        a = (a - a[mask].mean()) / (a[mask].std() + 1e-8)
        ratio = torch.exp(lp - data.old_log_prob)
        pg = -torch.mean(torch.min(a * ratio, a * ratio.clamp(1 - clip, 1 + clip))[mask])
        loss = pg + vf_coef * torch.mean(((data.returns - v.flatten()) ** 2)[mask])
        theirs = torch.autograd.grad(loss, sb3_params)
        # natrl's: the same steps as one sequence from the stored states at its first step
        rows = torch.as_tensor(inds)
        a = advantages[rows]
        mb = PPOMinibatch(
            obs[rows],
            actions[rows],
            old_log_probs[rows],
            (a - a.mean()) / (a.std() + 1e-8),
            returns[rows],
            None,
            Sequences(B, starts[rows][None], pi_states[first][None], vf_states[first][None]),
        )
        _, backward = agent._autograd_grads(mb, PPOCoefs(clip, None, 0.0, vf_coef))
        backward()
        ours = torch.cat([p.grad.flatten() for p in rnn_params])
        ref = torch.cat([g.flatten() for g in theirs])
        assert float(ref.norm()) > 1e-3
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_one_ppo_update_equals_recurrent_ppo_train_on_the_same_minibatches() -> None:
    """A whole update (10 epochs of 4 minibatches: Adam, gradient clipping, advantage normalisation) moves
    natrl's parameters where RecurrentPPO's train() moves its own, when both draw the same minibatches:
    RecurrentPPO's random split of the buffer fixed at 0, natrl's sequences (of batch_size steps) in time order."""
    B = 64
    T = 256
    model, agent, d = _twins(B, n_steps=T, batch_size=B, sequence_length=B)
    pol = model.policy
    seq = Sequences(B, d["starts"].reshape(-1, B), d["pi_states"][::B], d["vf_states"][::B])
    keys = ("obs", "actions", "log_probs", "values", "advantages", "returns")
    batch = Batch(*(d[k] for k in keys), seq=seq)
    ours = [*agent.actor.parameters(), *agent.critic.parameters()]
    theirs = [
        *pol.lstm_actor.parameters(),
        *(p for m in (pol.mlp_extractor.policy_net, pol.action_net) for p in m.parameters()),
        *pol.lstm_critic.parameters(),
        *(p for m in (pol.mlp_extractor.value_net, pol.value_net) for p in m.parameters()),
    ]
    before = torch.cat([p.detach().flatten() for p in ours])
    with mock.patch("numpy.random.randint", return_value=0):
        model.train()
    with mock.patch("torch.randperm", lambda n, **_: torch.arange(n)):
        agent._update(batch)
    after = torch.cat([p.detach().flatten() for p in ours])
    reference = torch.cat([p.detach().flatten() for p in theirs])
    assert float((after - before).abs().max()) > 1e-3  # the update moved the parameters
    torch.testing.assert_close(after, reference, rtol=0, atol=1e-6)
