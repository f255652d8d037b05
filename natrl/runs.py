"""Run directories of ``natrl train``: resolved config, progress CSV, TensorBoard, checkpoints.

A run directory holds everything one training run writes::

    runs/<algo>-<env>-s<seed>-<YYYYmmdd-HHMMSS>/
        config.toml          the resolved run: algo, env, seed, steps, device, preset, config
        progress.csv         one row per update (agent stats + periodic evaluation columns)
        events.out.tfevents.*  TensorBoard scalars (rollout/*, train/*, eval/*, time/*)
        checkpoints/step_<N>.pt  the last ``keep`` checkpoints
        model.pt             the final agent
        eval.json            the final deterministic evaluation

Every file is crash-safe against SIGKILL: checkpoints, ``config.toml``, ``model.pt``
and ``eval.json`` are written to a temporary file in the same folder and renamed
into place (``os.replace`` is atomic on POSIX); CSV rows and TensorBoard events
are flushed after every update, so a kill loses at most the row being written,
and :func:`truncate_progress` cuts the CSV back to the checkpoint on resume.

A checkpoint is the agent's own :meth:`~natrl.rl.OnPolicyAgent.state_dict` (so
:func:`natrl.rl.load_agent` and ``natrl eval`` read it) plus a ``"run"`` entry
with the global RNG states and the wall-clock time spent so far.

This module belongs to the command-line side of natrl: it writes files, but it
never prints; warnings are returned to the caller. torch is imported only where
checkpoints are handled, so reading runs (``natrl plot``) stays light.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from natrl.atomic import TMP_SUFFIX as _TMP_SUFFIX
from natrl.atomic import atomic_write_bytes, atomic_write_text
from natrl.logger import sb3_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def positive_int(text: str) -> int:
    """An integer >= 1 (for argparse)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_steps(text: str, *, minimum: int = 0) -> int:
    """A step count written as ``100000``, ``100_000``, ``1e6``, ``100k`` or ``1M`` (for argparse).

    Raises:
        argparse.ArgumentTypeError: not a whole number, or below ``minimum``.
    """
    import argparse

    s = text.strip().replace("_", "").replace(",", "")
    scale = 1
    if s[-1:].lower() in ("k", "m"):
        scale = 1_000 if s[-1].lower() == "k" else 1_000_000
        s = s[:-1]
    try:
        value = float(s) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a step count: {text!r} (use e.g. 100000, 1e6 or 200k)") from None
    if not math.isfinite(value) or value != int(value) or value < minimum:
        what = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
        raise argparse.ArgumentTypeError(f"a step count must be {what}, got {text!r}")
    return int(value)


if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from natrl.rl import EvalResult, OnPolicyAgent

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "EVAL_FILE",
    "KNOWN_COLUMNS",
    "LOCK_FILE",
    "MODEL_FILE",
    "PROGRESS_FILE",
    "CheckpointManager",
    "ProgressLog",
    "ResumeState",
    "RunLock",
    "RunLockedError",
    "RunSpec",
    "TensorBoardLog",
    "TrainingMonitor",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_run_dir",
    "dumps_toml",
    "find_latest_run",
    "get_rng_state",
    "read_progress",
    "remove_stale_tmp",
    "resume_agent",
    "run_name",
    "set_rng_state",
    "tensorboard_tag",
    "truncate_progress",
    "write_checkpoint",
]

CONFIG_FILE = "config.toml"
PROGRESS_FILE = "progress.csv"
MODEL_FILE = "model.pt"
EVAL_FILE = "eval.json"
CHECKPOINT_DIR = "checkpoints"

#: columns every progress.csv starts with, in this order (cells stay empty when absent)
KNOWN_COLUMNS: tuple[str, ...] = (
    "timesteps",
    "updates",
    "episodes",
    "time_elapsed",
    "fps",
    "ep_return_mean",
    "ep_length_mean",
    "kl",
    "eval_return_mean",
    "eval_return_std",
    "eval_length_mean",
)


