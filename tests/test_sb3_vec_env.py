"""stable-baselines3's VecEnv API both ways, checked against the real stable-baselines3 and Gymnasium.

The references are SB3's own ``DummyVecEnv`` and Gymnasium's own ``SyncVectorEnv``: the same seeds and actions
must give the same observations, rewards, ends and final observations through natrl's adapters.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import natrl
from natrl import PPO, TRPO

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize  # noqa: E402

from natrl.rl.sb3_vec_env import FromSB3VecEnv, SB3VecEnv  # noqa: E402


def _actions(space: gym.Space, n: int, steps: int) -> list[np.ndarray]:
    space.seed(0)
    return [np.stack([space.sample() for _ in range(n)]) for _ in range(steps)]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_sb3_view_steps_as_sb3s_dummy_vec_env(env_id: str) -> None:
    n = 2
    ours = SB3VecEnv(SyncVectorEnv([lambda: gym.make(env_id, max_episode_steps=30) for _ in range(n)],
                                   autoreset_mode=AutoresetMode.SAME_STEP))  # fmt: skip
    ref = DummyVecEnv([lambda: gym.make(env_id, max_episode_steps=30) for _ in range(n)])
    ours.seed(5)
    ref.seed(5)
    np.testing.assert_array_equal(ours.reset(), ref.reset())
    ends = 0
    for action in _actions(ref.action_space, n, 100):
        a, b = ours.step(action), ref.step(action)
        for x, y in zip(a[:3], b[:3]):
            np.testing.assert_allclose(x, y, rtol=0, atol=0)
        for info_a, info_b in zip(a[3], b[3]):
            assert ("terminal_observation" in info_a) == ("terminal_observation" in info_b)
            if "terminal_observation" in info_b:
                ends += 1
                np.testing.assert_array_equal(info_a["terminal_observation"], info_b["terminal_observation"])
                assert info_a["TimeLimit.truncated"] == info_b["TimeLimit.truncated"]
    assert ends > 0
    assert isinstance(ours, VecEnv)  # registered with SB3's ABC: evaluate_policy and SB3 callbacks take it


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_sb3_vec_envs_step_as_gymnasiums_same_step_vector_env(env_id: str) -> None:
    n = 2
    ours = FromSB3VecEnv(DummyVecEnv([lambda: gym.make(env_id, max_episode_steps=30) for _ in range(n)]))
    ref = SyncVectorEnv([lambda: gym.make(env_id, max_episode_steps=30) for _ in range(n)],
                        autoreset_mode=AutoresetMode.SAME_STEP)  # fmt: skip
    np.testing.assert_array_equal(ours.reset(seed=3)[0], ref.reset(seed=[3, 4])[0])
    for action in _actions(ref.single_action_space, n, 100):
        a, b = ours.step(action), ref.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1].astype(np.float32))  # SB3's VecEnvs hold float32 rewards
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_array_equal(a[3], b[3])
        if "final_obs" in b[4]:
            for i in np.flatnonzero(b[4]["_final_obs"]):
                np.testing.assert_array_equal(a[4]["final_obs"][i], b[4]["final_obs"][i])


@pytest.mark.parametrize("cls", [PPO, TRPO])
def test_vec_normalize_and_make_vec_env_train_and_reload_with_their_statistics(tmp_path, cls) -> None:
    venv = VecNormalize(sb3_make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    extra = {"batch_size": 128} if cls is PPO else {}
    model = cls("MlpPolicy", venv, n_steps=128, **extra)
    model.learn(512)
    assert model.num_timesteps == 512 and model.n_envs == 2 and model.get_env() is venv
    assert venv.obs_rms.count > 512  # VecNormalize saw every step
    model.save(tmp_path / "model")
    venv.save(str(tmp_path / "vec_normalize.pkl"))
    stats = VecNormalize.load(str(tmp_path / "vec_normalize.pkl"), sb3_make_vec_env("Pendulum-v1", n_envs=1))
    stats.training, stats.norm_reward = False, False
    loaded = cls.load(tmp_path / "model", env=stats)
    np.testing.assert_array_equal(stats.obs_rms.mean, venv.obs_rms.mean)
    for p, q in zip(model.actor.parameters(), loaded.actor.parameters()):
        assert torch.equal(p, q)
    mean, _ = evaluate_policy(loaded, stats, n_eval_episodes=2, warn=False)
    assert np.isfinite(mean)


def test_natrl_make_vec_env_has_sb3s_signature_and_trains() -> None:
    venv = natrl.make_vec_env("CartPole-v1", n_envs=3, seed=1)
    assert isinstance(venv, SB3VecEnv) and venv.num_envs == 3
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=96)
    model.learn(192)
    assert model.n_envs == 3 and model.get_vector_env() is venv.venv
    with pytest.raises(ValueError, match="monitor_dir"):
        natrl.make_vec_env("CartPole-v1", monitor_dir="logs")


class _Coin(gym.Env):
    """A user's own env with no registered spec."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(action), False, self.t >= 10, {}


