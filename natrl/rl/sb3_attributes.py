"""stable-baselines3's model and policy attributes on natrl's agents, delegating to what natrl already has.

* :class:`SB3Attributes`, a base of :class:`~natrl.rl.agent.OnPolicyAgent`: ``model.env`` (the VecEnv
  ``get_env()`` returns), ``gamma``, ``learning_rate``, ``n_steps``, ``batch_size`` (read from the config under
  natrl's name for them: sb3-contrib TRPO's ``learning_rate`` and ``batch_size`` are natrl's ``critic_lr`` and
  ``critic_batch_size``), ``ep_info_buffer`` and ``set_random_seed``; and the SB3 ``infos`` a callback's
  ``self.locals`` holds during training (:meth:`SB3Attributes.sb3_step_infos`).
* :class:`SB3Policy`, the agent's ``model.policy``: ``predict`` (what ``model.predict`` does),
  ``set_training_mode`` and ``obs_to_tensor``.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from natrl.rl.acting import act, observation_tensor
from natrl.rl.arguments import check_seed
from natrl.rl.config import OnPolicyConfig
from natrl.rl.normalization import ObsNormalizer
from natrl.rl.policies import Actor, ActorCritic, Critic
from natrl.rl.sb3_names import natrl_field
from natrl.rl.sb3_vec_env import SB3StepInfos, sb3_infos

__all__ = ["STATS_WINDOW_SIZE", "SB3Attributes", "SB3Policy", "time_limit"]

STATS_WINDOW_SIZE = 100
"""Episodes ``ep_info_buffer`` keeps (stable-baselines3's default ``stats_window_size``)."""


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

    def _config_attribute(self, name: str) -> Any:
        field = natrl_field(name, set(self.config.to_dict()))
        if field is None:
            raise AttributeError(f"{type(self).__name__} has no {name} (no {type(self.config).__name__} field for it)")
        return getattr(self.config, field)

    @property
    def gamma(self) -> float:
        """The discount factor (``config.gamma``)."""
        return float(self.config.gamma)

    @property
    def learning_rate(self) -> Any:
        """SB3's ``learning_rate``, as given (a number, ``"lin_<value>"`` or a schedule): ``config.learning_rate``
        where the algorithm has one, else the critic's ``config.critic_lr`` (sb3-contrib TRPO's meaning)."""
        return self._config_attribute("learning_rate")

    @property
    def n_steps(self) -> int:
        """Steps per env per rollout (``config.n_steps``)."""
        return int(self.config.n_steps)

    @property
    def batch_size(self) -> int:
        """SB3's ``batch_size``: PPO's minibatch (``config.batch_size``), or the critic's minibatch
        (``config.critic_batch_size``, sb3-contrib TRPO's meaning); AttributeError where there is neither."""
        return int(self._config_attribute("batch_size"))

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

    def sb3_step_infos(self, n_envs: int) -> Callable[[dict[str, Any]], SB3StepInfos]:
        """For the callbacks' step hook: one vector step's ``locals`` → SB3's ``infos`` list
        (:class:`~natrl.rl.sb3_vec_env.SB3StepInfos`, built on first use from the Gymnasium info dict, the ended
        episodes' returns and lengths as the collector recorded them, and the step's time).

        ``TimeLimit.truncated`` is the rollout's ``truncated and not terminated`` where the step's locals hold
        them, else whether the episode reached the env's time limit (``max_episode_steps``)."""
        start = self._sb3_clock()
        limit: list[int | None] = []

        def infos(step_locals: dict[str, Any]) -> SB3StepInfos:
            coll, info, dones = self._collector, step_locals["infos"], step_locals["dones"]
            episodes, now = int(coll.episodes), time.time()

            def build() -> list[dict[str, Any]]:
                ended = np.flatnonzero(dones)
                later = int(coll.episodes) - episodes  # episodes finished after this step
                returns, lengths = list(coll.episode_returns), list(coll.episode_lengths)
                first = len(returns) - later - len(ended)
                records: list[tuple[float, int] | None] = [
                    (float(returns[first + j]), int(lengths[first + j])) if first + j >= 0 else None
                    for j in range(len(ended))
                ]
                if "truncated" in step_locals and "terminated" in step_locals:
                    cut = np.asarray(step_locals["truncated"]) & ~np.asarray(step_locals["terminated"])
                else:
                    if not limit:
                        limit.append(time_limit(coll.venv))
                    cut = np.zeros(n_envs, bool)
                    for i, record in zip(ended, records, strict=True):
                        cut[i] = limit[0] is not None and record is not None and record[1] >= limit[0]
                return sb3_infos(info, n_envs, dones, cut, records, round(now - start, 6))

            return SB3StepInfos(build)

        return infos

    def set_random_seed(self, seed: int | None = None) -> None:
        """Re-seed the agent (SB3's ``set_random_seed``; None does nothing): its seed, its torch and NumPy
        generators (``predict``'s and the rollouts' samples) and its action space. A collector made afterwards
        seeds its envs from the new seed; the envs of the current one keep their episodes."""
        if seed is None:
            return
        self.seed = check_seed(seed)
        self.generator.manual_seed(self.seed)
        self.rng.bit_generator.state = np.random.default_rng(self.seed).bit_generator.state
        self.action_space.seed(self.seed)
