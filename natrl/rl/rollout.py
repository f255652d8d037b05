"""On-policy rollouts from a Gymnasium vector env with batched, gradient-free inference.

One call of :meth:`RolloutCollector.collect` runs T steps in each of E envs and
returns a :class:`Rollout` of (T, E) tensors: normalised observations, raw
actions, their log-probabilities, values V(sₜ), the (scaled) rewards, and for
each step the value of the *true* next state V(s'ₜ). When an episode ends at
step t, s'ₜ is the final observation reported by the env (SAME_STEP autoreset),
so a truncated episode bootstraps from it while a terminated one does not (GAE
masks it with ``terminated``). The values of all final observations of a
rollout are computed in one batched critic call after the loop.

Observation statistics are updated either once per rollout from all its raw
observations (``obs_norm_update="rollout"``: every observation of a rollout is
normalised with the same statistics) or after every vector step as
stable-baselines3's ``VecNormalize`` does (``"step"``: the statistics include the
reset observations and each new observation before it is normalised; final
observations are normalised with the statistics of their step, not added).

Observations are stored in the form :mod:`natrl.rl.spaces` gives them (uint8 images
stay uint8, indices stay integers) and preprocessed by the networks per batch.

The per-step work is one actor forward with a sample (a :data:`Sampler`: the generic
:func:`torch_sampler`, or natrl's NumPy fast path) and one vector-env step;
log-probabilities and values are computed for the whole rollout at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import Tensor

from natrl.rl.env_checks import check_finite, check_float32_rewards
from natrl.rl.env_state import from_storable, restore_vector_env_state, to_storable, vector_env_state
from natrl.rl.normalization import ObsNormalizer, RewardScaler
from natrl.rl.policies import Actor, Critic
from natrl.rl.policies.modules import shares_trained_features
from natrl.rl.spaces import ObservationCodec

__all__ = ["RecurrentSampler", "Rollout", "RolloutCollector", "Sampler", "StepHook", "torch_sampler"]

_CHUNK_ELEMENTS = 1 << 19  # observation scalars per batched forward after the rollout

Sampler = Callable[[np.ndarray], np.ndarray]
"""``sample(stored_obs (E, ...)) -> raw actions (E, *raw_shape)`` with the current policy."""

RecurrentSampler = Callable[[np.ndarray, Tensor, np.ndarray], tuple[np.ndarray, Tensor]]
"""``sample(stored_obs (E, ...), state (E, ...), starts (E,)) -> (raw actions, state after the step)``."""

StepHook = Callable[[dict[str, object]], object]
"""``hook(locals)`` after each vector step: new_obs, actions, rewards, dones, infos; False stops."""


def torch_sampler(actor: Actor, generator: torch.Generator) -> Sampler | RecurrentSampler:
    """The generic sampler: ``actor.distribution(obs).sample(generator)`` on the actor's device (for a
    recurrent actor ``actor.step(obs, state, starts)``, which also returns the state after the step)."""
    device = generator.device

    @torch.no_grad()
    def sample(obs: np.ndarray) -> np.ndarray:
        return actor.distribution(torch.from_numpy(obs).to(device)).sample(generator).cpu().numpy()

    @torch.no_grad()
    def sample_recurrent(obs: np.ndarray, state: Tensor, starts: np.ndarray) -> tuple[np.ndarray, Tensor]:
        dist, state = actor.step(torch.from_numpy(obs).to(device), state, torch.from_numpy(starts).to(device))
        return dist.sample(generator).cpu().numpy(), state

    return sample_recurrent if actor.recurrent else sample


@dataclass
class Rollout:
    """A rollout of T steps in E envs; every tensor is (T, E, ...) on the agent's device."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    next_values: Tensor
    rewards: Tensor
    terminated: Tensor
    episode_end: Tensor
    # recurrent policies: the steps that begin an episode (T, E), and per env the state before every step
    # (before its reset), (E, T, ...)
    starts: Tensor | None = None
    actor_states: Tensor | None = None
    critic_states: Tensor | None = None

    @property
    def n_steps(self) -> int:
        return self.rewards.numel()


