"""stable-baselines3's user surface: its README quickstart, callbacks and TensorBoard examples run with
only the import changed, and its call shapes (learn, predict, constructor, accessors) behave as there."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from natrl import PPO, TRPO
from natrl.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    EveryNTimesteps,
    StopTrainingOnNoModelImprovement,
    StopTrainingOnRewardThreshold,
)
from natrl.logger import configure


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_readme_quickstart(tmp_path, monkeypatch) -> None:
    """stable-baselines3's README quickstart, verbatim but for the import (and a shorter budget): get_env() speaks
    SB3's VecEnv API (reset() -> obs, step() -> 4-tuple, automatic resets, render)."""
    monkeypatch.chdir(tmp_path)
    env = gym.make("CartPole-v1", render_mode="rgb_array")

    model = PPO("MlpPolicy", env, verbose=1)
    model.learn(total_timesteps=2_048)

    vec_env = model.get_env()
    obs = vec_env.reset()
    for i in range(1000):  # noqa: B007 (SB3's README, verbatim)
        action, _states = model.predict(obs, deterministic=True)
        obs, reward, done, info = vec_env.step(action)
        vec_env.render("human")
        # VecEnv resets automatically
        # if done:
        #   obs = env.reset()
    assert obs.shape == (1, 4) and reward.shape == (1,) and done.shape == (1,) and isinstance(info, list)
    assert model.get_vector_env().num_envs == 1  # the Gymnasium vector env natrl steps
    model.save("ppo_cartpole")
    del model
    model = PPO.load("ppo_cartpole")
    batch = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    action, _ = model.predict(batch, deterministic=True)
    ref = model.actor.distribution(torch.from_numpy(batch)).mode().numpy()
    np.testing.assert_array_equal(action, ref)  # the batch's own actions, not a split tuple
    env.close()


@pytest.mark.slow  # learns Pendulum-v1 to -400
def test_callbacks_example_stops_at_the_reward_threshold(tmp_path) -> None:
    """SB3's docs: EvalCallback with StopTrainingOnRewardThreshold as callback_on_new_best (Pendulum-v1)."""
    eval_env = gym.make("Pendulum-v1")
    callback_on_best = StopTrainingOnRewardThreshold(reward_threshold=-400, verbose=1)
    eval_callback = EvalCallback(
        eval_env, callback_on_new_best=callback_on_best, eval_freq=1024, best_model_save_path=tmp_path,
        log_path=tmp_path, verbose=1,
    )  # fmt: skip
    model = TRPO("MlpPolicy", "Pendulum-v1", n_envs=2, n_steps=1024, gamma=0.9, critic_epochs=15)
    model.learn(int(1e10), callback=eval_callback)
    results = np.load(tmp_path / "evaluations.npz")["results"].mean(1)
    assert results[0] < -400 <= results[-1] == eval_callback.best_mean_reward  # learned, then stopped
    assert 2048 < model.num_timesteps < 200_000
    assert (tmp_path / "best_model.pt").is_file()
    npz = np.load(tmp_path / "evaluations.npz")
    assert npz["results"].shape[1] == 5 and list(npz["timesteps"]) == eval_callback.evaluations_timesteps
    assert all(t % 2048 == 0 for t in npz["timesteps"])  # eval_freq counts vector steps: 1024 × 2 envs
    best = TRPO.load(tmp_path / "best_model.pt")
    assert best.evaluate(5, env=eval_env).mean == pytest.approx(eval_callback.best_mean_reward)


