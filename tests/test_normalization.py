"""Observation/reward normalisation in rollouts against stable-baselines3's VecNormalize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from natrl import PPO

pytest.importorskip("mujoco")
sb3_vec_env = pytest.importorskip("stable_baselines3.common.vec_env")


def _natrl_rollout(obs_norm_update: str, n_envs: int = 2, n_steps: int = 96):
    agent = PPO(
        "Hopper-v5",
        seed=3,
        n_envs=n_envs,
        n_steps=n_steps,
        normalize_obs=True,
        normalize_reward=True,
        obs_norm_update=obs_norm_update,
    )
    with torch.no_grad():
        # a large log-std makes the random policy fall over: many terminations per rollout
        agent.actor.log_std.fill_(1.0)
    ro = agent.collector.collect(agent.actor, agent.critic, n_steps, agent.sampler)
    return agent, ro


def test_per_step_statistics_reproduce_vecnormalize() -> None:
    """obs_norm_update="step": the same normalised observations, scaled rewards and
    bootstrap values (from normalised final observations) as VecNormalize over the
    same envs, seeds and actions."""
    n_envs, n_steps = 2, 96
    agent, ro = _natrl_rollout("step", n_envs, n_steps)
    assert int(ro.terminated.sum()) >= 3, "the test needs episodes that end inside the rollout"
    actions = agent.actor.to_env_action(ro.actions.numpy())

    venv = sb3_vec_env.DummyVecEnv([agent.env_source.factory for _ in range(n_envs)])
    venv.seed(3)  # env i gets seed 3 + i, as natrl's collector does
    vn = sb3_vec_env.VecNormalize(venv, gamma=0.99, clip_obs=10.0, clip_reward=10.0, epsilon=1e-8)
    obs = vn.reset()
    for t in range(n_steps):
        np.testing.assert_allclose(ro.obs[t].numpy(), obs, rtol=0, atol=2e-6)
        obs, reward, dones, infos = vn.step(actions[t])
        np.testing.assert_allclose(ro.rewards[t].numpy(), reward, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(ro.episode_end[t].numpy(), dones)
        for e in np.flatnonzero(dones):
            # VecNormalize normalises the terminal observation with this step's statistics
            final = torch.as_tensor(infos[e]["terminal_observation"], dtype=torch.float32)
            with torch.no_grad():
                expected = float(agent.critic(final[None])[0])
            assert float(ro.next_values[t, e]) == pytest.approx(expected, abs=1e-5)
    np.testing.assert_allclose(agent.obs_normalizer.rms.mean, vn.obs_rms.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(agent.obs_normalizer.rms.var, vn.obs_rms.var, rtol=1e-12, atol=1e-12)
    # DummyVecEnv keeps rewards in float32, natrl in float64
    np.testing.assert_allclose(agent.reward_scaler.rms.var, vn.ret_rms.var, rtol=1e-6)


def test_per_rollout_statistics_are_frozen_within_the_rollout() -> None:
    """obs_norm_update="rollout" (the default): one set of statistics for the whole
    rollout, then an update with all its raw observations (reset observations once)."""
    agent0 = PPO("Hopper-v5", seed=3, n_envs=2, n_steps=96, normalize_obs=True)
    mean0, var0 = agent0.obs_normalizer.rms.mean.copy(), agent0.obs_normalizer.rms.var.copy()
    agent, ro = _natrl_rollout("rollout")
    raw = ro.obs.numpy() * np.sqrt(var0 + 1e-8) + mean0  # the first rollout uses the initial statistics
    # the statistics after the rollout are the moments of exactly those T·E raw observations
    count = 1e-4 + raw.shape[0] * raw.shape[1]
    flat = raw.reshape(-1, raw.shape[-1]).astype(np.float64)
    mean = flat.sum(0) / count
    np.testing.assert_allclose(agent.obs_normalizer.rms.mean, mean, rtol=1e-5, atol=1e-5)
    assert agent.obs_normalizer.rms.count == pytest.approx(count)


def test_obs_norm_update_is_validated() -> None:
    with pytest.raises(ValueError, match=r"obs_norm_update='batch'.*'rollout' or 'step'"):
        PPO("Hopper-v5", obs_norm_update="batch")
