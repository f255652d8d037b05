"""A key-value logger with stable-baselines3's interface: ``record(key, value)`` then ``dump(step)``, written to
stdout, a CSV file and TensorBoard event files.

    from natrl.logger import configure
    logger = configure("runs/ppo", ["stdout", "csv", "tensorboard"])
    agent.set_logger(logger)

Agents record their stats after every update under stable-baselines3's names where the quantity is the
same (``rollout/ep_rew_mean``, ``rollout/ep_len_mean``, ``time/fps``, ``time/total_timesteps``,
``train/value_loss``, ``train/approx_kl`` for PPO, …) and natrl's own stats beside them
(``train/kl``, ``train/cg_iterations``, ``train/line_search_steps``, …); ``EvalCallback`` records
``eval/mean_reward`` and ``eval/mean_ep_length``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from natrl.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "KNOWN_COLUMNS",
    "CSVOutput",
    "Logger",
    "ProgressFileError",
    "RunFileWarning",
    "StdoutOutput",
    "TensorBoardOutput",
    "configure",
    "read_progress",
    "record_stats",
    "sb3_key",
    "truncate_progress",
]

TIMESTEPS = "time/total_timesteps"
"""The x column of every ``progress.csv``."""

KNOWN_COLUMNS: tuple[str, ...] = (
    TIMESTEPS,
    "train/n_updates",
    "rollout/episodes",
    "time/time_elapsed",
    "time/fps",
    "rollout/ep_rew_mean",
    "rollout/ep_len_mean",
    "train/kl",
    "eval/mean_reward",
    "eval/std_reward",
    "eval/mean_ep_length",
)
"""The columns every ``progress.csv`` starts with, in this order (cells stay empty when absent); the other
keys follow in sorted order, so ``natrl train`` and ``configure(dir, ["csv"])`` + ``learn`` write the same
header."""


class RunFileWarning(UserWarning):
    """A damaged file of a run directory was repaired; the message names the file and what changed.

    Issued with :func:`warnings.warn` (natrl's library code never prints); ``natrl`` shows it as one line.
    """


class ProgressFileError(ValueError):
    """A ``progress.csv`` too damaged to repair (its columns cannot be named, or no row can be read)."""


class StdoutOutput:
    """A two-column table per dump, as stable-baselines3 prints it."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def write(self, values: Mapping[str, Any], step: int) -> None:
        rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in sorted(values.items())]
        if not rows:
            return
        wk, wv = max(len(k) for k, _ in rows), max(len(v) for _, v in rows)
        line = "-" * (wk + wv + 7)
        out = [line, *(f"| {k:<{wk}} | {v:<{wv}} |" for k, v in rows), line]
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _header(keys: Iterable[str]) -> list[str]:
    keys = set(keys)
    return [*(k for k in KNOWN_COLUMNS), *sorted(keys - set(KNOWN_COLUMNS))]


