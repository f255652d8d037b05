"""Checkpoint files: where ``save`` writes an agent (a file name, atomically, or a binary file object) and how a
file's bytes are read back (``torch.load(weights_only=True)``: nothing a file holds is imported or called).

What a checkpoint holds and how it is checked and turned back into an agent is :mod:`natrl.rl.persistence`'s.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from natrl.atomic import atomic_write_bytes

__all__ = [
    "CHECKPOINT_SUFFIX",
    "CheckpointError",
    "checkpoint_name",
    "checkpoint_path",
    "in_memory",
    "is_sb3_model_file",
    "load_checkpoint_file",
    "save_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_SUFFIX = ".pt"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or not compatible with this agent."""


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The file ``save(path)`` writes: ``path``, with ``.pt`` added to a name without a suffix.

    Raises:
        ValueError: ``path`` is a directory or has no name.
    """
    path = Path(path)
    if not path.name or path.is_dir():
        example = str(path / "model.pt")
        raise ValueError(f"save: {str(path)!r} is a directory, not a file name; give e.g. {example!r}")
    return path.with_name(path.name + CHECKPOINT_SUFFIX) if not path.suffix else path


def write_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` atomically to the file ``path`` (temporary file in the same folder, then rename)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(
    state: dict[str, Any], path: str | os.PathLike[str] | BinaryIO, exclude: Any = None, include: Any = None
) -> Path | None:
    """The agent's ``save(path, exclude=None, include=None)``, stable-baselines3's signature: ``path`` a file name
    (:func:`checkpoint_path`, written atomically; returns the file) or a binary file object (``io.BytesIO``, an
    open file: the checkpoint is written to it; returns None, as SB3's ``save``).

    SB3's ``exclude`` names model attributes to leave out of its pickled data (the env, a replay buffer, a
    logger); a natrl checkpoint is a fixed set of plain data that never holds those objects, so the names are
    accepted and nothing is left out. ``include`` (attributes SB3 would otherwise leave out) cannot be honoured.

    Raises:
        ValueError: ``include`` given (one line naming why).
        TypeError: ``exclude`` not a list of names.
    """
    if include:
        raise ValueError(
            f"save(include={include!r}): a natrl checkpoint holds a fixed set of plain data (networks, optimiser and "
            "normaliser states, hyperparameters), never the env or other objects; save them yourself"
        )
    if exclude is not None and (isinstance(exclude, str) or not all(isinstance(n, str) for n in exclude)):
        raise TypeError(f"save: exclude must be a list of attribute names, got {exclude!r}")
    if isinstance(path, io.TextIOBase):
        raise TypeError(f"save: {checkpoint_name(path)} is a text file object: open the file in 'wb' mode")
    if hasattr(path, "write"):
        buf = io.BytesIO()
        torch.save(state, buf)
        path.write(buf.getvalue())
        return None
    return write_checkpoint(state, checkpoint_path(path))


def is_sb3_model_file(path: Path | BinaryIO) -> bool:
    """``path`` is a model stable-baselines3's ``save`` wrote: a zip archive whose entries include ``data`` (its
    JSON attributes) and ``policy.pth`` (unlike torch's own zip files, whose entries sit under one folder). Only
    the archive's directory is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return {"data", "policy.pth"} <= names


def checkpoint_name(path: Any) -> str:
    """How messages name a checkpoint: its path, or ``the file object <name>`` for a file object."""
    if hasattr(path, "read") or hasattr(path, "write"):
        return f"the file object {getattr(path, 'name', type(path).__name__)!s}"
    return str(path)


def in_memory(path: Any) -> Any:
    """A file object's checkpoint as an ``io.BytesIO`` (read once, so that it can be read again: a pipe cannot
    be); a path as given."""
    return io.BytesIO(_file_object_bytes(path)) if hasattr(path, "read") else path


def _file_object_bytes(file: BinaryIO) -> bytes:
    """What a binary file object holds from its position on; a seekable one is left where it was, so that it can
    be read again (``load_agent`` reads the algorithm's name first)."""
    seekable = getattr(file, "seekable", None)
    start = file.tell() if callable(seekable) and seekable() else None
    data: Any = ""
    if not isinstance(file, io.TextIOBase):
        try:
            data = file.read()
        except UnicodeDecodeError:
            data = ""
    if start is not None:
        file.seek(start)
    if not isinstance(data, bytes):
        raise CheckpointError(f"load: {checkpoint_name(file)} is a text file object: open the file in 'rb' mode")
    return data


def load_checkpoint_file(path: str | os.PathLike[str] | BinaryIO) -> tuple[Any, str]:
    """``(what the file holds, its name for messages)``, read with ``torch.load(weights_only=True)``. ``path``
    without a suffix is looked for as given, then with ``.pt``, then with ``.zip`` (as stable-baselines3's
    ``load`` looks); a binary file object is read from its position.

    Raises:
        CheckpointError: no such file, a stable-baselines3 model file (named as such), or bytes torch cannot read.
    """
    source: Path | io.BytesIO
    if hasattr(path, "read"):
        source, name = io.BytesIO(_file_object_bytes(path)), checkpoint_name(path)  # type: ignore[arg-type]
    else:
        source = Path(path)
        if not source.is_file() and not source.suffix:
            # natrl's suffix first (what save() adds), then stable-baselines3's (what its save() adds)
            found = [p for s in (CHECKPOINT_SUFFIX, ".zip") if (p := source.with_name(source.name + s)).is_file()]
            if not found:
                raise CheckpointError(f"no checkpoint at {source} (nor {source.name}{CHECKPOINT_SUFFIX})")
            source = found[0]
        if not source.is_file():
            raise CheckpointError(f"no checkpoint at {source}")
        name = str(source)
    if is_sb3_model_file(source):
        raise CheckpointError(
            f"{name} is a stable-baselines3 model file, which natrl cannot load: load it with stable-baselines3 "
            "(e.g. stable_baselines3.PPO.load(path)), or train the agent with natrl and load natrl's checkpoint"
        )
    try:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return torch.load(source, map_location="cpu", weights_only=True), name
    except Exception as exc:  # torch raises several types for truncated/garbage files
        # torch's own message (weights-only unpickling advice) would mislead here: the file
        # is not a checkpoint natrl wrote, so name only the kind of failure
        raise CheckpointError(
            f"{name} is not a readable natrl checkpoint (corrupt or truncated?): {type(exc).__name__}"
        ) from None
