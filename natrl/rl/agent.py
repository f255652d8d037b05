"""The on-policy agent shell shared by TRPO, NPG and PPO (SB3-like API).

An agent owns an actor, a critic, the training vector env, optional running
normalisers and a torch generator. ``learn`` alternates

    rollout → GAE advantages → ``_update(batch)`` (the algorithm) → stats → callback

and each algorithm module only implements ``_update``. Checkpoints hold
everything needed to continue training (networks, optimiser states,
normaliser statistics, generator state, step counter) and are written
atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import Tensor, nn

from natrl.atomic import atomic_write_bytes
from natrl.logger import Logger, configure, sb3_key
from natrl.rl.accel import FastPaths, fast_paths
from natrl.rl.arguments import (
    check_autoreset,
    jsonable,
    positive_int,
    rebuild_env,
    rebuildable_env,
    resolve_device,
    resolve_env_and_policy,
    training_env,
)
from natrl.rl.atari import check_ale_vector_env
from natrl.rl.batch import Batch, Sequences
from natrl.rl.config import OnPolicyConfig, build_config, schedule_value
from natrl.rl.critic import ValueGrads, value_grads
from natrl.rl.env import EnvLike, VectorEnvBuilder, env_factory, env_name
from natrl.rl.envpool_env import check_envpool_env
from natrl.rl.evaluation import EvalResult
from natrl.rl.gae import gae
from natrl.rl.normalization import ObsNormalizer, RewardScaler
from natrl.rl.policies import PolicyError, build_policy
from natrl.rl.policies.build import decode_class, decode_policy_kwargs, encode_class, encode_policy_kwargs
from natrl.rl.policies.modules import distribution_and_value
from natrl.rl.rollout import RolloutCollector, Sampler, StepHook, torch_sampler
from natrl.rl.sb3_names import action_dims, sb3_names_in, translate_sb3_names
from natrl.rl.sb3_vec_env import FromSB3VecEnv, SB3VecEnv, register_with_sb3
from natrl.rl.spaces import check_spaces
from natrl.rl.trusted import UntrustedReferenceError

__all__ = [
    "ActorCritic",
    "Batch",
    "CheckpointError",
    "EvalResult",
    "NonFiniteStateError",
    "NonFiniteUpdateError",
    "OnPolicyAgent",
]

A = TypeVar("A", bound="OnPolicyAgent")
_log = logging.getLogger("natrl")
_BACKEND_CHECKS = {"ale": check_ale_vector_env, "envpool": check_envpool_env}


def _check_env_backend(config: OnPolicyConfig, env: Any, wrapper_class: Any) -> None:
    """Refuse, with one line, an env the configured ``vec_env`` backend cannot build."""
    check = _BACKEND_CHECKS.get(config.vec_env)
    if check is not None:
        check(env, wrapper_class)


CHECKPOINT_FORMAT = "natrl-agent"
CHECKPOINT_VERSION = 1
CHECKPOINT_SUFFIX = ".pt"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or not compatible with this agent."""


class NonFiniteStateError(CheckpointError):
    """The agent holds a NaN or infinite parameter or state, which natrl does not save or load."""


class NonFiniteUpdateError(FloatingPointError):
    """Several updates in a row would have made a parameter or optimiser state non-finite (each undone)."""