class CSVOutput:
    """``progress.csv``: one row per dump, appended and flushed (a killed process loses at most that row).

    The header is :data:`KNOWN_COLUMNS` followed by the other keys, sorted; a key that a later row adds
    rewrites the file atomically with the wider header (earlier rows get empty cells).

    Args:
        path: the file.
        resume_step: continue the file of a resumed run: it is checked, repaired and cut back to the rows
            at or before this step (:func:`truncate_progress`), then appended to. Default: start a new file.

    Attributes:
        rows_kept: the data rows kept from an existing file on resume (0 for a new file).
    """

    name = "csv"

    def __init__(self, path: str | os.PathLike[str], resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.keys: list[str] = []
        self.rows_kept = 0
        self._file: io.TextIOWrapper | None = None
        if resume_step is not None:
            self.rows_kept = truncate_progress(self.path, resume_step)
            header, _, _ = _complete_rows(self.path)
            self.keys = header
        else:
            atomic_write_text(self.path, "")

    def write(self, values: Mapping[str, Any], step: int) -> None:
        """Append a row (key → value) and flush it.

        Raises:
            OSError: the file cannot be written (a full or read-only disk), naming it.
        """
        try:
            self._write(values)
        except OSError as exc:
            if exc.filename is not None:
                raise
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(self.path)) from exc

    def _write(self, values: Mapping[str, Any]) -> None:
        if not self.keys or any(k not in self.keys for k in values):
            self.close()
            header = _header([*self.keys, *values])
            old_header, rows, _ = _complete_rows(self.path)
            index = {name: i for i, name in enumerate(old_header)}
            lines = [",".join(header)]
            for cells in rows:
                lines.append(_csv_line([cells[index[k]] if k in index else "" for k in header]))
            atomic_write_text(self.path, "\n".join(lines) + "\n")
            self.keys = header
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8", newline="")
        self._file.write(_csv_line([_format_cell(values.get(k)) for k in self.keys]) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (a later :meth:`write` reopens it for appending)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _csv_line(cells: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


class TensorBoardOutput:
    """Scalars in TensorBoard event files (finite numbers only), flushed at every dump.

    Args:
        folder: where the event files go.
        purge_step: on resume, the step after the checkpoint's: TensorBoard hides events of earlier event
            files at or after this step, so the resumed curve does not overlap what a killed process logged
            after its checkpoint.
    """

    name = "tensorboard"

    def __init__(self, folder: str | os.PathLike[str], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step, flush_secs=30)

    def write(self, values: Mapping[str, Any], step: int) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, float(value), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Logger:
    """Collects ``record``-ed values and writes them to every output at ``dump``.

    Attributes:
        dir: the folder of the file outputs (None when there are none).
        outputs: the outputs (:class:`StdoutOutput`, :class:`CSVOutput`, :class:`TensorBoardOutput`).
        name_to_value: the values recorded since the last dump.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, outputs: Sequence[Any]) -> None:
        self.dir = None if folder is None else str(folder)
        self.outputs = list(outputs)
        self.name_to_value: dict[str, Any] = {}
        self.name_to_count: dict[str, int] = {}
        self.name_to_excluded: dict[str, tuple[str, ...]] = {}

    def record(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        """Set ``key`` to ``value`` in the next row; ``exclude`` names outputs ("stdout", "csv",
        "tensorboard") that leave it out."""
        self.name_to_value[key] = value
        self.name_to_excluded[key] = (exclude,) if isinstance(exclude, str) else tuple(exclude or ())

    def record_mean(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        """Record the mean of the values given for ``key`` since the last dump (stable-baselines3's
        semantics; ``None`` is ignored)."""
        if value is None:
            return
        n = self.name_to_count.get(key, 0)
        old = self.name_to_value.get(key, 0.0) if n else 0.0
        self.name_to_value[key] = old * n / (n + 1) + value / (n + 1)
        self.name_to_count[key] = n + 1
        self.name_to_excluded[key] = (exclude,) if isinstance(exclude, str) else tuple(exclude or ())

    def dump(self, step: int = 0) -> None:
        """Write the recorded values at ``step`` to every output and start a new row (nothing is written
        when nothing was recorded)."""
        if self.name_to_value:
            for out in self.outputs:
                name = getattr(out, "name", "")
                values = {k: v for k, v in self.name_to_value.items() if name not in self.name_to_excluded.get(k, ())}
                out.write(values, step)
        self.name_to_value, self.name_to_count, self.name_to_excluded = {}, {}, {}

    def get_dir(self) -> str | None:
        return self.dir

    def close(self) -> None:
        for out in self.outputs:
            out.close()


def configure(
    folder: str | os.PathLike[str] | None = None,
    format_strings: Sequence[str] | None = None,
    *,
    resume_step: int | None = None,
) -> Logger:
    """A :class:`Logger` writing to ``format_strings`` among "stdout", "csv", "tensorboard" (default stdout;
    the file outputs go into ``folder``: ``progress.csv`` and TensorBoard event files).

    Args:
        folder: the folder of the file outputs.
        format_strings: the outputs.
        resume_step: continue a run resumed from a checkpoint at this step: ``progress.csv`` is cut back to
            it and appended to, and TensorBoard hides the events an earlier process wrote after it. Default:
            a new ``progress.csv``.
    """
    formats = list(format_strings or ["stdout"])
    unknown = sorted(set(formats) - {"stdout", "csv", "tensorboard", "log"})
    if unknown:
        raise ValueError(f"unknown logger format(s) {unknown}; use stdout, csv, tensorboard")
    if folder is None and any(f in ("csv", "tensorboard") for f in formats):
        raise ValueError("the csv and tensorboard outputs need a folder: configure(folder, formats)")
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    outputs: list[Any] = []
    for f in formats:
        if f in ("stdout", "log"):
            outputs.append(StdoutOutput())
        elif f == "csv":
            outputs.append(CSVOutput(Path(folder) / "progress.csv", resume_step))  # type: ignore[arg-type]
        else:
            purge = None if resume_step is None or resume_step <= 0 else resume_step + 1
            outputs.append(TensorBoardOutput(folder, purge_step=purge))  # type: ignore[arg-type]
    return Logger(folder, outputs)


_SB3_NAMES = {
    "ep_return_mean": "rollout/ep_rew_mean",
    "ep_length_mean": "rollout/ep_len_mean",
    "fps": "time/fps",
    "timesteps": "time/total_timesteps",
    "time_elapsed": "time/time_elapsed",
    "updates": "train/n_updates",
    "episodes": "rollout/episodes",
    "rollout_seconds": "time/rollout_seconds",
    "update_seconds": "time/update_seconds",
    "policy_loss": "train/policy_gradient_loss",
    "eval_return_mean": "eval/mean_reward",
    "eval_return_std": "eval/std_reward",
    "eval_length_mean": "eval/mean_ep_length",
}


def sb3_key(key: str, algo: str = "") -> str:
    """The logger key of a natrl stats key: stable-baselines3's name where the quantity is the same
    (PPO's approximate KL is ``train/approx_kl``, A2C's policy loss ``train/policy_loss``), ``train/<key>``
    otherwise."""
    if key == "kl" and algo == "ppo":
        return "train/approx_kl"
    if key == "policy_loss" and algo == "a2c":
        return "train/policy_loss"
    return _SB3_NAMES.get(key, f"train/{key}")


def record_stats(logger: Logger, stats: Mapping[str, float], algo: str) -> None:
    """Record an update's stats under their :func:`sb3_key` names (and SB3's ``train/entropy_loss``, the
    negative entropy)."""
    for key, value in stats.items():
        logger.record(sb3_key(key, algo), value)
    if "entropy" in stats:
        logger.record("train/entropy_loss", -stats["entropy"])


_OLD_TIMESTEPS = "timesteps"  # the x column of natrl's progress.csv files before they took SB3's names


def _renamed(header: list[str]) -> list[str]:
    """SB3's names for the columns of a file in natrl's earlier schema (``timesteps, ep_return_mean, …``);
    other headers as they are."""
    if TIMESTEPS in header or _OLD_TIMESTEPS not in header:
        return header
    return [c if "/" in c else sb3_key(c) for c in header]


def _cells(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _complete_rows(path: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """Header (SB3's names), parsed complete rows, and their raw lines (a partial last line is dropped)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = text.split("\n")[:-1]  # the piece after the last newline: empty, or a row cut off
    if not lines:
        return [], [], []
    header = _renamed(_cells(lines[0]))
    rows, kept = [], []
    for line in lines[1:]:
        cells = _cells(line)
        if len(cells) == len(header):
            rows.append(cells)
            kept.append(line)
    return header, rows, kept


def read_progress(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Columns of a ``progress.csv`` as float arrays (empty or non-numeric cells are NaN), under SB3's names.

    Reads what natrl writes, natrl's earlier files (``timesteps, ep_return_mean, …``: the columns are
    renamed as :func:`sb3_key` names them) and stable-baselines3's own ``progress.csv``. A partially
    written last line (a run killed mid-write) is ignored.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file has no header with a ``time/total_timesteps`` (or ``timesteps``) column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no progress file at {path}")
    header, rows, _ = _complete_rows(path)
    if not header or TIMESTEPS not in header:
        raise ValueError(f"{path} is not a progress.csv (no header with a {TIMESTEPS} column)")

    def num(cell: str) -> float:
        try:
            return float(cell) if cell else math.nan
        except ValueError:
            return math.nan

    return {name: np.array([num(r[i]) for r in rows], dtype=np.float64) for i, name in enumerate(header)}


_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./:-]*\Z")


def _is_header(cells: list[str]) -> bool:
    """Distinct column names, one of them the timesteps column."""
    return (
        (TIMESTEPS in cells or _OLD_TIMESTEPS in cells)
        and len(set(cells)) == len(cells)
        and all(_COLUMN_NAME.match(c) for c in cells)
    )


def _is_number(cell: str) -> bool:
    if not cell:
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_data(cells: list[str]) -> bool:
    return bool(cells) and all(_is_number(c) for c in cells)


def _lines_named(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:3]) + (", …" if len(numbers) > 3 else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


def _scan_progress(path: Path) -> tuple[list[str], list[tuple[float, str]], list[str], bool]:
    """Check ``progress.csv`` line by line; repair what can be repaired.

    Returns:
        the header (SB3's names; rewritten from :data:`KNOWN_COLUMNS` when line 1 is damaged and the rows
        fit it), ``(timesteps, line)`` of every readable row in file order, what was repaired (one phrase
        each), and whether the repair dropped or rewrote anything a reader could still want (so the
        original is worth keeping).

    Raises:
        ProgressFileError: line 1 is damaged and the rows' columns cannot be named, or rows exist and none
            of them can be read.
    """
    text = path.read_bytes().decode("utf-8", errors="replace") if path.is_file() else ""
    *lines, partial = text.split("\n")  # the piece after the last newline: empty unless a row was cut off
    notes = ["its last line was cut off (a run killed while writing it) and is dropped"] if partial.strip() else []
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        return [], [], notes, False
    first = _cells(numbered[0][1])
    header: list[str] | None = _renamed(first) if _is_header(first) else None
    body = numbered[1:] if header is not None or not _is_data(first) else numbered  # a lost header line
    parsed = [(n, line, _cells(line)) for n, line in body]
    fixed_header = header is None
    if header is None:
        widths = Counter(len(cells) for _, _, cells in parsed if _is_data(cells))
        width = widths.most_common(1)[0][0] if widths else 0
        known = len(KNOWN_COLUMNS)
        if width == known:
            header = list(KNOWN_COLUMNS)
        elif (
            width > known
            and len(first) == width
            and not _is_data(first)
            and _is_header(named := [*KNOWN_COLUMNS, *first[known:]])
        ):
            header = named  # the known part damaged, the extra columns still named
        elif not widths:
            header = []
        else:
            raise ProgressFileError(
                f"{path}: line 1 is not a natrl progress.csv header and the names of its {width} columns are lost; "
                f"copy line 1 of another run of the same algorithm there, or move the file aside to resume with "
                f"a new one (mv {path} {path}.damaged)"
            )
        notes.append(
            "line 1 was not a progress.csv header and is rewritten from natrl's columns"
            if header
            else "it held no readable header or row and is started afresh"
        )
    col = header.index(TIMESTEPS) if header else 0
    rows: list[tuple[float, str]] = []
    damaged: list[int] = []
    for n, line, cells in parsed:
        t = float(cells[col]) if len(cells) == len(header) and _is_data(cells) and cells[col] else math.nan
        if math.isfinite(t):
            rows.append((t, line))
        else:
            damaged.append(n)
    if damaged and not rows:
        raise ProgressFileError(
            f"{path}: none of its {len(damaged)} rows can be read (not a progress.csv?); move it aside to "
            f"resume with a new one (mv {path} {path}.damaged)"
        )
    if damaged:
        notes.append(
            f"{len(damaged)} damaged row{'s' if len(damaged) > 1 else ''} ({_lines_named(damaged)}) "
            f"{'are' if len(damaged) > 1 else 'is'} dropped"
        )
    return header, rows, notes, fixed_header or bool(damaged)


def _keep_original(path: Path) -> Path:
    """Copy ``path`` beside itself as ``<name>.damaged`` (``.damaged-2``, … when taken) before a repair."""
    backup = path.with_name(f"{path.name}.damaged")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.damaged-{n}")
    atomic_write_bytes(backup, path.read_bytes())
    return backup


def truncate_progress(path: str | os.PathLike[str], max_timesteps: int) -> int:
    """Check ``progress.csv`` and cut it back to the rows with ``time/total_timesteps <= max_timesteps``
    (atomic rewrite).

    Used on resume: rows written after the checkpoint being resumed (and a partially written last line)
    are dropped, so the continued run appends to a clean, monotone file without duplicated steps. A file in
    natrl's earlier schema gets SB3's column names.

    A damaged file is repaired: the rows that can be read are kept, damaged ones dropped, a damaged header
    (line 1) rewritten from :data:`KNOWN_COLUMNS` when the rows fit it. Each repair is reported by one
    :class:`RunFileWarning`; when rows or the header are dropped, the original is kept as
    ``progress.csv.damaged`` first.

    Returns:
        the number of data rows kept.

    Raises:
        ProgressFileError: the file cannot be repaired (the message says what to do); it is left untouched.
    """
    path = Path(path)
    header, rows, notes, keep_original = _scan_progress(path)
    if not header and not notes:
        return 0
    kept: list[str] = []
    for t, line in rows:
        if t > max_timesteps:
            break
        kept.append(line)
    if keep_original:
        notes.append(f"the original is kept as {_keep_original(path).name}")
    atomic_write_text(path, "\n".join([_csv_line(header), *kept]) + "\n" if header else "")
    if notes:
        warnings.warn(f"{path} repaired: {'; '.join(notes)}", RunFileWarning, stacklevel=2)
    return len(kept)
