"""Checkpoints during training: :class:`CheckpointCallback`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from natrl.callbacks.base import BaseCallback, check_count, due
from natrl.rl.persistence import write_checkpoint

__all__ = ["CheckpointCallback"]


class CheckpointCallback(BaseCallback):
    """Saves the agent every ``save_freq`` calls (vector steps) to ``save_path/{name_prefix}_{steps}_steps.pt``.

    stable-baselines3's arguments: ``save_replay_buffer`` does nothing for natrl's on-policy agents (as in SB3
    for PPO: they have no replay buffer); ``save_vecnormalize=True`` also writes the statistics of an SB3
    ``VecNormalize`` the agent trains on to ``{name_prefix}_vecnormalize_{steps}_steps.pkl`` (SB3's
    ``VecNormalize.save``); natrl's own ``normalize_obs`` statistics are inside every checkpoint already.

    natrl's keywords (what ``natrl train`` uses): ``every_timesteps=N`` saves after the update that passes each
    multiple of N transitions instead (no per-step hook; ``save_freq`` is then None), ``final_timesteps``
    also after the update that reaches that step count; the logger's pending row is written first, so
    ``progress.csv`` always reaches the newest checkpoint. ``file_name`` is the file's name with ``{steps}``
    in it, ``keep`` how many of the newest such files stay, ``run_state()`` what is stored under the
    checkpoint's ``"run"`` entry (e.g. RNG states and elapsed time). Every file is written atomically.
    """

    def __init__(self, save_freq: int | None, save_path: str | os.PathLike[str], name_prefix: str = "rl_model",
                 save_replay_buffer: bool = False, save_vecnormalize: bool = False, verbose: int = 0, *,
                 every_timesteps: int | None = None, final_timesteps: int | None = None, keep: int | None = None,
                 file_name: str | None = None,
                 run_state: Callable[[], dict[str, Any]] | None = None) -> None:  # fmt: skip
        super().__init__(verbose)
        owner = "CheckpointCallback"
        if (save_freq is None) == (every_timesteps is None):
            raise ValueError(f"{owner}: give save_freq (vector steps) or every_timesteps (transitions), one of them")
        self.save_freq = None if save_freq is None else check_count(owner, "save_freq", save_freq, 1)
        self.every_timesteps = (
            None if every_timesteps is None else check_count(owner, "every_timesteps", every_timesteps, 1)
        )
        self.final_timesteps = (
            None if final_timesteps is None else check_count(owner, "final_timesteps", final_timesteps, 0)
        )
        self.keep = None if keep is None else check_count(owner, "keep", keep, 1)
        self.save_path, self.name_prefix = Path(save_path), name_prefix
        self.file_name = file_name or name_prefix.replace("{", "{{").replace("}", "}}") + "_{steps}_steps.pt"
        if self.file_name.count("{steps}") != 1:
            raise ValueError(f"{owner}: file_name must hold {{steps}} once, got {self.file_name!r}")
        self.run_state = run_state
        self.save_replay_buffer, self.save_vecnormalize = bool(save_replay_buffer), bool(save_vecnormalize)
        self.last_path: Path | None = None
        self.last_timesteps: int | None = None
        self._last_update_step = 0

    @property
    def steps_hook(self) -> bool:
        return self.save_freq is not None

    def _init_callback(self) -> None:
        self.save_path.mkdir(parents=True, exist_ok=True)

    def _on_training_start(self) -> None:
        self._last_update_step = self.num_timesteps

    def _on_step(self) -> bool:
        if self.save_freq is not None and self.n_calls % self.save_freq == 0:
            self.save()
        return True

    def _on_update_end(self, stats: dict[str, float]) -> bool:
        last, self._last_update_step = self._last_update_step, self.num_timesteps
        if self.save_freq is None and due(self.num_timesteps, last, self.every_timesteps, self.final_timesteps):
            pending = self.logger
            if pending.name_to_value:  # the CSV reaches the checkpoint: its row first
                pending.dump(self.num_timesteps)
            self.save()
        return True

    def path_for(self, steps: int) -> Path:
        """The checkpoint file at ``steps`` transitions."""
        return self.save_path / self.file_name.format(steps=steps)

    def saved(self) -> list[tuple[int, Path]]:
        """(steps, path) of this callback's checkpoint files in ``save_path``, oldest first."""
        head, tail = self.file_name.split("{steps}")
        pattern = re.compile(rf"{re.escape(head)}(\d+){re.escape(tail)}\Z")
        found = [(int(m.group(1)), p) for p in self.save_path.iterdir() if (m := pattern.match(p.name))]
        return sorted(found)

    def save(self) -> Path:
        """Write a checkpoint of the agent now (atomically), then delete all but the newest ``keep``."""
        assert self.model is not None
        steps = self.model.num_timesteps
        state = self.model.state_dict()
        if self.run_state is not None:
            state["run"] = dict(self.run_state())
        path = write_checkpoint(state, self.path_for(steps))
        self.last_path, self.last_timesteps = path, steps
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {path}")
        vec_normalize = self.model.get_vec_normalize_env() if self.save_vecnormalize else None
        if vec_normalize is not None:
            stats = self.save_path / f"{self.name_prefix}_vecnormalize_{steps}_steps.pkl"
            vec_normalize.save(str(stats))
            if self.verbose >= 2:
                print(f"Saving model VecNormalize to {stats}")
        if self.keep is not None:
            for _, old in self.saved()[: -self.keep]:
                old.unlink(missing_ok=True)
        return path
