"""The names of the files in a run directory, and the clean-up of interrupted atomic writes.

The atomic writers of :mod:`natrl.atomic` are re-exported here, since everything in a run
directory is written through them.
"""

from __future__ import annotations

import os
from pathlib import Path

from natrl.atomic import TMP_SUFFIX as _TMP_SUFFIX
from natrl.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "EVAL_FILE",
    "LOCK_FILE",
    "MODEL_FILE",
    "PROGRESS_FILE",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_tmp",
]

CONFIG_FILE = "config.toml"
PROGRESS_FILE = "progress.csv"
MODEL_FILE = "model.pt"
EVAL_FILE = "eval.json"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"


def remove_stale_tmp(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``directory``."""
    removed = []
    folder = Path(directory)
    if folder.is_dir():
        for tmp in folder.glob(f".*{_TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
