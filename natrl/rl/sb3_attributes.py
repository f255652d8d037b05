"""stable-baselines3's model and policy attributes on natrl's agents, delegating to what natrl already has.

* :class:`SB3Attributes`, a base of :class:`~natrl.rl.agent.OnPolicyAgent`: ``model.env`` (the VecEnv
  ``get_env()`` returns), the hyperparameters under SB3's attribute names (``gamma``, ``learning_rate``,
  ``n_steps``, ``batch_size`` and :data:`~natrl.rl.sb3_names.SB3_ATTRIBUTES`: ``n_epochs``, ``ent_coef``,
  ``clip_range``, …; read from the config under natrl's name for them: sb3-contrib TRPO's ``learning_rate``,
  ``batch_size`` and ``target_kl`` are natrl's ``critic_lr``, ``critic_batch_size`` and ``max_kl / k``),
  ``ep_info_buffer`` and ``set_random_seed``; and the SB3 ``infos`` a callback's ``self.locals`` holds during
  training (:meth:`SB3Attributes.sb3_step_infos`).
* :class:`SB3Policy`, the agent's ``model.policy``: ``predict`` (what ``model.predict`` does),
  ``set_training_mode`` and ``obs_to_tensor``.

Assigning one of those hyperparameter attributes (a callback annealing ``ent_coef`` or ``clip_range``, as SB3's
users do) replaces the config field behind it, validated as at construction, where the algorithm reads that field
at every update (its class's :attr:`SB3Attributes.fields_read_each_update`): it takes effect from the next update
(``gae_lambda``: from the next rollout's advantages). The others (``gamma``, ``n_steps``, TRPO's ``cg_damping``)
are fixed when the agent is built; assigning them raises AttributeError naming how to change them. (SB3 itself
ignores an assigned ``learning_rate`` or ``gae_lambda``, which its learning-rate schedule and rollout buffer copied
at construction.)
"""

from __future__ import annotations

import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, NoReturn

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from natrl.distributions import Distribution
from natrl.rl.acting import act, observation_tensor
from natrl.rl.arguments import check_seed, seed_global_generators
from natrl.rl.config import OnPolicyConfig, schedule_value
from natrl.rl.normalization import ObsNormalizer
from natrl.rl.persistence import config_with, load_parameters
from natrl.rl.policies import Actor, ActorCritic, Critic
from natrl.rl.policies.modules import distribution_and_value
from natrl.rl.sb3_names import action_dims, natrl_values, sb3_attribute_field, sb3_converted, sb3_value
from natrl.rl.sb3_vec_env import sb3_infos

__all__ = [
    "STATS_WINDOW_SIZE",
    "ConfigSchedule",
    "SB3Attributes",
    "SB3Hyperparameter",
    "SB3Policy",
    "time_limit",
]

STATS_WINDOW_SIZE = 100
"""Episodes ``ep_info_buffer`` keeps (stable-baselines3's default ``stats_window_size``)."""


@dataclass(frozen=True)
class ConfigSchedule:
    """A hyperparameter read as stable-baselines3's schedule (SB3 turns ``clip_range`` into one at construction):
    ``clip_range(progress_remaining)`` is its value there.

    Attributes:
        value: the config's value (a number or ``"lin_<value>"``).
    """

    value: float | str

    def __call__(self, progress_remaining: float) -> float:
        return schedule_value(self.value, progress_remaining)


_AS_SCHEDULE = ("clip_range", "clip_range_vf")  # SB3's PPO holds them as schedules (clip_range_vf: or None)


class SB3Hyperparameter:
    """A model attribute with stable-baselines3's name over a field of the agent's config: reading gives SB3's value
    (:meth:`SB3Attributes.sb3_hyperparameter`), assigning replaces the field
    (:meth:`SB3Attributes.set_sb3_hyperparameter`)."""

    name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, agent: Any, owner: type | None = None) -> Any:
        if agent is None:
            return self
        return agent.sb3_hyperparameter(self.name)

    def __set__(self, agent: Any, value: Any) -> None:
        agent.set_sb3_hyperparameter(self.name, value)


