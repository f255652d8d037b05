"""Training callbacks with stable-baselines3's names and semantics.

A callback is passed to ``agent.learn(..., callback=...)``: one :class:`BaseCallback`, a list of them
(:class:`CallbackList`), or a plain function ``fn(agent, stats)`` called after every update with the
update's stats (return False to stop). The hooks run where stable-baselines3 runs them:

* ``_on_training_start`` / ``_on_training_end`` around ``learn``;
* ``_on_rollout_start`` / ``_on_rollout_end`` around each rollout (before the update);
* ``_on_step`` after every vector-env step (``n_calls`` counts them, ``num_timesteps`` counts
  transitions), with ``self.locals`` holding that step's ``new_obs``, ``actions``, ``rewards``,
  ``dones`` and ``infos``; returning False stops training;
* natrl adds ``_on_update_end(stats)`` after each update, with the update's stats.

The built-in ones: :class:`EvalCallback` (periodic deterministic evaluation, best-model saving,
``evaluations.npz``), :class:`CheckpointCallback`, :class:`StopTrainingOnRewardThreshold`,
:class:`StopTrainingOnNoModelImprovement`, :class:`EveryNTimesteps`, :class:`ProgressBarCallback`.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from natrl.atomic import atomic_write_bytes
from natrl.rl.env import env_factory
from natrl.rl.evaluation import EvalResult, evaluate_vec_env
from natrl.rl.sb3_vec_env import SB3VecEnv, is_sb3_vec_env

__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "EvalCallback",
    "EveryNTimesteps",
    "FunctionCallback",
    "ProgressBarCallback",
    "StopTrainingOnNoModelImprovement",
    "StopTrainingOnRewardThreshold",
    "make_callback",
]


class BaseCallback:
    """Base class: override the ``_on_*`` hooks you need (``_on_step`` must return a bool).

    Attributes:
        model: the agent (set by ``init_callback``).
        n_calls: how many times ``on_step`` ran (vector-env steps).
        num_timesteps: the agent's transitions so far, including the rollout in progress.
        locals: the last step's (or the update's) variables.
        parent: the callback that owns this one (EvalCallback for its children).
    """

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.model: Any = None  # the agent (natrl.rl.OnPolicyAgent), set by init_callback
        self.n_calls = 0
        self.num_timesteps = 0
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.parent: BaseCallback | None = None

    @property
    def training_env(self) -> Any:
        assert self.model is not None
        return self.model.get_env()

    @property
    def logger(self) -> Any:
        assert self.model is not None
        return self.model.logger

    @property
    def steps_hook(self) -> bool:
        """Whether this callback needs ``on_step`` after every env step (False for update-only callbacks)."""
        return True

    def init_callback(self, model: Any) -> None:
        self.model = model
        self._init_callback()

    def _init_callback(self) -> None:
        pass

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        self.locals, self.globals = locals_, globals_
        assert self.model is not None
        self.num_timesteps = self.model.num_timesteps
        self._on_training_start()

    def _on_training_start(self) -> None:
        pass

    def on_rollout_start(self) -> None:
        self._on_rollout_start()

    def _on_rollout_start(self) -> None:
        pass

    def on_step(self) -> bool:
        self.n_calls += 1
        assert self.model is not None
        self.num_timesteps = self.model.current_timesteps
        return self._on_step()

    def _on_step(self) -> bool:
        return True

    def on_rollout_end(self) -> None:
        self._on_rollout_end()

    def _on_rollout_end(self) -> None:
        pass

    def on_update_end(self, stats: dict[str, float]) -> bool:
        assert self.model is not None
        self.num_timesteps = self.model.num_timesteps
        return self._on_update_end(stats) is not False

    def _on_update_end(self, stats: dict[str, float]) -> bool | None:
        return True

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_end(self) -> None:
        pass

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals.update(locals_)
        self.update_child_locals(locals_)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        pass


class FunctionCallback(BaseCallback):
    """natrl's plain ``fn(agent, stats)`` after every update (return False to stop)."""

    def __init__(self, fn: Callable[[Any, dict[str, float]], Any]) -> None:
        super().__init__()
        self.fn = fn

    @property
    def steps_hook(self) -> bool:
        return False

    def _on_update_end(self, stats: dict[str, float]) -> bool | None:
        return self.fn(self.model, stats) is not False


