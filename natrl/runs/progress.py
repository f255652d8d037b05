"""``progress.csv``: one row per update, appended and flushed; read back and cut back on resume."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from natrl.runs.files import RunFileWarning, atomic_write_bytes, atomic_write_text

__all__ = ["KNOWN_COLUMNS", "ProgressFileError", "ProgressLog", "read_progress", "truncate_progress"]

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
"""The columns every ``progress.csv`` starts with, in this order (cells stay empty when absent)."""


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


class ProgressFileError(ValueError):
    """A ``progress.csv`` too damaged to repair (its columns cannot be named, or no row can be read)."""


_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./:-]*\Z")


def _cells(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _is_header(cells: list[str]) -> bool:
    """Distinct column names, one of them ``timesteps``."""
    return "timesteps" in cells and len(set(cells)) == len(cells) and all(_COLUMN_NAME.match(c) for c in cells)


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
        the header (rewritten from :data:`KNOWN_COLUMNS` when line 1 is damaged and the rows fit it),
        ``(timesteps, line)`` of every readable row in file order, what was repaired (one phrase
        each), and whether the repair dropped or rewrote anything a reader could still want (so
        the original is worth keeping).

    Raises:
        ProgressFileError: line 1 is damaged and the rows' columns cannot be named, or rows exist
            and none of them can be read.
    """
    text = path.read_bytes().decode("utf-8", errors="replace") if path.is_file() else ""
    *lines, partial = text.split("\n")  # the piece after the last newline: empty unless a row was cut off
    notes = ["its last line was cut off (a run killed while writing it) and is dropped"] if partial.strip() else []
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        return [], [], notes, False
    first = _cells(numbered[0][1])
    header: list[str] | None = first if _is_header(first) else None
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
    col = header.index("timesteps") if header else 0
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
            f"{path}: none of its {len(damaged)} rows can be read (not a natrl progress.csv?); move it aside to "
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
    """Check ``progress.csv`` and cut it back to the rows with ``timesteps <= max_timesteps`` (atomic rewrite).

    Used on resume: rows written after the checkpoint being resumed (and a
    partially written last line) are dropped, so the continued run appends to
    a clean, monotone file without duplicated steps.

    A damaged file is repaired: the rows that can be read are kept, damaged ones dropped, a
    damaged header (line 1) rewritten from :data:`KNOWN_COLUMNS` when the rows fit it. Each
    repair is reported by one ``natrl.runs.files.RunFileWarning``; when rows or the
    header are dropped, the original is kept as ``progress.csv.damaged`` first.

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
    atomic_write_text(path, "\n".join([",".join(header), *kept]) + "\n" if header else "")
    if notes:
        warnings.warn(f"{path} repaired: {'; '.join(notes)}", RunFileWarning, stacklevel=2)
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
        self._newline = False  # the file ends in a cut-off line: start the next row on a line of its own
        if self.path.is_file() and self.path.stat().st_size > 0:
            header, _, _ = _complete_rows(self.path)
            if header and not _is_header(header):  # rows written under it would be all empty cells
                raise ProgressFileError(
                    f"{self.path}: line 1 is not a natrl progress.csv header; repair it with "
                    "natrl.runs.truncate_progress (what `natrl train --resume` does) or move the file aside"
                )
            self.columns = header or None
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                self._newline = f.read(1) != b"\n"
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None

    def write(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (column name → number) and flush it to disk.

        Raises:
            OSError: the file cannot be written (a full or read-only disk), naming it.
        """
        try:
            self._write(row)
        except OSError as exc:
            if exc.filename is not None:
                raise
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(self.path)) from exc

    def _write(self, row: Mapping[str, Any]) -> None:
        if self._file is None:
            new = self.columns is None
            if new:
                extra = [k for k in row if k not in KNOWN_COLUMNS]
                self.columns = [*KNOWN_COLUMNS, *extra]
            self._file = self.path.open("a", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            if self._newline:
                self._file.write("\n")
                self._newline = False
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
