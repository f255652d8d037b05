"""The per-update callback of a training run: evaluations, progress rows, TensorBoard, checkpoints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from natrl.runs.checkpoints import CheckpointManager
from natrl.runs.files import CHECKPOINT_DIR, PROGRESS_FILE
from natrl.runs.progress import ProgressLog
from natrl.runs.rng import get_rng_state
from natrl.runs.tensorboard import TensorBoardLog

if TYPE_CHECKING:
    from natrl.rl import EvalResult, OnPolicyAgent
    from natrl.runs.spec import RunSpec

__all__ = ["TrainingMonitor"]


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


class TrainingMonitor:
    """The ``callback(agent, stats)`` of a CLI training run.

    After every update it runs the deterministic evaluation when one is due
    (every ``spec.eval_every`` steps and at the last update), appends the row to
    ``progress.csv`` and TensorBoard, writes a checkpoint when one is due (every
    ``spec.checkpoint_every`` steps and at the last update), then calls
    ``report(row)`` and asks ``should_stop()`` whether to end training early.

    The CSV row is flushed before the checkpoint of the same step is written, so
    after a crash the CSV always reaches at least the newest checkpoint.

    Args:
        run_dir: the run directory.
        spec: the run's config.
        start_step: the agent's step count when training (re)starts.
        time_offset: seconds of training already spent before a resume.
        report: called with each logged row (the CLI's progress display).
        should_stop: polled after each update; True ends training (e.g. after Ctrl-C).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        spec: RunSpec,
        *,
        start_step: int = 0,
        time_offset: float = 0.0,
        report: Callable[[dict[str, float]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.spec = spec
        self.time_offset = time_offset
        self.report = report
        self.should_stop = should_stop
        self.csv = ProgressLog(self.run_dir / PROGRESS_FILE)
        self.tb = TensorBoardLog(self.run_dir, purge_step=start_step + 1 if start_step > 0 else None)
        self.checkpoints = CheckpointManager(self.run_dir / CHECKPOINT_DIR, spec.keep)
        self.next_eval = _next_multiple(start_step, spec.eval_every) if spec.eval_every > 0 else None
        self.next_checkpoint = _next_multiple(start_step, max(spec.checkpoint_every, 1))
        self.last_eval: EvalResult | None = None
        self.last_eval_step: int | None = None
        self.last_checkpoint: Path | None = None
        self.last_checkpoint_step: int | None = None
        self.elapsed = time_offset

    def evaluate(self, agent: OnPolicyAgent) -> EvalResult:
        """Deterministic evaluation of ``spec.eval_episodes`` episodes (kept as ``last_eval``)."""
        result = agent.evaluate(episodes=self.spec.eval_episodes, deterministic=True)
        self.last_eval, self.last_eval_step = result, agent.num_timesteps
        return result

    def checkpoint(self, agent: OnPolicyAgent) -> Path:
        """Write a checkpoint of ``agent`` now (with RNG states and elapsed time)."""
        path = self.checkpoints.save(agent, {"rng": get_rng_state(), "time_elapsed": self.elapsed})
        self.last_checkpoint, self.last_checkpoint_step = path, agent.num_timesteps
        return path

    def __call__(self, agent: OnPolicyAgent, stats: dict[str, float]) -> bool:
        step = agent.num_timesteps
        final = step >= self.spec.total_steps
        row = dict(stats)
        self.elapsed = self.time_offset + float(stats.get("time_elapsed", 0.0))
        row["time_elapsed"] = self.elapsed
        if self.next_eval is not None and (step >= self.next_eval or final):
            result = self.evaluate(agent)
            row["eval_return_mean"] = result.mean
            row["eval_return_std"] = result.std
            row["eval_length_mean"] = float(np.mean(result.lengths))
            self.next_eval = _next_multiple(step, self.spec.eval_every)
        self.csv.write(row)
        self.tb.log(row, step)
        if step >= self.next_checkpoint or final:
            self.checkpoint(agent)
            self.next_checkpoint = _next_multiple(step, max(self.spec.checkpoint_every, 1))
        if self.report is not None:
            self.report(row)
        return not (self.should_stop is not None and self.should_stop())

    def close(self) -> None:
        """Close the CSV and TensorBoard files."""
        self.csv.close()
        self.tb.close()