class CallbackList(BaseCallback):
    """Several callbacks, called in order; training stops when one of them says so."""

    def __init__(self, callbacks: Sequence[BaseCallback | Callable[..., Any]]) -> None:
        super().__init__()
        self.callbacks = [make_callback(c) for c in callbacks]

    @property
    def steps_hook(self) -> bool:
        return any(c.steps_hook for c in self.callbacks)

    def _init_callback(self) -> None:
        for c in self.callbacks:
            c.init_callback(self.model)  # type: ignore[arg-type]

    def _on_training_start(self) -> None:
        for c in self.callbacks:
            c.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        for c in self.callbacks:
            c.on_rollout_start()

    def _on_step(self) -> bool:
        go = True
        for c in self.callbacks:
            if c.steps_hook:
                go = c.on_step() and go
        return go

    def _on_rollout_end(self) -> None:
        for c in self.callbacks:
            c.on_rollout_end()

    def _on_update_end(self, stats: dict[str, float]) -> bool:
        go = True
        for c in self.callbacks:
            go = c.on_update_end(stats) and go
        return go

    def _on_training_end(self) -> None:
        for c in self.callbacks:
            c.on_training_end()

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.update_locals(locals_)


def make_callback(callback: Any) -> BaseCallback:
    """A :class:`BaseCallback` from ``None``, a callback, a list of them, or a function ``fn(agent, stats)``."""
    if callback is None:
        return CallbackList([])
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, (list, tuple)):
        return CallbackList(callback)
    if callable(callback):
        return FunctionCallback(callback)
    raise TypeError(
        f"callback must be a natrl.callbacks.BaseCallback, a list of them or a function (agent, stats), "
        f"got {type(callback).__name__}"
    )


class EveryNTimesteps(BaseCallback):
    """Calls ``callback.on_step()`` each time another ``n_steps`` transitions have passed."""

    def __init__(self, n_steps: int, callback: BaseCallback) -> None:
        super().__init__()
        self.n_steps = int(n_steps)
        self.callback = callback
        self.last_trigger = 0

    def _init_callback(self) -> None:
        self.callback.init_callback(self.model)  # type: ignore[arg-type]
        self.callback.parent = self

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last_trigger >= self.n_steps:
            self.last_trigger = self.num_timesteps
            return self.callback.on_step()
        return True