class SB3Policy(ActorCritic):
    """The agent's networks as one module (``model.policy``) with stable-baselines3's policy methods.

    Args:
        actor: the agent's actor.
        critic: the agent's critic.
        obs_normalizer: the agent's observation normaliser (None without ``normalize_obs``).
        generator: the agent's generator, which samples ``predict``'s stochastic actions.
        device: where the networks live.
    """

    def __init__(
        self,
        actor: Actor,
        critic: Critic,
        obs_normalizer: ObsNormalizer | None,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        super().__init__(actor, critic)
        # kept in a tuple so that nn.Module registers nothing: the policy's state_dict is the networks' alone
        self._acting = (obs_normalizer, generator, device)

    @torch.no_grad()
    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """``model.predict``: the action(s) and recurrent state for one observation or a batch (see
        :meth:`natrl.rl.agent.OnPolicyAgent.predict`)."""
        if not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(f"predict: deterministic must be True or False, got {deterministic!r}")
        normalizer, generator, device = self._acting
        return act(self.actor, normalizer, generator, device, observation, state, episode_start, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """Put the networks in training (True) or evaluation (False) mode, as ``nn.Module.train(mode)``."""
        self.train(mode)

    def _feedforward(self, method: str) -> None:
        if self.actor.recurrent:
            raise TypeError(
                f"policy.{method}: the policy is recurrent, and its values and distributions depend on the episode's "
                "history: use model.predict with state and episode_start"
            )

    def forward(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        """SB3's ``policy(obs, deterministic=False)``: ``(actions, values (batch, 1), log_prob (batch,))`` for a
        batch as :meth:`obs_to_tensor` returns it (normalised under ``normalize_obs``, a Dict flattened), the
        actions raw (a Box's before clipping or tanh squashing, as SB3's) in the action space's shape, sampled with
        the agent's generator unless ``deterministic`` (the distribution's mode). What SB3's ONNX export recipe
        calls."""
        self._feedforward("forward")
        dist, values = distribution_and_value(self.actor, self.critic, obs)
        actions = dist.mode() if deterministic else dist.sample(self._acting[1])
        shape = self.actor.action.space.shape or ()
        return actions.reshape(actions.shape[0], *shape), values.reshape(-1, 1), dist.log_prob(actions)

    def predict_values(self, obs: Tensor) -> Tensor:
        """V(obs), shape (batch, 1), for a batch as :meth:`obs_to_tensor` returns it (SB3's ``predict_values``)."""
        self._feedforward("predict_values")
        return self.critic(obs).reshape(-1, 1)

    def get_distribution(self, obs: Tensor) -> Distribution:
        """π(·|obs) for a batch as :meth:`obs_to_tensor` returns it (SB3's ``get_distribution``): a
        :mod:`natrl.distributions` object (``log_prob``, ``entropy``, ``sample``, ``mode``) over the raw actions the
        rollouts store (a Box's before clipping)."""
        self._feedforward("get_distribution")
        return self.actor.distribution(obs)

    def evaluate_actions(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(values (batch, 1), log_prob (batch,), entropy (batch,))`` of raw actions (SB3's ``evaluate_actions``;
        Discrete actions as (batch,) or (batch, 1))."""
        self._feedforward("evaluate_actions")
        dist, values = distribution_and_value(self.actor, self.critic, obs)
        raw = actions.reshape(actions.shape[0], *self.actor.action.raw_shape)
        return values.reshape(-1, 1), dist.log_prob(raw), dist.entropy()

    def obs_to_tensor(self, observation: Any) -> tuple[Tensor, bool]:
        """``(tensor, vectorized)``: one observation or a batch as the batch the networks take (normalised with
        the agent's statistics under ``normalize_obs``; a Dict observation flattened), and whether it was a
        batch."""
        codec = self.actor.obs_codec
        try:
            vectorized = bool(codec.is_batch(observation))
        except ValueError as exc:
            raise ValueError(f"obs_to_tensor: {exc}") from None
        normalizer, _, device = self._acting
        batch = observation if vectorized else codec.batch_of_one(observation)
        return observation_tensor(self.actor, normalizer, batch, device), vectorized


def time_limit(venv: Any) -> int | None:
    """The time limit (``max_episode_steps``) of the envs of a Gymnasium vector env, or None."""
    envs = getattr(venv, "envs", None)
    spec = envs[0].spec if envs else getattr(venv, "spec", None)
    if spec is None and hasattr(venv, "get_attr"):
        try:
            spec = venv.get_attr("spec")[0]
        except Exception:  # an env that cannot report its spec: no known limit
            spec = None
    steps = getattr(spec, "max_episode_steps", None)
    return int(steps) if steps is not None else None


class SB3Attributes:
    """stable-baselines3's attributes of a model, for :class:`~natrl.rl.agent.OnPolicyAgent` (which sets the
    annotated attributes below)."""

    config: OnPolicyConfig
    seed: int
    generator: torch.Generator
    rng: np.random.Generator
    action_space: gym.Space
    _collector: Any

    def get_env(self) -> Any:  # the agent's
        raise NotImplementedError

    @property
    def env(self) -> Any:
        """The training envs in stable-baselines3's VecEnv API (SB3's ``model.env``; :meth:`get_env`)."""
        return self.get_env()

    # SB3's and sb3-contrib TRPO's hyperparameter attributes (SB3_ATTRIBUTES): read and assigned through the config
    n_epochs = SB3Hyperparameter()
    gae_lambda = SB3Hyperparameter()
    ent_coef = SB3Hyperparameter()
    vf_coef = SB3Hyperparameter()
    max_grad_norm = SB3Hyperparameter()
    clip_range = SB3Hyperparameter()
    clip_range_vf = SB3Hyperparameter()
    target_kl = SB3Hyperparameter()
    normalize_advantage = SB3Hyperparameter()
    cg_damping = SB3Hyperparameter()
    cg_max_steps = SB3Hyperparameter()
    n_critic_updates = SB3Hyperparameter()
    line_search_shrinking_factor = SB3Hyperparameter()
    line_search_max_iter = SB3Hyperparameter()

    algo: ClassVar[str]
    progress_remaining: float
    policy: SB3Policy
    fields_read_each_update: ClassVar[frozenset[str]] = frozenset({"gae_lambda", "normalize_advantage"})
    """The config fields the agent reads afresh at every rollout or update (here: the GAE's; each algorithm
    adds those its ``_update`` reads): the ones an SB3 attribute assignment may replace. The rest are built into
    optimisers, dampings, the reward normaliser or the rollouts when the agent is constructed."""

    def get_parameters(self) -> dict[str, dict[str, Tensor]]:
        """The networks' weights, ``{"policy": state_dict}`` (stable-baselines3's layout)."""
        return {"policy": self.policy.state_dict()}

    def set_parameters(
        self,
        load_path_or_dict: dict[str, dict[str, Tensor]] | str | os.PathLike[str] | BinaryIO,
        exact_match: bool = True,
        device: str | torch.device = "auto",
    ) -> None:
        """Load weights from :meth:`get_parameters`'s dict or from a checkpoint (a file or a binary file object;
        weights only), stable-baselines3's signature: ``exact_match=False`` loads a dict that holds only some of
        the weights; ``device`` is accepted (the weights are copied to the networks' device either way)."""
        del device
        load_parameters(self.policy, load_path_or_dict, strict=exact_match)

    def sb3_hyperparameter(self, name: str) -> Any:
        """SB3's model attribute ``name`` (``n_epochs``, ``clip_range``, TRPO's ``target_kl``, …) from the config:
        under natrl's name for it, converted as sb3-contrib's TRPO means it (:func:`~natrl.rl.sb3_names.sb3_value`);
        ``clip_range`` and ``clip_range_vf`` as SB3's schedules (:class:`ConfigSchedule`), other values as given.

        Raises:
            AttributeError: the algorithm has no such hyperparameter (as SB3's A2C has no ``n_epochs``).
        """
        fields = set(self.config.to_dict())
        field = sb3_attribute_field(self.algo, name, fields)
        if field is None:
            raise AttributeError(f"{type(self).__name__} has no {name} (no {type(self.config).__name__} field for it)")
        value = getattr(self.config, field)
        if sb3_converted(self.algo, name) and (isinstance(value, str) or callable(value)):
            value = schedule_value(value, self.progress_remaining)  # TRPO's target_kl of a max_kl schedule: now
        value = sb3_value(self.algo, name, value, action_dims(self.action_space))
        if name in _AS_SCHEDULE and value is not None and not callable(value):
            return ConfigSchedule(value)
        return value

    def set_sb3_hyperparameter(self, name: str, value: Any) -> None:
        """``model.<name> = value`` for SB3's attribute ``name``: the config field behind it replaced, validated as
        at construction, from the next update on, where the algorithm reads it at every update
        (:attr:`fields_read_each_update`).

        Raises:
            AttributeError: the algorithm has no such hyperparameter, or reads it only when built (the message
                names how to change it: a new agent, or ``load``'s ``custom_objects``).
            ValueError, TypeError: a value the config refuses.
        """
        cls = type(self).__name__
        fields = set(self.config.to_dict())
        field = sb3_attribute_field(self.algo, name, fields)
        if field is None:
            raise AttributeError(f"{cls} has no {name} (no {type(self.config).__name__} field for it)")
        if field not in self.fields_read_each_update:
            self._fixed(name, f"{cls} reads {field} only then")
        if isinstance(value, ConfigSchedule):
            value = value.value
        elif isinstance(value, np.generic):  # a NumPy scalar from a schedule computed with NumPy
            value = value.item()
        try:
            values = natrl_values(self.algo, name, value, fields, action_dims(self.action_space))
            self.config = config_with(self.config, values)
        except ValueError as exc:
            where = "" if field == name else f" (natrl's {field})"
            raise ValueError(f"{cls}.{name} = {value!r}{where}: {exc}") from None

    @property
    def gamma(self) -> float:
        """The discount factor (``config.gamma``)."""
        return float(self.config.gamma)

    @gamma.setter
    def gamma(self, value: Any) -> None:
        self._fixed("gamma", "the reward normaliser is built with it")

    @property
    def learning_rate(self) -> Any:
        """SB3's ``learning_rate``, as given (a number, ``"lin_<value>"`` or a schedule): ``config.learning_rate``
        where the algorithm has one, else the critic's ``config.critic_lr`` (sb3-contrib TRPO's meaning).
        Assigning it changes the step size from the next update on (SB3 reads ``lr_schedule`` instead)."""
        return self.sb3_hyperparameter("learning_rate")

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        self.set_sb3_hyperparameter("learning_rate", value)

    @property
    def n_steps(self) -> int:
        """Steps per env per rollout (``config.n_steps``)."""
        return int(self.config.n_steps)

    @n_steps.setter
    def n_steps(self, value: Any) -> None:
        self._fixed("n_steps", "the rollouts are sized by it")

    @property
    def batch_size(self) -> int:
        """SB3's ``batch_size``: PPO's minibatch (``config.batch_size``), or the critic's minibatch
        (``config.critic_batch_size``, sb3-contrib TRPO's meaning); AttributeError where there is neither."""
        return int(self.sb3_hyperparameter("batch_size"))

    @batch_size.setter
    def batch_size(self, value: Any) -> None:
        self.set_sb3_hyperparameter("batch_size", value)

    def _fixed(self, name: str, what: str) -> NoReturn:
        cls = type(self).__name__
        raise AttributeError(
            f"{cls}.{name} is fixed when the agent is built ({what}): build a new agent with {name}=..., or load "
            f"a saved one with {cls}.load(path, custom_objects={{{name!r}: ...}})"
        )

    # ------------------------------------------------------------------ episodes
    def _sb3_clock(self) -> float:
        """When SB3's Monitor clock started for this agent (its first training): ``"t"`` counts from it."""
        return float(self.__dict__.setdefault("_sb3_t0", time.time()))

    def sync_ep_info(self, collector: Any = None) -> None:
        """Add the episodes ``collector`` (default: the agent's current one, if any) finished since the last call
        to :attr:`ep_info_buffer`; the first call with a collector only marks where its count stands (``learn``
        calls it before its first rollout and after each)."""
        state = self.__dict__.setdefault("_sb3_episodes", {"buffer": deque(maxlen=STATS_WINDOW_SIZE), "seen": None})
        coll = self._collector if collector is None else collector
        if coll is None:
            return
        episodes, start = int(coll.episodes), self._sb3_clock()
        seen = state["seen"]
        if seen is not None and seen[0]() is coll and episodes > seen[1]:
            new = min(episodes - seen[1], len(coll.episode_returns))
            now = round(time.time() - start, 6)
            returns, lengths = list(coll.episode_returns)[-new:], list(coll.episode_lengths)[-new:]
            state["buffer"].extend({"r": round(float(r), 6), "l": int(n), "t": now} for r, n in zip(returns, lengths))
        state["seen"] = (weakref.ref(coll), episodes)

    @property
    def ep_info_buffer(self) -> deque[dict[str, Any]]:
        """SB3's ``ep_info_buffer``: the last 100 episodes finished while this agent trained, as SB3's Monitor
        records them (``{"r": return, "l": length, "t": seconds since the agent first trained}``, ``"t"`` taken
        at the end of the rollout the episode ended in). Like SB3's, it is not saved with the model."""
        self.sync_ep_info()
        buffer: deque[dict[str, Any]] = self.__dict__["_sb3_episodes"]["buffer"]
        return buffer

    def sb3_step_infos(self, n_envs: int) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
        """For the callbacks' step hook: one vector step's ``locals`` → SB3's ``infos`` list (a plain list, built at
        the step, as SB3's VecEnvs give it) from the Gymnasium info dict, the ended episodes' returns and lengths
        as the collector recorded them in this step, and the step's time.

        ``TimeLimit.truncated`` is the rollout's ``truncated and not terminated`` where the step's locals hold
        them, else whether the episode reached the env's time limit (``max_episode_steps``)."""
        start = self._sb3_clock()
        limit: list[int | None] = []

        def infos(step_locals: dict[str, Any]) -> list[dict[str, Any]]:
            coll, info, dones = self._collector, step_locals["infos"], step_locals["dones"]
            ended = np.flatnonzero(dones)
            # the collector appended this step's ended episodes last, in env order
            returns, lengths, n = coll.episode_returns, coll.episode_lengths, len(coll.episode_returns)
            records: list[tuple[float, int] | None] = [
                (float(returns[i]), int(lengths[i])) if i >= 0 else None for i in range(n - len(ended), n)
            ]
            if "truncated" in step_locals and "terminated" in step_locals:
                cut = np.asarray(step_locals["truncated"]) & ~np.asarray(step_locals["terminated"])
            else:
                if not limit:
                    limit.append(time_limit(coll.venv))
                cut = np.zeros(n_envs, bool)
                for i, record in zip(ended, records, strict=True):
                    cut[i] = limit[0] is not None and record is not None and record[1] >= limit[0]
            return sb3_infos(info, n_envs, dones, cut, records, round(time.time() - start, 6))

        return infos

    def set_random_seed(self, seed: int | None = None) -> None:
        """Re-seed the agent (SB3's ``set_random_seed``; None does nothing): its seed, its torch and NumPy
        generators (``predict``'s and the rollouts' samples), its action space, and as SB3 Python's, NumPy's and
        torch's global generators. A collector made afterwards seeds its envs from the new seed; the envs of the
        current one keep their episodes."""
        if seed is None:
            return
        self.seed = check_seed(seed)
        seed_global_generators(self.seed)
        self.generator.manual_seed(self.seed)
        self.rng.bit_generator.state = np.random.default_rng(self.seed).bit_generator.state
        self.action_space.seed(self.seed)
