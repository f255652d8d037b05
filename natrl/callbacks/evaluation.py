"""Evaluation during training: :class:`EvalCallback` and the callbacks that stop training on its results."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from natrl.callbacks.base import BaseCallback, check_count, due
from natrl.rl.env import env_factory
from natrl.rl.evaluation import EvalResult, evaluate_env, evaluate_vec_env
from natrl.rl.sb3_vec_env import SB3VecEnv, is_sb3_vec_env

__all__ = ["EvalCallback", "StopTrainingOnNoModelImprovement", "StopTrainingOnRewardThreshold"]


class EvalCallback(BaseCallback):
    """Evaluates the agent every ``eval_freq`` calls (vector steps) on ``eval_env``.

    Records ``eval/mean_reward``, ``eval/std_reward`` and ``eval/mean_ep_length`` in the agent's logger, saves
    the best agent to ``best_model_save_path/best_model.pt``, appends to ``log_path/evaluations.npz``
    (``timesteps``, ``results``, ``ep_lengths``, as stable-baselines3 writes it), and calls
    ``callback_on_new_best`` after a new best and ``callback_after_eval`` after every evaluation; either stops
    training by returning False. With ``verbose >= 1`` it prints stable-baselines3's lines (``Eval
    num_timesteps=...``, ``Episode length: ...``, ``New best mean reward!``).

    When the agent trains on an SB3 ``VecNormalize``, the eval env must be an SB3 VecEnv wrapped the same way
    (e.g. ``VecNormalize(make_vec_env(...), training=False, norm_reward=False)``, checked when training starts),
    and the training env's normalisation statistics are copied to it before each evaluation, as
    stable-baselines3's ``sync_envs_normalization`` does.

    Args:
        eval_env: an env id, a ``gymnasium.Env`` instance (evaluated on itself, not copied, as in
            stable-baselines3; it is not closed), a factory or an SB3 VecEnv (same spaces as the training
            env); None: a fresh copy of the training env (:meth:`~natrl.rl.OnPolicyAgent.evaluate`'s default).
        n_eval_episodes: episodes per evaluation (a single env resets episode i with seed ``eval_seed + i``,
            default the agent's ``seed + 10_000`` as in :meth:`~natrl.rl.OnPolicyAgent.evaluate`).
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
        self.n_eval_episodes = check_count("EvalCallback", "n_eval_episodes", n_eval_episodes, 1)
        self.eval_freq = check_count("EvalCallback", "eval_freq", eval_freq, 1)
        self.every_timesteps = (
            None if every_timesteps is None else check_count("EvalCallback", "every_timesteps", every_timesteps, 0)
        )
        self.final_timesteps = (
            None if final_timesteps is None else check_count("EvalCallback", "final_timesteps", final_timesteps, 0)
        )
        if render:
            raise ValueError("EvalCallback: render=True is not supported; record videos with natrl eval --video")
        self.callback_on_new_best = callback_on_new_best
        self.callback_after_eval = callback_after_eval
        self.log_path = None if log_path is None else Path(log_path)
        self.best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self.deterministic = deterministic
        self.eval_seed = None if eval_seed is None else check_count("EvalCallback", "eval_seed", eval_seed, 0)
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
        if self.model.get_vec_normalize_env() is not None:
            _check_normalization_wrapping(self.model.get_env(), self.eval_env)
        for child in self._children():
            child.init_callback(self.model)
            child.parent = self
        for folder in (self.log_path, self.best_model_save_path):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

    def _children(self) -> list[BaseCallback]:
        return [c for c in (self.callback_on_new_best, self.callback_after_eval) if c is not None]

    def _on_training_start(self) -> None:
        self._last_update_step = self.num_timesteps
        for child in self._children():  # as stable-baselines3's EventCallback does for its callback
            child.on_training_start(self.locals, self.globals)

    def _on_training_end(self) -> None:
        for child in self._children():
            child.on_training_end()

    def _on_training_error(self, error: BaseException) -> None:
        for child in self._children():
            child.on_training_error(error)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        for child in self._children():
            child.update_locals(locals_)

    def _on_step(self) -> bool:
        if self.every_timesteps is not None or self.n_calls % self.eval_freq != 0:
            return True
        return self._evaluate_and_record()

    def _on_update_end(self, stats: dict[str, float]) -> bool:
        last, self._last_update_step = self._last_update_step, self.num_timesteps
        if self.every_timesteps is not None and due(
            self.num_timesteps, last, self.every_timesteps, self.final_timesteps
        ):
            return self._evaluate_and_record()
        return True

    def evaluate(self) -> EvalResult:
        """Evaluate the agent now (``n_eval_episodes`` episodes); kept as :attr:`last_result`, not logged."""
        assert self.model is not None
        if self.model.get_vec_normalize_env() is not None:
            # VecNormalize exists only once SB3 is imported; its statistics go to the eval env, as in SB3
            sys.modules["stable_baselines3.common.vec_env"].sync_envs_normalization(self.model.get_env(), self.eval_env)
        if is_sb3_vec_env(self.eval_env) or isinstance(self.eval_env, SB3VecEnv):
            res = evaluate_vec_env(self.model, self.eval_env, self.n_eval_episodes, deterministic=self.deterministic)
        elif isinstance(self.eval_env, gym.Env):  # the instance itself, as SB3 evaluates it
            seed = self.model.seed + 10_000 if self.eval_seed is None else self.eval_seed  # agent.evaluate's default
            res = evaluate_env(self.model, self.eval_env, self.n_eval_episodes, deterministic=self.deterministic,
                               seed=seed)  # fmt: skip
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
        if self.verbose >= 1:  # stable-baselines3's lines
            print(f"Eval num_timesteps={self.num_timesteps}, episode_reward={res.mean:.2f} +/- {res.std:.2f}")
            print(f"Episode length: {np.mean(res.lengths):.2f} +/- {np.std(res.lengths):.2f}")
        go = True
        if res.mean > self.best_mean_reward:
            if self.verbose >= 1:
                print("New best mean reward!")
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
    if is_sb3_vec_env(env) or isinstance(env, SB3VecEnv) or isinstance(env, gym.Env):
        return env.observation_space, env.action_space
    probe = env_factory(env)()
    try:
        return probe.observation_space, probe.action_space
    finally:
        probe.close()


def _check_normalization_wrapping(training_env: Any, eval_env: Any) -> None:
    """Refuse an eval env that stable-baselines3's ``sync_envs_normalization`` cannot copy the training env's
    ``VecNormalize`` statistics to: below each SB3 ``VecEnvWrapper`` of the training env, the eval env must have a
    wrapper too, and a ``VecNormalize`` where the training env has one."""
    vec_env = sys.modules["stable_baselines3.common.vec_env"]  # imported: the training env is its VecNormalize
    train, evaluation = training_env, eval_env
    while isinstance(train, vec_env.VecEnvWrapper):
        wanted = vec_env.VecNormalize if isinstance(train, vec_env.VecNormalize) else vec_env.VecEnvWrapper
        if not isinstance(evaluation, wanted):
            raise ValueError(
                f"EvalCallback: the agent trains on a VecNormalize, whose statistics are copied to the eval env "
                f"before each evaluation, so the eval env must be wrapped the same way (found "
                f"{type(evaluation).__name__} where the training env has {type(train).__name__}); pass e.g. "
                f"VecNormalize(make_vec_env(...), training=False, norm_reward=False)"
            )
        train, evaluation = train.venv, evaluation.venv


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
        if not go and self.verbose >= 1:  # stable-baselines3's line
            print(f"Stopping training because the mean reward {self.parent.best_mean_reward:.2f} "
                  f"is above the threshold {self.reward_threshold}")  # fmt: skip
        return go


class StopTrainingOnNoModelImprovement(BaseCallback):
    """Child of :class:`EvalCallback` (``callback_after_eval``): stops when more than ``max_no_improvement_evals``
    evaluations in a row brought no new best (counting after the first ``min_evals``), as stable-baselines3's."""

    def __init__(self, max_no_improvement_evals: int, min_evals: int = 0, verbose: int = 0) -> None:
        super().__init__(verbose)
        owner = "StopTrainingOnNoModelImprovement"
        self.max_no_improvement_evals = check_count(owner, "max_no_improvement_evals", max_no_improvement_evals, 0)
        self.min_evals = check_count(owner, "min_evals", min_evals, 0)
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
        go = self.no_improvement <= self.max_no_improvement_evals
        if not go and self.verbose >= 1:  # stable-baselines3's line
            print(f"Stopping training because there was no new best model in the last {self.no_improvement:d} "
                  "evaluations")  # fmt: skip
        return go