def _check_count(owner: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _due(step: int, last: int, every: int | None, final: int | None) -> bool:
    """Whether an action repeated every ``every`` steps (and once at step ``final``) is due after an update
    that moved the step count from ``last`` to ``step``: a multiple of ``every`` lies in (last, step], or
    ``final`` was reached."""
    periodic = every is not None and every > 0 and step // every > last // every
    return periodic or (final is not None and step >= final > last)


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
        self.save_freq = None if save_freq is None else _check_count(owner, "save_freq", save_freq, 1)
        self.every_timesteps = (
            None if every_timesteps is None else _check_count(owner, "every_timesteps", every_timesteps, 1)
        )
        self.final_timesteps = (
            None if final_timesteps is None else _check_count(owner, "final_timesteps", final_timesteps, 0)
        )
        self.keep = None if keep is None else _check_count(owner, "keep", keep, 1)
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
        if self.save_freq is None and _due(self.num_timesteps, last, self.every_timesteps, self.final_timesteps):
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
        import torch

        steps = self.model.num_timesteps
        state = self.model.state_dict()
        if self.run_state is not None:
            state["run"] = dict(self.run_state())
        buf = io.BytesIO()
        torch.save(state, buf)
        path = atomic_write_bytes(self.path_for(steps), buf.getvalue())
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


class EvalCallback(BaseCallback):
    """Evaluates the agent every ``eval_freq`` calls (vector steps) on ``eval_env``.

    Records ``eval/mean_reward``, ``eval/std_reward`` and ``eval/mean_ep_length`` in the agent's logger, saves
    the best agent to ``best_model_save_path/best_model.pt``, appends to ``log_path/evaluations.npz``
    (``timesteps``, ``results``, ``ep_lengths``, as stable-baselines3 writes it), and calls
    ``callback_on_new_best`` after a new best and ``callback_after_eval`` after every evaluation; either stops
    training by returning False.

    Args:
        eval_env: an env id, a ``gymnasium.Env``, a factory or an SB3 VecEnv (same spaces as the training
            env); None: a fresh copy of the training env (:meth:`~natrl.rl.OnPolicyAgent.evaluate`'s default).
        n_eval_episodes: episodes per evaluation (reset with seeds ``eval_seed + i``).
        eval_freq: vector steps between evaluations.
        deterministic: evaluate the policy's mode.
        every_timesteps: natrl's cadence (what ``natrl train`` uses): evaluate after the update that passes
            each multiple of this many transitions instead of counting vector steps (no per-step hook);
            0: only at ``final_timesteps``.
        final_timesteps: with ``every_timesteps``, also evaluate after the update that reaches this step
            count (the end of the run).

    Attributes:
        last_result: the newest evaluation (:class:`~natrl.rl.evaluation.EvalResult`), None before the first.
        last_timesteps: the step count it was made at.
    """

    def __init__(
        self,
        eval_env: Any = None,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10_000,
        log_path: str | os.PathLike[str] | None = None,
        best_model_save_path: str | os.PathLike[str] | None = None,
        deterministic: bool = True,
        render: bool = False,
        verbose: int = 1,
        warn: bool = True,
        eval_seed: int | None = None,
        *,
        every_timesteps: int | None = None,
        final_timesteps: int | None = None,
    ) -> None:
        super().__init__(verbose)
        self.eval_env = _checked_eval_env(eval_env)
        self.n_eval_episodes = _check_count("EvalCallback", "n_eval_episodes", n_eval_episodes, 1)
        self.eval_freq = _check_count("EvalCallback", "eval_freq", eval_freq, 1)
        self.every_timesteps = (
            None if every_timesteps is None else _check_count("EvalCallback", "every_timesteps", every_timesteps, 0)
        )
        self.final_timesteps = (
            None if final_timesteps is None else _check_count("EvalCallback", "final_timesteps", final_timesteps, 0)
        )
        if render:
            raise ValueError("EvalCallback: render=True is not supported; record videos with natrl eval --video")
        self.callback_on_new_best = callback_on_new_best
        self.callback_after_eval = callback_after_eval
        self.log_path = None if log_path is None else Path(log_path)
        self.best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self.deterministic = deterministic
        self.eval_seed = eval_seed
        self.best_mean_reward = -np.inf
        self.last_mean_reward = -np.inf
        self.last_result: EvalResult | None = None
        self.last_timesteps: int | None = None
        self.evaluations_timesteps: list[int] = []
        self.evaluations_results: list[list[float]] = []
        self.evaluations_length: list[list[int]] = []
        self._last_update_step = 0

    @property
    def steps_hook(self) -> bool:
        return self.every_timesteps is None

    def _init_callback(self) -> None:
        assert self.model is not None
        if self.eval_env is not None:
            spaces = _eval_env_spaces(self.eval_env)
            if spaces != (self.model.observation_space, self.model.action_space):
                raise ValueError(
                    f"EvalCallback: the eval env's spaces {spaces} differ from the agent's "
                    f"({self.model.observation_space}, {self.model.action_space})"
                )
        for child in (self.callback_on_new_best, self.callback_after_eval):
            if child is not None:
                child.init_callback(self.model)
                child.parent = self
        for folder in (self.log_path, self.best_model_save_path):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

    def _on_training_start(self) -> None:
        self._last_update_step = self.num_timesteps

    def _on_step(self) -> bool:
        if self.every_timesteps is not None or self.n_calls % self.eval_freq != 0:
            return True
        return self._evaluate_and_record()

    def _on_update_end(self, stats: dict[str, float]) -> bool:
        last, self._last_update_step = self._last_update_step, self.num_timesteps
        if self.every_timesteps is not None and _due(
            self.num_timesteps, last, self.every_timesteps, self.final_timesteps
        ):
            return self._evaluate_and_record()
        return True

    def evaluate(self) -> EvalResult:
        """Evaluate the agent now (``n_eval_episodes`` episodes); kept as :attr:`last_result`, not logged."""
        assert self.model is not None
        if is_sb3_vec_env(self.eval_env) or isinstance(self.eval_env, SB3VecEnv):
            res = evaluate_vec_env(self.model, self.eval_env, self.n_eval_episodes, deterministic=self.deterministic)
        else:
            res = self.model.evaluate(
                self.n_eval_episodes, deterministic=self.deterministic, env=self.eval_env, seed=self.eval_seed
            )
        self.last_result, self.last_timesteps = res, self.model.num_timesteps
        return res

    def _evaluate_and_record(self) -> bool:
        assert self.model is not None
        res = self.evaluate()
        self.last_mean_reward = res.mean
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append(res.returns)
        self.evaluations_length.append(res.lengths)
        if self.log_path is not None:
            np.savez(
                self.log_path / "evaluations.npz",
                timesteps=np.array(self.evaluations_timesteps),
                results=np.array(self.evaluations_results),
                ep_lengths=np.array(self.evaluations_length),
            )
        logger = self.model.logger
        logger.record("eval/mean_reward", float(res.mean))
        logger.record("eval/std_reward", float(res.std))
        logger.record("eval/mean_ep_length", float(np.mean(res.lengths)))
        if self.verbose >= 1:
            print(f"Eval num_timesteps={self.num_timesteps}, episode_reward={res.mean:.2f} +/- {res.std:.2f}")
        go = True
        if res.mean > self.best_mean_reward:
            self.best_mean_reward = res.mean
            if self.best_model_save_path is not None:
                self.model.save(self.best_model_save_path / "best_model.pt")
            if self.callback_on_new_best is not None:
                go = self.callback_on_new_best.on_step()
        if self.callback_after_eval is not None:
            go = self.callback_after_eval.on_step() and go
        return go


def _checked_eval_env(env: Any) -> Any:
    """An evaluation env natrl can use (checked when the callback is made): an id that is registered, a
    ``gymnasium.Env``, a factory, or an SB3 ``VecEnv``."""
    from gymnasium import Env

    if env is None or isinstance(env, SB3VecEnv) or is_sb3_vec_env(env) or isinstance(env, Env) or callable(env):
        return env
    if isinstance(env, str):
        env_factory(env)  # an unknown id fails here, with close matches
        return env
    raise TypeError(
        "EvalCallback: eval_env must be an env id, a gymnasium.Env, a factory or an SB3 VecEnv, "
        f"got {type(env).__name__}"
    )


def _eval_env_spaces(env: Any) -> tuple[Any, Any]:
    if is_sb3_vec_env(env) or isinstance(env, SB3VecEnv):
        return env.observation_space, env.action_space
    probe = env_factory(env)()
    try:
        return probe.observation_space, probe.action_space
    finally:
        probe.close()


class StopTrainingOnRewardThreshold(BaseCallback):
    """Child of :class:`EvalCallback` (``callback_on_new_best``): stops once the best mean reward reaches
    ``reward_threshold``."""

    def __init__(self, reward_threshold: float, verbose: int = 0) -> None:
        super().__init__(verbose)
        if isinstance(reward_threshold, bool) or not isinstance(
            reward_threshold, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"StopTrainingOnRewardThreshold: reward_threshold must be a number, got {reward_threshold!r}"
            )
        if np.isnan(reward_threshold):
            raise ValueError("StopTrainingOnRewardThreshold: reward_threshold is NaN (it would never stop training)")
        self.reward_threshold = float(reward_threshold)

    def _on_step(self) -> bool:
        if not isinstance(self.parent, EvalCallback):
            raise TypeError("StopTrainingOnRewardThreshold must be used as EvalCallback's callback_on_new_best")
        go = bool(self.parent.best_mean_reward < self.reward_threshold)
        if not go and self.verbose >= 1:
            print(f"Stopping training: the best mean reward {self.parent.best_mean_reward:.2f} "
                  f"reached the threshold {self.reward_threshold}")  # fmt: skip
        return go


class StopTrainingOnNoModelImprovement(BaseCallback):
    """Child of :class:`EvalCallback` (``callback_after_eval``): stops after ``max_no_improvement_evals``
    evaluations in a row without a new best (counting from ``min_evals``)."""

    def __init__(self, max_no_improvement_evals: int, min_evals: int = 0, verbose: int = 0) -> None:
        super().__init__(verbose)
        for name, value, low in (
            ("max_no_improvement_evals", max_no_improvement_evals, 1),
            ("min_evals", min_evals, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"StopTrainingOnNoModelImprovement: {name} must be an integer >= {low}, got {value!r}")
        self.max_no_improvement_evals, self.min_evals = int(max_no_improvement_evals), int(min_evals)
        self.last_best = -np.inf
        self.no_improvement = 0

    def _on_step(self) -> bool:
        if not isinstance(self.parent, EvalCallback):
            raise TypeError("StopTrainingOnNoModelImprovement must be used as EvalCallback's callback_after_eval")
        if self.n_calls > self.min_evals:
            if self.parent.best_mean_reward > self.last_best:
                self.no_improvement = 0
            else:
                self.no_improvement += 1
        self.last_best = self.parent.best_mean_reward
        return self.no_improvement < self.max_no_improvement_evals


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
            self.bar.write(message, file=self.bar.fp)
        else:
            print(message, flush=True)

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Finish the bar (also when training ended with an exception)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
