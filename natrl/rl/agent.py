"""The on-policy agent shell shared by TRPO, NPG, PPO and ACKTR (stable-baselines3's API).

An agent owns an actor, a critic, optional running normalisers, a torch generator and an
:class:`~natrl.rl.env.EnvSource` it asks for envs. ``learn`` alternates

    rollout → GAE advantages → ``_update(batch)`` (the algorithm, under the finite guard) → stats → callback

and each algorithm module only implements ``_update``. The finite guard is :mod:`natrl.rl.guard`; checkpoints
(``save``, ``load``, ``state_dict``) are :mod:`natrl.rl.persistence`; evaluation on vector envs is
:mod:`natrl.rl.evaluation`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from natrl.logger import Logger, record_stats
from natrl.rl import persistence
from natrl.rl.accel import FastPaths, fast_paths
from natrl.rl.acting import act
from natrl.rl.arguments import (
    check_seed,
    positive_int,
    resolve_config,
    resolve_device,
    resolve_env_and_policy,
    seed_global_generators,
    translate_config,
)
from natrl.rl.batch import Batch, batch_from_rollout, explained_variance
from natrl.rl.collection import make_collector
from natrl.rl.config import OnPolicyConfig, checked_schedule_value
from natrl.rl.critic import ValueGrads, value_grads
from natrl.rl.env import EnvLike, EnvSource
from natrl.rl.evaluation import EvalResult, check_evaluate_args, evaluate_env
from natrl.rl.gae import gae
from natrl.rl.guard import UpdateGuard
from natrl.rl.normalization import ObsNormalizer, RewardScaler
from natrl.rl.policies.build import build_policy_for
from natrl.rl.rollout import RecurrentSampler, RolloutCollector, Sampler, StepHook, torch_sampler
from natrl.rl.run_logger import configure_logger
from natrl.rl.sb3_attributes import SB3Attributes, SB3Policy

__all__ = ["OnPolicyAgent"]

A = TypeVar("A", bound="OnPolicyAgent")
_log = logging.getLogger("natrl")


class OnPolicyAgent(SB3Attributes):
    """Base class of the on-policy agents. Subclasses set ``algo``, ``config_cls`` and ``_update``.

    Args:
        env: an environment id, a ``gymnasium.Env``, a factory returning one, a Gymnasium vector env or an
            SB3 VecEnv (see :class:`natrl.rl.env.EnvSource`).
        policy: ``"MlpPolicy"`` (default), ``"MultiInputPolicy"``, ``"CnnPolicy"``, one ``nn.Module``
            returning ``(actor_output, value)``, or a pair ``(actor_module, critic_module)``
            (see :mod:`natrl.rl.policies.build`).
        policy_kwargs: stable-baselines3's policy keywords for the built-in policies (``net_arch``,
            ``activation_fn``, ``features_extractor_class``/``_kwargs``, ``share_features_extractor``,
            ``ortho_init``, ``log_std_init``).
        seed: seeds the networks' initialisation, the samplers and the envs.
        device: where the networks live and the updates run.
        config: a ready hyperparameter object (else built from ``hyperparameters``).
        verbose: 1 prints the training stats (and SB3 name translations) to stdout.
        tensorboard_log: a folder for TensorBoard runs.
        env_kwargs: ``gym.make``'s keyword arguments (ids only).
        wrapper_class: a wrapper applied to every env natrl builds.
        wrapper_kwargs: its keyword arguments.
        hyperparameters: fields of the algorithm's config class (or stable-baselines3's names for them).
    """

    algo: ClassVar[str] = ""
    config_cls: ClassVar[type[OnPolicyConfig]] = OnPolicyConfig

    def __init__(
        self,
        env_or_policy: Any = None,
        env: EnvLike | None = None,
        *,
        policy: str | nn.Module | tuple[nn.Module, nn.Module] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        seed: int | None = 0,
        device: str | torch.device = "cpu",
        config: OnPolicyConfig | None = None,
        verbose: int = 0,
        tensorboard_log: str | os.PathLike[str] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        wrapper_class: Callable[..., gym.Env] | None = None,
        wrapper_kwargs: dict[str, Any] | None = None,
        **hyperparameters: Any,
    ) -> None:
        env, policy = resolve_env_and_policy(type(self).__name__, env_or_policy, env, policy)
        env, config, sb3_given = resolve_config(type(self), env, config, hyperparameters)
        self.config = config
        self.verbose = int(verbose)
        self.tensorboard_log = None if tensorboard_log is None else str(tensorboard_log)
        self._user_logger: Logger | None = None
        self._auto_logger: Logger | None = None
        self._rollout_steps = 0
        self.progress_remaining = 1.0  # of the current learn call; what schedules are evaluated at
        self.seed = check_seed(seed)
        self.device = resolve_device(device)
        if config.torch_threads is not None and torch.get_num_threads() != config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.env_source = EnvSource(
            env,
            backend=config.vec_env,
            env_kwargs=env_kwargs,
            wrapper_class=wrapper_class,
            wrapper_kwargs=wrapper_kwargs,
        )
        source = self.env_source
        self.observation_space, self.action_space = source.observation_space, source.action_space
        self.env_kwargs, self.wrapper_kwargs = source.env_kwargs, source.wrapper_kwargs
        self.wrapper_class = wrapper_class
        # "target_kl=0.01 → max_kl=0.03 (k = 3 action dimensions)", …
        self.config, self.sb3_translations = translate_config(
            type(self), config, sb3_given, set(hyperparameters) - set(sb3_given), self.action_space, self.verbose
        )
        config = self.config

        seed_global_generators(self.seed)
        self.policy_name = policy if isinstance(policy, str) else "custom"
        actor, critic = build_policy_for(policy, policy_kwargs, self.observation_space, self.action_space, config)
        self.policy_kwargs = dict(policy_kwargs or {})
        self.actor = actor.to(self.device, torch.float32)  # float32 whatever torch's default dtype is
        self.critic = critic.to(self.device, torch.float32)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)  # the NumPy rollout sampler's generator
        codec = self.actor.obs_codec
        if config.normalize_obs and not codec.normalizable:
            raise ValueError(
                f"normalize_obs=True needs a float Box observation space, got {self.observation_space}; "
                "set normalize_obs=False (images are scaled by 1/255, indices one-hot encoded)"
            )
        self.obs_normalizer = ObsNormalizer(codec.shape) if config.normalize_obs else None
        # SB3's `model.policy`: one module, shared parts once, with SB3's policy methods
        self.policy = SB3Policy(self.actor, self.critic, self.obs_normalizer, self.generator, self.device)
        n_all = config.n_envs * max(1, config.workers)  # with workers: every worker's envs, in the learner
        self.reward_scaler = RewardScaler(n_all, config.gamma) if config.normalize_reward else None
        self.num_timesteps = 0
        self.num_updates = 0
        self.guard = UpdateGuard()  # the finite guard around _update
        self._episodes_before = 0  # episodes finished before this agent's collector (a loaded run's count)
        self._collector: RolloutCollector | None = None
        self._pending_collector_state: dict[str, Any] | None = None  # a loaded checkpoint's, for the next collector
        # the speed devices for natrl's own MLPs on the CPU, chosen once (natrl.rl.accel)
        self.fast: FastPaths = fast_paths(self.actor, self.critic, self.rng, enabled=config.fast_paths)
        self.sampler: Sampler | RecurrentSampler = self.fast.sampler or torch_sampler(self.actor, self.generator)
        self._critic_grads: ValueGrads = self.fast.critic_grads or value_grads(self.critic)
        self._setup()
        _log.info("%s on %s: speed devices %s", type(self).__name__, self.env_id, ", ".join(self.fast.active) or "none")

    @property
    def env_id(self) -> str:
        """A short name of the training env (its id, the spec's id, or the factory's name)."""
        return self.env_source.env_id

    # ----------------------------------------------------------------- algorithm hooks
    def _setup(self) -> None:
        """Create optimisers and algorithm state (after networks exist)."""

    def _update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def _algo_state(self) -> dict[str, Any]:
        return {}

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------- training
    @property
    def collector(self) -> RolloutCollector:
        """What collects the rollouts: over the training vector env, or over the rollout workers' envs."""
        if self._collector is not None:
            return self._collector
        collector = make_collector(
            self.env_source, self.actor, self.critic, self.config, seed=self.seed + self.num_timesteps,
            device=self.device, obs_normalizer=self.obs_normalizer, reward_scaler=self.reward_scaler,
            state=self._pending_collector_state,
        )  # fmt: skip
        self._pending_collector_state = None
        collector.steps = self.num_timesteps
        collector.episodes = self._episodes_before  # continued across save/load
        self._collector = collector
        return collector

    def _make_batch(self, on_step: StepHook | None = None) -> tuple[Batch, dict[str, float]] | None:
        cfg = self.config
        ro = self.collector.collect(self.actor, self.critic, cfg.n_steps, self.sampler, on_step)
        if ro is None:
            return None
        adv, ret = gae(
            ro.rewards,
            ro.values,
            ro.next_values,
            ro.terminated,
            ro.episode_end,
            gamma=cfg.gamma,
            lam=cfg.gae_lambda,
        )
        batch = batch_from_rollout(ro, adv, ret, cfg.sequence_steps())
        return batch, {"explained_variance": explained_variance(batch.values, batch.returns)}

    def learn(
        self: A,
        total_timesteps: int | float,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> A:
        """Train for ``total_timesteps`` environment steps (rounded up to whole rollouts); stable-baselines3's
        signature.

        Args:
            total_timesteps: environment transitions to collect, summed over envs (an integer, an integral
                float such as ``1e5``, or a NumPy integer).
            callback: a :class:`natrl.callbacks.BaseCallback`, a list of them, or ``fn(agent, stats)``
                called after each update (return False to stop training early).
            log_interval: updates between dumps of the logger (stdout with ``verbose=1``, TensorBoard with
                ``tensorboard_log``, or the logger given to :meth:`set_logger`).
            tb_log_name: the TensorBoard run name under ``tensorboard_log`` (default: the algorithm's
                class name; runs are numbered ``NAME_1``, ``NAME_2``, …).
            reset_num_timesteps: start the step counter at 0 (True, stable-baselines3's default) or
                continue it (False: a second ``learn`` call extends the same run).
            progress_bar: show a progress bar (:class:`natrl.callbacks.ProgressBarCallback`) with steps/s,
                recent return and KL.

        Schedules (e.g. PPO's learning-rate annealing) are evaluated at stable-baselines3's progress remaining,
        ``1 - num_timesteps / _total_timesteps``, where ``_total_timesteps`` is ``total_timesteps`` plus, with
        ``reset_num_timesteps=False``, the steps taken before this call: a continued run (e.g. after loading a
        checkpoint) anneals over its whole length.

        Each update's stats are recorded into the logger, then the callbacks' ``on_update_end`` runs (an
        evaluation callback records ``eval/*`` into the same row), then the row is dumped every
        ``log_interval`` updates. ``on_training_end`` runs after training that ends normally (as in
        stable-baselines3); when training raises, natrl's ``on_training_error`` runs instead, then the error propagates.

        Returns:
            the agent itself.
        """
        from natrl.callbacks import CallbackList, ProgressBarCallback, make_callback

        steps = positive_int("total_timesteps", total_timesteps)
        log_interval = positive_int("log_interval", log_interval)
        if reset_num_timesteps:
            self.num_timesteps = 0
        cb = make_callback(callback)
        if progress_bar:
            cb = CallbackList([cb, ProgressBarCallback()])
        cb.init_callback(self)
        logger = self._logger_for(tb_log_name or type(self).__name__, reset_num_timesteps)
        start_steps = self.num_timesteps
        self._total_timesteps = start_steps + steps  # stable-baselines3's: schedules span [0, _total_timesteps]
        on_step = self._step_hook(cb) if cb.steps_hook else None
        self.sync_ep_info(self.collector)  # ep_info_buffer counts the episodes from here on
        t_start = time.perf_counter()
        try:
            cb.on_training_start(locals(), globals())
            while self.num_timesteps - start_steps < steps:
                cb.on_rollout_start()
                t0 = time.perf_counter()
                made = self._make_batch(on_step)
                if made is None:  # a callback stopped training during the rollout: its steps count (as SB3's)
                    self.num_timesteps = self.num_timesteps
                    break
                batch, stats = made
                self.sync_ep_info(self.collector)
                cb.on_rollout_end()
                t1 = time.perf_counter()
                # schedules: the progress remaining after this rollout, as stable-baselines3 counts it
                self.progress_remaining = max(
                    0.0, 1.0 - (self._timesteps_done + len(batch)) / max(self._total_timesteps, 1)
                )
                stats.update(self._guarded_update(batch))
                t2 = time.perf_counter()
                self.num_timesteps = self._timesteps_done + len(batch)
                self.num_updates += 1
                coll = self.collector
                stats.update(
                    timesteps=float(self.num_timesteps),
                    updates=float(self.num_updates),
                    episodes=float(coll.episodes),
                    fps=len(batch) / (t2 - t0),
                    rollout_seconds=t1 - t0,
                    update_seconds=t2 - t1,
                    time_elapsed=time.perf_counter() - t_start,
                )
                if coll.episode_returns:
                    stats["ep_return_mean"] = float(np.mean(coll.episode_returns))
                    stats["ep_length_mean"] = float(np.mean(coll.episode_lengths))
                if logger is not None:
                    record_stats(logger, stats, self.algo)
                # callbacks may record eval/* into the same row (and dump it early) before the row is dumped
                keep_going = cb.on_update_end(stats)
                if logger is not None and self.num_updates % log_interval == 0:
                    logger.dump(self.num_timesteps)
                if not keep_going:
                    break
        except BaseException as error:  # an env's exception, Ctrl-C: no end hook (half a run), the error hook
            cb.on_training_error(error)
            raise
        finally:
            self._rollout_steps = 0
            if logger is not None and logger is not self._user_logger:
                logger.dump(self.num_timesteps)
        cb.on_training_end()
        return self

    def scheduled(self, name: str) -> float:
        """A hyperparameter's value now: a number, or a schedule (``"lin_<value>"`` or a function of the
        progress remaining) evaluated at :attr:`progress_remaining`."""
        return checked_schedule_value(name, getattr(self.config, name), self.progress_remaining)

    @property
    def num_timesteps(self) -> int:
        """Transitions so far, including those of the rollout in progress (stable-baselines3's count: what the
        callbacks see during a rollout is what the model says)."""
        return self._timesteps_done + self._rollout_steps

    @num_timesteps.setter
    def num_timesteps(self, value: int) -> None:
        self._timesteps_done, self._rollout_steps = int(value), 0

    def _step_hook(self, cb: Any) -> Callable[[dict[str, Any]], bool]:
        n_envs = self.config.n_envs
        sb3_infos = self.sb3_step_infos(n_envs)  # Gymnasium's info dict → SB3's infos list

        def hook(step_locals: dict[str, Any]) -> bool:
            self._rollout_steps += n_envs
            step_locals["infos"] = sb3_infos(step_locals)
            cb.update_locals(step_locals)
            return cb.on_step()

        return hook

    # ----------------------------------------------------------------- logging
    @property
    def logger(self) -> Logger:
        """The logger of the current (or last) ``learn`` call: the one given to :meth:`set_logger`, else one
        writing to stdout (``verbose=1``) and TensorBoard (``tensorboard_log``), else one writing nowhere."""
        if self._user_logger is not None:
            return self._user_logger
        if self._auto_logger is None:
            self._auto_logger = Logger(None, [])
        return self._auto_logger

    def set_logger(self, logger: Logger) -> None:
        """Write every ``learn`` call's stats to ``logger`` (see :func:`natrl.logger.configure`)."""
        self._user_logger = logger

    def _logger_for(self, run_name: str, new_run: bool) -> Logger | None:
        if self._user_logger is not None:
            return self._user_logger
        self._auto_logger = configure_logger(
            self._auto_logger,
            verbose=self.verbose,
            tensorboard_log=self.tensorboard_log,
            run_name=run_name,
            new_run=new_run,
        )
        return self._auto_logger

    def _guarded_update(self, batch: Batch) -> dict[str, float]:
        """``_update`` under the finite guard (:class:`natrl.rl.guard.UpdateGuard`): an update after which a
        network parameter or optimiser state is non-finite is undone and reported as ``update_rejected``;
        ``max_rejected_updates`` in a row raise :class:`~natrl.rl.guard.NonFiniteUpdateError`."""
        return self.guard(
            self._update,
            batch,
            policy=self.policy,
            algo_state=self._algo_state,
            load_algo_state=self._load_algo_state,
            max_rejected=self.config.max_rejected_updates,
            hyperparameters=self.config.to_dict,
            step=self.num_timesteps,
        )

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Action(s) for one observation or a batch, in the env's action space (stable-baselines3's signature).

        Args:
            observation: one observation of the env's space, or a batch of them (leading axis).
            state: a recurrent policy's state before this step, as the previous call returned it (sb3-contrib's
                layout: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU, each (layers, batch, hidden)); None, the
                default, is the zero state of a new episode. Policies without memory return it unchanged.
            episode_start: (batch,) bools, the observation begins an episode: its state is zeroed first
                (default: none does).
            deterministic: the distribution's mode instead of a sample.

        Returns:
            ``(action, state)``: the action(s), batched when the observation was, and the state after the step.
        """
        if not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(f"predict: deterministic must be True or False, got {deterministic!r}")
        inputs = (observation, state, episode_start, deterministic)
        return act(self.actor, self.obs_normalizer, self.generator, self.device, *inputs)

    def evaluate(
        self,
        episodes: int = 10,
        *,
        deterministic: bool = True,
        seed: int | None = None,
        env: EnvLike | None = None,
    ) -> EvalResult:
        """Run whole episodes on a separate env (seeded ``seed``, default ``self.seed + 10_000``).

        Args:
            episodes: how many.
            deterministic: the policy's mode (default) or samples.
            seed: episode i is reset with ``seed + i``.
            env: another env to evaluate on (id, Env or factory; same spaces; an Env instance is used as
                given and left open); default a fresh copy of the training env.

        Returns the undiscounted, unnormalised episode returns.
        """
        check_evaluate_args(episodes, deterministic, seed)
        first_seed = self.seed + 10_000 if seed is None else seed
        with self.env_source.evaluation_env(env) as env_:
            return evaluate_env(self, env_, int(episodes), deterministic=deterministic, seed=first_seed)

    # ----------------------------------------------------------------- SB3's accessors
    def get_env(self) -> Any:
        """The training envs in stable-baselines3's VecEnv API (``reset() -> obs``, ``step(a) -> (obs, rewards,
        dones, infos)``): the SB3 VecEnv the agent was given, else an :class:`natrl.rl.sb3_vec_env.SB3VecEnv`
        view of natrl's Gymnasium vector env (which :meth:`get_vector_env` returns)."""
        return self.env_source.sb3_env(self.collector.venv)

    def get_vec_normalize_env(self) -> Any:
        """The SB3 ``VecNormalize`` the agent trains on (in the chain of the SB3 VecEnv it was given), or None
        (natrl's own ``normalize_obs`` statistics live in the agent and its checkpoints)."""
        return self.env_source.vec_normalize()

    def get_vector_env(self) -> VectorEnv:
        """The training envs as the Gymnasium vector env natrl steps (SAME_STEP autoreset: ``reset() -> (obs,
        info)``, ``step(a) -> (obs, rewards, terminated, truncated, info)``)."""
        return self.collector.venv

    def set_env(self, env: Any) -> None:
        """Train on another env with the same spaces (anything the constructor takes) from the next rollout on."""
        self.close()  # the envs natrl made for the old env; a vector env the caller gave stays open
        self.env_source.replace(env, self.config.n_envs)

    @property
    def n_envs(self) -> int:
        """Environments stepped in parallel by one rollout (all workers' envs together), as SB3's ``n_envs``."""
        return self.config.n_envs * max(1, self.config.workers)

    def __enter__(self: A) -> A:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # an agent dropped without close() releases its envs and rollout workers (their CPUs) all the same
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass

    def close(self) -> None:
        """Close the vector env natrl made (a vector env given to the agent is the caller's to close) or stop the
        rollout workers (releasing their CPUs). The agent stays usable: the next ``learn`` makes new ones.
        Also called by ``with Agent(...) as agent:`` on exit and when the agent is garbage-collected."""
        collector = getattr(self, "_collector", None)
        if collector is not None:
            if collector.venv is None:  # rollout workers
                collector.close()
            elif self.env_source.owns(collector.venv):
                collector.venv.close()
            self._collector = None

    # ----------------------------------------------------------------- persistence (natrl.rl.persistence)
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: plain data and tensors, never code.

        Raises:
            NonFiniteStateError: a parameter, normaliser statistic or optimiser state is NaN or infinite
                (natrl never writes one to disk).
        """
        if self._collector is None:
            collector, episodes = self._pending_collector_state, self._episodes_before
        else:
            state_dict = getattr(self._collector, "state_dict", None)
            collector, episodes = (state_dict() if callable(state_dict) else None), self._collector.episodes
        state = persistence.agent_state(self, algo_state=self._algo_state(), collector=collector, episodes=episodes)
        return persistence.checked_state(state)

    def save(self, path: str | os.PathLike[str] | BinaryIO, exclude: Any = None, include: Any = None) -> Path | None:
        """Write a checkpoint atomically (temporary file in the same folder, then rename); stable-baselines3's
        signature: ``path`` may be a binary file object (``io.BytesIO``); ``exclude`` is accepted (a checkpoint never
        holds the env, a buffer or a logger), ``include`` refused.

        A path without a suffix gets ``.pt`` (as stable-baselines3 adds ``.zip``), so ``save("ppo_cartpole")``
        writes ``ppo_cartpole.pt``, which ``load("ppo_cartpole")`` finds, as it finds the callbacks' files.

        Returns:
            the file written (None for a file object).

        Raises:
            NonFiniteStateError: a parameter or optimiser state is NaN or infinite (nothing is written).
        """
        return persistence.save_checkpoint(self.state_dict(), path, exclude, include)

    @staticmethod
    def read_checkpoint(path: str | os.PathLike[str] | BinaryIO) -> dict[str, Any]:
        """Load and sanity-check a checkpoint file (raises :class:`~natrl.rl.persistence.CheckpointError`);
        ``path`` without a suffix is looked for as given, then with ``.pt`` (what :meth:`save` writes)."""
        return persistence.read_checkpoint(path)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s (or a checkpoint's) state: weights, normalisers, generators, step
        counters, the algorithm's state and, at the next rollout, the saved episodes (``collector``: None starts
        fresh ones)."""
        persistence.load_networks(self.actor, self.critic, state)
        if self.obs_normalizer is not None and state.get("obs_normalizer"):
            self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        if self.reward_scaler is not None and state.get("reward_scaler"):
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        persistence.load_random_state(self.generator, self.rng, state)
        self.num_timesteps = int(state["num_timesteps"])
        self.num_updates = int(state["num_updates"])
        self._episodes_before = int(state.get("episodes", 0))
        self._load_algo_state(state.get("algo_state", {}))
        self.close()  # the next rollout continues the saved episodes (or starts fresh ones)
        self._pending_collector_state = state.get("collector")

    @classmethod
    def load(
        cls: type[A],
        path: str | os.PathLike[str] | BinaryIO,
        env: EnvLike | None = None,
        device: str | torch.device = "cpu",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        *,
        policy: str | nn.Module | tuple[nn.Module, nn.Module] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        wrapper_class: Callable[..., gym.Env] | None = None,
        **kwargs: Any,
    ) -> A:
        """Rebuild an agent from :meth:`save`'s file (stable-baselines3's signature; :func:`natrl.rl.load_agent`
        loads any algorithm's): built-in policies from the checkpoint alone, the weights into fresh modules.

        Args:
            env: the env when the agent was not built from an id, or another with the same spaces (fresh episodes).
            device: where to put the networks (``"auto"``: a GPU when there is one).
            custom_objects: hyperparameters replacing the saved ones, natrl's names or SB3's (sb3-contrib TRPO's
                ``learning_rate`` is ``critic_lr``), e.g. a schedule function (saved as its value); a step size or
                clip range may be 0 (a model that only acts); other keys are ignored, as SB3 ignores keys its
                file does not hold (``lr_schedule``, TRPO's ``clip_range``).
            print_system_info: print this system's versions.
            force_reset: SB3's (natrl starts fresh episodes on a given env).
            policy: the user's own module(s), passed again (a checkpoint never names code to import).
            policy_kwargs: classes in the saved policy_kwargs that are neither torch.nn's nor natrl's.
            wrapper_class: the env wrapper, when it is neither gymnasium's nor natrl's.
            kwargs: SB3's: ``seed`` (re-seeds, as ``set_random_seed``), ``verbose``, ``tensorboard_log``,
                hyperparameters (as ``custom_objects``).
        """
        return persistence.load_agent_class(
            cls, path, device=device, env=env, policy=policy, policy_kwargs=policy_kwargs,
            custom_objects=custom_objects, wrapper_class=wrapper_class, print_system_info=print_system_info,
            force_reset=force_reset, attributes=kwargs,
        )  # fmt: skip
