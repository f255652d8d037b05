"""natrl's callbacks against stable-baselines3's own: the same printed lines, the same stopping decisions on the
same sequences, VecNormalize statistics synchronised as SB3's EvalCallback does, env instances evaluated as SB3
evaluates them, and SB3's callback objects refused with the natrl name to use."""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import natrl.callbacks
from natrl import PPO
from natrl.callbacks import (
    BaseCallback,
    EvalCallback,
    StopTrainingOnMaxEpisodes,
    StopTrainingOnNoModelImprovement,
    StopTrainingOnRewardThreshold,
)
from natrl.callbacks.base import SB3_NAMESAKES

sb3 = pytest.importorskip("stable_baselines3")
import stable_baselines3.common.callbacks as sb3_callbacks  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402


class _Walk(gym.Env):
    """A user's env without a registered spec: episodes of ``length`` steps, reward = the action, and a record
    of the seeds it was reset with."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 20) -> None:
        self.length, self.t, self.seeds = length, 0, []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), float(action), False, self.t >= self.length, {}


def _printed(fn: Any) -> list[str]:
    """The lines ``fn()`` prints."""
    return _run(fn)[1]


def _run(fn: Any) -> tuple[Any, list[str]]:
    """``fn()``'s result and the lines it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn()
    return result, out.getvalue().splitlines()


def test_eval_callback_evaluates_on_the_env_instance_itself_as_sb3() -> None:
    """A spec-less instance and a Monitor around one are evaluated in place (SB3 wraps the instance in a
    DummyVecEnv, no copy): the instance sees every evaluation episode, with the seeds agent.evaluate uses."""
    model = PPO("MlpPolicy", _Walk(), n_steps=32, batch_size=32, n_epochs=1, seed=3)
    plain = _Walk()
    callback = EvalCallback(plain, eval_freq=32, n_eval_episodes=2, verbose=0)
    model.learn(64, callback=callback)
    assert callback.evaluations_timesteps == [32, 64]
    assert plain.seeds == [10_003, 10_004] * 2  # agent.evaluate's default seeds: seed + 10_000 + i
    monitored = Monitor(_Walk())
    callback = EvalCallback(monitored, eval_freq=32, n_eval_episodes=2, eval_seed=5, verbose=0)
    model.learn(64, callback=callback)
    # SB3's Monitor recorded the episodes natrl counted, return for return
    assert [r for rs in callback.evaluations_results for r in rs] == monitored.get_episode_rewards()
    assert [n for ns in callback.evaluations_length for n in ns] == monitored.get_episode_lengths() == [20] * 4
    assert monitored.unwrapped.seeds == [5, 6] * 2
    with pytest.raises(ValueError, match="eval_seed must be an integer >= 0"):
        EvalCallback(_Walk(), eval_seed=-1)


def test_eval_callback_on_an_instance_equals_agent_evaluate_on_a_copy() -> None:
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0)
    instance = gym.make("CartPole-v1")
    callback = EvalCallback(instance, eval_freq=32, n_eval_episodes=3, verbose=0)
    model.learn(64, callback=callback)
    assert callback.evaluate().returns == model.evaluate(3).returns  # same seeds, same episodes


def test_eval_callback_prints_sb3s_lines() -> None:
    """verbose=1: SB3's EvalCallback on SB3's PPO and natrl's on natrl's PPO print the same lines (the returns
    do not depend on the policy: every episode is 20 steps of reward 1)."""

    class Ones(_Walk):
        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
            obs, _, terminated, truncated, info = super().step(action)
            return obs, 1.0, terminated, truncated, info

    ours = PPO("MlpPolicy", Ones(), n_steps=32, batch_size=32, n_epochs=1, seed=0)
    theirs = sb3.PPO("MlpPolicy", Ones(), n_steps=32, batch_size=32, n_epochs=1, seed=0, verbose=0)
    ours_lines = _printed(lambda: ours.learn(96, callback=EvalCallback(Ones(), eval_freq=32, n_eval_episodes=2)))
    theirs_lines = _printed(
        lambda: theirs.learn(
            96, callback=sb3_callbacks.EvalCallback(Ones(), eval_freq=32, n_eval_episodes=2, warn=False)
        )
    )
    assert ours_lines == theirs_lines
    assert ours_lines[:3] == [
        "Eval num_timesteps=32, episode_reward=20.00 +/- 0.00",
        "Episode length: 20.00 +/- 0.00",
        "New best mean reward!",
    ]
    assert ours_lines.count("New best mean reward!") == 1


def test_stoppers_print_sb3s_lines() -> None:
    parent = EvalCallback("CartPole-v1")
    parent.best_mean_reward = 7.0
    ours, theirs = StopTrainingOnRewardThreshold(5.0, verbose=1), sb3_callbacks.StopTrainingOnRewardThreshold(5.0, 1)
    ours.parent, theirs.parent = parent, parent  # type: ignore[assignment]
    assert _printed(ours._on_step) == _printed(theirs._on_step) != []


