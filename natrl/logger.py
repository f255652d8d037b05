"""A key-value logger with stable-baselines3's interface: ``record(key, value)`` then ``dump(step)``, written to
stdout, a CSV file and TensorBoard event files.

    from natrl.logger import configure
    logger = configure("runs/ppo", ["stdout", "csv", "tensorboard"])
    agent.set_logger(logger)

Agents record their stats after every update under stable-baselines3's names where the quantity is the
same (``rollout/ep_rew_mean``, ``rollout/ep_len_mean``, ``time/fps``, ``time/total_timesteps``,
``train/value_loss``, ``train/approx_kl`` for PPO, …) and natrl's own stats beside them
(``train/kl``, ``train/cg_iterations``, ``train/line_search_steps``, …); ``EvalCallback`` records
``eval/mean_reward`` and ``eval/mean_ep_length``.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["CSVOutput", "Logger", "StdoutOutput", "TensorBoardOutput", "configure", "sb3_key"]


class StdoutOutput:
    """A two-column table per dump, as stable-baselines3 prints it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def write(self, values: Mapping[str, Any], step: int) -> None:
        rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in sorted(values.items())]
        if not rows:
            return
        wk, wv = max(len(k) for k, _ in rows), max(len(v) for _, v in rows)
        line = "-" * (wk + wv + 7)
        out = [line, *(f"| {k:<{wk}} | {v:<{wv}} |" for k, v in rows), line]
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class CSVOutput:
    """``progress.csv``: one row per dump; a new key rewrites the file with the wider header."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.keys: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def write(self, values: Mapping[str, Any], step: int) -> None:
        self.rows.append(dict(values))
        new = [k for k in values if k not in self.keys]
        if new:
            self.keys += sorted(new)
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.keys)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(dict(values))

    def close(self) -> None:
        pass


class TensorBoardOutput:
    """Scalars in TensorBoard event files (finite numbers only)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def write(self, values: Mapping[str, Any], step: int) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, float(value), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Logger:
    """Collects ``record``-ed values and writes them to every output at ``dump``.

    Attributes:
        dir: the folder of the file outputs (None when there are none).
        name_to_value: the values recorded since the last dump.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, outputs: Sequence[Any]) -> None:
        self.dir = None if folder is None else str(folder)
        self.outputs = list(outputs)
        self.name_to_value: dict[str, Any] = {}

    def record(self, key: str, value: Any, exclude: Any = None) -> None:
        self.name_to_value[key] = value

    def record_mean(self, key: str, value: Any, exclude: Any = None) -> None:
        self.record(key, value, exclude)

    def dump(self, step: int = 0) -> None:
        if self.name_to_value:
            for out in self.outputs:
                out.write(self.name_to_value, step)
        self.name_to_value = {}

    def get_dir(self) -> str | None:
        return self.dir

    def close(self) -> None:
        for out in self.outputs:
            out.close()


def configure(folder: str | os.PathLike[str] | None = None, format_strings: Sequence[str] | None = None) -> Logger:
    """A :class:`Logger` writing to ``format_strings`` among "stdout", "csv", "tensorboard" (default stdout;
    the file outputs go into ``folder``)."""
    formats = list(format_strings or ["stdout"])
    unknown = sorted(set(formats) - {"stdout", "csv", "tensorboard", "log"})
    if unknown:
        raise ValueError(f"unknown logger format(s) {unknown}; use stdout, csv, tensorboard")
    if folder is None and any(f in ("csv", "tensorboard") for f in formats):
        raise ValueError("the csv and tensorboard outputs need a folder: configure(folder, formats)")
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    outputs: list[Any] = []
    for f in formats:
        if f in ("stdout", "log"):
            outputs.append(StdoutOutput())
        elif f == "csv":
            outputs.append(CSVOutput(Path(folder) / "progress.csv"))  # type: ignore[arg-type]
        else:
            outputs.append(TensorBoardOutput(folder))  # type: ignore[arg-type]
    return Logger(folder, outputs)


_SB3_NAMES = {
    "ep_return_mean": "rollout/ep_rew_mean",
    "ep_length_mean": "rollout/ep_len_mean",
    "fps": "time/fps",
    "timesteps": "time/total_timesteps",
    "time_elapsed": "time/time_elapsed",
    "updates": "train/n_updates",
    "episodes": "rollout/episodes",
    "rollout_seconds": "time/rollout_seconds",
    "update_seconds": "time/update_seconds",
    "policy_loss": "train/policy_gradient_loss",
    "eval_return_mean": "eval/mean_reward",
    "eval_return_std": "eval/std_reward",
    "eval_length_mean": "eval/mean_ep_length",
}


def sb3_key(key: str, algo: str = "") -> str:
    """The logger key of a natrl stats key: stable-baselines3's name where the quantity is the same
    (PPO's approximate KL is ``train/approx_kl``), ``train/<key>`` otherwise."""
    if key == "kl" and algo == "ppo":
        return "train/approx_kl"
    return _SB3_NAMES.get(key, f"train/{key}")
