"""What every command shares: the program's constants, :class:`CLIError` and the output helpers."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

PROG = "natrl"
RUNS_ROOT = "runs"
EXIT_ERROR = 2
ENV_LIST_HINT = "python -c 'import gymnasium; gymnasium.pprint_registry()'"


MAX_STEPS = 10**15
AGENTS_DIR_HELP = "folder of agent-spec TOML files (default: $NATRL_AGENTS_DIR, else the presets shipped with natrl)"
"""The most environment steps a command takes (``--steps``, ``--eval-freq``, …): a thousand years of training
at 30 million steps a second, far inside an int64; a larger count is a typo."""


def bounded_steps(value: int, text: str) -> int:
    """``value``, a step count parsed from ``text`` (:func:`natrl.runs.parse_steps`), when at most
    :data:`MAX_STEPS`.

    Raises:
        argparse.ArgumentTypeError: a larger count.
    """
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"a step count must be at most 1e15, got {text!r}")
    return value


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
