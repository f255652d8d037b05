"""Checkpoints of a run: listing them, and resuming from the newest that loads."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natrl.runs.files import CHECKPOINT_DIR, remove_stale_tmp
from natrl.runs.rng import set_rng_state

if TYPE_CHECKING:
    from natrl.rl import OnPolicyAgent
    from natrl.runs.spec import RunSpec

__all__ = ["CheckpointManager", "ResumeState", "resume_agent"]

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointManager:
    """The ``run_dir/checkpoints/step_<N>.pt`` files of a run, read on resume (they are written by
    :class:`natrl.callbacks.CheckpointCallback` with ``file_name="step_{steps}.pt"``).

    Args:
        directory: the checkpoints folder.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def list(self) -> list[tuple[int, Path]]:
        """(step, path) of the checkpoint files present, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _STEP_FILE.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)


@dataclass
class ResumeState:
    """What :func:`resume_agent` restored.

    Attributes:
        agent: the agent at the checkpoint's step.
        checkpoint: the checkpoint file used.
        run_state: the checkpoint's ``"run"`` entry (RNG states, time_elapsed).
        skipped: one message per newer checkpoint that could not be loaded.
    """

    agent: OnPolicyAgent
    checkpoint: Path
    run_state: dict[str, Any]
    skipped: list[str]


_EXECUTION_ONLY = ("torch_threads", "fast_paths", "max_rejected_updates")


def _checkpoint_mismatch(state: Mapping[str, Any], spec: RunSpec) -> str | None:
    """Why a checkpoint does not belong to the run described by ``spec`` (None when it does)."""
    if (state.get("algo"), state.get("env_id")) != (spec.algo, spec.env_id):
        return (
            f"it holds a {state.get('algo')} agent on {state.get('env_id')}, "
            f"but the run is {spec.algo} on {spec.env_id}"
        )
    saved = state.get("config") or {}
    for key, value in spec.hyperparameters.items():
        if key in saved and key not in _EXECUTION_ONLY and saved[key] != value:
            return f"its {key}={saved[key]!r} differs from the run's {key}={value!r}"
    return None


def resume_agent(
    run_dir: str | os.PathLike[str], spec: RunSpec, *, device: str | None = None, wrapper_class: Any = None
) -> ResumeState:
    """Rebuild the agent of ``run_dir`` from its newest checkpoint that loads cleanly.

    Restores networks, optimiser states, normaliser statistics, the agent's
    generator, the step counters and the global RNG states; deletes temporary
    files of interrupted writes.

    Raises:
        natrl.rl.CheckpointError: no checkpoint in the run loads.
    """
    from natrl.rl import AGENTS, CheckpointError

    run_dir = Path(run_dir)
    manager = CheckpointManager(run_dir / CHECKPOINT_DIR)
    remove_stale_tmp(manager.directory)
    remove_stale_tmp(run_dir)
    cls = AGENTS[spec.algo]
    skipped: list[str] = []
    for _, path in reversed(manager.list()):
        try:
            state = cls.read_checkpoint(path)
            agent = cls.load(path, device=device or spec.device, wrapper_class=wrapper_class)
        except CheckpointError as exc:
            skipped.append(f"skipping checkpoint {path}: {exc}")
            continue
        mismatch = _checkpoint_mismatch(state, spec)
        if mismatch:
            skipped.append(f"skipping checkpoint {path}: {mismatch}")
            continue
        run_state = dict(state.get("run") or {})
        if "rng" in run_state:
            set_rng_state(run_state["rng"])
        return ResumeState(agent, path, run_state, skipped)
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise CheckpointError(f"no loadable checkpoint in {manager.directory}{detail}")
