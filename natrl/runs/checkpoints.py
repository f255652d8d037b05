"""Checkpoints of a run: atomic writes, the last ``keep`` kept, and resuming from the newest that loads."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natrl.runs.files import CHECKPOINT_DIR, atomic_write_bytes, remove_stale_tmp
from natrl.runs.rng import set_rng_state

if TYPE_CHECKING:
    from natrl.rl import OnPolicyAgent
    from natrl.runs.spec import RunSpec

__all__ = ["CheckpointManager", "ResumeState", "resume_agent", "write_checkpoint"]

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def write_checkpoint(
    agent: OnPolicyAgent, path: str | os.PathLike[str], run_state: Mapping[str, Any] | None = None
) -> Path:
    """Write ``agent.state_dict()`` (plus ``"run": run_state``) atomically to ``path``.

    The file is an ordinary agent checkpoint: :func:`natrl.rl.load_agent` reads it.
    """
    import torch

    state = agent.state_dict()
    if run_state is not None:
        state["run"] = dict(run_state)
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


class CheckpointManager:
    """``run_dir/checkpoints/step_<N>.pt``: atomic writes, the last ``keep`` kept.

    Args:
        directory: the checkpoints folder.
        keep: how many of the newest checkpoints to keep (>= 1).
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def path_for(self, step: int) -> Path:
        """The file of the checkpoint at ``step``."""
        return self.directory / f"step_{step}.pt"

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

    def save(self, agent: OnPolicyAgent, run_state: Mapping[str, Any] | None = None) -> Path:
        """Checkpoint ``agent`` at its current step, then delete all but the newest ``keep``.

        Args:
            agent: the agent; its ``state_dict()`` is stored as is.
            run_state: extra entries stored under ``"run"`` (RNG states, elapsed time).
        """
        path = write_checkpoint(agent, self.path_for(agent.num_timesteps), run_state)
        for _, old in self.list()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path


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
    manager = CheckpointManager(run_dir / CHECKPOINT_DIR, keep=max(spec.keep, 1))
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
