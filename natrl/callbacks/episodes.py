"""Stopping training after a number of episodes: :class:`StopTrainingOnMaxEpisodes`."""

from __future__ import annotations

import numpy as np

from natrl.callbacks.base import BaseCallback, check_count

__all__ = ["StopTrainingOnMaxEpisodes"]


class StopTrainingOnMaxEpisodes(BaseCallback):
    """Stops training once ``max_episodes * n_envs`` episodes have ended, as stable-baselines3's callback of
    the same name: the ends are the ``dones`` of every vector step (``self.locals["dones"]``), summed over the
    envs, so with several envs each is taken to run ``max_episodes`` on average. Training stops at the step
    whose ends reach the total, in the middle of a rollout if need be.

    Args:
        max_episodes: episodes per env.
        verbose: 1: print stable-baselines3's line when it stops training.

    Attributes:
        n_episodes: the episodes ended so far (in all envs).
    """

    def __init__(self, max_episodes: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.max_episodes = check_count("StopTrainingOnMaxEpisodes", "max_episodes", max_episodes, 1)
        self._total_max_episodes = self.max_episodes
        self.n_episodes = 0

    def _init_callback(self) -> None:
        self._total_max_episodes = self.max_episodes * self.training_env.num_envs

    def _on_step(self) -> bool:
        if "dones" not in self.locals:
            raise KeyError("StopTrainingOnMaxEpisodes: the step's locals have no 'dones'; call it from on_step")
        self.n_episodes += int(np.sum(self.locals["dones"]))
        go = self.n_episodes < self._total_max_episodes
        if self.verbose >= 1 and not go:  # stable-baselines3's line
            n_envs = self.training_env.num_envs
            per_env = f"with an average of {self.n_episodes / n_envs:.2f} episodes per env" if n_envs > 1 else ""
            name = self.locals.get("tb_log_name") or type(self.model).__name__
            print(
                f"Stopping training with a total of {self.num_timesteps} steps because the {name} model reached "
                f"max_episodes={self.max_episodes}, by playing for {self.n_episodes} episodes {per_env}"
            )
        return go
