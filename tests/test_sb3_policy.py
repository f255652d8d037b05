"""``model.policy``'s stable-baselines3 methods (``predict_values``, ``get_distribution``, ``evaluate_actions``)
against SB3's own policy holding the same weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from natrl import PPO, TRPO

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO as SB3PPO


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _same_weights(agent: Any, sb3: Any) -> None:
    theirs = [*_linears(sb3.mlp_extractor.policy_net), sb3.action_net]
    theirs += [*_linears(sb3.mlp_extractor.value_net), sb3.value_net]
    ours = _linears(agent.actor) + _linears(agent.critic)
    assert [tuple(a.weight.shape) for a in ours] == [tuple(b.weight.shape) for b in theirs]
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        if hasattr(sb3, "log_std"):
            sb3.log_std.copy_(agent.actor.log_std)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_values_distributions_and_evaluated_actions_equal_sb3s(env_id: str) -> None:
    agent = PPO(env_id, seed=0, policy_kwargs={"net_arch": [16, 16]}, n_steps=64, batch_size=64)
    sb3 = SB3PPO("MlpPolicy", env_id, seed=0, policy_kwargs={"net_arch": [16, 16]}, n_steps=64, batch_size=64).policy
    _same_weights(agent, sb3)
    obs = np.stack([agent.observation_space.sample() for _ in range(5)])
    ours, vectorized = agent.policy.obs_to_tensor(obs)
    theirs, _ = sb3.obs_to_tensor(obs)
    assert vectorized
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(agent.policy.predict_values(ours), sb3.predict_values(theirs))
    dist, sb3_dist = agent.policy.get_distribution(ours), sb3.get_distribution(theirs)
    actions = sb3_dist.sample()
    torch.testing.assert_close(dist.log_prob(actions.reshape(5, *agent.actor.action.raw_shape)),
                               sb3_dist.log_prob(actions))  # fmt: skip
    values, log_prob, entropy = agent.policy.evaluate_actions(ours, actions)
    sb3_values, sb3_log_prob, sb3_entropy = sb3.evaluate_actions(theirs, actions)
    torch.testing.assert_close(values, sb3_values)
    torch.testing.assert_close(log_prob, sb3_log_prob)
    torch.testing.assert_close(entropy, sb3_entropy)
    # policy(obs, deterministic=True): what SB3's ONNX export recipe calls
    for a, b in zip(agent.policy(ours, deterministic=True), sb3(theirs, deterministic=True), strict=True):
        torch.testing.assert_close(a, b)
    sampled, values, log_prob = agent.policy(ours)
    assert sampled.shape == sb3(theirs)[0].shape
    torch.testing.assert_close(log_prob, agent.policy.evaluate_actions(ours, sampled)[1])


def test_a_recurrent_policy_refuses_them_in_one_line() -> None:
    agent = TRPO("CartPoleNoVel-v1", policy="MlpLstmPolicy", n_steps=32)
    obs, _ = agent.policy.obs_to_tensor(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"^policy\.predict_values: the policy is recurrent, .* episode_start$"):
        agent.policy.predict_values(obs)