def test_tensorboard_example_has_sb3_tags(tmp_path) -> None:
    model = PPO("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), n_envs=2, n_steps=64, batch_size=64)
    model.learn(total_timesteps=1_024, callback=EvalCallback(gym.make("CartPole-v1"), eval_freq=128, verbose=0))
    model.learn(total_timesteps=256, reset_num_timesteps=False)  # continues PPO_1
    model.learn(total_timesteps=256)  # a new run: PPO_2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PPO_1", "PPO_2"]
    tags = _scalars(tmp_path / "PPO_1")
    for tag in ("rollout/ep_rew_mean", "eval/mean_reward", "eval/mean_ep_length", "time/fps", "train/approx_kl",
                "train/value_loss", "train/entropy_loss", "train/clip_fraction"):  # fmt: skip
        assert tag in tags, sorted(tags)
    assert [s for s, _ in tags["eval/mean_reward"]] == [256, 512, 768, 1024]
    assert max(s for s, _ in tags["time/total_timesteps"]) == 1_024 + 256


def test_checkpoint_callback_and_callback_list(tmp_path) -> None:
    class Counter(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.calls = {"start": 0, "rollout_start": 0, "step": 0, "rollout_end": 0, "end": 0}

        def _on_training_start(self) -> None:
            self.calls["start"] += 1

        def _on_rollout_start(self) -> None:
            self.calls["rollout_start"] += 1

        def _on_step(self) -> bool:
            self.calls["step"] += 1
            assert set(self.locals) >= {"new_obs", "actions", "rewards", "dones", "infos"}
            return True

        def _on_rollout_end(self) -> None:
            self.calls["rollout_end"] += 1

        def _on_training_end(self) -> None:
            self.calls["end"] += 1

    counter = Counter()
    seen = []
    ckpt = CheckpointCallback(save_freq=100, save_path=tmp_path, name_prefix="m")
    model = TRPO("Pendulum-v1", n_envs=2, n_steps=50)
    model.learn(400, callback=CallbackList([counter, ckpt, lambda agent, stats: seen.append(stats["timesteps"])]))
    assert counter.calls == {"start": 1, "rollout_start": 4, "step": 200, "rollout_end": 4, "end": 1}
    assert counter.n_calls == 200 and counter.num_timesteps == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_200_steps.pt", "m_400_steps.pt"]
    assert seen == [100.0, 200.0, 300.0, 400.0]


def test_a_callback_returning_false_stops_training_mid_rollout() -> None:
    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 30

    model = TRPO("CartPole-v1", n_envs=2, n_steps=64)
    before = torch.cat([p.detach().reshape(-1) for p in model.actor.parameters()])
    model.learn(10_000, callback=StopAt())
    assert model.num_updates == 0  # stopped during the first rollout, before any update
    assert torch.equal(before, torch.cat([p.detach().reshape(-1) for p in model.actor.parameters()]))


def test_no_improvement_and_every_n_timesteps() -> None:
    class Count(BaseCallback):
        def _on_step(self) -> bool:
            return True

    every = Count()
    stop = StopTrainingOnNoModelImprovement(max_no_improvement_evals=2)
    eval_cb = EvalCallback("CartPole-v1", callback_after_eval=stop, eval_freq=32, n_eval_episodes=1, verbose=0)
    model = PPO("CartPole-v1", n_envs=1, n_steps=32, batch_size=32, learning_rate=1e-12)  # cannot improve
    model.learn(100_000, callback=[eval_cb, EveryNTimesteps(64, every)])
    # the first sets the best; SB3 stops when more than 2 in a row bring no improvement: the fourth
    assert len(eval_cb.evaluations_timesteps) == 4
    assert every.n_calls == model.num_timesteps // 64


def test_learn_accepts_integral_floats_and_numpy_ints_and_refuses_the_rest() -> None:
    model = TRPO("CartPole-v1", n_envs=1, n_steps=32)
    model.learn(64.0)
    model.learn(np.int64(64))
    assert model.num_timesteps == 64  # reset_num_timesteps=True restarts the count (SB3's default)
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 96
    for bad in (0, -5, 1.5, "100", True, float("inf")):
        with pytest.raises(ValueError, match="total_timesteps must be a positive whole number, got"):
            model.learn(bad)
    with pytest.raises(ValueError, match=r"total_timesteps must be a positive whole number, at most 1e15, got 1e\+99"):
        model.learn(1e99)  # a typo, not a budget: refused before anything runs
    assert model.num_timesteps == 96


def test_predict_shapes_and_state_for_single_and_batched_observations() -> None:
    model = PPO("Pendulum-v1", n_envs=1, n_steps=32)
    action, state = model.predict(np.zeros(3, np.float32))
    assert action.shape == (1,) and state is None
    actions, state = model.predict(np.zeros((6, 3), np.float32), state="s", episode_start=np.ones(6, bool))
    assert actions.shape == (6, 1) and state == "s"
    # stochastic by default (SB3), the mode when asked
    a1, _ = model.predict(np.zeros((50, 3), np.float32))
    assert np.std(a1) > 0
    d1, _ = model.predict(np.zeros((50, 3), np.float32), deterministic=True)
    assert np.std(d1) == 0


def test_constructor_forms_devices_and_accessors(tmp_path) -> None:
    a = TRPO("MlpPolicy", "CartPole-v1", device="auto")
    b = TRPO("CartPole-v1", policy="MlpPolicy")
    c = TRPO(policy="MlpPolicy", env="CartPole-v1")
    assert a.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    for m in (a, b, c):
        assert m.env_id == "CartPole-v1" and isinstance(m.policy, torch.nn.Module)
    with pytest.raises(TypeError, match=r"TRPO\('MlpPolicy'\) needs an environment too"):
        TRPO("MlpPolicy")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        TRPO("CartPole-v1", device="gpu")
    params = b.get_parameters()
    assert set(params) == {"policy"} and any(k.startswith("actor.") for k in params["policy"])
    c.set_parameters(params)
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_array_equal(b.predict(obs, deterministic=True)[0], c.predict(obs, deterministic=True)[0])
    a.set_parameters(b.save(tmp_path / "b.pt"))
    np.testing.assert_array_equal(a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="set_env: the env's spaces"):
        a.set_env("Acrobot-v1")
    a.set_env(gym.make("CartPole-v1", max_episode_steps=50))
    a.learn(256)
    assert max(a.collector.episode_lengths) <= 50
    with pytest.raises(ValueError, match="evaluate: the env's spaces"):
        a.evaluate(2, env="Pendulum-v1")


def test_a_logger_from_configure_gets_every_update(tmp_path) -> None:
    model = TRPO("CartPole-v1", n_envs=1, n_steps=64)
    model.set_logger(configure(str(tmp_path), ["csv", "tensorboard"]))
    model.learn(256)
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and "train/cg_iterations" in rows[0] and "time/total_timesteps" in rows[0]
    assert "rollout/ep_rew_mean" in _scalars(tmp_path)


def test_a_callable_learning_rate_reaches_ppos_optimiser_and_the_trpo_critic(tmp_path) -> None:
    """The optimisers' lr after each update equals the schedule at that update's progress remaining
    (1 − steps after the rollout / total, stable-baselines3's convention)."""

    def schedule(progress: float) -> float:
        return 1e-3 * progress + 1e-5

    expected = [schedule(1 - k / 4) for k in range(1, 5)]
    ppo = PPO("CartPole-v1", learning_rate=schedule, n_envs=2, n_steps=32, batch_size=64)
    seen: list[float] = []
    ppo.learn(256, callback=lambda a, s: seen.append(a.optimizer.param_groups[0]["lr"]))
    assert seen == pytest.approx(expected, rel=1e-12)
    trpo = TRPO("CartPole-v1", critic_lr="lin_1e-3", max_kl=lambda p: 0.01 * p + 1e-4, n_envs=2, n_steps=32)
    seen = []
    trpo.learn(256, callback=lambda a, s: seen.append((a.critic_optimizer.param_groups[0]["lr"], s["kl"])))
    assert [lr for lr, _ in seen] == pytest.approx([1e-3 * (1 - k / 4) for k in range(1, 5)], rel=1e-12)
    assert all(kl <= 0.01 * (1 - k / 4) + 1e-4 for k, (_, kl) in enumerate(seen, start=1))
    # a function schedule is saved as its current value; pass it again to keep scheduling
    path = ppo.save(tmp_path / "m.pt")
    assert PPO.load(path).config.learning_rate == pytest.approx(schedule(0.0))
    assert PPO.load(path, custom_objects={"learning_rate": schedule}).config.learning_rate is schedule
    assert TRPO.load(trpo.save(tmp_path / "t.pt")).config.critic_lr == "lin_1e-3"


@pytest.mark.parametrize("bad", ["lin_x", "fast", float("inf"), lambda p: float("nan")])
def test_bad_schedules_are_named(bad) -> None:
    with pytest.raises(ValueError, match=r"learning_rate=.*must be a finite number, 'lin_<number>' or a function"):
        PPO("CartPole-v1", learning_rate=bad)


def test_progress_bar_shows_progress_and_leaves_training_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """``learn(progress_bar=True)`` adds a ProgressBarCallback; the networks it trains are those trained without."""
    kwargs = {"seed": 4, "n_envs": 2, "n_steps": 32, "batch_size": 32}
    plain = PPO("CartPole-v1", **kwargs).learn(256)
    shown = PPO("CartPole-v1", **kwargs).learn(256, progress_bar=True)
    out = capsys.readouterr()
    assert "256/256" in out.out + out.err
    for (name, a), (_, b) in zip(plain.policy.state_dict().items(), shown.policy.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_learn_takes_stable_baselines3s_arguments_only() -> None:
    agent = PPO("CartPole-v1", n_envs=1, n_steps=32, batch_size=32)
    for natrl_only in ({"total_steps": 32}, {"progress": False}, {"run_start": 0}):
        with pytest.raises(TypeError, match="unexpected keyword"):
            agent.learn(32, **natrl_only)


def test_schedules_span_the_whole_run_as_stable_baselines3s_progress_remaining() -> None:
    """progress_remaining = 1 - num_timesteps / _total_timesteps after each rollout, where a continued learn
    call (reset_num_timesteps=False) adds the steps before it: 32-step rollouts, learn(64) then learn(64)."""
    seen: list[float] = []

    def lr(progress_remaining: float) -> float:
        if not seen or seen[-1] != progress_remaining:
            seen.append(progress_remaining)
        return 3e-4 * progress_remaining + 1e-5

    agent = PPO("CartPole-v1", n_envs=1, n_steps=32, batch_size=32, n_epochs=1, learning_rate=lr)
    seen.clear()  # the construction's look at the schedule
    agent.learn(64)
    agent.learn(64, reset_num_timesteps=False)
    assert seen == [1 - 32 / 64, 1 - 64 / 64, 1 - 96 / 128, 1 - 128 / 128]


ALGOS = {"ppo": PPO, "trpo": TRPO}  # rl-baselines3-zoo's ALGOS, with natrl's classes (the import change)


# rl-baselines3-zoo's load line (rl_zoo3/enjoy.py at commit 22e3ff2450fd92033f7f032915e1f64894a09584, lines
# 176-204, the comments dropped), with the command-line arguments it reads as the ``args`` namespace.
def _zoo_load(algo: str, model_path: Any, args: SimpleNamespace, hyperparams: dict[str, Any]) -> Any:
    off_policy_algos = ["qrdqn", "dqn", "ddpg", "sac", "her", "td3", "tqc"]
    env = None

    kwargs = dict(seed=args.seed)
    if algo in off_policy_algos:
        kwargs.update(dict(buffer_size=1))
        if "optimize_memory_usage" in hyperparams:
            kwargs.update(optimize_memory_usage=False)

    newer_python_version = sys.version_info.major == 3 and sys.version_info.minor >= 8

    custom_objects = {}
    if newer_python_version or args.custom_objects:
        custom_objects = {
            "learning_rate": 0.0,
            "lr_schedule": lambda _: 0.0,
            "clip_range": lambda _: 0.0,
        }

    if "HerReplayBuffer" in hyperparams.get("replay_buffer_class", ""):
        kwargs["env"] = env

    model = ALGOS[algo].load(model_path, custom_objects=custom_objects, device=args.device, **kwargs)
    return model


# rl-baselines3-zoo's enjoy loop (rl_zoo3/enjoy.py at commit 22e3ff2450fd92033f7f032915e1f64894a09584,
# https://github.com/DLR-RM/rl-baselines3-zoo/blob/22e3ff2450fd92033f7f032915e1f64894a09584/rl_zoo3/enjoy.py#L213-L290)
# with its command-line arguments as the ``args`` namespace it reads them from.
def _zoo_enjoy(model: Any, env: Any, args: SimpleNamespace, is_atari: bool = False, is_minigrid: bool = False):
    obs = env.reset()

    # Deterministic by default except for atari games
    stochastic = args.stochastic or ((is_atari or is_minigrid) and not args.deterministic)
    deterministic = not stochastic

    episode_reward = 0.0
    episode_rewards, episode_lengths = [], []
    ep_len = 0
    # For HER, monitor success rate
    successes = []
    lstm_states = None
    episode_start = np.ones((env.num_envs,), dtype=bool)

    generator = range(args.n_timesteps)

    try:
        for _ in generator:
            action, lstm_states = model.predict(
                obs,  # type: ignore[arg-type]
                state=lstm_states,
                episode_start=episode_start,
                deterministic=deterministic,
            )
            obs, reward, done, infos = env.step(action)

            episode_start = done

            if not args.no_render:
                env.render("human")

            episode_reward += reward[0]
            ep_len += 1

            if args.n_envs == 1:
                # For atari the return reward is not the atari score
                # so we have to get it from the infos dict
                if is_atari and infos is not None and args.verbose >= 1:
                    episode_infos = infos[0].get("episode")
                    if episode_infos is not None:
                        print(f"Atari Episode Score: {episode_infos['r']:.2f}")
                        print("Atari Episode Length", episode_infos["l"])

                if done and not is_atari and args.verbose > 0:
                    # NOTE: for env using VecNormalize, the mean reward
                    # is a normalized reward when `--norm_reward` flag is passed
                    print(f"Episode Reward: {episode_reward:.2f}")
                    print("Episode Length", ep_len)
                    episode_rewards.append(episode_reward)
                    episode_lengths.append(ep_len)
                    episode_reward = 0.0
                    ep_len = 0

                # Reset also when the goal is achieved when using HER
                if done and infos[0].get("is_success") is not None:
                    if args.verbose > 1:
                        print("Success?", infos[0].get("is_success", False))

                    if infos[0].get("is_success") is not None:
                        successes.append(infos[0].get("is_success", False))
                        episode_reward, ep_len = 0.0, 0

    except KeyboardInterrupt:
        pass

    if args.verbose > 0 and len(successes) > 0:
        print(f"Success rate: {100 * np.mean(successes):.2f}%")

    if args.verbose > 0 and len(episode_rewards) > 0:
        print(f"{len(episode_rewards)} Episodes")
        print(f"Mean reward: {np.mean(episode_rewards):.2f} +/- {np.std(episode_rewards):.2f}")

    if args.verbose > 0 and len(episode_lengths) > 0:
        print(f"Mean episode length: {np.mean(episode_lengths):.2f} +/- {np.std(episode_lengths):.2f}")

    env.close()
    return episode_rewards, episode_lengths


ZOO_ARGS = SimpleNamespace(
    n_timesteps=210,
    stochastic=False,
    deterministic=False,
    no_render=True,
    n_envs=1,
    verbose=1,
    seed=0,
    device="auto",
    custom_objects=False,
)


@pytest.mark.parametrize("policy", ["MlpPolicy", "MlpLstmPolicy"])
def test_rl_zoo_enjoy_loop_on_sb3_make_vec_env(tmp_path, policy, capsys: pytest.CaptureFixture[str]) -> None:
    """The zoo's enjoy loop on SB3's make_vec_env with a natrl PPO loaded from a file: the episodes it counts are
    those SB3's Monitor recorded; a recurrent policy's state is carried within an episode and zeroed at each
    ``episode_start`` (sb3-contrib RecurrentPPO's convention), so each step's state is what predict gives from
    the episode's own observations alone, started from ``state=None``."""
    make_vec_env = pytest.importorskip("stable_baselines3.common.env_util").make_vec_env
    PPO(policy, "CartPole-v1", seed=0).save(tmp_path / "ppo")
    model = _zoo_load("ppo", tmp_path / "ppo", ZOO_ARGS, hyperparams={})
    calls: list[tuple[np.ndarray, Any, np.ndarray, np.ndarray, Any]] = []
    predict = model.predict

    def recording_predict(obs, state=None, episode_start=None, deterministic=False):
        action, new_state = predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        calls.append((obs.copy(), state, np.array(episode_start), action, new_state))
        return action, new_state

    model.predict = recording_predict  # type: ignore[method-assign]
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0, env_kwargs={"max_episode_steps": 25})
    monitor = env.envs[0]
    episode_rewards, episode_lengths = _zoo_enjoy(model, env, ZOO_ARGS)

    assert len(calls) == ZOO_ARGS.n_timesteps and len(episode_lengths) >= 8
    assert episode_lengths == monitor.get_episode_lengths() and episode_rewards == monitor.get_episode_rewards()
    assert f"{len(episode_rewards)} Episodes" in capsys.readouterr().out
    starts = [i for i, (_, _, start, _, _) in enumerate(calls) if start[0]]
    ends = np.cumsum(episode_lengths)
    assert starts == [0, *ends[ends < len(calls)]]  # episode_start = done: the step after each ending
    # the reference: each episode replayed alone from state=None, one observation at a time
    for first, last in zip(starts, [*starts[1:], len(calls)], strict=True):
        state = None
        for obs, _, _, action, new_state in calls[first:last]:
            ref_action, state = predict(obs, state=state, deterministic=True)
            np.testing.assert_array_equal(action, ref_action)
            if policy == "MlpPolicy":
                assert new_state is None
            else:
                for got, ref in zip(new_state, state, strict=True):
                    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
        if policy == "MlpLstmPolicy" and first > 0:  # the state the loop passed in was the last episode's
            obs, stale, _, _, from_zero = calls[first]
            _, carried = predict(obs, state=stale, deterministic=True)
            assert not np.allclose(np.asarray(carried[0]), np.asarray(from_zero[0]))


@pytest.mark.parametrize("source", ["get_env", "make_vec_env"])
def test_sb3_view_reports_ended_episodes_as_sb3s_monitor(source: str) -> None:
    """``infos[i]["episode"]`` at each episode's end holds the return and length SB3's Monitor (which SB3's
    make_vec_env wraps every env in) reports for the same seeds and actions: counted by the view for
    ``model.get_env()``, split per env from RecordEpisodeStatistics' record for ``natrl.make_vec_env``."""
    from natrl import make_vec_env

    sb3_make_vec_env = pytest.importorskip("stable_baselines3.common.env_util").make_vec_env
    if source == "get_env":
        ours = TRPO("CartPole-v1", n_envs=2).get_env()
        ours.seed(3)
    else:
        ours = make_vec_env("CartPole-v1", n_envs=2, seed=3)
    theirs = sb3_make_vec_env("CartPole-v1", n_envs=2, seed=3)
    np.testing.assert_array_equal(ours.reset(), theirs.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(300):
        actions = rng.integers(0, 2, size=2)
        _, _, done, infos = ours.step(actions)
        _, _, sb3_done, sb3_infos = theirs.step(actions)
        np.testing.assert_array_equal(done, sb3_done)
        for info, sb3_info in zip(infos, sb3_infos, strict=True):
            assert set(info) == set(sb3_info)
            assert info["TimeLimit.truncated"] == sb3_info["TimeLimit.truncated"]
            if "episode" in sb3_info:
                assert (info["episode"]["r"], info["episode"]["l"]) == (
                    sb3_info["episode"]["r"],
                    sb3_info["episode"]["l"],
                )
                ended += 1
    assert ended >= 10


def test_rl_zoo_enjoy_loop_on_the_loaded_models_get_env(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """The zoo's enjoy loop on ``model.get_env()`` of a TRPO loaded from a file counts the episodes a plain
    Gymnasium loop (reset(seed) once, then the env's own resets) gives with the same deterministic policy."""
    TRPO("MlpPolicy", "CartPole-v1", seed=1).save(tmp_path / "trpo")
    model = _zoo_load("trpo", tmp_path / "trpo", ZOO_ARGS, hyperparams={})
    env = model.get_env()
    env.seed(7)
    episode_rewards, episode_lengths = _zoo_enjoy(model, env, ZOO_ARGS)
    assert len(episode_lengths) >= 3 and f"{len(episode_rewards)} Episodes" in capsys.readouterr().out

    reference = gym.make("CartPole-v1")
    obs, _ = reference.reset(seed=7)
    lengths: list[int] = []
    length = 0
    for _ in range(ZOO_ARGS.n_timesteps):
        obs, _, terminated, truncated, _ = reference.step(model.predict(obs, deterministic=True)[0])
        length += 1
        if terminated or truncated:
            lengths.append(length)
            obs, length = reference.reset()[0], 0
    assert episode_lengths == lengths and episode_rewards == [float(n) for n in lengths]  # CartPole: reward 1 a step


def test_get_env_exposes_its_sub_envs_as_sb3s_dummy_vec_env() -> None:
    """``vec_env.envs[i]`` (SB3 code reaching into a DummyVecEnv) is env i, in the state SB3's env i is in after
    the same seeded reset; sub-envs in other processes are refused in one line."""
    from natrl import make_vec_env

    sb3_make_vec_env = pytest.importorskip("stable_baselines3.common.env_util").make_vec_env
    model = PPO("CartPole-v1", n_envs=2, n_steps=32, batch_size=64)
    ours, theirs = model.get_env(), sb3_make_vec_env("CartPole-v1", n_envs=2, seed=5)
    ours.seed(5)
    ours.reset(), theirs.reset()
    for env, sb3_env in zip(ours.envs, theirs.envs, strict=True):
        np.testing.assert_array_equal(env.unwrapped.state, sb3_env.unwrapped.state)
    assert ours.envs[1] is model.get_vector_env().envs[1]
    subproc = make_vec_env("CartPole-v1", n_envs=2, vec_env_cls="subproc")
    try:
        with pytest.raises(AttributeError, match="AsyncVectorEnv does not expose its sub-envs in this process"):
            subproc.envs  # noqa: B018
    finally:
        subproc.close()


def test_the_zoos_load_line_freezes_the_model_as_stable_baselines3s(tmp_path) -> None:
    """SB3's load replaces the saved values named in custom_objects and ignores the others, sets ``seed=`` and
    re-seeds: after the zoo's load line both libraries' models hold learning_rate 0 (TRPO's: the critic's, as
    sb3-contrib's) and a clip range of 0 (PPO), and learning moves none of PPO's parameters (Adam at lr 0)."""
    sb3 = pytest.importorskip("stable_baselines3")
    sb3_contrib = pytest.importorskip("sb3_contrib")
    args = SimpleNamespace(seed=7, device="cpu", custom_objects=False)
    for algo, theirs_cls in (("ppo", sb3.PPO), ("trpo", sb3_contrib.TRPO)):
        ALGOS[algo]("CartPole-v1", seed=0, n_steps=64, batch_size=64).save(tmp_path / algo)
        theirs_cls("MlpPolicy", "CartPole-v1", seed=0, n_steps=64, batch_size=64).save(tmp_path / f"sb3_{algo}")
        ours = _zoo_load(algo, tmp_path / algo, args, hyperparams={})
        old_algos = dict(ALGOS)
        ALGOS[algo] = theirs_cls
        try:
            theirs = _zoo_load(algo, tmp_path / f"sb3_{algo}", args, hyperparams={})
        finally:
            ALGOS.update(old_algos)
        assert ours.seed == theirs.seed == 7
        assert ours.learning_rate == theirs.learning_rate == 0.0
        assert (ours.n_steps, ours.batch_size, ours.gamma) == (theirs.n_steps, theirs.batch_size, theirs.gamma)
        if algo == "ppo":
            assert ours.config.clip_range(1.0) == theirs.clip_range(1.0) == 0.0
            before = {k: v.clone() for k, v in ours.policy.state_dict().items()}
            ours.learn(128)
            for name, value in ours.policy.state_dict().items():
                torch.testing.assert_close(value, before[name], rtol=0, atol=0)
        # a frozen model saves and loads again (0 is refused only when an agent is built)
        assert type(ours).load(ours.save(tmp_path / f"again_{algo}")).learning_rate == 0.0
    with pytest.raises(ValueError, match=r"learning_rate=0\.0"):
        PPO("CartPole-v1", learning_rate=0.0)
    with pytest.raises(ValueError, match=r"critic_lr=0\.0"):
        TRPO("CartPole-v1", learning_rate=0.0)


def test_every_step_size_at_0_from_custom_objects_freezes_the_model(tmp_path) -> None:
    """A model loaded with its step sizes at 0 (TRPO's trust region, NPG's step, A2C's RMSprop, the critics' Adam)
    learns without moving a parameter; ACKTR's learning rate, which scales its natural step's KL bound, stays
    refused at 0."""
    from natrl import A2C, ACKTR, NPG

    frozen = ((TRPO, {"target_kl": 0.0, "learning_rate": 0.0}), (NPG, {"step_size": 0.0, "critic_lr": 0.0}),
              (A2C, {"learning_rate": 0.0}))  # fmt: skip
    for cls, custom_objects in frozen:
        model = cls.load(cls("Pendulum-v1", n_steps=32).save(tmp_path / cls.__name__), custom_objects=custom_objects)
        before = {k: v.clone() for k, v in model.policy.state_dict().items()}
        model.learn(64)
        for name, value in model.policy.state_dict().items():
            torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=f"{cls.__name__} {name}")
    path = ACKTR("Pendulum-v1", n_steps=32).save(tmp_path / "acktr")
    with pytest.raises(ValueError, match=r"learning_rate=0\.0: must be > 0"):
        ACKTR.load(path, custom_objects={"learning_rate": 0.0})


def test_load_translates_sb3_contrib_names_and_refuses_unknown_keywords(tmp_path) -> None:
    """custom_objects and load's keywords speak sb3-contrib TRPO's names as the constructor does (learning_rate →
    critic_lr, batch_size → critic_batch_size, target_kl → max_kl = k · target_kl) without sb3-contrib's defaults
    for the names not given; a keyword that is neither an attribute nor a hyperparameter is one line."""
    path = TRPO("Pendulum-v1", max_kl=0.05, n_steps=64).save(tmp_path / "t")
    model = TRPO.load(path, custom_objects={"learning_rate": 3e-4, "target_kl": 0.02}, batch_size=32)
    reference = TRPO("Pendulum-v1", max_kl=0.05, n_steps=64, critic_lr=3e-4, critic_batch_size=32)
    assert model.config.max_kl == pytest.approx(0.02)  # k = 1 action dimension
    assert model.config == TRPO("Pendulum-v1", n_steps=64, critic_lr=3e-4, critic_batch_size=32, max_kl=0.02).config
    assert reference.config.max_kl == 0.05
    with pytest.raises(TypeError, match=r"TRPO.load\(\) got unexpected keyword argument\(s\) buffer_siz"):
        TRPO.load(path, buffer_siz=1)
    with pytest.raises(TypeError, match="custom_objects must be a dict"):
        TRPO.load(path, custom_objects=[("learning_rate", 0.0)])


def test_set_random_seed_reseeds_as_a_new_model_with_that_seed() -> None:
    """After ``set_random_seed(s)`` the stochastic actions are those of a model built with seed s and the same
    weights; ``policy.predict`` is ``model.predict`` (one generator)."""
    obs = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    model, reference = PPO("Pendulum-v1", seed=0), PPO("Pendulum-v1", seed=5)
    reference.set_parameters(model.get_parameters())
    model.set_random_seed(5)
    assert model.seed == 5
    np.testing.assert_array_equal(model.predict(obs)[0], reference.predict(obs)[0])
    np.testing.assert_array_equal(model.policy.predict(obs)[0], reference.predict(obs)[0])
    model.set_random_seed(None)  # SB3's: nothing happens
    assert model.seed == 5


def test_model_and_policy_attributes_match_stable_baselines3s() -> None:
    """``model.gamma``/``learning_rate``/``n_steps``/``batch_size``/``env``/``ep_info_buffer`` and ``model.policy``'s
    ``predict``/``set_training_mode``/``obs_to_tensor`` against SB3's (and sb3-contrib TRPO's) for the same
    settings."""
    sb3 = pytest.importorskip("stable_baselines3")
    sb3_contrib = pytest.importorskip("sb3_contrib")
    settings = {"n_steps": 32, "batch_size": 16, "gamma": 0.95, "learning_rate": 1e-3}
    pairs = [
        (PPO("MlpPolicy", "CartPole-v1", n_epochs=1, **settings), sb3.PPO("MlpPolicy", "CartPole-v1", **settings)),
        (TRPO("MlpPolicy", "CartPole-v1", **settings), sb3_contrib.TRPO("MlpPolicy", "CartPole-v1", **settings)),
    ]
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    for ours, theirs in pairs:
        for name in ("gamma", "learning_rate", "n_steps", "batch_size"):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert isinstance(ours.env, sb3.common.vec_env.VecEnv) and ours.env.num_envs == theirs.env.num_envs
        assert ours.env is ours.get_env()
        assert len(ours.ep_info_buffer) == 0  # before learning (SB3's is None until learn sets it up)
        ours.learn(64), theirs.learn(64)
        assert ours.ep_info_buffer.maxlen == theirs.ep_info_buffer.maxlen == 100
        assert {tuple(e) for e in ours.ep_info_buffer} == {tuple(e) for e in theirs.ep_info_buffer} == {("r", "l", "t")}
        for batch in (obs[0], obs):
            got, vectorized = ours.policy.obs_to_tensor(batch)
            ref, sb3_vectorized = theirs.policy.obs_to_tensor(batch)
            assert vectorized == sb3_vectorized
            torch.testing.assert_close(got, ref, rtol=0, atol=0)
            np.testing.assert_array_equal(
                ours.policy.predict(batch, deterministic=True)[0], ours.predict(batch, deterministic=True)[0]
            )
        for mode in (False, True):
            ours.policy.set_training_mode(mode)
            theirs.policy.set_training_mode(mode)
            assert ours.policy.training == theirs.policy.training == mode
    a2c = __import__("natrl").A2C("CartPole-v1")
    assert not hasattr(sb3.A2C("MlpPolicy", "CartPole-v1"), "batch_size")
    with pytest.raises(AttributeError, match="A2C has no batch_size"):
        a2c.batch_size  # noqa: B018


class _RecordSteps(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[np.ndarray, list[dict[str, Any]]]] = []

    def _on_step(self) -> bool:
        self.steps.append((np.array(self.locals["actions"]), [dict(info) for info in self.locals["infos"]]))
        return True


def test_callbacks_see_sb3s_infos_and_ep_info_buffer_holds_monitors_episodes() -> None:
    """During training ``self.locals["infos"]`` is SB3's list of per-env dicts: replaying the same actions on
    SB3's make_vec_env (Monitor, DummyVecEnv) with the same seeds gives the same keys, the same ``episode``
    return and length, ``terminal_observation`` and ``TimeLimit.truncated`` at each end; ``ep_info_buffer``
    holds those episodes' records."""
    make_vec_env = pytest.importorskip("stable_baselines3.common.env_util").make_vec_env
    kwargs = {"max_episode_steps": 20}
    model = PPO("CartPole-v1", n_envs=2, n_steps=64, batch_size=64, n_epochs=1, seed=4, env_kwargs=kwargs)
    recorder = _RecordSteps()
    model.learn(256, callback=recorder)
    theirs = make_vec_env("CartPole-v1", n_envs=2, seed=4, env_kwargs=kwargs)
    theirs.reset()
    episodes: list[dict[str, Any]] = []
    truncations = 0
    for actions, infos in recorder.steps:
        _, _, _, sb3_infos = theirs.step(actions)
        for info, sb3_info in zip(infos, sb3_infos, strict=True):
            assert set(info) == set(sb3_info)
            if "episode" in sb3_info:
                assert (info["episode"]["r"], info["episode"]["l"]) == (
                    sb3_info["episode"]["r"],
                    sb3_info["episode"]["l"],
                )
                assert info["TimeLimit.truncated"] == sb3_info["TimeLimit.truncated"]
                np.testing.assert_array_equal(info["terminal_observation"], sb3_info["terminal_observation"])
                episodes.append(sb3_info["episode"])
                truncations += sb3_info["TimeLimit.truncated"]
    assert len(episodes) >= 10 and 0 < truncations < len(episodes)
    assert [(e["r"], e["l"]) for e in model.ep_info_buffer] == [(e["r"], e["l"]) for e in episodes]
    assert all(0 <= e["t"] for e in model.ep_info_buffer)


def test_step_infos_are_a_list_that_keeps_every_episode_when_read_later() -> None:
    # a callback that keeps locals["infos"] and reads them at the rollout's end (many episodes later) sees every
    # ended episode's Monitor record, equal to the collector's, as SB3's list of dicts would give them
    from natrl.callbacks import BaseCallback

    class Keep(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.kept: list[Any] = []
            self.dones = 0

        def _on_step(self) -> bool:
            infos = self.locals["infos"]
            assert type(infos) is list and all(type(i) is dict for i in infos)
            self.kept.append(infos)
            self.dones += int(np.sum(self.locals["dones"]))
            return True

    keep = Keep()
    agent = PPO("CartPole-v1", seed=0, n_envs=8, n_steps=512, batch_size=512, n_epochs=1)
    agent.learn(4096, callback=keep)
    episodes = [i["episode"] for infos in keep.kept for i in infos if "episode" in i]
    assert keep.dones > 100 and len(episodes) == keep.dones  # more episodes than the collector's 100-deep memory
    assert [e["l"] for e in episodes][-100:] == [e["l"] for e in agent.ep_info_buffer]


def test_the_global_generators_are_seeded_as_sb3s_set_random_seed_seeds_them() -> None:
    import random

    from stable_baselines3.common.utils import set_random_seed

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))  # noqa: NPY002

    PPO("CartPole-v1", seed=7)
    ours = draws()
    set_random_seed(7)
    assert ours[:2] == draws()[:2]  # a user's wrapper or callback draws reproducibly (torch's: after the init's)
    model = PPO("CartPole-v1", seed=0)
    model.set_random_seed(11)
    ours = draws()
    set_random_seed(11)
    assert ours == draws()


def test_save_takes_a_file_object_and_exclude_as_stable_baselines3s_save(tmp_path) -> None:
    import io

    from stable_baselines3 import PPO as SB3PPO

    from natrl.rl import load_agent

    sb3 = SB3PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0)
    theirs = io.BytesIO()
    assert sb3.save(theirs, exclude=["env", "tensorboard_log"]) is None  # what SB3's save takes and returns
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0).learn(128)
    ours = io.BytesIO()
    assert model.save(ours, exclude=["env", "tensorboard_log"]) is None
    ours.seek(0)
    obs = np.stack([model.observation_space.sample() for _ in range(8)])
    for loaded in (load_agent(ours), PPO.load(ours)):  # the file object is left where it was: read twice
        np.testing.assert_array_equal(
            loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
        )
        assert loaded.num_timesteps == 128
    path = model.save(tmp_path / "m")
    with open(path, "rb") as file:
        assert PPO.load(file).num_timesteps == 128
    with pytest.raises(ValueError, match=r"^save\(include=\['env'\]\): a natrl checkpoint holds a fixed set .*"):
        model.save(tmp_path / "n", include=["env"])
    with pytest.raises(TypeError, match=r"^save: exclude must be a list of attribute names, got 'env'$"):
        model.save(tmp_path / "n", exclude="env")
    assert not (tmp_path / "n.pt").exists()


