"""EnvPool as natrl's training vector env (``vec_env="envpool"``): its dynamics against gymnasium's, the
SAME_STEP adapter, an agent on it, the refusals. Skipped where EnvPool is missing."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("envpool")
pytest.importorskip("mujoco")

from natrl import TRPO
from natrl.rl.envpool_env import EnvPoolSameStep


def _trajectories(env_id: str, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool obs, gymnasium obs, pool rewards, gymnasium rewards) from the same initial state and actions."""
    pool = EnvPoolSameStep(env_id, 1, {"reset_noise_scale": 0.0})
    ref = gym.make(env_id, reset_noise_scale=0.0)
    a, _ = pool.reset(seed=0)
    b, _ = ref.reset(seed=0)
    obs_a, obs_b, rew_a, rew_b = [a[0]], [b], [], []
    rng = np.random.default_rng(0)
    for _ in range(steps):
        action = rng.uniform(-1, 1, ref.action_space.shape).astype(np.float32)
        a, ra, ta, ua, info = pool.step(action[None])
        b, rb, tb, ub, _ = ref.step(action)
        obs_a.append(info["final_obs"][0] if ta[0] or ua[0] else a[0])
        obs_b.append(b)
        rew_a.append(ra[0])
        rew_b.append(rb)
        assert (bool(ta[0]), bool(ua[0])) == (tb, ub)
        if tb or ub:
            break
    pool.close()
    ref.close()
    return np.array(obs_a), np.array(obs_b), np.array(rew_a), np.array(rew_b)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "Swimmer-v5"])
def test_envpool_follows_gymnasium_over_a_whole_episode(env_id: str) -> None:
    obs_a, obs_b, rew_a, rew_b = _trajectories(env_id, 1000)
    np.testing.assert_allclose(obs_a, obs_b, atol=1e-6, rtol=0)
    np.testing.assert_allclose(rew_a, rew_b, atol=1e-6, rtol=1e-6)  # EnvPool's rewards are float32


def test_envpool_halfcheetah_agrees_until_rounding_is_amplified() -> None:
    obs_a, obs_b, _, _ = _trajectories("HalfCheetah-v5", 1000)
    assert len(obs_a) == 1001  # the same truncation at 1,000 steps
    np.testing.assert_allclose(obs_a[:50], obs_b[:50], atol=1e-6, rtol=0)


def test_same_step_autoreset_returns_the_next_episodes_first_observation() -> None:
    pool = EnvPoolSameStep("Hopper-v5", 2, {"reset_noise_scale": 0.0})
    start, _ = pool.reset(seed=1)
    ended = False
    for _ in range(500):
        obs, _, terminated, truncated, info = pool.step(np.ones((2, 3), np.float32))  # falls within ~100 steps
        done = terminated | truncated
        if done.any():
            e = int(np.flatnonzero(done)[0])
            np.testing.assert_array_equal(obs[e], start[e])  # no reset noise: the first state again
            assert not np.array_equal(info["final_obs"][e], start[e]) and info["_final_obs"][e]
            ended = True
            break
    assert ended
    pool.close()


def test_trpo_trains_on_envpool_and_bad_requests_are_one_line() -> None:
    agent = TRPO("Hopper-v5", vec_env="envpool", n_envs=2, n_steps=256, seed=0)
    agent.learn(1024)
    assert agent.num_timesteps == 1024 and isinstance(agent.collector.venv, EnvPoolSameStep)
    agent.close()
    with pytest.raises(ValueError, match="takes an id EnvPool implements"):
        TRPO("CartPoleNoVel-v1", vec_env="envpool")
    with pytest.raises(ValueError, match="take no gymnasium wrapper"):
        TRPO("Hopper-v5", vec_env="envpool", wrapper_class=gym.wrappers.ClipAction)