def _clone_tensors(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples in which every tensor is cloned (a snapshot of live state)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone_tensors(v) for v in obj)
    return obj


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def _nonfinite_entries(obj: Any, prefix: str = "") -> list[str]:
    """The dotted names of the floating-point tensors (and floats) in ``obj`` that hold a NaN or an infinity."""
    if isinstance(obj, Tensor):
        return [prefix] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [prefix]
    if isinstance(obj, np.ndarray) and np.issubdtype(obj.dtype, np.floating):
        return [] if bool(np.isfinite(obj).all()) else [prefix]
    items: Any = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found: list[str] = []
    for key, value in items:
        found += _nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def _build_loaded(cls: Any, path: Any, env: Any, **kwargs: Any) -> Any:
    """``cls(env, **kwargs)`` for a loaded checkpoint: networks too large for this machine are one line."""
    try:
        return cls(env, **kwargs)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
            raise
        raise CheckpointError(f"{path}: its networks do not fit in this machine's memory (hidden_sizes?)") from None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (torch's load_state_dict lists every mismatch on its own line)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _observation_arrays(obs: Any) -> list[np.ndarray]:
    """The arrays of an observation (an array, or a dict or tuple of them); a ragged one is left to the codec."""
    if isinstance(obs, dict):
        return [a for v in obs.values() for a in _observation_arrays(v)]
    if isinstance(obs, tuple):
        return [a for v in obs for a in _observation_arrays(v)]
    try:
        return [np.asarray(obs)]
    except ValueError:  # ragged: the codec names the problem
        return []


def _not_numeric_observation(obs: Any) -> bool:
    """An observation holds complex numbers, text or Python objects."""
    return any(arr.dtype.kind not in "biuf" for arr in _observation_arrays(obs))


def _nonfinite_observation(obs: Any) -> bool:
    """An observation holds a NaN or an infinity."""
    return any(arr.dtype.kind == "f" and not np.isfinite(arr).all() for arr in _observation_arrays(obs))


def _build_first_env(
    factory: Callable[[], gym.Env], name: str, env_kwargs: dict[str, Any], wrapper_class: Any
) -> gym.Env:
    """One env from ``factory``, at construction: a keyword the env does not take, or a wrapper that does not fit
    its spaces, is reported here in one line instead of at the first rollout."""
    try:
        env = factory()
    except (TypeError, AssertionError, gym.error.Error) as exc:
        given = []
        if env_kwargs:
            given.append(f"env_kwargs {sorted(env_kwargs)}")
        if wrapper_class is not None:
            given.append(f"wrapper_class {getattr(wrapper_class, '__name__', wrapper_class)}")
        cause = f" with {' and '.join(given)}" if given else ""
        raise ValueError(f"building the environment {name}{cause} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(env, gym.Env):
        raise TypeError(f"the environment factory for {name} returned a {type(env).__name__}, not a gymnasium.Env")
    _check_step_types(env, name)
    return env


def _check_step_types(env: gym.Env, name: str) -> None:
    """One reset and one step of a throw-away copy: ``terminated``/``truncated`` must be booleans and the reward a
    number (a vector env would read ``None`` as False and train on it without a word)."""
    try:
        first = env.reset(seed=0)
        step = env.step(env.action_space.sample())
    except Exception:  # the env's own errors surface, with their traceback, at the first rollout
        return
    if not (isinstance(first, tuple) and len(first) == 2 and isinstance(first[1], dict)):
        raise TypeError(
            f"{name}: env.reset must return (observation, info dict), as Gymnasium's API, got {first!r:.80}"
        )
    if not (isinstance(step, tuple) and len(step) == 5 and isinstance(step[4], dict)):
        raise TypeError(
            f"{name}: env.step must return (observation, reward, terminated, truncated, info dict), as Gymnasium's "
            f"API, got {step!r:.80}"
        )
    _, reward, terminated, truncated, _ = step
    for field, value in (("terminated", terminated), ("truncated", truncated)):
        if np.ndim(value) != 0 or np.asarray(value).dtype != np.bool_:
            raise TypeError(
                f"{name}: env.step returned {field}={value!r} ({type(value).__name__}); Gymnasium envs return a bool"
            )
    kind = np.asarray(reward).dtype.kind if np.ndim(reward) == 0 else "shape"
    if kind not in "iuf":
        raise TypeError(f"{name}: env.step returned reward={reward!r} ({type(reward).__name__}); return a number")


# what a checkpoint must hold, and of which type, before anything is built from it
_CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "algo": str,
    "env_id": str,
    "seed": int,
    "config": dict,
    "actor": dict,
    "critic": dict,
    "num_timesteps": int,
    "num_updates": int,
}
# the entries whose tensors are the agent's numerical state (a NaN in any of them is refused)
_NUMERIC_ENTRIES = ("actor", "critic", "obs_normalizer", "reward_scaler", "algo_state")


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """1 − Var[target − pred] / Var[target] (nan when the target is constant)."""
    var = target.var()
    return float("nan") if var == 0 else float(1.0 - (target - pred).var() / var)


class ActorCritic(nn.Module):
    """The agent's networks as one module (stable-baselines3's ``model.policy``): parameters a trunk shared by
    actor and critic owns appear once."""

    def __init__(self, actor: nn.Module, critic: nn.Module) -> None:
        super().__init__()
        self.actor = actor
        self.critic = critic

    def forward(self, obs: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """The action distribution's parameters and the value of a batch of stored observations."""
        dist, value = distribution_and_value(self.actor, self.critic, obs)
        return dist.params, value


class OnPolicyAgent:
    """Base class of the on-policy agents. Subclasses set ``algo``, ``config_cls`` and ``_update``.

    Args:
        env: an environment id, a ``gymnasium.Env`` or a factory returning one.
        policy: ``"MlpPolicy"`` (default), ``"MultiInputPolicy"``, ``"CnnPolicy"``, one ``nn.Module``
            returning ``(actor_output, value)``, or a pair ``(actor_module, critic_module)``
            (see :mod:`natrl.rl.policies.build`).
        policy_kwargs: stable-baselines3's policy keywords for the built-in policies (``net_arch``,
            ``activation_fn``, ``features_extractor_class``/``_kwargs``, ``share_features_extractor``,
            ``ortho_init``, ``log_std_init``).
        seed: seeds the networks' initialisation, the samplers and the envs.
        device: where the networks live and the updates run.
        config: a ready hyperparameter object (else built from ``hyperparameters``).
        hyperparameters: fields of the algorithm's config class.
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
        if config is not None and not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        env = training_env(env, hyperparameters.get("n_envs", config.n_envs if config is not None else None))
        self.verbose = int(verbose)
        self.tensorboard_log = None if tensorboard_log is None else str(tensorboard_log)
        self._user_logger: Logger | None = None
        self._auto_logger: Logger | None = None
        self._rollout_steps = 0
        self.progress_remaining = 1.0  # of the current learn call; what schedules are evaluated at
        sb3_given = sb3_names_in(self.algo, hyperparameters)  # translated once the action space is known
        hyperparameters = {k: v for k, v in hyperparameters.items() if k not in sb3_given}
        if config is None:
            config = build_config(self.config_cls, hyperparameters)
        elif hyperparameters:
            config = build_config(self.config_cls, {**config.to_dict(), **hyperparameters})
        self._given_venv: VectorEnv | None = None
        if isinstance(env, VectorEnv):  # a ready vector env: natrl trains on it as given
            if config.workers > 0:
                raise ValueError(
                    "workers > 0 build their own envs: pass an env id, a gymnasium.Env or a factory, not a vector env"
                )
            check_autoreset(env)
            if config.n_envs != env.num_envs:
                config = build_config(self.config_cls, {**config.to_dict(), "n_envs": env.num_envs})
            self._given_venv = env
        self.config = config
        if config.workers > 0 and importlib.util.find_spec("ray") is None:
            raise ValueError(f"workers={config.workers} needs Ray, which is not installed: pip install 'natrl[ray]'")
        if seed is not None and (
            not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**63
        ):
            raise TypeError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")
        self.seed = 0 if seed is None else int(seed)
        self.device = resolve_device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but CUDA is not available; use device='cpu'")
        if config.torch_threads is not None and torch.get_num_threads() != config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.env_kwargs = dict(env_kwargs or {})
        self.wrapper_class, self.wrapper_kwargs = wrapper_class, dict(wrapper_kwargs or {})
        if self._given_venv is not None:
            venv = self._given_venv
            spec = getattr(venv, "spec", None)  # gym.make_vec records the single env's id and make-kwargs
            self.env_id = spec.id if spec is not None else type(venv).__name__
            self._factory: Callable[[], gym.Env] | None = None
            self._env_arg = None
            if spec is not None and spec.id in gym.registry:
                vector_keys = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")
                self.env_kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k not in vector_keys}
                self._factory = env_factory(spec.id, self.env_kwargs)  # for evaluation and checkpoints
                self._env_arg = spec.id
            self.observation_space, self.action_space = venv.single_observation_space, venv.single_action_space
        else:
            _check_env_backend(config, env, wrapper_class)
            self.env_id = env_name(env)
            self._factory = env_factory(env, self.env_kwargs, wrapper_class, self.wrapper_kwargs)
            self._env_arg = rebuildable_env(env)
            probe = _build_first_env(self._factory, self.env_id, self.env_kwargs, wrapper_class)
            self.observation_space, self.action_space = probe.observation_space, probe.action_space
            probe.close()
        check_spaces(self.observation_space, self.action_space)
        self.sb3_translations: list[str] = []  # "target_kl=0.01 → max_kl=0.03 (k = 3 action dimensions)", …
        if sb3_given:
            translated, self.sb3_translations = translate_sb3_names(
                self.algo, sb3_given, action_dims(self.action_space), set(hyperparameters)
            )
            self.config = config = build_config(self.config_cls, {**config.to_dict(), **translated})
            for note in self.sb3_translations:
                _log.info("%s: %s", type(self).__name__, note)
                if self.verbose >= 1:
                    print(f"{type(self).__name__}: SB3 name {note}")

        torch.manual_seed(self.seed)
        self.policy_name = policy if isinstance(policy, str) else "custom"
        if policy_kwargs is not None and not isinstance(policy_kwargs, dict):
            raise PolicyError(f"policy_kwargs must be a dict, got {type(policy_kwargs).__name__}")
        self.policy_kwargs = dict(policy_kwargs or {})
        actor, critic = build_policy(
            policy,
            policy_kwargs,
            self.observation_space,
            self.action_space,
            hidden_sizes=config.hidden_sizes,
            critic_hidden_sizes=config.critic_hidden_sizes,
            activation=config.activation,
            ortho_init=config.ortho_init,
            log_std_init=config.log_std_init,
            state_dependent_std=config.state_dependent_std,
            action_bound=config.action_bound,
        )
        self.actor = actor.to(self.device, torch.float32)  # float32 whatever torch's default dtype is
        self.critic = critic.to(self.device, torch.float32)
        self.policy = ActorCritic(self.actor, self.critic)  # SB3's `model.policy`: one module, shared parts once
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
        n_all = config.n_envs * max(1, config.workers)  # with workers: every worker's envs, in the learner
        self.reward_scaler = RewardScaler(n_all, config.gamma) if config.normalize_reward else None
        self.num_timesteps = 0
        self.num_updates = 0
        self._rejected_in_a_row = 0
        self._episodes_before = 0  # episodes finished before this agent's collector (a loaded run's count)
        self._collector: RolloutCollector | None = None
        self._pending_collector_state: dict[str, Any] | None = None  # a loaded checkpoint's, for the next collector
        self._sb3_view: SB3VecEnv | None = None
        # the speed devices for natrl's own MLPs on the CPU, chosen once (natrl.rl.accel)
        self.fast: FastPaths = fast_paths(self.actor, self.critic, self.rng, enabled=config.fast_paths)
        self.sampler: Sampler = self.fast.sampler or torch_sampler(self.actor, self.generator)
        self._critic_grads: ValueGrads = self.fast.critic_grads or value_grads(self.critic)
        self._setup()

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
        if self._collector is None and self.config.workers > 0:
            from natrl.rl.distributed import DistributedCollector

            assert self._factory is not None
            self._collector = DistributedCollector(  # type: ignore[assignment]
                self._venv_builder(),
                self.actor,
                self.critic,
                workers=self.config.workers,
                n_envs=self.config.n_envs,
                seed=self.seed + self.num_timesteps,
                device=self.device,
                obs_normalizer=self.obs_normalizer,
                reward_scaler=self.reward_scaler,
                address=self.config.ray_address,
                fast=self.config.fast_paths,
                state=self._pending_collector_state,
            )
            self._pending_collector_state = None
            self._collector.steps = self.num_timesteps
            self._collector.episodes = self._episodes_before
        if self._collector is None:
            if self._given_venv is not None:
                venv = self._given_venv
            else:
                assert self._factory is not None
                venv = self._venv_builder()(self.config.n_envs)
            try:
                self._collector = RolloutCollector(
                    # a loaded agent continues the saved episodes where their state was saved, else starts fresh
                    # episodes with seeds it has not used before
                    venv,
                    device=self.device,
                    seed=self.seed + self.num_timesteps,
                    obs_codec=self.actor.obs_codec,
                    obs_normalizer=self.obs_normalizer,
                    reward_scaler=self.reward_scaler,
                    obs_norm_update=self.config.obs_norm_update,
                    state=self._pending_collector_state,
                )
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                if venv is not self._given_venv:
                    venv.close()
                raise CheckpointError(
                    f"the saved state of the envs does not fit this agent's envs ({type(exc).__name__}: {exc}); "
                    "load with env=... to start fresh episodes"
                ) from None
            self._pending_collector_state = None
            self._collector.steps = self.num_timesteps
            self._collector.episodes = self._episodes_before  # continued across save/load
        return self._collector

    def _venv_builder(self) -> VectorEnvBuilder:
        """How the learner, or each rollout worker, builds its training vector env (``config.vec_env``)."""
        return VectorEnvBuilder(
            self.config.vec_env,
            self._factory,
            self.env_id,
            dict(self.env_kwargs),
            dict(self.wrapper_kwargs),
            self.observation_space,
            self.action_space,
        )

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
        n = ro.n_steps
        seq = None
        if ro.starts is None:

            def rows(x: Tensor) -> Tensor:
                return x.reshape(n, *x.shape[2:])

        else:  # a recurrent policy: rows env by env, cut into sequences of L steps

            def rows(x: Tensor) -> Tensor:
                return x.transpose(0, 1).reshape(n, *x.shape[2:])

            L = cfg.sequence_length or cfg.n_steps
            assert ro.actor_states is not None and ro.critic_states is not None
            seq = Sequences(
                L,
                ro.starts.T.reshape(-1, L),
                ro.actor_states[:, ::L].flatten(0, 1),
                ro.critic_states[:, ::L].flatten(0, 1),
            )
        batch = Batch(
            obs=rows(ro.obs),
            actions=rows(ro.actions),
            log_probs=rows(ro.log_probs),
            values=rows(ro.values),
            advantages=rows(adv),
            returns=rows(ret),
            seq=seq,
        )
        return batch, {"explained_variance": explained_variance(batch.values, batch.returns)}

    def learn(
        self: A,
        total_timesteps: int | float | None = None,
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
            progress_bar: show a tqdm progress bar with steps/s, recent return and KL.

        Schedules (e.g. PPO's learning-rate annealing) are evaluated at stable-baselines3's progress remaining,
        ``1 - num_timesteps / _total_timesteps``, where ``_total_timesteps`` is ``total_timesteps`` plus, with
        ``reset_num_timesteps=False``, the steps taken before this call: a continued run (e.g. after loading a
        checkpoint) anneals over its whole length.

        Returns:
            the agent itself.
        """
        from natrl.callbacks import make_callback

        steps = positive_int("total_timesteps", total_timesteps)
        log_interval = positive_int("log_interval", log_interval)
        show = progress_bar
        if reset_num_timesteps:
            self.num_timesteps = 0
        cb = make_callback(callback)
        cb.init_callback(self)
        logger = self._logger_for(tb_log_name or type(self).__name__, reset_num_timesteps)
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, unit="step", dynamic_ncols=True, desc=f"{self.algo} {self.env_id}")
        start_steps = self.num_timesteps
        self._total_timesteps = start_steps + steps  # stable-baselines3's: schedules span [0, _total_timesteps]
        on_step = self._step_hook(cb) if cb.steps_hook else None
        t_start = time.perf_counter()
        cb.on_training_start(locals(), globals())
        try:
            while self.num_timesteps - start_steps < steps:
                cb.on_rollout_start()
                t0 = time.perf_counter()
                made = self._make_batch(on_step)
                if made is None:  # a callback stopped training during the rollout: its steps count (as SB3's)
                    self.num_timesteps = self.num_timesteps
                    break
                batch, stats = made
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
                if bar is not None:
                    bar.update(len(batch))
                    post = {"fps": f"{(self.num_timesteps - start_steps) / (time.perf_counter() - t_start):.0f}"}
                    if "ep_return_mean" in stats:
                        post["return"] = f"{stats['ep_return_mean']:.1f}"
                    if "kl" in stats:
                        post["kl"] = f"{stats['kl']:.4f}"
                    bar.set_postfix(post, refresh=False)
                if logger is not None:
                    for key, value in stats.items():
                        logger.record(sb3_key(key, self.algo), value)
                    if "entropy" in stats:
                        logger.record("train/entropy_loss", -stats["entropy"])
                # callbacks may record eval/* into the same row (and dump it early) before the row is dumped
                keep_going = cb.on_update_end(stats)
                if logger is not None and self.num_updates % log_interval == 0:
                    logger.dump(self.num_timesteps)
                if not keep_going:
                    break
        finally:
            self._rollout_steps = 0
            if bar is not None:
                bar.close()
            if logger is not None and logger is not self._user_logger:
                logger.dump(self.num_timesteps)
        cb.on_training_end()
        return self

    def scheduled(self, name: str) -> float:
        """A hyperparameter's value now: a number, or a schedule (``"lin_<value>"`` or a function of the
        progress remaining) evaluated at :attr:`progress_remaining`."""
        value = schedule_value(getattr(self.config, name), self.progress_remaining)
        if not (math.isfinite(value) and value >= 0.0):  # a function schedule can go wrong late in a run
            raise ValueError(
                f"{name}'s schedule gave {value!r} at progress remaining {self.progress_remaining:.3f}; a schedule "
                "must return a finite number >= 0 all the way to 0"
            )
        return value

    @property
    def num_timesteps(self) -> int:
        """Transitions so far, including those of the rollout in progress (stable-baselines3's count: what the
        callbacks see during a rollout is what the model says)."""
        return self._timesteps_done + self._rollout_steps

    @num_timesteps.setter
    def num_timesteps(self, value: int) -> None:
        self._timesteps_done, self._rollout_steps = int(value), 0

    @property
    def current_timesteps(self) -> int:
        """The same as :attr:`num_timesteps` (kept for callbacks written against natrl's earlier name)."""
        return self.num_timesteps

    def _step_hook(self, cb: Any) -> Callable[[dict[str, Any]], bool]:
        n_envs = self.config.n_envs

        def hook(step_locals: dict[str, Any]) -> bool:
            self._rollout_steps += n_envs
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
        formats = (["stdout"] if self.verbose >= 1 else []) + (["tensorboard"] if self.tensorboard_log else [])
        if not formats:
            self._auto_logger = None
            return None
        folder = None
        if self.tensorboard_log:
            root = Path(self.tensorboard_log)
            taken = [
                int(p.name.rsplit("_", 1)[1]) for p in root.glob(f"{run_name}_*") if p.name.rsplit("_", 1)[1].isdigit()
            ]
            last = max(taken, default=0)
            folder = root / f"{run_name}_{last + 1 if new_run or last == 0 else last}"
        if self._auto_logger is not None and self._auto_logger.dir == (None if folder is None else str(folder)):
            return self._auto_logger
        if self._auto_logger is not None:
            self._auto_logger.close()
        self._auto_logger = configure(folder, formats)
        return self._auto_logger

    def _guarded_update(self, batch: Batch) -> dict[str, float]:
        """``_update`` under the finite guard: an update after which any network parameter or
        optimiser state is non-finite is undone (the previous values restored bit for bit) and
        reported as ``update_rejected``; ``max_rejected_updates`` in a row stop training with
        :class:`NonFiniteUpdateError`, so no NaN ever reaches a checkpoint."""
        named = dict(self.policy.named_parameters())  # a trunk shared by actor and critic once
        params = list(named.values())
        before = [p.detach().clone() for p in params]
        algo_before = _clone_tensors(self._algo_state())
        stats = self._update(batch)
        bad = [n for n, p in named.items() if not bool(torch.isfinite(p.detach()).all())]
        # an infinite loss means the update's gradients overflowed (optimisers that skip such steps,
        # like KFAC, leave finite parameters behind, but nothing was learned)
        bad += [k for k in ("value_loss", "policy_loss") if math.isinf(stats.get(k, 0.0))]
        if not bad and _all_finite(self._algo_state()):
            self._rejected_in_a_row = 0
            stats["update_rejected"] = 0.0
            return stats
        with torch.no_grad():
            for p, b in zip(params, before):
                p.copy_(b)
        self._load_algo_state(algo_before)
        self._rejected_in_a_row += 1
        if self._rejected_in_a_row >= self.config.max_rejected_updates:
            raise NonFiniteUpdateError(self._rejection_message(batch, bad))
        return {"update_rejected": 1.0, "kl": 0.0}

    def _rejection_message(self, batch: Batch, bad: list[str]) -> str:
        cfg = self.config.to_dict()
        rates = ", ".join(
            f"{k}={cfg[k]:g}" if isinstance(cfg[k], (int, float)) else f"{k}={cfg[k]!r}"
            for k in ("learning_rate", "critic_lr", "critic_kfac_lr", "max_kl", "step_size")
            if k in cfg
        )
        losses = [b for b in bad if b in ("value_loss", "policy_loss")]
        params = [b for b in bad if b not in losses]
        if params:
            what = f"non-finite parameters ({', '.join(params[:2])}{', …' if len(params) > 2 else ''})"
        elif losses:
            what = f"an infinite {' and '.join(losses)}"
        else:
            what = "a non-finite optimiser state"
        scale = float(batch.returns.abs().max()) if len(batch) else float("nan")
        return (
            f"{self._rejected_in_a_row} updates in a row produced {what} and were undone; the networks are those "
            f"of step {self.num_timesteps:,}. The steps are too large for this problem: lower the step sizes "
            f"({rates}) or scale the rewards (normalize_reward=True or a wrapper; the largest |return| in the last "
            f"batch was {scale:.3g})"
        )

    # ----------------------------------------------------------------- acting
    def _obs_tensor(self, obs: Any) -> Tensor:
        """A batch of env observations → the stored form (normalised if the agent normalises) on the device."""
        if self.obs_normalizer is not None:
            stored = self.obs_normalizer(np.asarray(obs, dtype=np.float64))
        else:
            stored = self.actor.obs_codec.encode(obs)
        return torch.as_tensor(stored, device=self.device)

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
        codec = self.actor.obs_codec
        try:
            single = not codec.is_batch(observation)
        except ValueError as exc:
            raise ValueError(f"predict: {exc}") from None
        if not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(f"predict: deterministic must be True or False, got {deterministic!r}")
        if _not_numeric_observation(observation):
            raise TypeError("predict: the observation must hold real numbers (got complex, text or objects)")
        if _nonfinite_observation(observation):
            raise ValueError("predict: the observation holds NaN or infinite values")
        obs_t = self._obs_tensor(codec.batch_of_one(observation) if single else observation)
        if self.actor.recurrent:
            n = obs_t.shape[0]
            starts = torch.zeros(n, dtype=torch.bool, device=self.device)
            if episode_start is not None:
                flags = np.asarray(episode_start)
                if flags.dtype != np.bool_ and not (
                    np.issubdtype(flags.dtype, np.integer) and bool(np.isin(flags, (0, 1)).all())
                ):
                    raise ValueError(f"predict: episode_start must hold booleans (or 0/1), got {episode_start!r}")
                flags = flags.astype(bool).reshape(-1)
                if flags.shape != (n,):
                    raise ValueError(f"predict: episode_start has {flags.size} entries for {n} observation(s)")
                starts = torch.from_numpy(flags).to(self.device)
            dist, new_state = self.actor.step(obs_t, self._state_in(state, n), starts)
            state = tuple(new_state[:, i].transpose(0, 1).cpu().numpy() for i in range(new_state.shape[1]))
        else:
            dist = self.actor.distribution(obs_t)
        raw = dist.mode() if deterministic else dist.sample(self.generator)
        action = self.actor.to_env_action(raw.cpu().numpy())
        return (action[0] if single else action), state

    def _state_in(self, state: Any, n: int) -> Tensor:
        """A recurrent state from :meth:`predict`'s layout (None: zeros) to the actor's (n, k, layers, H)."""
        zero = self.actor.initial_state(n)
        if state is None:
            return zero
        parts = state if isinstance(state, (tuple, list)) else (state,)
        k, layers, hidden = zero.shape[1:]
        try:
            arr = np.stack([np.asarray(p, dtype=np.float32) for p in parts])
        except ValueError:
            arr = np.empty(0)
        if arr.shape != (k, layers, n, hidden):
            kind = "(h, c)" if k == 2 else "(h,)"
            raise ValueError(
                f"predict: the state must be {kind} with arrays of shape ({layers}, {n}, {hidden}) (layers, batch, "
                f"hidden), as the previous predict call returned it, or None for new episodes; got "
                f"{[np.shape(p) for p in parts]}"
            )
        if not bool(np.isfinite(arr).all()):
            raise ValueError("predict: the recurrent state holds NaN or infinite values")
        return torch.from_numpy(arr).permute(2, 0, 1, 3).to(self.device, zero.dtype)

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
            env: another env to evaluate on (id, Env or factory; same spaces); default a fresh copy
                of the training env.

        Returns the undiscounted, unnormalised episode returns.
        """
        if not isinstance(episodes, (int, np.integer)) or isinstance(episodes, bool) or episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"evaluate: seed must be a non-negative integer or None, got {seed!r}")
        if not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(f"evaluate: deterministic must be True or False, got {deterministic!r}")
        if env is None:
            if self._factory is None:
                raise ValueError("evaluate: the agent trains on a vector env without a spec; pass env=...")
            env_ = self._factory()
        else:
            env_ = env_factory(env)()
            if (env_.observation_space, env_.action_space) != (self.observation_space, self.action_space):
                env_.close()
                raise ValueError(
                    f"evaluate: the env's spaces ({env_.observation_space}, {env_.action_space}) differ from "
                    f"the agent's ({self.observation_space}, {self.action_space})"
                )
        base = self.seed + 10_000 if seed is None else seed
        returns: list[float] = []
        lengths: list[int] = []
        try:
            for i in range(int(episodes)):
                obs, _ = env_.reset(seed=base + i)
                total, length, done, state = 0.0, 0, False, None  # a recurrent policy starts from zeros
                while not done:
                    action, state = self.predict(obs, state, deterministic=deterministic)
                    obs, reward, terminated, truncated, _ = env_.step(action)
                    total += float(reward)
                    length += 1
                    done = bool(terminated or truncated)
                returns.append(total)
                lengths.append(length)
        finally:
            env_.close()
        return EvalResult(float(np.mean(returns)), float(np.std(returns)), returns, lengths)

    # ----------------------------------------------------------------- SB3's accessors
    def get_env(self) -> Any:
        """The training envs in stable-baselines3's VecEnv API (``reset() -> obs``, ``step(a) -> (obs, rewards,
        dones, infos)``): the SB3 VecEnv the agent was given, else an :class:`natrl.rl.sb3_vec_env.SB3VecEnv`
        view of natrl's Gymnasium vector env (which :meth:`get_vector_env` returns)."""
        venv = self.collector.venv
        if isinstance(venv, FromSB3VecEnv):
            return venv.sb3_venv
        if self._sb3_view is None or self._sb3_view.venv is not venv:
            self._sb3_view = SB3VecEnv(venv)
        register_with_sb3()  # an SB3 VecEnv for isinstance once SB3 is imported (evaluate_policy, callbacks)
        return self._sb3_view

    def get_vec_normalize_env(self) -> Any:
        """The SB3 ``VecNormalize`` the agent trains on (in the chain of the SB3 VecEnv it was given), or None
        (natrl's own ``normalize_obs`` statistics live in the agent and its checkpoints)."""
        venv = self._given_venv.sb3_venv if isinstance(self._given_venv, FromSB3VecEnv) else None
        while venv is not None:
            if type(venv).__name__ == "VecNormalize" and hasattr(venv, "obs_rms"):
                return venv
            venv = getattr(venv, "venv", None)
        return None

    def get_vector_env(self) -> VectorEnv:
        """The training envs as the Gymnasium vector env natrl steps (SAME_STEP autoreset: ``reset() -> (obs,
        info)``, ``step(a) -> (obs, rewards, terminated, truncated, info)``)."""
        return self.collector.venv

    def set_env(self, env: EnvLike) -> None:
        """Train on another env with the same spaces from the next rollout on (fresh episodes)."""
        if isinstance(env, VectorEnv):
            raise ValueError("set_env takes an env id, a gymnasium.Env or a factory (build the agent on a vector env)")
        factory = env_factory(env, self.env_kwargs, self.wrapper_class, self.wrapper_kwargs)
        _check_env_backend(self.config, env, self.wrapper_class)
        probe = factory()
        spaces_ = (probe.observation_space, probe.action_space)
        probe.close()
        if spaces_ != (self.observation_space, self.action_space):
            raise ValueError(
                f"set_env: the env's spaces {spaces_} differ from the agent's "
                f"({self.observation_space}, {self.action_space})"
            )
        self.close()
        self._factory, self.env_id = factory, env_name(env)
        self._env_arg = rebuildable_env(env)

    def get_parameters(self) -> dict[str, dict[str, Tensor]]:
        """The networks' weights, ``{"policy": state_dict}`` (stable-baselines3's layout)."""
        return {"policy": self.policy.state_dict()}

    def set_parameters(self, parameters: dict[str, dict[str, Tensor]] | str | os.PathLike[str]) -> None:
        """Load weights from :meth:`get_parameters`'s dict or from a checkpoint file (weights only)."""
        if not isinstance(parameters, (dict, str, os.PathLike)):
            raise TypeError(
                f"set_parameters takes get_parameters()'s dict or a checkpoint path, got {type(parameters).__name__}"
            )
        if not isinstance(parameters, dict):
            state = self.read_checkpoint(parameters)
            parameters = {"policy": {**{f"actor.{k}": v for k, v in state["actor"].items()},
                                     **{f"critic.{k}": v for k, v in state["critic"].items()}}}  # fmt: skip
        bad = _nonfinite_entries(parameters)
        if bad:
            raise NonFiniteStateError(f"set_parameters: {', '.join(bad[:3])} holds NaN or infinite values")
        try:
            self.policy.load_state_dict(parameters["policy"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"the parameters do not fit this agent's networks: {_one_line(exc)}") from None

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
        if getattr(self, "_collector", None) is not None:
            if self._collector.venv is None:  # rollout workers
                self._collector.close()  # type: ignore[attr-defined]
            elif self._collector.venv is not self._given_venv:
                self._collector.venv.close()
            self._collector = None

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: plain data and tensors, never code.

        Raises:
            NonFiniteStateError: a parameter, normaliser statistic or optimiser state is NaN or infinite
                (natrl never writes one to disk).
        """
        state = self._state()
        bad = _nonfinite_entries({k: state[k] for k in _NUMERIC_ENTRIES})
        if bad:
            raise NonFiniteStateError(
                f"the agent's {', '.join(bad[:3])} {'is' if len(bad) == 1 else 'are'} not finite; natrl does not "
                "save non-finite values (load an earlier checkpoint or lower the step sizes)"
            )
        return state

    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "algo": self.algo,
            "env_id": self.env_id,
            "env": self._env_arg,
            "env_kwargs": jsonable(self.env_kwargs),
            # a wrapper class by name (a function wrapper cannot be named: pass it again to load())
            "wrapper_class": encode_class(self.wrapper_class) if isinstance(self.wrapper_class, type) else None,
            "wrapper_kwargs": jsonable(self.wrapper_kwargs),
            "seed": self.seed,
            # a function schedule cannot go into a weights-only file: its current value does (pass the
            # function again with load(..., custom_objects={name: fn})); "lin_<value>" strings are kept
            "config": {
                k: schedule_value(v, self.progress_remaining) if callable(v) else v
                for k, v in self.config.to_dict().items()
            },
            "policy": self.policy_name,
            "policy_kwargs": encode_policy_kwargs(self.policy_kwargs),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "obs_normalizer": self.obs_normalizer.state_dict() if self.obs_normalizer else None,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None,
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "num_timesteps": self.num_timesteps,
            "num_updates": self.num_updates,
            "episodes": self._collector.episodes if self._collector is not None else self._episodes_before,
            "algo_state": self._algo_state(),
            # where the envs' episodes stand (None: a resumed agent starts fresh episodes)
            "collector": self._collector_state(),
        }

    def _collector_state(self) -> dict[str, Any] | None:
        if self._collector is None:
            return self._pending_collector_state
        state_dict = getattr(self._collector, "state_dict", None)
        return state_dict() if callable(state_dict) else None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically (temporary file in the same folder, then rename).

        A path without a suffix gets ``.pt`` (as stable-baselines3 adds ``.zip``), so ``save("ppo_cartpole")``
        writes ``ppo_cartpole.pt``, which ``load("ppo_cartpole")`` finds, as it finds the callbacks' files.

        Returns:
            the file written.

        Raises:
            NonFiniteStateError: a parameter or optimiser state is NaN or infinite (nothing is written).
        """
        path = Path(path)
        if not path.name or path.is_dir():
            example = str(path / "model.pt")
            raise ValueError(f"save: {str(path)!r} is a directory, not a file name; give e.g. {example!r}")
        if not path.suffix:
            path = path.with_name(path.name + CHECKPOINT_SUFFIX)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return atomic_write_bytes(path, buf.getvalue())

    @property
    def n_envs(self) -> int:
        """Environments stepped in parallel by one rollout (all workers' envs together), as SB3's ``n_envs``."""
        return self.config.n_envs * max(1, self.config.workers)

    @staticmethod
    def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Load and sanity-check a checkpoint file (raises :class:`CheckpointError`); ``path`` without a suffix
        is looked for as given, then with ``.pt`` (what :meth:`save` writes)."""
        path = Path(path)
        if not path.is_file() and not path.suffix and path.with_name(path.name + CHECKPOINT_SUFFIX).is_file():
            path = path.with_name(path.name + CHECKPOINT_SUFFIX)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for truncated/garbage files
            # torch's own message (weights-only unpickling advice) would mislead here: the file
            # is not a checkpoint natrl wrote, so name only the kind of failure
            raise CheckpointError(
                f"{path} is not a readable natrl checkpoint (corrupt or truncated?): {type(exc).__name__}"
            ) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a natrl agent checkpoint")
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint version {state.get('version')}, this natrl reads {CHECKPOINT_VERSION}"
            )
        for key, kind in _CHECKPOINT_FIELDS.items():
            value = state.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                what = "has no" if key not in state else f"has a {type(value).__name__} as its"
                raise CheckpointError(f"{path} {what} {key!r} entry: it is damaged or not written by natrl")
        if not 0 <= state["seed"] < 2**63:
            raise CheckpointError(f"{path} has the seed {state['seed']}, outside [0, 2**63): it is damaged")
        for key in ("algo_state", "policy_kwargs", "env_kwargs", "wrapper_kwargs", "collector"):
            if state.get(key) is not None and not isinstance(state[key], dict):
                raise CheckpointError(f"{path} has a {type(state[key]).__name__} as its {key!r} entry: it is damaged")
        if state["num_timesteps"] < 0 or state["num_updates"] < 0:
            raise CheckpointError(f"{path} has negative step counters: it is damaged or not written by natrl")
        bad = _nonfinite_entries({k: state.get(k) for k in _NUMERIC_ENTRIES})
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise CheckpointError(
                f"{path} holds non-finite values ({', '.join(bad[:3])}{more}); natrl does not load them: "
                "use an earlier checkpoint of the run"
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.actor.load_state_dict(state["actor"])
            self.critic.load_state_dict(state["critic"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(
                "the checkpoint does not fit this agent's networks (trained on an env with other spaces, or with "
                f"other policy_kwargs?): {_one_line(exc)}"
            ) from None
        if self.obs_normalizer is not None and state.get("obs_normalizer"):
            self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        if self.reward_scaler is not None and state.get("reward_scaler"):
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        generator = state.get("generator")
        if isinstance(generator, Tensor) and generator.dtype == torch.uint8:
            try:
                self.generator.set_state(generator)
            except RuntimeError:  # a generator state saved on another device type: this device's stream
                pass
        if "rng" in state:
            try:
                self.rng.bit_generator.state = state["rng"]
            except (TypeError, ValueError, KeyError) as exc:
                raise CheckpointError(f"the checkpoint's rng entry is not a NumPy generator state ({exc})") from None
        self.num_timesteps = int(state["num_timesteps"])
        self.num_updates = int(state["num_updates"])
        self._episodes_before = int(state.get("episodes", 0))
        self._load_algo_state(state.get("algo_state", {}))
        self.close()  # the next rollout continues the saved episodes (or starts fresh ones)
        self._pending_collector_state = state.get("collector")

    @classmethod
    def load(
        cls: type[A],
        path: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        env: EnvLike | None = None,
        policy: str | nn.Module | tuple[nn.Module, nn.Module] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        custom_objects: dict[str, Any] | None = None,
        wrapper_class: Callable[..., gym.Env] | None = None,
    ) -> A:
        """Rebuild an agent from :meth:`save`'s file.

        Built-in policies are rebuilt from the checkpoint alone; the weights are loaded into
        fresh modules (weights-only loading: a checkpoint never carries code).

        Args:
            path: the checkpoint.
            device: where to put the networks.
            env: the env (id, Env or factory) when the agent was not built from an id.
            policy: the user's own module(s), when the agent was built with them (the same
                architecture; their weights come from the checkpoint).
            policy_kwargs: classes in the saved policy_kwargs that are neither torch.nn's nor
                natrl's (a user's features extractor or activation), passed again.
            wrapper_class: the env wrapper the agent was trained with, when it is neither gymnasium's nor
                natrl's (a checkpoint never names code to import).
            custom_objects: hyperparameters that replace the saved ones (stable-baselines3's name), e.g.
                a schedule function, which a checkpoint holds as its value at the time of saving.
        """
        state = cls.read_checkpoint(path)
        if cls.algo and state["algo"] != cls.algo:
            raise CheckpointError(
                f"{path} holds a {state['algo']} agent, not {cls.algo}; load it with natrl.load_agent"
            )
        env_given = env
        if env is None:
            hint = f"pass the env yourself: {cls.__name__}.load(path, env=...) or natrl eval PATH --env ID"
            try:
                env = rebuild_env(state.get("env"), hint=hint)
            except UntrustedReferenceError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
        if env is None:
            raise CheckpointError(f"{path} was trained on a custom env ({state['env_id']}); pass env=... to load it")
        retired = getattr(cls.config_cls, "retired_fields", ())
        saved = {k: v for k, v in state["config"].items() if k not in retired}
        config = build_config(cls.config_cls, {**saved, **(custom_objects or {})})
        saved_policy = state.get("policy", "MlpPolicy")
        if saved_policy == "custom" and policy is None:
            raise CheckpointError(
                f"{path} was trained with your own policy module(s); pass them again: "
                f"{cls.__name__}.load(path, policy=...)"
            )
        kwargs = decode_policy_kwargs(state.get("policy_kwargs") or {}, policy_kwargs)
        # the env as it was made: make-kwargs for an id, the wrapper when the env comes from the checkpoint
        env_kwargs = (state.get("env_kwargs") or {}) if isinstance(env, str) else {}
        if not isinstance(env_kwargs, dict):
            raise CheckpointError(f"{path}: its env_kwargs entry is not a table: it is damaged")
        if wrapper_class is None and env_given is None and state.get("wrapper_class"):
            try:
                wrapper_class = decode_class(
                    state["wrapper_class"], "pass load(..., wrapper_class=YourWrapper)", gym.Wrapper,
                    field="the checkpoint's wrapper_class",
                )  # fmt: skip
            except PolicyError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
        agent = _build_loaded(
            cls,
            path,
            env,
            seed=state["seed"],
            device=device,
            config=config,
            policy=policy if policy is not None else saved_policy,
            policy_kwargs=kwargs if policy is None or isinstance(policy, str) else None,
            env_kwargs=env_kwargs,
            wrapper_class=wrapper_class,
            wrapper_kwargs=(state.get("wrapper_kwargs") or {}) if wrapper_class is not None else None,
        )
        agent.load_state_dict(state)
        if env_given is not None:  # another env than the saved one: its episodes start fresh
            agent._pending_collector_state = None
        if env_given is None and isinstance(env, str):  # the registered id (a stored "module:" prefix dropped)
            agent.env_id, agent._env_arg = env, env
        elif env_given is None and state.get("env") is not None:  # rebuilt from the stored spec
            agent.env_id, agent._env_arg = state["env_id"].rpartition(":")[2], state["env"]
        return agent