def test_file_objects_natrl_cannot_read_or_write_are_one_line(tmp_path) -> None:
    import io
    import os
    import threading

    from natrl.rl import CheckpointError, load_agent

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0).learn(64)
    read, write = os.pipe()

    def save_into_pipe() -> None:
        with os.fdopen(write, "wb") as pipe:
            model.save(pipe)

    writer = threading.Thread(target=save_into_pipe)
    writer.start()
    with os.fdopen(read, "rb") as pipe:  # not seekable: load_agent reads it once
        assert load_agent(pipe).num_timesteps == 64
    writer.join(timeout=60)
    path = model.save(tmp_path / "m")
    with open(path, encoding="utf-8") as text, pytest.raises(CheckpointError, match=r"is a text file object: .*'rb'"):
        PPO.load(text)
    with open(tmp_path / "t", "w") as text, pytest.raises(TypeError, match=r"is a text file object: .*'wb' mode$"):
        model.save(text)
    with open(path, "rb") as file, pytest.raises(CheckpointError, match=r"^the file object .*m\.pt holds a ppo agent"):
        TRPO.load(file)
    other = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=1)
    with open(path, "rb") as file:
        other.set_parameters(file, exact_match=True, device="auto")
    torch.testing.assert_close(other.get_parameters()["policy"], model.get_parameters()["policy"])
    partial = {"policy": {k: v for k, v in model.get_parameters()["policy"].items() if k.startswith("critic.")}}
    with pytest.raises(CheckpointError, match="do not fit"):
        other.set_parameters(partial)  # exact_match=True, SB3's default
    other.set_parameters(partial, exact_match=False)
    buffer = io.BytesIO()
    model.save(buffer)
    assert buffer.tell() > 0
