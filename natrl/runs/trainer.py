"""The training driver of a run: train to the step budget with natrl's callbacks, then write ``model.pt`` and
``eval.json``.

:func:`train_run` is what ``natrl train`` runs once the agent is built (a new run) or restored (``--resume``);
Python code can call it the same way. It is ``agent.learn`` with the run's callbacks, as rl-baselines3-zoo
drives stable-baselines3: the logger :func:`natrl.logger.configure` writes ``progress.csv`` and TensorBoard,
an :class:`~natrl.callbacks.EvalCallback` evaluates every ``spec.eval_every`` steps and at the end, a
:class:`~natrl.callbacks.CheckpointCallback` writes ``checkpoints/step_<N>.pt`` (with the RNG states and the
elapsed time) every ``spec.checkpoint_every`` steps and at the end. It never prints: the command line adds
its progress display and its stop-on-signal callback through ``callbacks``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natrl.atomic import atomic_write_text
from natrl.runs.files import CHECKPOINT_DIR, EVAL_FILE, MODEL_FILE
from natrl.runs.rng import get_rng_state

if TYPE_CHECKING:
    from natrl.callbacks import BaseCallback
    from natrl.logger import Logger
    from natrl.rl import EvalResult, OnPolicyAgent
    from natrl.runs.spec import RunSpec

__all__ = ["TrainResult", "train_run"]


@dataclass
class TrainResult:
    """How :func:`train_run` ended.

    Attributes:
        timesteps: the agent's step count at the end.
        interrupted: a callback stopped training before ``spec.total_steps``.
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
    time_offset: float = 0.0,
    callbacks: list[BaseCallback] | None = None,
    logger: Logger | None = None,
) -> TrainResult:
    """Train ``agent`` up to ``spec.total_steps``, writing ``run_dir``.

    When the budget is reached, a checkpoint of the last step is ensured, ``model.pt`` is written and the
    final deterministic evaluation (the one of the last update) goes to ``eval.json``. When a callback stops
    training earlier (e.g. after Ctrl-C), a checkpoint of the step reached is ensured instead (resume from
    it) and nothing else is written.

    The caller owns the run directory: it exists and ``config.toml`` is written (``spec.write``); on resume,
    the agent comes from :func:`~natrl.runs.resume_agent` and ``logger`` is
    ``configure(run_dir, ["csv", "tensorboard"], resume_step=agent.num_timesteps)``.

    Args:
        agent: the agent (at 0 steps, or at its checkpoint's on resume).
        spec: the run's config.
        run_dir: the run directory.
        time_offset: seconds of training already spent before a resume.
        callbacks: more callbacks, run after the evaluation and before the checkpoint of each update (a
            progress display sees the evaluation; one that returns False ends training).
        logger: the logger; default ``configure(run_dir, ["csv", "tensorboard"])`` (a new run).

    Returns:
        the step reached, whether training was interrupted, and the files and evaluation written.
    """
    from natrl.callbacks import BaseCallback, CheckpointCallback, EvalCallback
    from natrl.logger import configure

    run_dir = Path(run_dir)
    if logger is None:
        logger = configure(run_dir, ["csv", "tensorboard"])
    agent.set_logger(logger)

    class RunClock(BaseCallback):
        """The run's elapsed time (this process's plus ``time_offset``) in ``time/time_elapsed``."""

        elapsed = time_offset

        @property
        def steps_hook(self) -> bool:
            return False

        def _on_update_end(self, stats: dict[str, float]) -> bool:
            self.elapsed = time_offset + float(stats.get("time_elapsed", 0.0))
            self.logger.record("time/time_elapsed", self.elapsed)
            return True

    clock = RunClock()
    evaluation = EvalCallback(
        None,
        n_eval_episodes=spec.eval_episodes,
        deterministic=True,
        verbose=0,
        every_timesteps=max(spec.eval_every, 0),
        final_timesteps=spec.total_steps if spec.eval_every > 0 else None,
    )
    checkpoints = CheckpointCallback(
        None,
        run_dir / CHECKPOINT_DIR,
        every_timesteps=max(spec.checkpoint_every, 1),
        final_timesteps=spec.total_steps,
        keep=max(spec.keep, 1),
        file_name="step_{steps}.pt",
        run_state=lambda: {"rng": get_rng_state(), "time_elapsed": clock.elapsed},
    )
    stoppers = list(callbacks or [])
    try:
        remaining = spec.total_steps - agent.num_timesteps
        if remaining > 0:
            agent.learn(remaining, callback=[clock, evaluation, *stoppers, checkpoints], reset_num_timesteps=False)
            # a row still pending (learn dumps every log_interval updates) goes out before any checkpoint
            logger.dump(agent.num_timesteps)
        checkpoints.init_callback(agent)
        if agent.num_timesteps < spec.total_steps:
            path = checkpoints.last_path if checkpoints.last_timesteps == agent.num_timesteps else None
            return TrainResult(agent.num_timesteps, interrupted=True, checkpoint=path or checkpoints.save())
        if checkpoints.last_timesteps != agent.num_timesteps:
            checkpoints.save()
        model = agent.save(run_dir / MODEL_FILE)
        if evaluation.last_result is None or evaluation.last_timesteps != agent.num_timesteps:
            evaluation.init_callback(agent)
            evaluation.evaluate()
        result = evaluation.last_result
        assert result is not None
    finally:
        logger.close()
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
    return TrainResult(agent.num_timesteps, False, checkpoints.last_path, model, result, summary)
