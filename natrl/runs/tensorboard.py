"""TensorBoard scalars of a run, under stable-baselines3's tags where the quantity is the same."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from natrl.logger import sb3_key

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardLog", "tensorboard_tag"]


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a stats key: stable-baselines3's name where the quantity is the same
    (``rollout/ep_rew_mean``, ``eval/mean_reward``, ``time/fps``, …), else ``train/<key>``."""
    return sb3_key(key)


class TensorBoardLog:
    """Scalars of every update in TensorBoard event files in the run directory.

    Args:
        log_dir: the run directory.
        purge_step: on resume, the step after the checkpoint's: TensorBoard hides
            events of earlier event files at or after this step, so the resumed curve
            does not overlap with what the killed process logged after its checkpoint.
    """

    def __init__(self, log_dir: str | os.PathLike[str], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer: SummaryWriter = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=30)

    def log(self, stats: Mapping[str, float], step: int) -> None:
        """Add every finite scalar of ``stats`` at ``step`` and flush."""
        for key, value in stats.items():
            if key == "timesteps":
                continue
            v = float(value)
            if math.isfinite(v):
                self.writer.add_scalar(tensorboard_tag(key), v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
