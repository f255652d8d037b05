"""Where a benchmark run's numbers come from: the natrl source revision and the library versions.

A sweep reads the revision once, in the driver (:func:`source_revision`), and every row of the sweep carries
it with the sweep's id and command line; each worker adds the versions of what it imported
(:func:`run_versions`) and the date it started. A result without them is an anecdote (cleanrl records the
commit and the command of every run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

__all__ = ["BASE_DISTRIBUTIONS", "PEER_DISTRIBUTIONS", "new_sweep_id", "run_versions", "source_revision"]

BASE_DISTRIBUTIONS = ("natrl", "torch", "gymnasium", "numpy")
"""Distributions every run records."""
PEER_DISTRIBUTIONS = {"natrl": (), "sb3": ("stable-baselines3", "sb3-contrib"), "tianshou": ("tianshou",)}
"""The peer libraries a run of each library uses."""
_MAX_DIRTY_PATHS = 20


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs
        return None


def source_revision(package_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The git revision of the natrl source tree that is imported.

    ``git rev-parse HEAD`` in natrl's package directory, provided git tracks the package's ``__init__.py``
    there (an installed copy inside some other repository's ignored folder, a venv say, has no revision);
    dirty when ``git status --porcelain`` lists anything in that work tree (untracked files included).

    Args:
        package_dir: the package directory (default: the imported natrl's).

    Returns:
        ``{"commit": sha or None, "dirty": bool or None, "dirty_paths": [...]}``: None when the directory is
        not a git checkout of the package (or git is missing); ``dirty_paths`` lists at most 20 changed
        paths, then ``"… and N more"``.
    """
    if package_dir is None:
        import natrl

        package_dir = Path(natrl.__file__).parent
    directory = Path(package_dir)
    unknown: dict[str, Any] = {"commit": None, "dirty": None, "dirty_paths": []}
    tracked = _git(directory, "ls-files", "--error-unmatch", "__init__.py")
    if tracked is None or tracked.returncode != 0:
        return unknown
    head = _git(directory, "rev-parse", "HEAD")
    status = _git(directory, "status", "--porcelain")
    if head is None or head.returncode != 0 or status is None or status.returncode != 0:
        return unknown
    paths = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    if len(paths) > _MAX_DIRTY_PATHS:
        paths = [*paths[:_MAX_DIRTY_PATHS], f"… and {len(paths) - _MAX_DIRTY_PATHS} more"]
    return {"commit": head.stdout.strip(), "dirty": bool(paths), "dirty_paths": paths}


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def run_versions(library: str) -> dict[str, str | None]:
    """Versions of natrl, torch, gymnasium, numpy and the peer libraries a run of ``library`` uses
    (stable-baselines3 and sb3-contrib for "sb3", tianshou for "tianshou"), plus mujoco and ale-py
    when the process has imported them; None for a distribution that is not installed."""
    dists = [*BASE_DISTRIBUTIONS, *PEER_DISTRIBUTIONS.get(library, ())]
    dists += [d for d, module in (("mujoco", "mujoco"), ("ale-py", "ale_py")) if module in sys.modules]
    return {d: _version(d) for d in dists}


def new_sweep_id(now: datetime | None = None) -> str:
    """A fresh sweep id: the local start time and 8 random hex digits, e.g. ``20261206-101500-3fa2c1d9``."""
    now = now or datetime.now()
    return f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