def test_no_model_improvement_stops_where_sb3s_does() -> None:
    """The same sequence of best mean rewards through natrl's and SB3's callback: the same decision at every
    evaluation, for several max_no_improvement_evals and min_evals, and the same printed line."""
    bests = [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    for max_evals, min_evals in ((0, 0), (1, 0), (2, 0), (2, 3), (4, 1)):
        parent = EvalCallback("CartPole-v1")
        ours = StopTrainingOnNoModelImprovement(max_evals, min_evals, verbose=1)
        theirs = sb3_callbacks.StopTrainingOnNoModelImprovement(max_evals, min_evals, verbose=1)
        for cb in (ours, theirs):
            cb.parent = parent  # type: ignore[assignment]
            cb.model = SimpleNamespace(num_timesteps=0)  # type: ignore[assignment]
        for best in bests:
            parent.best_mean_reward = best
            assert _run(ours.on_step) == _run(theirs.on_step), (max_evals, min_evals, best)
    with pytest.raises(ValueError, match="max_no_improvement_evals must be an integer >= 0"):
        StopTrainingOnNoModelImprovement(-1)


def test_max_episodes_counts_dones_as_sb3() -> None:
    """The same random sequence of dones over 3 envs through natrl's and SB3's StopTrainingOnMaxEpisodes: the
    same count and the same decision at every step."""
    rng = np.random.default_rng(0)
    for max_episodes in (1, 2, 5):
        env = SimpleNamespace(num_envs=3)
        model = SimpleNamespace(num_timesteps=0, get_env=lambda env=env: env, logger=None)
        ours, theirs = StopTrainingOnMaxEpisodes(max_episodes), sb3_callbacks.StopTrainingOnMaxEpisodes(max_episodes)
        for cb in (ours, theirs):
            cb.init_callback(model)  # type: ignore[arg-type]
            cb.on_training_start({}, {})
        for _ in range(40):
            dones = rng.random(3) < 0.2
            model.num_timesteps += 3
            for cb in (ours, theirs):
                cb.update_locals({"dones": dones})
            assert ours.on_step() == theirs.on_step()
            assert ours.n_episodes == theirs.n_episodes
    with pytest.raises(ValueError, match="max_episodes must be an integer >= 1"):
        StopTrainingOnMaxEpisodes(0)


def test_max_episodes_stops_training_where_sb3s_does() -> None:
    """Two envs with 20-step episodes and max_episodes=3: natrl's PPO and SB3's stop at the same step (the
    60th vector step, mid-rollout) and print the same line."""
    ours = PPO("MlpPolicy", lambda: _Walk(20), n_envs=2, n_steps=128, batch_size=64, n_epochs=1, seed=0)
    theirs = sb3.PPO("MlpPolicy", sb3_make_vec_env(lambda: _Walk(20), n_envs=2), n_steps=128, batch_size=64,
                     n_epochs=1, seed=0)  # fmt: skip
    ours_lines = _printed(lambda: ours.learn(10_000, callback=StopTrainingOnMaxEpisodes(3, verbose=1)))
    theirs_lines = _printed(lambda: theirs.learn(10_000, callback=sb3_callbacks.StopTrainingOnMaxEpisodes(3, 1)))
    assert ours.num_timesteps == theirs.num_timesteps == 120
    assert ours_lines == theirs_lines and "max_episodes=3, by playing for 6 episodes" in ours_lines[0]


def test_eval_callback_syncs_vecnormalize_statistics_as_sb3() -> None:
    """Training on VecNormalize and evaluating on VecNormalize(training=False): before each evaluation the eval
    env gets copies of the training env's statistics (SB3's sync_envs_normalization)."""
    venv = VecNormalize(sb3_make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(sb3_make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False, norm_reward=False)
    seen: list[tuple[float, float]] = []

    class Spy(BaseCallback):
        def _on_step(self) -> bool:  # called after each evaluation: the statistics it used, and the training env's
            seen.append((float(eval_env.obs_rms.count), float(venv.obs_rms.count)))
            return True

    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0)
    model.learn(256, callback=EvalCallback(eval_env, callback_after_eval=Spy(), eval_freq=64, n_eval_episodes=1,
                                           verbose=0))  # fmt: skip
    # two evaluations (at 128 and 256 transitions), each with the training env's statistics of that moment
    assert len(seen) == 2 and all(used == trained for used, trained in seen) and seen[0][0] < seen[1][0]
    np.testing.assert_array_equal(eval_env.obs_rms.mean, venv.obs_rms.mean)
    np.testing.assert_array_equal(eval_env.obs_rms.var, venv.obs_rms.var)
    assert eval_env.ret_rms.count == venv.ret_rms.count
    assert eval_env.obs_rms is not venv.obs_rms  # copies, as SB3's deepcopy
    for bad in (sb3_make_vec_env("Pendulum-v1", n_envs=1), gym.make("Pendulum-v1")):
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0)
        with pytest.raises(ValueError, match="wrapped the same way") as err:
            model.learn(64, callback=EvalCallback(bad, eval_freq=64, verbose=0))
        assert "\n" not in str(err.value)


def test_sb3_callback_objects_are_refused_with_natrls_name() -> None:
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    with pytest.raises(TypeError, match=r"stable-baselines3's CheckpointCallback; import CheckpointCallback from "
                                        r"natrl.callbacks instead \(same constructor\)"):  # fmt: skip
        model.learn(32, callback=sb3_callbacks.CheckpointCallback(save_freq=10, save_path="unused"))

    class Mine(sb3_callbacks.BaseCallback):
        def _on_step(self) -> bool:
            return True

    with pytest.raises(TypeError, match=r"Mine, a stable-baselines3 callback; subclass natrl.callbacks.BaseCallback"):
        model.learn(32, callback=Mine())
    with pytest.raises(TypeError, match="LogEveryNTimesteps, a stable-baselines3 callback; subclass"):
        model.learn(32, callback=sb3_callbacks.LogEveryNTimesteps(10))  # natrl has no namesake
    with pytest.raises(TypeError, match=r"got int$"):
        model.learn(32, callback=3)
    # every name the hint offers is SB3's and natrl's
    assert SB3_NAMESAKES <= set(natrl.callbacks.__all__)
    assert all(isinstance(getattr(sb3_callbacks, name), type) for name in SB3_NAMESAKES)
