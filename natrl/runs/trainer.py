"""The training driver of a run: train to the step budget, then write ``model.pt`` and ``eval.json``.

:func:`train_run` is what ``natrl train`` runs once the agent is built (a new run) or
restored (``--resume``); Python code can call it the same way. It never prints: the
command line passes its progress display as ``report`` and its signal flag as
``should_stop``, and prints from the returned :class:`TrainResult`.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natrl.runs.checkpoints import write_checkpoint
from natrl.runs.files import EVAL_FILE, MODEL_FILE, atomic_write_text
from natrl.runs.monitor import TrainingMonitor

if TYPE_CHECKING:
    from natrl.rl import EvalResult, OnPolicyAgent
    from natrl.runs.spec import RunSpec

__all__ = ["TrainResult", "train_run"]


@dataclass
class TrainResult:
    """How :func:`train_run` ended.

    Attributes:
        timesteps: the agent's step count at the end.
        interrupted: ``should_stop()`` ended training before ``spec.total_steps``.
        checkpoint: the newest checkpoint (after an interruption: the one to resume from).
        model: the final ``model.pt``; None when interrupted.
        evaluation: the final deterministic evaluation; None when interrupted.
        summary: what was written to ``eval.json``; None when interrupted.
    """

    timesteps: int
    interrupted: bool
    checkpoint: Path | None
    model: Path | None = None
    evaluation: EvalResult | None = None
    summary: dict[str, Any] | None = None


def train_run(
    agent: OnPolicyAgent,
    spec: RunSpec,
    run_dir: str | os.PathLike[str],
    *,
    start_step: int = 0,
    time_offset: float = 0.0,
    report: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``agent`` up to ``spec.total_steps`` with a :class:`TrainingMonitor` writing ``run_dir``.

    When the budget is reached, a checkpoint of the last step is ensured, ``model.pt`` is
    written and the final deterministic evaluation (the monitor's own when it evaluated
    the last step) goes to ``eval.json``. When ``should_stop()`` ends training earlier, a
    checkpoint of the step reached is ensured instead (resume from it) and nothing else is
    written.

    The caller owns the run directory: it exists, ``config.toml`` is written (``spec.write``)
    and, on resume, the agent comes from :func:`~natrl.runs.resume_agent` with the
    progress rows after its checkpoint cut (:func:`~natrl.runs.truncate_progress`).

    Args:
        agent: the agent, at ``start_step`` steps.
        spec: the run's config.
        run_dir: the run directory.
        start_step: the agent's step count when training (re)starts.
        time_offset: seconds of training already spent before a resume.
        report: called with each logged row (e.g. a progress display).
        should_stop: polled after each update; True ends training (e.g. after Ctrl-C).

    Returns:
        the step reached, whether training was interrupted, and the files and evaluation written.
    """
    run_dir = Path(run_dir)
    monitor = TrainingMonitor(
        run_dir,
        spec,
        start_step=start_step,
        time_offset=time_offset,
        report=report,
        should_stop=should_stop,
    )
    try:
        remaining = spec.total_steps - agent.num_timesteps
        if remaining > 0:
            # schedules (PPO's anneal_lr) span the whole run, also when it is resumed
            span = {"run_start": 0} if "run_start" in inspect.signature(agent.learn).parameters else {}
            agent.learn(remaining, progress=False, callback=monitor, reset_num_timesteps=False, **span)
        if should_stop is not None and should_stop() and agent.num_timesteps < spec.total_steps:
            path = (
                monitor.last_checkpoint
                if monitor.last_checkpoint_step == agent.num_timesteps and monitor.last_checkpoint
                else monitor.checkpoint(agent)
            )
            return TrainResult(timesteps=agent.num_timesteps, interrupted=True, checkpoint=path)
        if monitor.last_checkpoint_step != agent.num_timesteps:
            monitor.checkpoint(agent)
        model = write_checkpoint(agent, run_dir / MODEL_FILE)
        result = (
            monitor.last_eval
            if monitor.last_eval is not None and monitor.last_eval_step == agent.num_timesteps
            else monitor.evaluate(agent)
        )
    finally:
        monitor.close()
    reached = None if spec.expected_return is None else result.mean >= spec.expected_return
    summary = {
        "timesteps": agent.num_timesteps,
        "episodes": len(result.returns),
        "deterministic": True,
        "return_mean": result.mean,
        "return_std": result.std,
        "returns": result.returns,
        "lengths": result.lengths,
        "expected_return": spec.expected_return,
        "reached_expected_return": reached,
    }
    atomic_write_text(run_dir / EVAL_FILE, json.dumps(summary, indent=2) + "\n")
    return TrainResult(
        timesteps=agent.num_timesteps,
        interrupted=False,
        checkpoint=monitor.last_checkpoint,
        model=model,
        evaluation=result,
        summary=summary,
    )
