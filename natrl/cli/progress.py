"""The training display of ``natrl train``: a tqdm bar on a terminal, else progress lines."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from natrl.cli.common import _fmt

if TYPE_CHECKING:
    from natrl.runs import RunSpec


class _Progress:
    """Training display: a tqdm bar on a terminal, else a line every ~10% and at evaluations."""

    def __init__(self, spec: RunSpec, start_step: int, quiet: bool) -> None:
        self.spec = spec
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.bar: Any = None
        self.lines = not quiet and not sys.stderr.isatty()
        self.line_every = max(spec.total_steps // 10, 1)
        self.next_line = (start_step // self.line_every + 1) * self.line_every
        self.last_eval: str = "—"
        if not quiet and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=spec.total_steps,
                initial=start_step,
                unit=" steps",
                unit_scale=True,
                dynamic_ncols=True,
                desc=f"{spec.algo} {spec.env_id}",
                file=sys.stderr,
                smoothing=0.1,
            )

    def update(self, row: dict[str, float]) -> None:
        """Show one update's row (the TrainingMonitor's ``report`` hook)."""
        step = int(row["timesteps"])
        fps = (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)
        if "eval_return_mean" in row:
            self.last_eval = f"{row['eval_return_mean']:.1f}±{row['eval_return_std']:.1f}"
        ret, kl = row.get("ep_return_mean"), row.get("kl")
        if self.bar is not None:
            self.bar.update(min(step, self.spec.total_steps) - self.bar.n)
            # tqdm shows steps/s itself
            self.bar.set_postfix_str(f"return={_fmt(ret)} kl={_fmt(kl, '.4f')} eval={self.last_eval}", refresh=False)
        elif self.lines and ("eval_return_mean" in row or step >= self.next_line):
            self.next_line = (step // self.line_every + 1) * self.line_every
            pct = 100.0 * step / self.spec.total_steps
            self.write(
                f"step {step:>10,}/{self.spec.total_steps:,} ({pct:5.1f}%)  steps/s {fps:6.0f}  "
                f"return {_fmt(ret):>8}  kl {_fmt(kl, '.4f')}  eval {self.last_eval}"
            )

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, flush=True)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
