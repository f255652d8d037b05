"""Exact resume: a run continued from a checkpoint is bit-identical to the run that was never stopped.

The reference is the uninterrupted run itself: the same agent trained on without saving, compared parameter by
parameter with the one loaded from the checkpoint (max |Δθ| = 0, not a tolerance).
"""

from __future__ import annotations

import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from natrl.cli import main
from natrl.rl import AGENTS
from natrl.rl.env_state import restore_vector_env_state, vector_env_state
from natrl.runs.rng import get_rng_state, set_rng_state


def _flat(agent) -> torch.Tensor:
    params = [*agent.actor.parameters(), *agent.critic.parameters()]
    return torch.cat([p.detach().flatten() for p in params])


def _hyper(algo: str) -> dict:
    return {"n_steps": 128, "n_envs": 2, **({"batch_size": 64} if algo == "ppo" else {})}


@pytest.mark.parametrize("algo", ["trpo", "npg", "ppo", "acktr", "a2c"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_a_loaded_checkpoint_continues_bit_for_bit(tmp_path, algo: str, env_id: str) -> None:
    cls = AGENTS[algo]
    agent = cls(env_id, seed=3, **_hyper(algo))
    agent.learn(512)
    path = agent.save(tmp_path / "mid.pt")
    rng = get_rng_state()
    agent.learn(768, reset_num_timesteps=False)  # episodes are cut by the checkpoint in mid-flight
    resumed = cls.load(path)
    set_rng_state(rng)
    resumed.learn(768, reset_num_timesteps=False)
    assert resumed.num_timesteps == agent.num_timesteps
    assert torch.equal(_flat(resumed), _flat(agent))
    agent.close()
    resumed.close()


def test_a_recurrent_policy_resumes_bit_for_bit(tmp_path) -> None:
    cls = AGENTS["ppo"]
    agent = cls("CartPole-v1", policy="MlpLstmPolicy", seed=1, n_steps=64, n_envs=2, batch_size=64,
                policy_kwargs={"lstm_hidden_size": 16})  # fmt: skip
    agent.learn(256)
    path = agent.save(tmp_path / "mid.pt")
    rng = get_rng_state()
    agent.learn(256, reset_num_timesteps=False)
    resumed = cls.load(path)
    set_rng_state(rng)
    resumed.learn(256, reset_num_timesteps=False)
    assert torch.equal(_flat(resumed), _flat(agent))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "Hopper-v5", "Ant-v5"])
def test_the_vector_env_state_round_trip_continues_every_step_exactly(env_id: str) -> None:
    def make() -> SyncVectorEnv:
        return SyncVectorEnv([lambda: gym.make(env_id) for _ in range(2)], autoreset_mode=AutoresetMode.SAME_STEP)

    original = make()
    original.reset(seed=0)
    original.action_space.seed(0)
    actions = [original.action_space.sample() for _ in range(400)]
    for action in actions[:120]:
        original.step(action)
    copy = make()
    copy.reset(seed=99)  # other episodes: the restored state must overwrite everything
    restore_vector_env_state(copy, vector_env_state(original))
    for action in actions[120:]:  # across episode ends (autoreset draws from the restored generators)
        a, b = original.step(action), copy.step(action)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)


def test_an_env_whose_state_is_unknown_gives_no_state() -> None:
    venv = SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))])
    venv.reset(seed=0)
    assert vector_env_state(venv) is None  # the agent falls back to fresh episodes on resume


def test_resume_from_the_command_line_ends_where_the_uninterrupted_run_ends(tmp_path, capsys) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    common = ["--set", "n_steps=128", "--set", "n_envs=2", "--eval-every", "0", "--checkpoint-every", "256",
              "--keep", "100", "--quiet", "--steps", "1024"]  # fmt: skip
    assert main(["train", "trpo", "Pendulum-v1", "--run-dir", str(full), *common]) == 0
    shutil.copytree(full, cut)
    for name in ("model.pt", "eval.json"):
        (cut / name).unlink()
    for path in (cut / "checkpoints").glob("step_*.pt"):
        if int(path.stem.split("_")[1]) > 512:
            path.unlink()  # as if killed just after step 512's checkpoint
    assert main(["train", "trpo", "Pendulum-v1", "--run-dir", str(cut), "--quiet", "--resume"]) == 0
    capsys.readouterr()
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(cut / "model.pt", weights_only=True)
    for part in ("actor", "critic"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
