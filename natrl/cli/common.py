"""What every command shares: the program's constants, :class:`CLIError` and the output helpers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

PROG = "natrl"
RUNS_ROOT = "runs"
EXIT_ERROR = 2
ENV_LIST_HINT = "python -c 'import gymnasium; gymnasium.pprint_registry()'"


class CLIError(Exception):
    """A user error, reported as one line on stderr with exit code 2."""


def print_error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__