class RolloutCollector:
    """Steps a vector env with the current policy; keeps episode statistics.

    Args:
        venv: the training vector env (SAME_STEP autoreset, see :mod:`natrl.rl.env`).
        device: where inference runs and where the rollout tensors live.
        seed: seeds env i with ``seed + i`` at the first reset.
        obs_codec: how observations are stored (``natrl.rl.spaces.observation_codec``).
        obs_normalizer: optional running observation normalisation (float Box observations).
        reward_scaler: optional running reward scaling.
        obs_norm_update: "rollout" or "step", when observation statistics are updated (see above).
        defer_obs_stats: with "rollout" updates, keep the rollout's observation moments in
            :attr:`pending_obs_stats` instead of merging them (a rollout worker's learner merges them).
        state: :meth:`state_dict` of a collector built the same way: the envs continue where that one stopped
            (their physics, random generators and time limits, the current observations, the episodes'
            running returns and the recurrent states) instead of starting fresh episodes.
    """

    def __init__(
        self,
        venv: VectorEnv,
        *,
        device: torch.device,
        seed: int,
        obs_codec: ObservationCodec,
        obs_normalizer: ObsNormalizer | None = None,
        reward_scaler: RewardScaler | None = None,
        obs_norm_update: str = "rollout",
        defer_obs_stats: bool = False,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        if obs_norm_update not in ("rollout", "step"):
            raise ValueError(f"obs_norm_update must be 'rollout' or 'step', got {obs_norm_update!r}")
        self.venv = venv
        self.n_envs = venv.num_envs
        self.device = device
        self.codec = obs_codec
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self._per_step = obs_normalizer is not None and obs_norm_update == "step"
        self._defer_stats = defer_obs_stats
        self.pending_obs_stats: tuple[np.ndarray, np.ndarray, int] | None = None
        # the env's observations as one array: as returned for a normalised float Box, else stored
        self._raw = np.asarray if obs_normalizer is not None else obs_codec.encode
        obs, _ = venv.reset(seed=seed)
        self._raw_obs = self._raw(obs)
        check_finite(self._raw_obs, np.zeros(self.n_envs), 0)
        if obs_normalizer is not None and self._per_step and state is None:
            self._norm_obs = obs_normalizer(self._raw_obs, update=True)
        self.steps = 0
        # which envs' next observation begins an episode, and the recurrent states carried between rollouts
        self._starts = np.ones(self.n_envs, bool)
        self._actor_state: Tensor | None = None
        self._critic_state: Tensor | None = None
        self._ep_return = np.zeros(self.n_envs, np.float64)
        self._ep_length = np.zeros(self.n_envs, np.int64)
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.episodes = 0
        if state is not None:
            self._load_state(state)

    def state_dict(self) -> dict[str, Any] | None:
        """Where the envs and their episodes stand, as plain data and tensors; None when the vector env's state
        cannot be captured (``natrl.rl.env_state.vector_env_state``)."""
        envs = vector_env_state(self.venv)
        if envs is None:
            return None
        return {
            "envs": envs,
            "raw_obs": to_storable(self._raw_obs),
            "norm_obs": to_storable(self._norm_obs) if self._per_step else None,
            "starts": to_storable(self._starts),
            "actor_state": self._actor_state,
            "critic_state": self._critic_state,
            "ep_return": to_storable(self._ep_return),
            "ep_length": to_storable(self._ep_length),
            "episode_returns": list(self.episode_returns),
            "episode_lengths": list(self.episode_lengths),
            "episodes": self.episodes,
            "steps": self.steps,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        restore_vector_env_state(self.venv, state["envs"])
        self._raw_obs = from_storable(state["raw_obs"])
        if self._per_step:
            self._norm_obs = from_storable(state["norm_obs"])
        self._starts = from_storable(state["starts"])
        self._actor_state, self._critic_state = state["actor_state"], state["critic_state"]
        self._ep_return = from_storable(state["ep_return"])
        self._ep_length = from_storable(state["ep_length"])
        self.episode_returns.extend(state["episode_returns"])
        self.episode_lengths.extend(state["episode_lengths"])
        self.episodes, self.steps = int(state["episodes"]), int(state["steps"])

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        if self.obs_normalizer is None:
            return raw
        return self.obs_normalizer(raw)

    @torch.no_grad()
    def collect(
        self,
        actor: Actor,
        critic: Critic,
        n_steps: int,
        sample: Sampler | RecurrentSampler,
        on_step: StepHook | None = None,
    ) -> Rollout | None:
        """Run ``n_steps`` vector steps (``n_steps * n_envs`` transitions).

        The loop only samples actions; log-probabilities and values of all T·E
        observations (and of the final observations of ended episodes) are computed
        afterwards in batched forwards, since the policy does not change during a
        rollout and every observation is stored as it was normalised when it arrived.

        ``on_step`` (callbacks) is called after every vector step with what it produced; when it
        returns False the rollout stops there and ``None`` is returned (training stops).

        A recurrent actor samples with its state, carried from step to step and from one rollout to the
        next and zeroed where an episode begins; afterwards actor and critic run over each env's whole
        sequence from the states carried into the rollout.
        """
        E, T = self.n_envs, n_steps
        recurrent = actor.recurrent
        if recurrent and self._actor_state is None:
            self._actor_state = actor.initial_state(E)
            self._critic_state = critic.initial_state(E)
        critic_state0 = self._critic_state
        actor_states: list[Tensor] = []  # a recurrent actor's state before every step, (E, ...) each
        starts_buf = np.empty((T, E), bool)
        starts = self._starts
        obs_shape = self.codec.shape
        per_rollout_stats = self.obs_normalizer is not None and not self._per_step
        raw_obs_buf = np.empty((T, E, *obs_shape), np.float64) if per_rollout_stats else None
        obs_buf = np.empty((T, E, *obs_shape), self.codec.dtype)
        act_shape = actor.action.raw_shape
        act_buf = np.empty((T, E, *act_shape), actor.action.raw_dtype)
        rew_buf = np.empty((T, E), np.float32)
        term_buf = np.zeros((T, E), bool)
        end_buf = np.zeros((T, E), bool)
        finals: list[tuple[int, int, np.ndarray]] = []
        to_env_action = actor.to_env_action

        per_step = self._per_step
        norm = self.obs_normalizer
        raw = self._raw_obs
        obs = self._norm_obs if per_step else self._normalize(raw)
        for t in range(T):
            if raw_obs_buf is not None:
                raw_obs_buf[t] = raw
            obs_buf[t] = obs
            if recurrent:
                starts_buf[t] = starts
                actor_states.append(self._actor_state)  # type: ignore[arg-type]
                action, self._actor_state = sample(obs, self._actor_state, starts)  # type: ignore[call-arg,arg-type]
            else:
                action = sample(obs)  # type: ignore[call-arg]
            act_buf[t] = action
            raw, reward, terminated, truncated, info = self.venv.step(to_env_action(action))
            raw = self._raw(raw)
            reward = np.asarray(reward, np.float64)
            check_finite(raw, reward, self.steps + t * E)
            if per_step:
                obs = norm(raw, update=True)  # type: ignore[misc]
            else:
                obs = self._normalize(raw)
            ended = terminated | truncated
            self._ep_return += reward
            self._ep_length += 1
            if self.reward_scaler is not None:
                reward = self.reward_scaler(reward, ended)
            rew_buf[t] = reward
            term_buf[t] = terminated
            end_buf[t] = ended
            starts = ended
            if ended.any():
                final_obs = info["final_obs"]
                for e in np.flatnonzero(ended):
                    final = self._raw(self.codec.batch_of_one(final_obs[e]))[0]
                    check_finite(final[None], np.zeros(1), self.steps + t * E)
                    # per-step statistics: normalised now, with this step's statistics
                    finals.append((t, int(e), norm(final[None])[0] if per_step else final))  # type: ignore[misc]
                    self.episode_returns.append(float(self._ep_return[e]))
                    self.episode_lengths.append(int(self._ep_length[e]))
                    self._ep_return[e] = 0.0
                    self._ep_length[e] = 0
                    self.episodes += 1
            if on_step is not None:
                step_locals = {"new_obs": raw, "actions": action, "rewards": reward, "dones": ended, "infos": info,
                               "terminated": terminated, "truncated": truncated}  # fmt: skip
                if on_step(step_locals) is False:
                    self._raw_obs = raw
                    if per_step:
                        self._norm_obs = obs
                    self.steps += (t + 1) * E
                    self._starts = starts
                    return None
        self._raw_obs = raw
        if per_step:
            self._norm_obs = obs
        self._starts = starts
        check_float32_rewards(rew_buf, self.steps)
        self.steps += T * E

        dev = self.device
        obs_all = torch.from_numpy(obs_buf).to(dev)
        actions = torch.from_numpy(act_buf).to(dev)
        tail = [obs]
        if finals:
            stacked = np.stack([f[2] for f in finals])
            tail.append(stacked if per_step else self._normalize(stacked))
        extra = torch.from_numpy(np.concatenate(tail)).to(dev)
        recurrent_parts: dict[str, Tensor] = {}
        if recurrent:
            log_probs, values, next_val, recurrent_parts = self._sequence_forwards(
                actor, critic, obs_all, actions, torch.from_numpy(starts_buf).to(dev), extra, finals,
                torch.stack(actor_states, 1), critic_state0,  # type: ignore[arg-type]
            )  # fmt: skip
        else:
            log_probs, values, next_val = self._batched_forwards(actor, critic, obs_all, actions, extra, finals)
        if raw_obs_buf is not None:  # statistics updated once per rollout
            rms = self.obs_normalizer.rms  # type: ignore[union-attr]
            raw_all = raw_obs_buf.reshape(T * E, *obs_shape)
            if self._defer_stats:
                self.pending_obs_stats = rms.moments(raw_all)
            else:
                rms.update(raw_all)

        return Rollout(
            obs=obs_all,
            actions=actions,
            log_probs=log_probs,
            values=values,
            next_values=next_val,
            rewards=torch.from_numpy(rew_buf).to(dev),
            terminated=torch.from_numpy(term_buf).to(dev),
            episode_end=torch.from_numpy(end_buf).to(dev),
            **recurrent_parts,
        )

    def _batched_forwards(
        self,
        actor: Actor,
        critic: Critic,
        obs_all: Tensor,
        actions: Tensor,
        extra: Tensor,
        finals: list[tuple[int, int, np.ndarray]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Log-probabilities, V(sₜ) and V(s'ₜ) of a rollout (T, E) for a policy without memory."""
        T, E = obs_all.shape[:2]
        dev = obs_all.device
        act_shape = actions.shape[2:]
        flat_obs = obs_all.reshape(T * E, *obs_all.shape[2:])
        # Batched forwards over the rollout and the observations after it (the last one of each env
        # and the final ones of ended episodes, for V(s'_t)), in chunks of at most _CHUNK_ELEMENTS
        # input scalars: one chunk for vector observations, ~18 Atari frames, whose float activations
        # would otherwise dominate memory. A features extractor with parameters shared by actor and
        # critic (a CNN) runs once per observation.
        rows = max(1, _CHUNK_ELEMENTS // max(1, self.codec.size))
        flat_act = actions.reshape(T * E, *act_shape)
        n_roll, total = T * E, T * E + extra.shape[0]

        def rows_of(i: int, j: int) -> Tensor:
            """Rows i..j of [rollout; extra], copying only a chunk that straddles the two (the rollout of
            images is not copied whole)."""
            if j <= n_roll:
                return flat_obs[i:j]
            if i >= n_roll:
                return extra[i - n_roll : j - n_roll]
            return torch.cat([flat_obs[i:], extra[: j - n_roll]])

        shared = shares_trained_features(actor, critic)
        # the outputs are written into tensors allocated once: small allocations kept between the chunks'
        # large temporaries would fragment the heap (measured: +19 MiB on an 8 × 128 Atari rollout)
        log_probs: Tensor | None = None
        all_values: Tensor | None = None
        for i in range(0, total, rows):
            j = min(i + rows, total)
            chunk = rows_of(i, j)
            n_pol = min(rows, T * E - i)  # the rows of this chunk that are rollout steps
            if shared:
                features = actor.features_of(chunk)
                v = critic.value_from_features(features)
                pi = actor.distribution_from_features(features[:n_pol]) if n_pol > 0 else None
            else:
                v = critic(chunk)
                pi = actor.distribution(chunk[:n_pol]) if n_pol > 0 else None
            if all_values is None:
                all_values = torch.empty((total, *v.shape[1:]), dtype=v.dtype, device=v.device)
            all_values[i:j] = v
            if pi is not None:
                lp = pi.log_prob(flat_act[i : i + n_pol])
                if log_probs is None:
                    log_probs = torch.empty((T * E, *lp.shape[1:]), dtype=lp.dtype, device=lp.device)
                log_probs[i : i + n_pol] = lp
        assert log_probs is not None and all_values is not None
        log_probs = log_probs.reshape(T, E)
        values = all_values[: T * E].reshape(T, E)
        next_val = torch.empty_like(values)
        next_val[:-1] = values[1:]
        next_val[-1] = all_values[T * E : T * E + E]
        if finals:
            final_t = torch.tensor([f[0] for f in finals], device=dev)
            final_e = torch.tensor([f[1] for f in finals], device=dev)
            next_val[final_t, final_e] = all_values[T * E + E :]
        return log_probs, values, next_val

    def _features(self, module: Actor | Critic, obs: Tensor) -> Tensor:
        """Features of (E, T, ...) stored observations, (E, T, F), in chunks of bounded memory."""
        E, T = obs.shape[:2]
        flat = obs.flatten(0, 1)
        rows = max(1, _CHUNK_ELEMENTS // max(1, self.codec.size))
        parts = [module.features_of(flat[i : i + rows]) for i in range(0, flat.shape[0], rows)]
        return torch.cat(parts).unflatten(0, (E, T))

    def _sequence_forwards(
        self,
        actor: Actor,
        critic: Critic,
        obs_all: Tensor,
        actions: Tensor,
        starts: Tensor,
        extra: Tensor,
        finals: list[tuple[int, int, np.ndarray]],
        actor_states: Tensor,
        critic_state0: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Log-probabilities, V(sₜ) and V(s'ₜ) of a rollout (T, E) for a recurrent policy.

        ``actor_states`` (E, T, ...) are the actor's states before every step, as the sampler carried them.
        Actor and critic run over each env's sequence from the states carried into the rollout (the actor's
        outputs alone, by the core's fused path where it applies; the critic with its state before every
        step); the critic one step further, over the observation after the rollout (V(s_T)). The value of the final
        observation of an episode that ended at step t is one critic step from its state after step t.
        """
        T, E = obs_all.shape[:2]
        seq_obs, seq_starts = obs_all.transpose(0, 1), starts.T  # (E, T, ...)
        tail_starts = torch.from_numpy(self._starts).to(starts.device)
        feats_pi = self._features(actor, seq_obs)
        assert actor.core is not None
        y = actor.core.outputs(feats_pi, seq_starts, actor_states[:, 0])
        pi = actor.distribution_from_features(y)
        log_probs = pi.log_prob(actions.transpose(0, 1).flatten(0, 1)).unflatten(0, (E, T)).T
        feats_vf = feats_pi if critic.features is actor.features else self._features(critic, seq_obs)
        tail_feats = critic.features_of(extra[:E]).unsqueeze(1)
        yc, critic_states = critic.core_of(
            torch.cat([feats_vf, tail_feats], 1),
            torch.cat([seq_starts, tail_starts.unsqueeze(1)], 1),
            critic_state0,
            return_states=True,
        )
        v = critic.value_from_features(yc)  # (E, T + 1)
        values = v[:, :T].T.contiguous()
        next_val = torch.empty_like(values)
        next_val[:-1] = values[1:]
        next_val[-1] = v[:, T]
        if finals:
            rows = torch.tensor([f[0] for f in finals], device=obs_all.device)
            cols = torch.tensor([f[1] for f in finals], device=obs_all.device)
            after = critic_states[cols, rows + 1]  # the state after step t, before the reset
            no_reset = torch.zeros(len(finals), 1, dtype=torch.bool, device=obs_all.device)
            next_val[rows, cols] = critic(extra[E:].unsqueeze(1), no_reset, after)[:, 0]
        self._critic_state = critic_states[:, T]  # the state before the next rollout's first observation
        parts = {"starts": starts, "actor_states": actor_states, "critic_states": critic_states[:, :T]}
        return log_probs, values, next_val, parts
