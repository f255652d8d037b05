"""The ``natrl`` command line: ``train``, ``eval``, ``plot``, ``list``, ``tune`` and ``bench``.

Errors a user can fix (unknown algorithm or environment, a bad ``--set``, a
missing or corrupt model file, an existing run directory, a full or read-only
disk: ``path: what went wrong; what to do``) are reported as one line
``natrl: error: …`` on stderr with exit code 2, without a traceback. A damaged
run file that was repaired (``progress.csv`` on ``--resume``) is one line
``natrl: warning: …``.
Ctrl-C during training writes a checkpoint, prints how to resume, and exits
with 130.

The package has one module per job: :mod:`~natrl.cli.parser` (the argument parser),
:mod:`~natrl.cli.values` (``--env-kwargs`` values), :mod:`~natrl.cli.common` and
:mod:`~natrl.cli.checks` (shared helpers), :mod:`~natrl.cli.signals` (Ctrl-C and SIGTERM during
training), and one module per command: :mod:`~natrl.cli.train`, :mod:`~natrl.cli.evaluate`, :mod:`~natrl.cli.plot`
and :mod:`~natrl.cli.listing`, :mod:`~natrl.cli.tune` (Optuna studies, :mod:`natrl.runs.tune`) and
:mod:`~natrl.cli.zoo` (``natrl train --hyperparams``: rl-baselines3-zoo's files). The training itself is
:func:`natrl.runs.train_run`.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from natrl.cli.common import EXIT_ERROR, CLIError, one_line, print_error
from natrl.cli.parser import build_parser
from natrl.logger import RunFileWarning

__all__ = ["CLIError", "build_parser", "main"]


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
        with warnings.catch_warnings():
            warnings.simplefilter("always", RunFileWarning)
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            return int(args.handler(args) or 0)
    except (CLIError, ValueError) as exc:
        # ValueError covers natrl's PresetError, CheckpointError, UnsupportedSpaceError and
        # the config classes' validation; unexpected exceptions keep their traceback
        print_error(f"error: {one_line(exc)}")
        return EXIT_ERROR
    except FloatingPointError as exc:  # natrl.rl.NonFiniteError: the env produced NaN/inf
        print_error(f"error: {one_line(exc)}")
        return EXIT_ERROR
    except (MemoryError, RuntimeError) as exc:
        text = str(exc)
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in text and "out of memory" not in text:
            raise
        print_error(
            "error: out of memory: the networks or the rollout (n_envs x n_steps) are too large for this machine"
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except BrokenPipeError:  # `natrl list | head`: the reader went away
        # Python flushes stdout at exit, which would raise again: point it at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a read-only or full disk, a path through a file, a missing file: one line
        print_error(f"error: {_os_error(exc)}")
        return EXIT_ERROR
    except Exception as exc:
        gym_error = sys.modules.get("gymnasium.error")
        if gym_error is not None and isinstance(exc, gym_error.DependencyNotInstalled):
            print_error(f"error: {one_line(exc)}")  # e.g. Box2D or pygame for an env
            return EXIT_ERROR
        raise


_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full; free some space (natrl train --resume continues a run from its last checkpoint)",
    errno.EDQUOT: "the disk quota is used up; free some space (natrl train --resume continues a run)",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.EACCES: "check its permissions, or choose another location",
    errno.EPERM: "check its permissions, or choose another location",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def _path_text(name: object) -> str:
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)


def _os_error(exc: OSError) -> str:
    """``path: what went wrong; what to do`` for an OSError (its message alone when it names no path)."""
    if exc.filename is None or not exc.strerror:
        return one_line(exc)
    where = _path_text(exc.filename) + (f" -> {_path_text(exc.filename2)}" if exc.filename2 is not None else "")
    hint = _OS_ERROR_HINTS.get(exc.errno or 0)
    return f"{where}: {exc.strerror}" + (f"; {hint}" if hint else "")


def _show_warning(
    previous: Callable[..., None],
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: Any = None,
) -> None:
    """Show natrl's warnings about run files as one line ``natrl: warning: …``; others as ``previous`` does."""
    if issubclass(category, RunFileWarning):
        print_error(f"warning: {' '.join(str(message).split())}")
    else:
        previous(message, category, filename, lineno, file, line)
