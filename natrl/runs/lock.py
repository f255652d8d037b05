"""The run lock: one writer per run directory."""

from __future__ import annotations

import os
from pathlib import Path

from natrl.runs.files import LOCK_FILE

__all__ = ["RunLock", "RunLockedError"]


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
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(me)
            except OSError as exc:  # a full disk: leave no empty lock behind, name the file
                self.path.unlink(missing_ok=True)
                if exc.filename is None:
                    raise type(exc)(exc.errno, exc.strerror or str(exc), str(self.path)) from exc
                raise
            self.held = True
            return
        raise RunLockedError(f"could not lock {self.path.parent}: another process took it at the same moment")

    def release(self) -> None:
        """Remove the lock file. Never raises: it runs in ``finally`` blocks, where an error would hide the one
        being raised; a lock that cannot be removed (the disk turned read-only) is stale once this process ends."""
        if self.held:
            self.held = False
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
