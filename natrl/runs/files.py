"""The names of the files in a run directory, and the clean-up of interrupted atomic writes (everything in a
run directory is written through :mod:`natrl.atomic`)."""

from __future__ import annotations

import os
from pathlib import Path

from natrl.atomic import TMP_SUFFIX as _TMP_SUFFIX

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "EVAL_FILE",
    "LOCK_FILE",
    "MODEL_FILE",
    "PROGRESS_FILE",
    "remove_stale_tmp",
]

CONFIG_FILE = "config.toml"
"""The resolved run (algorithm, env, seed, steps, device, preset and hyperparameters), as TOML."""
PROGRESS_FILE = "progress.csv"
"""One CSV row per update and the periodic evaluations."""
MODEL_FILE = "model.pt"
"""The final agent, written when training ends."""
EVAL_FILE = "eval.json"
"""The final deterministic evaluation."""
CHECKPOINT_DIR = "checkpoints"
"""The folder of the ``step_<N>.pt`` checkpoints."""
LOCK_FILE = ".lock"
"""The lock file (process id and host) of the one process writing the run directory."""


def remove_stale_tmp(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``directory``."""
    removed = []
    folder = Path(directory)
    if folder.is_dir():
        for tmp in folder.glob(f".*{_TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
