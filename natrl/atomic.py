"""Atomic file writes: a reader, or a process killed half-way, sees the old file or the new one.

Used for agent checkpoints and for everything the CLI writes into a run directory.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

__all__ = ["TMP_SUFFIX", "atomic_write_bytes", "atomic_write_text", "make_parent"]

TMP_SUFFIX = ".tmp"
"""Suffix of the scratch files, named ``.<name>.<random>.tmp`` beside the target, that a write renames."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename.

    A reader (or a process killed half-way) sees either the old file or the
    complete new one, never a truncated file.
    """
    path = Path(path)
    make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:  # it names its random scratch file: name the file being written
        raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from exc
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the permissions open() would
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write (a full disk) names no file: name the one being written
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_parent(path: str | os.PathLike[str]) -> None:
    """Create the folders above ``path``.

    Raises:
        NotADirectoryError: one of them is a file (naming it; ``mkdir`` would say "File exists").
        OSError: another reason (a read-only or full disk), naming the folder.
    """
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        blocking = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), parent)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocking)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