def remove_stale_tmp(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``directory``."""
    removed = []
    folder = Path(directory)
    if folder.is_dir():
        for tmp in folder.glob(f".*{_TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# --------------------------------------------------------------------------- TOML writing
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} as TOML")


def dumps_toml(tables: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Serialise ``{table: {key: value}}`` as TOML (scalars, strings and flat lists).

    ``None`` has no TOML spelling; such a key is written as a comment
    (``# key = none``), so reading the file back gives the field's default.

    Args:
        tables: table name → key/value mapping, written in order.
        header: comment lines put at the top (without the leading ``#``).

    Returns:
        the TOML text; ``tomllib.loads`` reads it back to the same values.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, table in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {_toml_key(key)} = none")
            else:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- run naming
def run_name(algo: str, env_id: str, seed: int, when: datetime | None = None) -> str:
    """``<algo>-<env>-s<seed>-<YYYYmmdd-HHMMSS>`` (a ``/`` in a namespaced env id becomes ``_``)."""
    when = datetime.now() if when is None else when
    return f"{algo}-{env_id.replace('/', '_')}-s{seed}-{when:%Y%m%d-%H%M%S}"


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
    prefix = f"{algo}-{env_id.replace('/', '_')}-s{seed}-"
    folder = Path(root)
    if not folder.is_dir():
        return None
    runs = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix) and (p / CONFIG_FILE).is_file()]
    return max(runs, key=lambda p: ((p / CONFIG_FILE).stat().st_mtime, p.name), default=None)


# --------------------------------------------------------------------------- the run's config
@dataclass
class RunSpec:
    """Everything that defines one training run; stored as ``config.toml`` in the run directory.

    Attributes:
        algo: algorithm name (a key of :data:`natrl.rl.AGENTS`).
        env_id: Gymnasium environment id.
        seed: the agent's seed.
        total_steps: the run's step budget (environment transitions over all envs).
        device: torch device of the agent.
        hyperparameters: every field of the algorithm's config (preset + overrides + defaults).
        eval_every: steps between deterministic evaluations (0: only at the end).
        eval_episodes: episodes per evaluation.
        checkpoint_every: steps between checkpoints.
        keep: checkpoints kept (older ones are deleted).
        preset_source: the agent-spec TOML file the hyperparameters came from.
        preset_table: the table of that file (the env id, or "default").
        expected_return: the return the preset expects after ``total_steps``.
        overrides: the ``--set key=value`` items, as given.
        created: ISO time the run was started.
        versions: package versions (natrl, torch, gymnasium, python).
        command: the command line that started the run.
        env_kwargs: keyword arguments of ``gym.make`` (``--env-kwargs``).
        gym_packages: packages imported to register the env (``--gym-packages``).
        wrapper: the env wrapper as ``module:Class`` (``--wrapper``).
    """

    algo: str
    env_id: str
    seed: int
    total_steps: int
    device: str
    hyperparameters: dict[str, Any]
    eval_every: int
    eval_episodes: int
    checkpoint_every: int
    keep: int
    preset_source: str | None = None
    preset_table: str | None = None
    expected_return: float | None = None
    overrides: list[str] = field(default_factory=list)
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    gym_packages: list[str] = field(default_factory=list)
    wrapper: str | None = None

    def to_toml(self) -> str:
        """The ``config.toml`` text."""
        run = {
            "algo": self.algo,
            "env": self.env_id,
            "seed": self.seed,
            "steps": self.total_steps,
            "device": self.device,
            "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes,
            "checkpoint_every": self.checkpoint_every,
            "keep": self.keep,
            "preset_source": self.preset_source,
            "preset_table": self.preset_table,
            "expected_return": self.expected_return,
            "overrides": list(self.overrides),
            "created": self.created,
            "command": self.command,
            "gym_packages": list(self.gym_packages),
            "wrapper": self.wrapper,
        }
        header = (
            "natrl run configuration, written by `natrl train`.\n"
            "[hyperparameters] holds every field of the algorithm's config as used by this run."
        )
        tables = {"run": run, "env_kwargs": self.env_kwargs, "hyperparameters": self.hyperparameters}
        return dumps_toml({**tables, "versions": self.versions}, header)

    def write(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``run_dir/config.toml`` atomically."""
        return atomic_write_text(Path(run_dir) / CONFIG_FILE, self.to_toml())

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> RunSpec:
        """Read ``run_dir/config.toml``.

        Raises:
            FileNotFoundError: there is no config.toml (not a natrl run directory).
            ValueError: the file is not valid TOML or lacks required keys.
        """
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a natrl run directory (no {CONFIG_FILE})")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            run = data["run"]
            return cls(
                algo=str(run["algo"]),
                env_id=str(run["env"]),
                seed=int(run["seed"]),
                total_steps=int(run["steps"]),
                device=str(run.get("device", "cpu")),
                hyperparameters=dict(data.get("hyperparameters", {})),
                eval_every=int(run.get("eval_every", 0)),
                eval_episodes=int(run.get("eval_episodes", 10)),
                checkpoint_every=int(run.get("checkpoint_every", max(1, int(run["steps"]) // 10))),
                keep=int(run.get("keep", 3)),
                preset_source=run.get("preset_source"),
                preset_table=run.get("preset_table"),
                expected_return=run.get("expected_return"),
                overrides=list(run.get("overrides", [])),
                created=str(run.get("created", "")),
                versions=dict(data.get("versions", {})),
                command=str(run.get("command", "")),
                env_kwargs=dict(data.get("env_kwargs", {})),
                gym_packages=list(run.get("gym_packages", [])),
                wrapper=run.get("wrapper"),
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a valid natrl run config: {exc}") from None


# --------------------------------------------------------------------------- progress.csv
def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    v = float(value)
    if math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _complete_rows(path: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, parsed complete rows, and their raw lines (a partial last line is dropped)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    raw_lines = text.split("\n")
    # the piece after the last newline is empty for a complete file, a partial row otherwise
    lines = raw_lines[:-1]
    if not lines:
        return [], [], []
    header = next(csv.reader([lines[0]]))
    rows, kept = [], []
    for line in lines[1:]:
        cells = next(csv.reader([line]), [])
        if len(cells) != len(header):
            continue
        rows.append(cells)
        kept.append(line)
    return header, rows, kept


def read_progress(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Columns of a ``progress.csv`` as float arrays (empty cells are NaN).

    A partially written last line (a run killed mid-write) is ignored.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file has no header or no ``timesteps`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no progress file at {path}")
    header, rows, _ = _complete_rows(path)
    if not header or "timesteps" not in header:
        raise ValueError(f"{path} is not a natrl progress.csv (no header with a timesteps column)")

    def num(cell: str) -> float:
        try:
            return float(cell) if cell else math.nan
        except ValueError:
            return math.nan

    return {name: np.array([num(r[i]) for r in rows], dtype=np.float64) for i, name in enumerate(header)}


def truncate_progress(path: str | os.PathLike[str], max_timesteps: int) -> int:
    """Cut ``progress.csv`` back to the rows with ``timesteps <= max_timesteps`` (atomic rewrite).

    Used on resume: rows written after the checkpoint being resumed (and a
    partially written last line) are dropped, so the continued run appends to
    a clean, monotone file without duplicated steps.

    Returns:
        the number of data rows kept.
    """
    path = Path(path)
    header, rows, lines = _complete_rows(path)
    if not header:
        return 0
    col = header.index("timesteps") if "timesteps" in header else 0
    kept: list[str] = []
    for cells, line in zip(rows, lines, strict=True):
        try:
            t = float(cells[col])
        except ValueError:
            continue
        if t > max_timesteps:
            break
        kept.append(line)
    atomic_write_text(path, "\n".join([",".join(header), *kept]) + "\n")
    return len(kept)


class ProgressLog:
    """Appends one CSV row per update to ``progress.csv`` with a fixed header.

    The header is :data:`KNOWN_COLUMNS` followed by the first row's other keys
    (or, when appending to an existing file, that file's header). Keys a later
    row adds are not written (TensorBoard still gets them); missing cells stay
    empty. Every row is flushed, so a killed process loses at most that row.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.is_file() and self.path.stat().st_size > 0:
            header, _, _ = _complete_rows(self.path)
            self.columns = header or None
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None

    def write(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (column name → number) and flush it to disk."""
        if self._file is None:
            new = self.columns is None
            if new:
                extra = [k for k in row if k not in KNOWN_COLUMNS]
                self.columns = [*KNOWN_COLUMNS, *extra]
            self._file = self.path.open("a", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            if new:
                self._writer.writerow(self.columns)
        assert self.columns is not None
        self._writer.writerow([_format_cell(row.get(c)) for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        """Close the file (a later :meth:`write` reopens it for appending)."""
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------- TensorBoard
def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a stats key: stable-baselines3's name where the quantity is the same
    (``rollout/ep_rew_mean``, ``eval/mean_reward``, ``time/fps``, …), else ``train/<key>``."""
    return sb3_key(key)


class TensorBoardLog:
    """Scalars of every update in TensorBoard event files in the run directory.

    Args:
        log_dir: the run directory.
        purge_step: on resume, the step after the checkpoint's: TensorBoard hides
            events of earlier event files at or after this step, so the resumed curve
            does not overlap with what the killed process logged after its checkpoint.
    """

    def __init__(self, log_dir: str | os.PathLike[str], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer: SummaryWriter = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=30)

    def log(self, stats: Mapping[str, float], step: int) -> None:
        """Add every finite scalar of ``stats`` at ``step`` and flush."""
        for key, value in stats.items():
            if key == "timesteps":
                continue
            v = float(value)
            if math.isfinite(v):
                self.writer.add_scalar(tensorboard_tag(key), v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


# --------------------------------------------------------------------------- RNG state
def get_rng_state() -> dict[str, Any]:
    """The global python, numpy and torch RNG states (tensors, ints and tuples only)."""
    import torch

    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global RNG is what we save)
    assert isinstance(np_state, dict)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (missing parts are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state(  # noqa: NPY002
            {
                "bit_generator": s["bit_generator"],
                "state": {"key": np.asarray(s["key"], dtype=np.uint32), "pos": int(s["pos"])},
                "has_gauss": int(s["has_gauss"]),
                "gauss": float(s["gauss"]),
            }
        )
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- checkpoints
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


# --------------------------------------------------------------------------- the callback
LOCK_FILE = ".lock"


class RunLockedError(FileExistsError):
    """Another live process writes this run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunLock:
    """One writer per run directory: a lock file holding the owner's pid and host.

    Taken with an exclusive create; a lock left by a process that no longer runs on this host
    (SIGKILL, a crash) is stale and replaced. Used as a context manager; released on exit.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        import socket

        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.path.read_text(errors="replace").split()
                pid = int(owner[0]) if owner and owner[0].isdigit() else -1
                host = owner[1] if len(owner) > 1 else ""
                if pid > 0 and (host != socket.gethostname() or _pid_alive(pid)):
                    where = "" if host == socket.gethostname() else f" on {host}"
                    raise RunLockedError(
                        f"run directory {self.path.parent} is being written by process {pid}{where}; wait for it "
                        f"to finish or stop it (delete {self.path} if no natrl process writes there)"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return
        raise RunLockedError(f"could not lock {self.path.parent}: another process took it at the same moment")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
