"""natrl's lean MuJoCo vector env (``vec_env="mujoco"``) against gymnasium's SyncVectorEnv in SAME_STEP mode: the
same seeds and random actions give the same observations, rewards, terminations, truncations and final
observations bit for bit (both run the same MuJoCo calls and the same floating-point formulas), over several whole
episodes per env; the agent's rollouts on either backend are equal; the refusals are one line."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

pytest.importorskip("mujoco")

from natrl import TRPO
from natrl.rl.env import EnvSource
from natrl.rl.env_state import restore_vector_env_state, vector_env_state
from natrl.rl.mujoco_env import MujocoSameStep


def _assert_same_steps(
    env_id: str, steps: int, env_kwargs: dict[str, Any], action_dtype: Any = np.float32, n_envs: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps both vector envs with the same actions and asserts every output equal; returns the number of episodes
    each env ended, and the terminations and truncations seen."""
    ref = SyncVectorEnv(
        [lambda: gym.make(env_id, **env_kwargs)] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP, copy=False
    )
    lean = MujocoSameStep(env_id, n_envs, env_kwargs)
    assert (lean.single_observation_space, lean.single_action_space) == (
        ref.single_observation_space,
        ref.single_action_space,
    )
    expected, _ = ref.reset(seed=3)
    got, _ = lean.reset(seed=3)
    np.testing.assert_array_equal(got, expected)
    rng = np.random.default_rng(0)
    episodes = np.zeros(n_envs, int)
    terminations = truncations = 0
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (n_envs, *ref.single_action_space.shape)).astype(action_dtype)
        obs_r, rew_r, term_r, trunc_r, info_r = ref.step(actions)
        obs, rew, term, trunc, info = lean.step(actions)
        assert obs.dtype == obs_r.dtype == np.float64
        np.testing.assert_array_equal(obs, obs_r)
        np.testing.assert_array_equal(rew, rew_r)
        np.testing.assert_array_equal(term, term_r)
        np.testing.assert_array_equal(trunc, trunc_r)
        ended = term_r | trunc_r
        if ended.any():
            np.testing.assert_array_equal(info["_final_obs"], info_r["_final_obs"])
            for e in range(n_envs):
                if ended[e]:
                    np.testing.assert_array_equal(info["final_obs"][e], info_r["final_obs"][e])
                else:
                    assert info["final_obs"][e] is None and info_r["final_obs"][e] is None
        else:
            assert "final_obs" not in info
        episodes += ended
        terminations += int(term_r.sum())
        truncations += int(trunc_r.sum())
    ref.close()
    lean.close()
    return episodes, np.array(terminations), np.array(truncations)


@pytest.mark.parametrize(
    ("env_id", "limit", "steps"),
    [
        ("Hopper-v5", 40, 300),
        ("Walker2d-v5", 40, 300),
        ("Ant-v5", 40, 300),
        ("Humanoid-v5", 20, 150),
        ("Swimmer-v5", 100, 250),
        ("HalfCheetah-v5", None, 2010),  # the spec's own limit: 1,000 steps
    ],
)
def test_equal_to_gymnasium_bit_for_bit_over_whole_episodes(env_id: str, limit: int | None, steps: int) -> None:
    episodes, terminations, truncations = _assert_same_steps(
        env_id, steps, {} if limit is None else {"max_episode_steps": limit}
    )
    assert (episodes >= 2).all()
    assert truncations > 0
    if env_id not in ("Swimmer-v5", "HalfCheetah-v5"):  # these two never terminate
        assert terminations > 0


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        (
            "Hopper-v5",
            {
                "ctrl_cost_weight": 0.1,
                "forward_reward_weight": 2,
                "healthy_reward": 0.5,
                "healthy_angle_range": (-0.3, 0.3),
                "healthy_state_range": (-5.0, 5.0),
                "reset_noise_scale": 0.05,
                "frame_skip": 2,
                "max_episode_steps": 30,
            },
        ),
        ("Walker2d-v5", {"terminate_when_unhealthy": False, "max_episode_steps": 50}),
        ("Ant-v5", {"contact_cost_weight": 0.01, "contact_force_range": (-0.5, 0.5), "healthy_z_range": (0.3, 1.0)}),
        ("Ant-v5", {"include_cfrc_ext_in_observation": False, "max_episode_steps": 30}),  # the preset's observation
        ("Humanoid-v5", {"contact_cost_range": (-np.inf, 1e-3), "healthy_reward": 1.0, "max_episode_steps": 20}),
    ],
)
def test_the_reward_and_health_keywords_and_float64_actions(env_id: str, kwargs: dict[str, Any]) -> None:
    _assert_same_steps(env_id, 80, kwargs, action_dtype=np.float64, n_envs=3)


