"""The jobs of a benchmark sweep: one (library, algorithm, environment, seed) each.

A job carries everything a worker process needs, resolved in the driver: the
natrl preset's hyperparameters (the source of truth for every library), the
step budget, the evaluation schedule and threshold, and for a peer's job the
translated arguments (:mod:`natrl.bench.peers` for stable-baselines3,
:mod:`natrl.bench.tianshou_peer` for tianshou). Workers
therefore need neither the ``agents/`` folder nor the driver's command line,
which keeps Ray tasks on remote nodes self-contained.

Jobs are ordered (env, seed, algo, library) so that each natrl run is directly
followed by its peers and slow drift of the machine hits them alike.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from natrl.bench.peers import PeerSpec
    from natrl.bench.tianshou_peer import TianshouSpec

__all__ = ["LIBRARIES", "PEERS", "BenchError", "Job", "parse_peers", "plan_jobs", "plan_warnings"]

LIBRARIES = ("natrl", "sb3", "tianshou")
PEERS = ("sb3", "tianshou")


class BenchError(ValueError):
    """A benchmark request that cannot run (bad option, missing optional dependency)."""


@dataclass(frozen=True)
class Job:
    """One training run of the sweep.

    Attributes:
        index: position in the sweep (0-based); results are reported in this order.
        library: "natrl", "sb3" or "tianshou".
        algo: natrl algorithm name ("trpo", "npg", "ppo").
        env_id: Gymnasium environment id.
        seed: training seed; evaluation episode i uses seed 10_000 + seed + i.
        total_steps: environment steps to train (rounded up to whole rollouts by both libraries).
        eval_every: steps between periodic evaluations (0: only the final one).
        eval_episodes: deterministic episodes per evaluation.
        hyperparameters: the natrl preset's config fields (TOML values).
        expected_return: the preset's threshold for time-to-threshold, if any.
        preset: "<file>[<table>]" the hyperparameters came from.
        peer: for a peer's job, the translated spec (:meth:`natrl.bench.peers.PeerSpec.to_dict` for sb3,
            :meth:`natrl.bench.tianshou_peer.TianshouSpec.to_dict` for tianshou).
        env_kwargs: the preset's keyword arguments of ``gym.make`` (both libraries, training and evaluation).
        wrapper: the preset's env wrapper as ``"module:Class"`` (both libraries, training and evaluation).
        policy: the preset's built-in policy name (None: MlpPolicy/CnnPolicy), and its ``policy_kwargs``.
        device: the torch device natrl and SB3 train on ("cpu" or "cuda"; tianshou's peer runs on the CPU).
    """

    index: int
    library: str
    algo: str
    env_id: str
    seed: int
    total_steps: int
    eval_every: int
    eval_episodes: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    expected_return: float | None = None
    preset: str = ""
    peer: dict[str, Any] | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    wrapper: str | None = None
    policy: str | None = None
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def name(self) -> str:
        """A short label, e.g. ``natrl trpo CartPole-v1 s0``."""
        return f"{self.library} {self.algo} {self.env_id} s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_peers(against: str | Sequence[str] | None) -> tuple[str, ...]:
    """The peer libraries of ``--against``: ``"sb3"``, ``"tianshou"`` or ``"sb3,tianshou"`` (or a sequence).

    Raises:
        BenchError: an unknown peer.
    """
    if not against:
        return ()
    names = against.split(",") if isinstance(against, str) else list(against)
    peers = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise BenchError(f"unknown peer {', '.join(map(repr, unknown))}; the peers are {', '.join(PEERS)}")
    return peers


def plan_jobs(
    algos: Sequence[str],
    envs: Sequence[str],
    seeds: Sequence[int],
    *,
    against: str | Sequence[str] | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
    eval_episodes: int = 10,
    agents_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    policy: str | None = None,
    device: str = "cpu",
) -> list[Job]:
    """The sweep's jobs in (env, seed, algo, library) order.

    Args:
        algos: natrl algorithm names (keys of ``natrl.rl.AGENTS``).
        envs: environment ids. An unknown id is not an error here: its jobs fail
            and are reported as failed, the others still run.
        seeds: training seeds.
        against: the peers to run after each natrl job that has one: "sb3" (sb3-contrib TRPO, SB3 PPO),
            "tianshou" (its TRPO, NPG, PPO) or "sb3,tianshou".
        steps: step budget for every job (default: each preset's ``total_steps``).
        eval_every: steps between evaluations (default: a tenth of the budget; 0: final only).
        eval_episodes: episodes per evaluation.
        agents_dir: folder of the agent-spec TOML files.
        overrides: ``KEY=VALUE`` hyperparameters applied on top of every preset (``natrl train``'s
            ``--set`` syntax), e.g. ``fast_paths=false`` to time the generic path; the peers get the
            translated result.
        policy: a built-in policy name for every job instead of the presets' (their ``policy_kwargs``
            are kept only when the name is the preset's own).
        device: torch device of the natrl and SB3 jobs ("cpu", "cuda", "cuda:1"); tianshou's stay on the CPU.

    Raises:
        BenchError: unknown algorithm or peer, or an invalid preset value.
    """
    from natrl.bench.peers import translate
    from natrl.bench.tianshou_peer import translate_tianshou
    from natrl.presets import load_preset
    from natrl.rl import AGENTS
    from natrl.rl.config import build_config, parse_overrides

    unknown = [a for a in algos if a not in AGENTS]
    if unknown:
        raise BenchError(f"unknown algorithm {', '.join(unknown)}; choose from {', '.join(AGENTS)}")
    peers = parse_peers(against)
    if not algos or not envs or not seeds:
        raise BenchError("--algos, --envs and --seeds each need at least one value")
    if eval_episodes < 1:
        raise BenchError(f"--eval-episodes must be >= 1, got {eval_episodes}")
    if steps is not None and steps < 1:
        raise BenchError(f"--steps must be >= 1, got {steps}")
    if eval_every is not None and eval_every < 0:
        raise BenchError(f"--eval-every must be >= 0, got {eval_every}")
    _check_device(device)
    jobs: list[Job] = []
    spaces_cache: dict[str, tuple[Any, int | None]] = {}
    for env_id in envs:
        for seed in seeds:
            for algo in algos:
                cls = AGENTS[algo]
                preset = load_preset(algo, env_id, cls.config_cls, directory=agents_dir)
                try:
                    extra = parse_overrides(overrides, cls.config_cls, algo)
                except ValueError as exc:
                    raise BenchError(str(exc)) from None
                try:
                    config = build_config(cls.config_cls, {**preset.hyperparameters, **extra})
                except ValueError as exc:
                    raise BenchError(f"preset {preset.source}[{preset.table}]: {exc}") from None
                if policy is not None and policy != preset.policy:
                    from natrl.rl.policies import BUILTIN_POLICIES

                    if policy not in BUILTIN_POLICIES:
                        raise BenchError(f"unknown policy {policy!r}; built-in policies: {', '.join(BUILTIN_POLICIES)}")
                    preset = dataclasses.replace(preset, policy=policy, policy_kwargs={})
                budget = steps if steps is not None else preset.total_steps
                every = max(1, budget // 10) if eval_every is None else eval_every
                common: dict[str, Any] = dict(
                    algo=algo,
                    env_id=env_id,
                    seed=int(seed),
                    total_steps=int(budget),
                    eval_every=int(every),
                    eval_episodes=int(eval_episodes),
                    hyperparameters=config.to_dict(),
                    expected_return=preset.expected_return,
                    preset=f"{preset.source.name if preset.source else '<defaults>'}[{preset.table}]",
                    env_kwargs=dict(preset.env_kwargs),
                    wrapper=preset.wrapper,
                    policy=preset.policy,
                    policy_kwargs=dict(preset.policy_kwargs),
                    device=device,
                )
                jobs.append(Job(index=len(jobs), library="natrl", **common))
                for library in peers:
                    spec: PeerSpec | TianshouSpec | None
                    if library == "sb3":
                        obs_space, dims = _env_spaces(env_id, preset.env_kwargs, preset.wrapper, spaces_cache)
                        spec = translate(
                            algo,
                            config,
                            preset.policy,
                            preset.policy_kwargs,
                            action_dims=dims if algo == "trpo" else 1,
                            observation_space=obs_space,
                        )
                    else:
                        spec = translate_tianshou(algo, config, preset.policy, preset.policy_kwargs)
                    if spec is not None:
                        jobs.append(Job(index=len(jobs), library=library, peer=spec.to_dict(), **common))
    return jobs


def _env_spaces(
    env_id: str, env_kwargs: dict[str, Any], wrapper: str | None, cache: dict[str, tuple[Any, int | None]]
) -> tuple[Any, int | None]:
    """The observation space of the env as the jobs make it (the preset's make-kwargs and wrapper) and k, the
    dimensions of its Box action space (1 for any other space); (None, None) if it cannot be made.

    Planning imports nothing a preset names: its wrapper is resolved among the classes a file may name
    (:func:`natrl.rl.trusted.resolve_class`: gymnasium's and natrl's wrappers); for any other wrapper the
    spaces are unknown here, as for an env that cannot be made."""
    key = f"{env_id}|{sorted(env_kwargs.items())!r}|{wrapper}"
    if key not in cache:
        import gymnasium as gym
        import numpy as np

        from natrl.rl.env import env_factory
        from natrl.rl.trusted import resolve_class

        try:
            wrapper_class = None
            if wrapper is not None:
                wrapper_class = resolve_class(wrapper, gym.Wrapper, field="the preset's wrapper", hint="")
            env = env_factory(env_id, env_kwargs, wrapper_class)()
        except Exception:  # an env that needs --gym-packages, bad kwargs, another wrapper: the job reports it
            cache[key] = (None, None)
        else:
            space = env.action_space
            cache[key] = (env.observation_space, int(np.prod(space.shape)) if isinstance(space, gym.spaces.Box) else 1)
            env.close()
    return cache[key]


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BenchError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise BenchError(f"--device {device!r}: natrl bench runs on cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {device!r}: torch sees no CUDA device here (torch.cuda.is_available() is False)")


def plan_warnings(
    envs: Sequence[str], algos: Sequence[str], against: Sequence[str] | None, jobs: Sequence[Job]
) -> list[str]:
    """What a run of ``jobs`` would find out job by job, for ``--dry-run``: env ids that are not registered (their
    jobs fail) and algorithms that the ``against`` peers do not have (their natrl jobs run alone)."""
    import gymnasium as gym

    from natrl.rl.env import register_env_id

    lines = []
    for env_id in envs:
        try:
            known = register_env_id(env_id) in gym.registry
        except ValueError:  # a module:Env-v0 id whose module does not import
            known = False
        if not known:
            lines.append(f"warning: {env_id!r} is not a registered environment id; its jobs will fail")
    if against:
        with_peer = {job.algo for job in jobs if job.library != "natrl"}
        lines += [f"note: --against {','.join(against)} has no peer for {algo}; its natrl jobs run alone"
                  for algo in algos if algo not in with_peer]  # fmt: skip
    return lines
