"""The ``natrl`` command line: ``train``, ``eval``, ``plot``, ``list`` and ``bench``.

Errors a user can fix (unknown algorithm or environment, a bad ``--set``, a
missing or corrupt model file, an existing run directory) are reported as one
line ``natrl: error: …`` on stderr with exit code 2, without a traceback.
Ctrl-C during training writes a checkpoint, prints how to resume, and exits
with 130.

The package has one module per job: :mod:`~natrl.cli.parser` (the argument parser),
:mod:`~natrl.cli.values` (``--set`` values), :mod:`~natrl.cli.common` and
:mod:`~natrl.cli.checks` (shared helpers), :mod:`~natrl.cli.progress` and
:mod:`~natrl.cli.signals` (the training display and Ctrl-C), and one module per
command: :mod:`~natrl.cli.train`, :mod:`~natrl.cli.evaluate`, :mod:`~natrl.cli.plot`
and :mod:`~natrl.cli.listing`. The training itself is :func:`natrl.runs.train_run`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from natrl.cli.common import EXIT_ERROR, CLIError, _err, _one_line
from natrl.cli.parser import build_parser
from natrl.cli.values import parse_overrides, parse_value

__all__ = ["CLIError", "build_parser", "main", "parse_overrides", "parse_value"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``natrl`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.handler(args) or 0)
    except (CLIError, ValueError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        # ValueError covers natrl's PresetError, CheckpointError, UnsupportedSpaceError and
        # the config classes' validation; unexpected exceptions keep their traceback
        _err(f"error: {_one_line(exc)}")
        return EXIT_ERROR
    except FloatingPointError as exc:  # natrl.rl.NonFiniteError: the env produced NaN/inf
        _err(f"error: {_one_line(exc)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `natrl list | head`: the reader went away
        # Python flushes stdout at exit, which would raise again: point it at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        gym_error = sys.modules.get("gymnasium.error")
        if gym_error is not None and isinstance(exc, gym_error.DependencyNotInstalled):
            _err(f"error: {_one_line(exc)}")  # e.g. Box2D or pygame for an env
            return EXIT_ERROR
        raise
