"""The training display: :class:`ProgressBarCallback`."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from natrl.callbacks.base import BaseCallback

__all__ = ["ProgressBarCallback"]


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar (or, with ``lines=True``, a progress line every ~10% and at evaluations), updated
    after each update (never per env step) with steps/s, the recent episode return, the KL and the last
    evaluation (``eval/mean_reward`` recorded in the same logger row by an :class:`EvalCallback` listed
    before this one).

    Args:
        total_timesteps: the step count at which training ends (the bar's total); default the agent's
            step count at the start plus the ``total_timesteps`` of the ``learn`` call.
        lines: print lines instead of a bar; default: lines when ``file`` is not a terminal.
        desc: the bar's label (default "<algo> <env id>").
        file: where the bar goes (default ``sys.stderr``; lines go to ``sys.stdout``).
    """

    def __init__(
        self,
        total_timesteps: int | None = None,
        *,
        lines: bool | None = None,
        desc: str | None = None,
        file: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.total_timesteps = total_timesteps
        self.file = file
        self.lines = lines
        self.desc = desc
        self.bar: Any = None
        self.last_eval = "—"
        self._start = 0
        self._t0 = 0.0
        self._line_every = 1
        self._next_line = 0

    @property
    def steps_hook(self) -> bool:
        return False

    def _on_training_start(self) -> None:
        start = self.num_timesteps
        total = self.total_timesteps
        if total is None:
            requested = self.locals.get("total_timesteps")
            total = start + int(requested) if isinstance(requested, (int, float)) else start
        self._total = max(int(total), start)
        self._start, self._t0 = start, time.perf_counter()
        file = self.file if self.file is not None else sys.stderr
        lines = self.lines if self.lines is not None else not file.isatty()
        self._line_every = max(self._total // 10, 1)
        self._next_line = (start // self._line_every + 1) * self._line_every
        if not lines and self.bar is None:
            from tqdm.auto import tqdm

            desc = self.desc
            if desc is None and self.model is not None:
                desc = f"{self.model.algo} {self.model.env_id}"
            self.bar = tqdm(total=self._total, initial=start, unit=" steps", unit_scale=True, dynamic_ncols=True,
                            desc=desc, file=file, smoothing=0.1)  # fmt: skip

    def _on_update_end(self, stats: dict[str, float]) -> bool:
        step = self.num_timesteps
        pending = self.logger.name_to_value if self.model is not None else {}
        evaluated = "eval/mean_reward" in pending
        if evaluated:
            self.last_eval = f"{pending['eval/mean_reward']:.1f}±{pending.get('eval/std_reward', math.nan):.1f}"
        ret, kl = stats.get("ep_return_mean"), stats.get("kl")
        if self.bar is not None:
            self.bar.update(min(step, self._total) - self.bar.n)  # tqdm shows steps/s itself
            self.bar.set_postfix_str(f"return={_fmt(ret)} kl={_fmt(kl, '.4f')} eval={self.last_eval}", refresh=False)
        elif evaluated or step >= self._next_line:
            self._next_line = (step // self._line_every + 1) * self._line_every
            fps = (step - self._start) / max(time.perf_counter() - self._t0, 1e-9)
            pct = 100.0 * step / max(self._total, 1)
            self.write(
                f"step {step:>10,}/{self._total:,} ({pct:5.1f}%)  steps/s {fps:6.0f}  "
                f"return {_fmt(ret):>8}  kl {_fmt(kl, '.4f')}  eval {self.last_eval}"
            )
        return True

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.file if self.file is not None else sys.stderr)
        else:
            print(message, flush=True)

    def _on_training_end(self) -> None:
        self.close()

    def _on_training_error(self, error: BaseException) -> None:
        self.close()  # the bar ends where training stopped, and the terminal's next line starts clean

    def close(self) -> None:
        """Finish the bar (also when training ended with an exception)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
