"""``progress.csv``: one row per update, appended and flushed; read back and cut back on resume."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from natrl.runs.files import atomic_write_text

__all__ = ["KNOWN_COLUMNS", "ProgressLog", "read_progress", "truncate_progress"]

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
