"""SIGINT/SIGTERM during training: stop after the current update (a second signal aborts)."""

from __future__ import annotations

import signal
import types
from typing import Any


class _StopOnSignal:
    """SIGINT/SIGTERM set a flag (training stops after the current update); a second one aborts."""

    def __init__(self, on_first: Any = None) -> None:
        self.signum: int | None = None
        self.on_first = on_first
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.on_first is not None:
            self.on_first(signum)

    def __enter__(self) -> _StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None
