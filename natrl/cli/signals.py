"""SIGINT/SIGTERM during ``natrl train``: stop after the current update (a second signal aborts)."""

from __future__ import annotations

import signal
import types
from collections.abc import Callable
from typing import Any

from natrl.callbacks import BaseCallback


class StopTrainingOnSignal(BaseCallback):
    """A callback that ends training after the update during which SIGINT or SIGTERM arrived; a second
    signal aborts at once (KeyboardInterrupt). The handlers are installed inside ``with``.

    Args:
        on_first: called with the signal number when the first signal arrives (e.g. to print a note).
    """

    def __init__(self, on_first: Callable[[int], Any] | None = None) -> None:
        super().__init__()
        self.signum: int | None = None
        self.on_first = on_first
        self._old: dict[int, Any] = {}

    @property
    def steps_hook(self) -> bool:
        return False

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.on_first is not None:
            self.on_first(signum)

    def __enter__(self) -> StopTrainingOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None

    def _on_update_end(self, stats: dict[str, float]) -> bool:
        return not self.is_set()
