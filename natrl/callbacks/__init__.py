"""Training callbacks with stable-baselines3's names and semantics.

A callback is passed to ``agent.learn(..., callback=...)``: one :class:`BaseCallback`, a list of them
(:class:`CallbackList`), or a plain function ``fn(agent, stats)`` called after every update with the
update's stats (return False to stop). The hooks run where stable-baselines3 runs them:

* ``_on_training_start`` / ``_on_training_end`` around ``learn`` (the end hook only when training ended
  normally, as in stable-baselines3); natrl adds ``_on_training_error(error)`` when ``learn`` raises, to
  release what a callback holds (the progress bar closes) without saving half a run;
* ``_on_rollout_start`` / ``_on_rollout_end`` around each rollout (before the update);
* ``_on_step`` after every vector-env step (``n_calls`` counts them, ``num_timesteps`` counts
  transitions), with ``self.locals`` holding that step's ``new_obs``, ``actions``, ``rewards`` (those
  natrl trains on: scaled under ``normalize_reward``), ``dones`` and ``infos`` (SB3's list of per-env
  dicts, with ``"episode"``, ``"terminal_observation"`` and ``"TimeLimit.truncated"`` as SB3's
  VecEnv gives them), and Gymnasium's ``terminated`` and ``truncated``; returning
  False stops training;
* natrl adds ``_on_update_end(stats)`` after each update, with the update's stats.

The built-in ones: :class:`EvalCallback` (periodic deterministic evaluation, best-model saving,
``evaluations.npz``), :class:`CheckpointCallback`, :class:`StopTrainingOnRewardThreshold`,
:class:`StopTrainingOnNoModelImprovement`, :class:`StopTrainingOnMaxEpisodes`, :class:`EveryNTimesteps`,
:class:`ProgressBarCallback`.
"""

from natrl.callbacks.base import BaseCallback, CallbackList, EveryNTimesteps, FunctionCallback, make_callback
from natrl.callbacks.checkpoint import CheckpointCallback
from natrl.callbacks.episodes import StopTrainingOnMaxEpisodes
from natrl.callbacks.evaluation import EvalCallback, StopTrainingOnNoModelImprovement, StopTrainingOnRewardThreshold
from natrl.callbacks.progress import ProgressBarCallback

__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "EvalCallback",
    "EveryNTimesteps",
    "FunctionCallback",
    "ProgressBarCallback",
    "StopTrainingOnMaxEpisodes",
    "StopTrainingOnNoModelImprovement",
    "StopTrainingOnRewardThreshold",
    "make_callback",
]
