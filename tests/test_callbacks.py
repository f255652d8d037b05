"""natrl's callbacks as ``natrl train`` uses them: evaluations and checkpoints after the update that passes each
multiple of N steps (and at the end), the CSV row written before the checkpoint of the same step, and the
progress display; compared against the step counts computed by hand."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from natrl.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    EveryNTimesteps,
    ProgressBarCallback,
)
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


class SimulatorCrash(RuntimeError):
    pass


class CrashAtStep(gym.Wrapper):
    """An env whose ``at``-th ``step`` call raises, as a simulator that dies mid-training."""

    def __init__(self, env: gym.Env, at: int = 150) -> None:
        super().__init__(env)
        self.calls, self.at = 0, at

    def step(self, action):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.at:
            raise SimulatorCrash(f"simulator died at step call {self.calls}")
        return self.env.step(action)


class Hooks(BaseCallback):
    """Records which end hooks ran; with ``fail=True`` its error hook raises too."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail, self.ended, self.errors = fail, 0, []  # type: ignore[var-annotated]

    def _on_training_end(self) -> None:
        self.ended += 1

    def _on_training_error(self, error: BaseException) -> None:
        self.errors.append(error)
        if self.fail:
            raise OSError("cleanup failed as well")


@pytest.mark.parametrize("failing_cleanup", [False, True])
def test_an_env_that_raises_mid_training_closes_the_bar_saves_nothing_more_and_reraises(
    tmp_path: Path, failing_cleanup: bool
) -> None:
    agent = TRPO("CartPole-v1", seed=0, wrapper_class=CrashAtStep, **SMALL)
    hooks = Hooks(fail=failing_cleanup)
    saver = CheckpointCallback(None, tmp_path, every_timesteps=128, file_name="step_{steps}.pt")
    out = io.StringIO()
    progress = ProgressBarCallback(lines=False, file=out)
    bars = []

    class GrabBar(BaseCallback):  # the tqdm object, which the callback drops when it closes it
        def _on_training_start(self) -> None:
            bars.append(progress.bar)

    with warnings.catch_warnings(record=True) as caught, pytest.raises(SimulatorCrash) as raised:
        warnings.simplefilter("always")
        agent.learn(1280, callback=[hooks, saver, progress, GrabBar()])
    # the original exception, raised once more; a cleanup hook that failed too is a note on it (Python 3.10: a
    # warning)
    assert hooks.errors == [raised.value] and str(raised.value) == "simulator died at step call 150"
    said = [*getattr(raised.value, "__notes__", []), *(str(w.message) for w in caught if "Hooks" in str(w.message))]
    assert said == (["Hooks.on_training_error raised too: OSError('cleanup failed as well')"] if failing_cleanup
                    else [])  # fmt: skip
    # the bar: closed (tqdm disables a closed bar), at the last finished update, its line ended
    (bar,) = bars
    steps = agent.num_timesteps
    assert progress.bar is None and bar.disable and bar.n == steps and out.getvalue().endswith("\n")
    assert 128 <= steps < 1280 and steps % 128 == 0  # it crashed mid-run, after whole updates
    # no end hook for half a run: the checkpoints are those of the finished updates, no partial one
    assert hooks.ended == 0
    assert sorted(int(p.stem.split("_")[1]) for p in tmp_path.glob("step_*.pt")) == list(range(128, steps + 1, 128))
    agent.close()

    # a run that ends normally: the end hook once, the error hook never
    hooks = Hooks()
    TRPO("CartPole-v1", seed=0, **SMALL).learn(128, callback=hooks)
    assert hooks.ended == 1 and hooks.errors == []


class Started(BaseCallback):
    """Records the hooks a parent passed on: the start (with the learn call's variables) and the step variables."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []
        self.seen_locals: set[str] = set()

    def _on_training_start(self) -> None:
        self.started.append(int(self.locals["total_timesteps"]))

    def update_child_locals(self, locals_: dict) -> None:  # type: ignore[type-arg]
        self.seen_locals.update(locals_)


@pytest.mark.parametrize("crash", [False, True])
@pytest.mark.parametrize("parent", ["EveryNTimesteps", "EvalCallback"])
def test_a_progress_bar_inside_another_callback_is_started_and_closed(parent: str, crash: bool) -> None:
    """EveryNTimesteps and EvalCallback pass on_training_start (as SB3's EventCallback), the step variables,
    on_training_end and on_training_error on to the callbacks they hold."""
    progress = ProgressBarCallback(lines=False, file=io.StringIO())
    hooks, started = Hooks(), Started()
    if parent == "EveryNTimesteps":
        outer: BaseCallback = EveryNTimesteps(64, CallbackList([progress, hooks, started]))
    else:
        outer = EvalCallback(eval_freq=10**6, callback_on_new_best=CallbackList([hooks, started]),
                             callback_after_eval=progress)  # fmt: skip
    bars = []

    class GrabBar(BaseCallback):  # runs after the parent's start hook: the bar it opened, if any
        def _on_training_start(self) -> None:
            bars.append(progress.bar)

    agent = TRPO("CartPole-v1", seed=0, wrapper_class=CrashAtStep if crash else None, **SMALL)
    with pytest.raises(SimulatorCrash) if crash else contextlib.nullcontext() as raised:
        agent.learn(512, callback=[outer, GrabBar()])  # the crash: in the third update
    agent.close()
    (bar,) = bars
    assert bar is not None and bar.total == 512  # started, with the learn call's total
    assert progress.bar is None and bar.disable  # closed (tqdm disables a closed bar)
    assert started.started == [512]
    assert "infos" in started.seen_locals, started.seen_locals  # a step's variables
    if crash:
        assert hooks.errors == [raised.value] and hooks.ended == 0  # type: ignore[union-attr]
    else:
        assert hooks.errors == [] and hooks.ended == 1
