"""Rollouts collected by Ray actors: one agent, many processes or machines.

With ``workers=K`` an agent's rollouts come from K :class:`RolloutWorker` actors, each owning a vector
env of ``n_envs`` envs, a CPU copy of the actor and critic, and a :class:`~natrl.rl.rollout.RolloutCollector`.
One rollout of the agent is

    learner: parameters (and observation statistics) → object store, once
    each worker: load them → T steps in its envs → log-probs and values of its steps (batched)
    learner: concatenate the K rollouts along the env axis → GAE → the algorithm's update,

so the workers do the env steps and the post-rollout inference in parallel, and the learner only the
update (trust-region methods, whose updates grow with the batch, are at their best with the large
batches this makes cheap: Schulman et al., 2015, used 50,000 steps per update on locomotion).

* **Observation statistics** are frozen during a rollout (``obs_norm_update="rollout"``); each worker
  returns the moments of its raw observations and the learner merges them in worker order with the
  parallel mean/variance update (Chan et al., 1979), the statistics of their union.
* **Reproducibility**: worker k seeds its envs with ``seed + 1_000_003·k + i`` and its samplers with the
  same number, so a fixed seed and worker count give the same parameters run after run.
* **Faults**: a worker that dies (its process killed, its node lost) is replaced by a fresh one — fresh
  episodes, seeded apart from the lost ones — and its share of the rollout is collected again; the
  update goes ahead with a whole batch. Each replacement is counted in :attr:`DistributedCollector.restarts`
  and logged as ``workers/restarts``.
* **No endless waits**: the K CPUs of the workers are reserved together (a Ray placement group of K one-CPU
  bundles, spread over the nodes) before the workers start; if they are not free within
  :data:`SCHEDULE_TIMEOUT_S` seconds — every CPU held by another agent's workers, say — an error names the
  CPUs wanted and free. A replacement worker has as long to start. :meth:`DistributedCollector.close` kills
  the workers and frees their CPUs for the next agent.
* Recurrent policies work unchanged: each worker carries its envs' recurrent states between rollouts.
* Every env backend works in the workers: each builds its vector env with the agent's
  :class:`~natrl.rl.env.VectorEnvBuilder` (gymnasium's sync or async envs, ALE's or EnvPool's C++ envs).

Per-step callbacks (``on_step``) are not called with workers: the steps happen in other processes.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import Tensor

from natrl.rl.accel import fast_paths
from natrl.rl.normalization import ObsNormalizer, RewardScaler
from natrl.rl.policies import Actor, Critic
from natrl.rl.rollout import Rollout, RolloutCollector, torch_sampler

__all__ = ["SCHEDULE_TIMEOUT_S", "SEED_STRIDE", "DistributedCollector", "RolloutWorker", "ensure_ray"]

SEED_STRIDE = 1_000_003
"""Worker k seeds its envs and samplers from ``seed + SEED_STRIDE·k`` (a replacement adds ``7_919·restarts``)."""

SCHEDULE_TIMEOUT_S = 45.0
"""Seconds the rollout workers' CPUs have to become free (and a replacement worker has to start) before
:class:`DistributedCollector` gives up with an error naming the CPUs wanted and free."""

_MAX_RESTARTS_PER_ROLLOUT = 3
_log = logging.getLogger(__name__)


def ensure_ray(address: str | None, num_cpus: int) -> Any:
    """Ray, initialised: the cluster at ``address``, or a local instance of at least ``num_cpus`` CPUs bound to
    the loopback address (:func:`natrl.cluster.connect`). Raises ValueError when Ray is not installed or the
    cluster does not answer."""
    try:
        import ray
    except ImportError:
        raise ValueError("workers > 0 needs Ray, which is not installed: pip install 'natrl[ray]'") from None
    from natrl.cluster import connect

    try:
        connect(address, max(num_cpus, os.cpu_count() or 1))
    except ConnectionError as exc:
        raise ValueError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    except ValueError as exc:  # a malformed address
        raise ValueError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    return ray


class RolloutWorker:
    """The body of one rollout worker (run as a Ray actor by :class:`DistributedCollector`).

    Args:
        make_venv: builds this worker's vector env from its number of envs (the agent's
            :class:`~natrl.rl.env.VectorEnvBuilder`: gymnasium's sync or async envs, ALE's or EnvPool's).
        actor: a copy of the agent's actor (moved to the CPU, float32).
        critic: a copy of the agent's critic.
        n_envs: envs in this worker's vector env.
        seed: seeds the envs (``seed + i``) and the samplers.
        normalize_obs: observations are normalised with the learner's statistics.
        fast: use natrl's CPU fast paths where they apply.
    """

    def __init__(
        self,
        make_venv: Callable[[int], VectorEnv],
        actor: Actor,
        critic: Critic,
        *,
        n_envs: int,
        seed: int,
        normalize_obs: bool,
        fast: bool,
    ) -> None:
        torch.set_num_threads(1)
        self._make_venv, self._n_envs = make_venv, n_envs
        self.actor, self.critic = actor.cpu().float(), critic.cpu().float()
        codec = actor.obs_codec
        self.obs_normalizer = ObsNormalizer(codec.shape) if normalize_obs else None
        self.collector = RolloutCollector(
            make_venv(n_envs),
            device=torch.device("cpu"),
            seed=seed,
            obs_codec=codec,
            obs_normalizer=self.obs_normalizer,
            obs_norm_update="rollout",
            defer_obs_stats=True,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        paths = fast_paths(self.actor, self.critic, self.rng, enabled=fast)
        self.sampler = paths.sampler or torch_sampler(self.actor, self.generator)

    def state_dict(self) -> dict[str, Any] | None:
        """Where this worker's envs, episodes and samplers stand (None when its envs' state cannot be captured)."""
        collector = self.collector.state_dict()
        if collector is None:
            return None
        return {"collector": collector, "rng": self.rng.bit_generator.state, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the same envs mid-episode, the same sampler streams."""
        self.collector.venv.close()
        self.collector = RolloutCollector(
            self._make_venv(self._n_envs),
            device=torch.device("cpu"),
            seed=0,
            obs_codec=self.actor.obs_codec,
            obs_normalizer=self.obs_normalizer,
            obs_norm_update="rollout",
            defer_obs_stats=True,
            state=state["collector"],
        )
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])

    def collect(self, weights: dict[str, dict[str, Tensor]], obs_stats: dict[str, Any] | None, n_steps: int) -> dict:
        """One rollout of ``n_steps`` vector steps with the learner's parameters and observation statistics."""
        t0 = time.perf_counter()
        self.actor.load_state_dict(weights["actor"])  # in place: the NumPy sampler's views stay valid
        self.critic.load_state_dict(weights["critic"])
        if self.obs_normalizer is not None and obs_stats is not None:
            self.obs_normalizer.rms.load_state_dict(obs_stats)
        coll = self.collector
        episodes_before = coll.episodes
        ro = coll.collect(self.actor, self.critic, n_steps, self.sampler)
        assert ro is not None
        new = coll.episodes - episodes_before
        finished = list(zip(list(coll.episode_returns)[-new:], list(coll.episode_lengths)[-new:])) if new else []
        return {
            "rollout": {k: v for k, v in vars(ro).items() if v is not None},
            "obs_stats": coll.pending_obs_stats,
            "episodes": finished,
            "n_episodes": new,
            "seconds": time.perf_counter() - t0,
        }

    def node_id(self) -> str:
        """The Ray node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        self.collector.venv.close()


_ENV_AXIS_FIRST = ("actor_states", "critic_states")  # (E, T, ...); every other rollout tensor is (T, E, ...)


class DistributedCollector:
    """The learner's side: the same ``collect`` as :class:`~natrl.rl.rollout.RolloutCollector`, with the
    steps taken by K Ray actors (module docstring).

    Args:
        make_venv: builds a worker's vector env from its number of envs (the agent's
            :class:`~natrl.rl.env.VectorEnvBuilder`, sent to every worker).
        actor: the agent's actor (copied to the workers; its weights are sent every rollout).
        critic: the agent's critic (likewise).
        workers: K.
        n_envs: envs per worker.
        seed: the agent's seed.
        device: where the concatenated rollout goes.
        obs_normalizer: the agent's observation normaliser (its statistics are sent out and merged back).
        reward_scaler: the agent's reward scaler over all K · n_envs envs, applied here to the merged
            rollout step by step, as one process stepping all the envs would (the workers return raw rewards).
        address: the Ray cluster (None: a local Ray).
        fast: the workers use natrl's CPU fast paths where they apply.
        schedule_timeout: seconds the workers' CPUs have to become free (default :data:`SCHEDULE_TIMEOUT_S`).

    Raises:
        ValueError: Ray is not installed, or the cluster at ``address`` does not answer.
        RuntimeError: ``workers`` CPUs did not become free within ``schedule_timeout`` seconds.
    """

    def __init__(
        self,
        make_venv: Callable[[int], VectorEnv],
        actor: Actor,
        critic: Critic,
        *,
        workers: int,
        n_envs: int,
        seed: int,
        device: torch.device,
        obs_normalizer: ObsNormalizer | None,
        reward_scaler: RewardScaler | None = None,
        address: str | None = None,
        fast: bool = True,
        schedule_timeout: float | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.ray = ensure_ray(address, workers)
        self.schedule_timeout = SCHEDULE_TIMEOUT_S if schedule_timeout is None else float(schedule_timeout)
        self._make_venv, self._n_envs, self._fast = make_venv, n_envs, fast
        # one deep copy of both keeps what they share (a features extractor, a recurrent core) shared
        self._actor_copy, self._critic_copy = copy.deepcopy((actor, critic))
        self._actor_copy.cpu().float()
        self._critic_copy.cpu().float()
        self.seed = seed
        self.device = device
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self.venv = None  # the envs live in the workers
        self.n_envs = workers * n_envs
        self.restarts = [0] * workers
        self.events: list[str] = []
        self.worker_seconds: list[float] = []
        self.steps = 0
        self.episodes = 0
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.workers: list[Any] = []
        self._cpus = self._reserve_cpus(workers)
        if state is not None:
            self.restarts = [int(r) for r in state["restarts"]]
        self.workers = [self._spawn(k) for k in range(workers)]
        if state is not None:
            self._load_state(state)

    def state_dict(self) -> dict[str, Any] | None:
        """Every worker's :meth:`RolloutWorker.state_dict` and the learner's episode counts; None when a worker's
        envs cannot be captured (a resumed agent then starts fresh episodes)."""
        workers = self.ray.get([w.state_dict.remote() for w in self.workers])
        if any(w is None for w in workers):
            return None
        return {
            "workers": workers,
            "restarts": list(self.restarts),
            "episode_returns": list(self.episode_returns),
            "episode_lengths": list(self.episode_lengths),
            "episodes": self.episodes,
            "steps": self.steps,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if len(state["workers"]) != len(self.workers):
            self.close()
            raise ValueError(
                f"the saved state is of {len(state['workers'])} workers, this agent has {len(self.workers)}"
            )
        self.ray.get([w.load_state_dict.remote(s) for w, s in zip(self.workers, state["workers"])])
        self.episode_returns.extend(state["episode_returns"])
        self.episode_lengths.extend(state["episode_lengths"])
        self.episodes, self.steps = int(state["episodes"]), int(state["steps"])

    def _reserve_cpus(self, workers: int) -> Any:
        """A placement group of ``workers`` one-CPU bundles (spread over the nodes), once Ray has reserved it;
        RuntimeError if it has not within ``schedule_timeout`` seconds."""
        ray = self.ray
        group = ray.util.placement_group([{"CPU": 1}] * workers, strategy="SPREAD")
        if group.wait(self.schedule_timeout):
            return group
        total = ray.cluster_resources().get("CPU", 0.0)
        free = ray.available_resources().get("CPU", 0.0)  # absent when none is free
        ray.util.remove_placement_group(group)
        raise RuntimeError(
            f"workers={workers} need {workers} free CPUs (one each), and the Ray cluster still had {free:g} of its "
            f"{total:g} CPUs free after {self.schedule_timeout:g} s (the rest held by other actors or tasks, such as "
            "another agent's workers: close that agent first, or use fewer workers)"
        )

    def _spawn(self, k: int) -> Any:
        seed = self.seed + SEED_STRIDE * k + 7_919 * self.restarts[k]
        in_bundle = self.ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(
            self._cpus, placement_group_bundle_index=k
        )
        actor_cls = self.ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy=in_bundle)(RolloutWorker)
        return actor_cls.remote(
            self._make_venv,
            self._actor_copy,
            self._critic_copy,
            n_envs=self._n_envs,
            seed=seed,
            normalize_obs=self.obs_normalizer is not None,
            fast=self._fast,
        )

    def _await_started(self, k: int) -> None:
        """Wait until the replacement worker ``k`` runs (its bundle's CPU back, perhaps on another node after a
        node was lost); stop the workers and raise RuntimeError if it does not within ``schedule_timeout``
        seconds. A worker whose constructor failed counts as started: its error surfaces as a death."""
        ready, _ = self.ray.wait([self.workers[k].node_id.remote()], timeout=self.schedule_timeout)
        if not ready:
            self.close()
            raise RuntimeError(
                f"rollout worker {k} was replaced, and the replacement did not start within "
                f"{self.schedule_timeout:g} s (no CPU for it in the Ray cluster)"
            )

    def collect(
        self, actor: Actor, critic: Critic, n_steps: int, sample: Any = None, on_step: Any = None
    ) -> Rollout | None:
        """One rollout of ``n_steps`` steps in each of the K · n_envs envs (``sample`` and ``on_step`` are not
        used: each worker samples with its own copy of the policy)."""
        ray = self.ray
        weights = ray.put(
            {
                "actor": {k: v.detach().cpu() for k, v in actor.state_dict().items()},
                "critic": {k: v.detach().cpu() for k, v in critic.state_dict().items()},
            }
        )
        stats = self.obs_normalizer.rms.state_dict() if self.obs_normalizer is not None else None
        refs = [w.collect.remote(weights, stats, n_steps) for w in self.workers]
        results = []
        for k, ref in enumerate(refs):
            tries = 0
            while True:
                try:
                    results.append(ray.get(ref))
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    tries += 1
                    if tries > _MAX_RESTARTS_PER_ROLLOUT:
                        raise RuntimeError(
                            f"rollout worker {k} died {tries} times in one rollout; last error: {exc}"
                        ) from None
                    self.restarts[k] += 1
                    event = f"step {self.steps:,}: rollout worker {k} died ({type(exc).__name__}); replaced"
                    self.events.append(event)
                    _log.warning("natrl: %s", event)
                    self.workers[k] = self._spawn(k)
                    self._await_started(k)
                    ref = self.workers[k].collect.remote(weights, stats, n_steps)
        for res in results:
            if self.obs_normalizer is not None and res["obs_stats"] is not None:
                self.obs_normalizer.rms.merge(*res["obs_stats"])
            for ret, length in res["episodes"]:
                self.episode_returns.append(float(ret))
                self.episode_lengths.append(int(length))
            self.episodes += int(res["n_episodes"])
        self.worker_seconds = [float(r["seconds"]) for r in results]
        parts = [r["rollout"] for r in results]
        merged: dict[str, Tensor] = {}
        for key in parts[0]:
            dim = 0 if key in _ENV_AXIS_FIRST else 1
            merged[key] = torch.cat([p[key] for p in parts], dim=dim).to(self.device)
        if self.reward_scaler is not None:
            raw, ends = merged["rewards"].cpu().double().numpy(), merged["episode_end"].cpu().numpy()
            scaled = np.stack([self.reward_scaler(raw[t], ends[t]) for t in range(raw.shape[0])])
            merged["rewards"] = torch.as_tensor(scaled, dtype=merged["rewards"].dtype, device=self.device)
        self.steps += n_steps * self.n_envs
        return Rollout(**merged)

    def close(self) -> None:
        """Stop the workers: ``ray.kill`` ends their processes (their envs close with them) and frees their
        CPUs. Safe to call twice, and after Ray has been shut down."""
        workers, self.workers = self.workers, []
        group, self._cpus = self._cpus, None
        if not self.ray.is_initialized():  # shut down already, workers and all (ray.kill would start a new Ray)
            return
        for w in workers:
            try:
                self.ray.kill(w)
            except Exception:  # already dead
                pass
        if group is not None:
            self.ray.util.remove_placement_group(group)