def test_a_users_env_instance_is_the_one_env_as_in_sb3() -> None:
    model = PPO("MlpPolicy", _Coin(), n_steps=32, batch_size=32)
    model.learn(64)
    assert model.num_timesteps == 64 and model.n_envs == 1
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=2, warn=False)
    assert 0.0 <= mean <= 10.0
    with pytest.raises(ValueError, match="pass a factory"):
        PPO("MlpPolicy", _Coin(), n_envs=4)


def test_sb3s_callback_arguments_and_a_vec_env_for_evaluation(tmp_path) -> None:
    from natrl.callbacks import CheckpointCallback, EvalCallback

    venv = VecNormalize(sb3_make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    checkpoints = CheckpointCallback(save_freq=64, save_path=tmp_path, name_prefix="m", save_replay_buffer=True,
                                     save_vecnormalize=True)  # fmt: skip
    eval_env = VecNormalize(sb3_make_vec_env("Pendulum-v1", n_envs=2, seed=1), training=False, norm_reward=False)
    evaluation = EvalCallback(eval_env, n_eval_episodes=2, eval_freq=64, best_model_save_path=tmp_path / "best",
                              verbose=0)  # fmt: skip
    model = TRPO("MlpPolicy", venv, n_steps=64)
    model.learn(256, callback=[checkpoints, evaluation])
    assert (tmp_path / "m_128_steps.pt").is_file() and (tmp_path / "m_vecnormalize_128_steps.pkl").is_file()
    assert evaluation.evaluations_timesteps == [128, 256]
    assert evaluation.num_timesteps == model.num_timesteps == 256
    assert len(evaluation.evaluations_results[0]) == 2
    assert TRPO.load(tmp_path / "best" / "best_model", env=venv).num_timesteps in (128, 256)
    with pytest.raises(ValueError, match="spaces"):
        TRPO("MlpPolicy", "CartPole-v1", n_steps=64).learn(64, callback=EvalCallback("Pendulum-v1"))
    with pytest.raises(ValueError, match="unknown environment id"):
        EvalCallback("NoSuchEnv-v9")
    with pytest.raises(ValueError, match="eval_freq"):
        EvalCallback("Pendulum-v1", eval_freq=0)


def test_set_env_takes_sb3_vec_envs_and_gymnasium_vector_envs_as_sb3s_set_env() -> None:
    """SB3's ``model.set_env(vec_env)``: the model trains on the VecEnv given (its steps counted there), keeps the
    caller's previous VecEnv open, and refuses other spaces or another number of envs in one line."""
    first = sb3_make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPO("MlpPolicy", first, n_steps=32, batch_size=32)
    model.learn(64)
    second = VecNormalize(sb3_make_vec_env("CartPole-v1", n_envs=2, seed=1))
    model.set_env(second)
    model.learn(64, reset_num_timesteps=False)
    assert model.get_env() is second and model.get_vec_normalize_env() is second
    assert second.obs_rms.count > 64 and model.num_timesteps == 128  # the new VecEnv was stepped
    first.reset()  # the caller's first VecEnv is still open
    gym_vec = SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    model.set_env(gym_vec)
    model.learn(64, reset_num_timesteps=False)
    assert model.get_vector_env() is gym_vec and model.num_timesteps == 192
    model.set_env("CartPole-v1")  # back to envs natrl builds
    model.learn(64, reset_num_timesteps=False)
    assert model.get_vector_env() is not gym_vec
    for bad, match in ((sb3_make_vec_env("Pendulum-v1", n_envs=2), "spaces"),
                       (sb3_make_vec_env("CartPole-v1", n_envs=3), "has 3 envs and the agent n_envs=2")):  # fmt: skip
        with pytest.raises(ValueError, match=match) as err:
            model.set_env(bad)
        assert "\n" not in str(err.value)
    model.close()
