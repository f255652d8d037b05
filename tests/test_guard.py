"""Nothing NaN, nothing lost: the finite guard around every update, and environments whose rewards or
observations cannot be stored."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from natrl import A2C, ACKTR, NPG, PPO, TRPO
from natrl.rl import NonFiniteError
from natrl.rl.guard import NonFiniteUpdateError

SMALL = {"n_envs": 2, "n_steps": 32, "critic_epochs": 1}


def _state(agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*agent.actor.parameters(), *agent.critic.parameters()]]


@pytest.mark.parametrize("cls", [TRPO, NPG, PPO, ACKTR, A2C])
def test_an_update_that_poisons_a_parameter_is_undone_bit_for_bit(cls, monkeypatch) -> None:
    kwargs = {"n_envs": 2, "n_steps": 32, "batch_size": 32} if cls is PPO else SMALL
    if cls is A2C:
        kwargs = {"n_envs": 2, "n_steps": 32}
    agent = cls("Pendulum-v1", seed=0, max_rejected_updates=2, **kwargs)
    agent.learn(64)  # optimiser states exist
    before = _state(agent)
    algo_before = copy.deepcopy(agent._algo_state())
    real_update = agent._update

    def poisoned(batch):
        stats = real_update(batch)  # a real update (optimiser state moves), then a NaN
        with torch.no_grad():
            next(agent.critic.parameters()).view(-1)[0] = float("nan")
        return stats

    monkeypatch.setattr(agent, "_update", poisoned)
    seen: list[dict[str, float]] = []
    agent.learn(64, callback=lambda a, s: seen.append(s))
    assert seen[-1]["update_rejected"] == 1.0
    for b, a in zip(before, _state(agent)):
        assert torch.equal(b, a)
    assert repr(agent._algo_state()) == repr(algo_before)  # optimiser state restored too
    with pytest.raises(NonFiniteUpdateError, match=r"2 updates in a row produced non-finite parameters \(critic\."):
        agent.learn(64)
    for b, a in zip(before, _state(agent)):
        assert torch.equal(b, a)
    monkeypatch.setattr(agent, "_update", real_update)
    agent.learn(64, callback=lambda a, s: seen.append(s))
    assert seen[-1]["update_rejected"] == 0.0


class _Scaled(gym.Wrapper):
    def __init__(self, env: gym.Env, scale: float) -> None:
        super().__init__(env)
        self.scale = scale

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward * self.scale, terminated, truncated, info


def test_rewards_of_1e30_stop_acktr_with_the_cause_and_no_nan() -> None:
    agent = ACKTR(lambda: _Scaled(gym.make("Pendulum-v1"), 1e30), critic_optimizer="kfac", **SMALL)
    with pytest.raises(NonFiniteUpdateError, match="scale the rewards"):
        agent.learn(4096)
    assert all(bool(torch.isfinite(p).all()) for p in _state(agent))


def test_rewards_beyond_float32_are_named() -> None:
    agent = TRPO(lambda: _Scaled(gym.make("Pendulum-v1"), 1e38), **SMALL)  # |reward| up to 1.6e39
    with pytest.raises(
        NonFiniteError, match=r"environment \d returned a reward beyond float32's range \(±3.4e38\) at step \d+"
    ):
        agent.learn(64)


def test_a_huge_ppo_learning_rate_never_leaves_a_non_finite_parameter() -> None:
    agent = PPO("Pendulum-v1", seed=0, learning_rate=10.0, n_envs=1, n_steps=256, batch_size=64)
    try:
        agent.learn(2048)
    except NonFiniteUpdateError as exc:
        assert "learning_rate=10" in str(exc)
    assert all(bool(torch.isfinite(p).all()) for p in agent.params)
    for state in agent.optimizer.state.values():
        assert all(bool(torch.isfinite(v).all()) for v in state.values())


def test_observation_arrays_with_inf_at_reset_stop_before_any_update() -> None:
    class InfReset(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            return np.array([0.0, np.inf, 0.0], np.float32), {}

        def step(self, action):
            return np.zeros(3, np.float32), 0.0, False, False, {}

    agent = PPO(InfReset, n_envs=1, n_steps=32, batch_size=32)
    before = _state(agent)
    with pytest.raises(NonFiniteError, match="non-finite observation at step 0"):
        agent.learn(64)
    assert all(torch.equal(b, a) for b, a in zip(before, _state(agent)))


def test_discrete_actions_with_a_start_reach_the_env_in_its_range() -> None:
    class Shifted(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gym.spaces.Discrete(3, start=5)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            assert self.action_space.contains(action), action  # 5, 6 or 7
            return np.zeros(2, np.float32), float(action == 7), False, False, {}

    agent = TRPO(Shifted, n_envs=2, n_steps=32)
    agent.learn(256)
    action, _ = agent.predict(np.zeros(2, np.float32))
    assert action in (5, 6, 7)


def test_the_episode_count_continues_after_save_and_load(tmp_path) -> None:
    agent = TRPO("CartPole-v1", n_envs=2, n_steps=128)
    agent.learn(512)
    done = agent.collector.episodes
    assert done > 0
    loaded = TRPO.load(agent.save(tmp_path / "m.pt"))
    seen: list[float] = []
    loaded.learn(256, reset_num_timesteps=False, callback=lambda a, s: seen.append(s["episodes"]))
    assert seen[0] >= done
