"""natrl's callbacks as ``natrl train`` uses them: evaluations and checkpoints after the update that passes each
multiple of N steps (and at the end), the CSV row written before the checkpoint of the same step, and the
progress display; compared against the step counts computed by hand."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from natrl.callbacks import CheckpointCallback, EvalCallback, ProgressBarCallback
from natrl.logger import configure, read_progress
from natrl.rl import TRPO

T = "time/total_timesteps"
SMALL = {"n_envs": 2, "n_steps": 64, "hidden_sizes": (8,), "cg_iters": 2}  # 128 steps per update


def test_eval_and_checkpoint_every_timesteps_follow_the_updates(tmp_path: Path) -> None:
    agent = TRPO("CartPole-v1", seed=0, **SMALL)
    agent.set_logger(configure(tmp_path, ["csv"]))
    evaluation = EvalCallback(n_eval_episodes=1, verbose=0, every_timesteps=300, final_timesteps=1280)
    rows_at_checkpoints: list[int] = []

    def run_state() -> dict[str, int]:  # called while each checkpoint is written: what progress.csv holds then
        rows_at_checkpoints.append(len(read_progress(tmp_path / "progress.csv")[T]))
        return {"x": 1}

    saver = CheckpointCallback(
        None, tmp_path / "ckpt", every_timesteps=500, final_timesteps=1280, keep=2, file_name="step_{steps}.pt",
        run_state=run_state,
    )  # fmt: skip
    agent.learn(1280, callback=[evaluation, saver])
    steps = list(range(128, 1281, 128))
    # the first update at or past each multiple of 300 (and the last one) evaluates
    expected_eval = [s for i, s in enumerate(steps) if s // 300 > (steps[i - 1] if i else 0) // 300 or s == 1280]
    assert evaluation.evaluations_timesteps == expected_eval == [384, 640, 1024, 1280]
    cols = read_progress(tmp_path / "progress.csv")
    assert list(cols[T]) == steps
    assert list(cols[T][np.isfinite(cols["eval/mean_reward"])]) == expected_eval
    # checkpoints after 512, 1024 and 1280; each written when the CSV already had that step's row
    assert rows_at_checkpoints == [4, 8, 10]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_1024.pt", "step_1280.pt"]
    assert saver.last_timesteps == 1280 and evaluation.last_timesteps == 1280


def test_checkpoint_callback_takes_one_cadence() -> None:
    with pytest.raises(ValueError, match=r"give save_freq .* or every_timesteps"):
        CheckpointCallback(None, "x")
    with pytest.raises(ValueError, match=r"give save_freq .* or every_timesteps"):
        CheckpointCallback(10, "x", every_timesteps=10)
    with pytest.raises(ValueError, match=r"file_name must hold \{steps\} once"):
        CheckpointCallback(10, "x", file_name="model.pt")


def test_progress_lines_every_tenth_and_at_evaluations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent = TRPO("CartPole-v1", seed=0, **SMALL)
    agent.set_logger(configure(tmp_path, ["csv"]))
    evaluation = EvalCallback(n_eval_episodes=1, verbose=0, every_timesteps=640)
    agent.learn(1280, callback=[evaluation, ProgressBarCallback(lines=True, file=io.StringIO())])
    lines = capsys.readouterr().out.splitlines()
    # a line every 128 steps (a tenth of 1280); the evaluations' lines carry their returns
    assert [int(line.split()[1].split("/")[0].replace(",", "")) for line in lines] == list(range(128, 1281, 128))
    last = evaluation.last_result
    assert last is not None and lines[-1].endswith(f"eval {last.mean:.1f}±{last.std:.1f}")
    assert lines[3].endswith("eval —")


def test_evaluate_env_matches_the_agents_evaluation() -> None:
    import gymnasium as gym

    from natrl.rl.evaluation import evaluate_env

    agent = TRPO("CartPole-v1", seed=3, **SMALL)
    env = gym.make("CartPole-v1")
    try:
        ours = evaluate_env(agent, env, 3, seed=agent.seed + 10_000)
    finally:
        env.close()
    assert ours == agent.evaluate(3)  # the agent's default: seeds seed + 10_000 + i, deterministic
