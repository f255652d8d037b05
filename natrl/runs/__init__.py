"""Run directories of ``natrl train``: resolved config, progress CSV, TensorBoard, checkpoints.

A run directory holds everything one training run writes::

    runs/<algo>-<env>-s<seed>-<YYYYmmdd-HHMMSS>/
        config.toml          the resolved run: algo, env, seed, steps, device, preset, config
        progress.csv         one row per update, SB3's column names (natrl.logger; + periodic evaluations)
        events.out.tfevents.*  TensorBoard scalars (rollout/*, train/*, eval/*, time/*)
        checkpoints/step_<N>.pt  the last ``keep`` checkpoints
        model.pt             the final agent
        eval.json            the final deterministic evaluation

Every file is crash-safe against SIGKILL: checkpoints, ``config.toml``, ``model.pt``
and ``eval.json`` are written to a temporary file in the same folder and renamed
into place (``os.replace`` is atomic on POSIX); CSV rows and TensorBoard events
are flushed after every update, so a kill loses at most the row being written,
and :func:`natrl.logger.truncate_progress` cuts the CSV back to the checkpoint on resume.

A checkpoint is the agent's own :meth:`~natrl.rl.OnPolicyAgent.state_dict` (so
:func:`natrl.rl.load_agent` and ``natrl eval`` read it) plus a ``"run"`` entry
with the global RNG states and the wall-clock time spent so far.

This package belongs to the command-line side of natrl: it writes files, but it
never prints; warnings are returned to the caller. torch is imported only where
checkpoints are handled, so reading runs (``natrl plot``) stays light.

One module per job; everything is re-exported here:

- :mod:`~natrl.runs.args`: argparse types (``positive_int``, ``parse_steps``)
- :mod:`~natrl.runs.files`: the run directory's file names, clean-up of interrupted writes
- :mod:`~natrl.runs.toml`: the TOML writer of ``config.toml``
- :mod:`~natrl.runs.naming`: run directory names, finding the newest run
- :mod:`~natrl.runs.spec`: :class:`RunSpec`, the run's config
- :mod:`~natrl.runs.rng`: the global RNG states
- :mod:`~natrl.runs.checkpoints`: checkpoints and resuming
- :mod:`~natrl.runs.lock`: one writer per run directory
- :mod:`~natrl.runs.trainer`: :func:`train_run`, the training driver (``learn`` with natrl's callbacks)

``progress.csv`` and TensorBoard are written by :mod:`natrl.logger`, evaluations and checkpoints by
:mod:`natrl.callbacks`.
"""

from __future__ import annotations

from natrl.runs.args import parse_steps, positive_int
from natrl.runs.checkpoints import CheckpointManager, ResumeState, resume_agent
from natrl.runs.files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVAL_FILE,
    LOCK_FILE,
    MODEL_FILE,
    PROGRESS_FILE,
    remove_stale_tmp,
)
from natrl.runs.lock import RunLock, RunLockedError
from natrl.runs.naming import default_run_dir, find_latest_run, run_name
from natrl.runs.rng import get_rng_state, set_rng_state
from natrl.runs.spec import RunSpec
from natrl.runs.toml import dumps_toml
from natrl.runs.trainer import TrainResult, train_run

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "EVAL_FILE",
    "LOCK_FILE",
    "MODEL_FILE",
    "PROGRESS_FILE",
    "CheckpointManager",
    "ResumeState",
    "RunLock",
    "RunLockedError",
    "RunSpec",
    "TrainResult",
    "default_run_dir",
    "dumps_toml",
    "find_latest_run",
    "get_rng_state",
    "parse_steps",
    "positive_int",
    "remove_stale_tmp",
    "resume_agent",
    "run_name",
    "set_rng_state",
    "train_run",
]