def test_training_is_the_same_on_either_backend_and_the_recipe_pickles() -> None:
    """Two TRPO updates, then one more rollout: the same parameters and rollouts bit for bit."""
    rollouts, parameters = {}, {}
    for backend in ("sync", "mujoco"):
        agent = TRPO("Hopper-v5", seed=1, n_envs=2, n_steps=64, vec_env=backend, normalize_obs=True)
        agent.learn(256)
        parameters[backend] = torch.cat([p.detach().flatten() for p in agent.policy.parameters()])
        rollouts[backend] = agent.collector.collect(agent.actor, agent.critic, 64, agent.sampler)
        assert rollouts[backend].episode_end.any()
        agent.close()
    assert torch.equal(parameters["mujoco"], parameters["sync"])
    for field in ("obs", "actions", "rewards", "log_probs", "episode_end"):
        assert torch.equal(getattr(rollouts["mujoco"], field), getattr(rollouts["sync"], field)), field
    cloudpickle = pytest.importorskip("cloudpickle")  # Ray's serialiser: rollout workers build from the recipe
    venv = cloudpickle.loads(cloudpickle.dumps(EnvSource("Walker2d-v5", backend="mujoco").builder()))(3)
    assert isinstance(venv, MujocoSameStep) and venv.num_envs == 3
    assert [spec.id for spec in venv.get_attr("spec")] == ["Walker2d-v5"] * 3  # SB3's VecEnv.get_attr reads this
    venv.close()


def test_trpo_learns_on_it_and_bad_requests_are_one_line() -> None:
    agent = TRPO("Swimmer-v5", vec_env="mujoco", n_envs=2, n_steps=128, seed=0)
    agent.learn(512)
    assert agent.num_timesteps == 512 and isinstance(agent.collector.venv, MujocoSameStep)
    agent.close()
    with pytest.raises(ValueError, match=r"vec_env='mujoco' takes one of the ids .*'Reacher-v5'; use vec_env='sync'"):
        TRPO("Reacher-v5", vec_env="mujoco")
    with pytest.raises(ValueError, match="takes no gymnasium wrapper; use vec_env='sync'"):
        TRPO("Hopper-v5", vec_env="mujoco", wrapper_class=gym.wrappers.ClipAction)
    with pytest.raises(ValueError, match=r"got exclude_current_positions_from_observation: use vec_env='sync'"):
        TRPO("Hopper-v5", vec_env="mujoco", env_kwargs={"exclude_current_positions_from_observation": False})


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Ant-v5"])
def test_its_state_is_the_sync_envs_state_and_a_restored_copy_continues_exactly(env_id: str) -> None:
    """The state natrl's checkpoints store (natrl.rl.env_state), captured mid-episode, continues every step the
    same in a fresh vec_env='mujoco' env and in a gymnasium SyncVectorEnv, across episode ends."""
    kwargs = {"max_episode_steps": 50}
    original = MujocoSameStep(env_id, 2, kwargs)
    original.reset(seed=0)
    size = original.single_action_space.shape
    actions = np.random.default_rng(1).uniform(-1, 1, (300, 2, *size)).astype(np.float32)
    for a in actions[:70]:
        original.step(a)
    state = vector_env_state(original)
    assert state is not None
    copies: list[Any] = [
        MujocoSameStep(env_id, 2, kwargs),
        SyncVectorEnv([lambda: gym.make(env_id, **kwargs)] * 2, autoreset_mode=AutoresetMode.SAME_STEP),
    ]
    for venv in copies:
        venv.reset(seed=99)  # other episodes: the restored state must overwrite everything
        restore_vector_env_state(venv, state)
    ends = 0
    for a in actions[70:]:
        expected = original.step(a)
        ends += int((expected[2] | expected[3]).sum())
        for venv in copies:
            got = venv.step(a)
            for x, y in zip(got[:4], expected[:4]):
                np.testing.assert_array_equal(x, y)
            for e in np.flatnonzero(expected[2] | expected[3]):
                np.testing.assert_array_equal(got[4]["final_obs"][e], expected[4]["final_obs"][e])
    assert ends >= 4


def test_a_checkpoint_resumes_bit_for_bit(tmp_path: Any) -> None:
    from natrl.runs.rng import get_rng_state, set_rng_state

    agent = TRPO("Hopper-v5", seed=2, n_envs=2, n_steps=128, vec_env="mujoco")
    agent.learn(256)
    path = agent.save(tmp_path / "mid.pt")
    rng = get_rng_state()
    agent.learn(512, reset_num_timesteps=False)  # episodes are cut by the checkpoint in mid-flight
    resumed = TRPO.load(path)
    assert isinstance(resumed.collector.venv, MujocoSameStep)
    set_rng_state(rng)
    resumed.learn(512, reset_num_timesteps=False)
    flat = [torch.cat([p.detach().flatten() for p in a.policy.parameters()]) for a in (agent, resumed)]
    assert resumed.num_timesteps == agent.num_timesteps and torch.equal(*flat)
    agent.close()
    resumed.close()
