"""Atari on ale-py: the standard preprocessing from gymnasium's wrappers, the presets, the command line.
Skipped where ale-py or OpenCV is missing (``pip install 'natrl[atari]'``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

import gymnasium as gym

from natrl import ACKTR, PPO, TRPO
from natrl.cli import main
from natrl.presets import load_preset
from natrl.rl.atari import AtariWrapper, FireReset
from natrl.rl.env import env_factory
from natrl.rl.policies import NatureCNN


def _breakout() -> gym.Env:
    return env_factory("ALE/Breakout-v5", {"frameskip": 1})()


def test_atari_wrapper_gives_stacked_84x84_uint8_frames_clipped_rewards_and_fires() -> None:
    env = AtariWrapper(_breakout())
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    chain, inner = [], env.env
    while isinstance(inner, gym.Wrapper):
        chain.append(type(inner).__name__)
        inner = inner.env
    assert chain[:3] == ["FrameStackObservation", "ClipReward", "FireReset"] and "AtariPreprocessing" in chain
    rewards = []
    for _ in range(300):
        obs, r, terminated, truncated, _ = env.step(env.action_space.sample())
        rewards.append(r)
        if terminated or truncated:
            break
    assert set(rewards) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="FIRE"):
        FireReset(_NoFire())


class _NoFire(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Discrete(2)

    def get_action_meanings(self):
        return ["NOOP", "RIGHT"]


@pytest.mark.parametrize("cls", [PPO, TRPO, ACKTR])
def test_smoke_agents_train_on_breakout_with_the_preset_settings(cls, tmp_path) -> None:
    """Smoke test: the preset's env settings, NatureCNN over uint8 frames, one short learn, save and load."""
    preset = load_preset(cls.algo, "ALE/Breakout-v5", cls.config_cls)
    assert preset.env_kwargs == {"frameskip": 1} and preset.wrapper == "natrl.rl.atari:AtariWrapper"
    hp = {**preset.hyperparameters, "n_envs": 2, "n_steps": 16}
    if cls is PPO:
        hp["batch_size"] = 32
    agent = cls("ALE/Breakout-v5", env_kwargs=preset.env_kwargs, wrapper_class=AtariWrapper, **hp)
    assert isinstance(agent.actor.features, NatureCNN) and agent.actor.features is agent.critic.features
    agent.learn(64)
    batch, _ = agent._make_batch()
    assert str(batch.obs.dtype) == "torch.uint8"
    loaded = cls.load(agent.save(tmp_path / "m.pt"))
    assert loaded.wrapper_class is AtariWrapper and loaded.env_kwargs == {"frameskip": 1}


def test_natrl_train_uses_the_atari_preset(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "train",
        "ppo",
        "ALE/Pong-v5",
        "--steps",
        "256",
        "--set",
        "n_envs=2",
        "--set",
        "n_steps=64",
        "--set",
        "batch_size=64",
        "--eval-every",
        "0",
        "--eval-episodes",
        "1",
        "--run-dir",
        "run",
        "--quiet",
    ]
    assert main(args) == 0, capsys.readouterr().err
    text = (tmp_path / "run" / "config.toml").read_text()
    assert 'wrapper = "natrl.rl.atari:AtariWrapper"' in text and "frameskip = 1" in text


def test_ale_vector_env_reproduces_atari_wrapper_frames_and_rewards() -> None:
    from natrl.rl.atari import make_ale_vector_env

    # no sticky actions, no no-op starts, a game without FIRE (no fire-reset): the same states either way
    kw = {"frameskip": 1, "repeat_action_probability": 0.0}
    env = env_factory("ALE/MsPacman-v5", kw, AtariWrapper, {"noop_max": 0})()
    venv = make_ale_vector_env("ALE/MsPacman-v5", 1, kw, {"noop_max": 0})
    try:
        assert venv.single_observation_space == env.observation_space
        assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        env.reset(seed=0)
        venv.reset(seed=0)
        rng = np.random.default_rng(1)
        for _ in range(200):
            action = int(rng.integers(env.action_space.n))
            ours, r1, _, _, info = env.step(action)
            ale, r2, _, _, ale_info = venv.step(np.array([action]))
            np.testing.assert_array_equal(ours[-1], ale[0, -1])  # the newest 84×84 frame, bit for bit
            assert r1 == float(r2[0]) and info["episode_frame_number"] == ale_info["episode_frame_number"][0]
    finally:
        env.close()
        venv.close()


def test_ale_vector_env_serves_the_ball_after_a_lost_life() -> None:
    """A policy that never presses FIRE: in ALE's bare vector env Breakout stalls after the first lost life
    (lives stay at 4, no game ends); with FireAfterLostLife every life is served and the games end."""
    from ale_py.vector_env import AtariVectorEnv

    from natrl.rl.atari import FireAfterLostLife, make_ale_vector_env

    kw = {"frameskip": 1, "repeat_action_probability": 0.0}
    venv = make_ale_vector_env("ALE/Breakout-v5", 2, kw, {"noop_max": 0}, num_threads=1)
    assert isinstance(venv, FireAfterLostLife) and isinstance(venv.env, AtariVectorEnv)
    pacman = make_ale_vector_env("ALE/MsPacman-v5", 1, kw, num_threads=1)  # no FIRE: left bare
    assert isinstance(pacman, AtariVectorEnv)
    pacman.close()
    noop = np.zeros(2, np.int64)
    for env in (venv.env, venv):
        env.reset(seed=0)
        games, lives = 0, []
        for _ in range(1500):
            _, _, terminated, truncated, info = env.step(noop)
            games += int((terminated | truncated).sum())
            lives.append(info["lives"].copy())
        if env is venv:
            assert games >= 2  # both games played out, life after life
        else:
            assert games == 0 and (np.array(lives[-500:]) == 4).all()  # stuck after the first lost life
    venv.close()


def test_smoke_ppo_trains_on_ales_vector_env_and_bad_requests_are_one_line() -> None:
    agent = PPO("ALE/Breakout-v5", env_kwargs={"frameskip": 1}, wrapper_class=AtariWrapper, vec_env="ale",
                n_envs=2, n_steps=16, batch_size=32, n_epochs=1, hidden_sizes=[], seed=0)  # fmt: skip
    agent.learn(32)
    assert agent.num_timesteps == 32 and type(agent.collector.venv.unwrapped).__name__ == "AtariVectorEnv"
    agent.close()
    with pytest.raises(ValueError, match="takes an ALE/ environment id"):
        PPO("CartPole-v1", vec_env="ale")
    with pytest.raises(ValueError, match="wrapper_class=AtariWrapper"):
        PPO("ALE/Breakout-v5", vec_env="ale")
