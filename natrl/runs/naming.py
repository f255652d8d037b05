"""Names of run directories (``<algo>-<env>-s<seed>-<time>``) and finding the newest run."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from natrl.runs.files import CONFIG_FILE

__all__ = ["default_run_dir", "find_latest_run", "run_name"]


def _file_safe(env_id: str) -> str:
    return env_id.replace("/", "_").replace(":", "_")


def run_name(algo: str, env_id: str, seed: int, when: datetime | None = None) -> str:
    """``<algo>-<env>-s<seed>-<YYYYmmdd-HHMMSS>`` (``/`` and ``:`` of namespaced or module ids become ``_``)."""
    when = datetime.now() if when is None else when
    return f"{algo}-{_file_safe(env_id)}-s{seed}-{when:%Y%m%d-%H%M%S}"


def default_run_dir(root: str | os.PathLike[str], algo: str, env_id: str, seed: int) -> Path:
    """A new, not yet existing run directory under ``root`` (suffix ``-2``, ``-3`` on clashes)."""
    base = Path(root) / run_name(algo, env_id, seed)
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def find_latest_run(root: str | os.PathLike[str], algo: str, env_id: str, seed: int) -> Path | None:
    """The newest run directory of (algo, env, seed) under ``root``, or None."""
    prefix = f"{algo}-{_file_safe(env_id)}-s{seed}-"
    folder = Path(root)
    if not folder.is_dir():
        return None
    runs = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix) and (p / CONFIG_FILE).is_file()]
    return max(runs, key=lambda p: ((p / CONFIG_FILE).stat().st_mtime, p.name), default=None)
