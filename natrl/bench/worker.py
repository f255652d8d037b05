"""One benchmark job: train, evaluate on a schedule, time, and return a result row.

The same evaluation code serves both libraries: :func:`evaluate_policy` runs
whole episodes of a separate, freshly made env with a deterministic policy
given as a callable ``obs -> action``; episode i is seeded ``10_000 + seed + i``
(natrl's own ``agent.evaluate`` convention), so every evaluation of every run
of a seed sees the same initial states.

Timing: ``torch.set_num_threads(1)`` in every job; the training clock covers
``learn`` only (not model construction) and is paused during evaluations, so
steps/s and time-to-threshold measure training alone. CPU seconds of the
process over the same intervals are recorded as well: on a shared machine they
are less disturbed by other load than wall-clock seconds.

:func:`run_job` never raises: an exception becomes a row with ``status="failed"``
and the error message, so one broken job does not stop a sweep.
"""

from __future__ import annotations

import math
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from natrl.bench.jobs import Job
from natrl.bench.provenance import run_versions

__all__ = ["EVAL_SEED_OFFSET", "EvalPoint", "Evaluator", "evaluate_policy", "failed_row", "run_job"]

EVAL_SEED_OFFSET = 10_000
Policy = Callable[[np.ndarray, Any], tuple[Any, Any]]
"""``policy(observation, state) -> (action, state)``, deterministic; the state is a recurrent policy's (None at the
start of an episode, passed back unchanged by a policy without memory), as stable-baselines3's ``predict`` has it."""


def evaluate_policy(policy: Policy, make_env: Callable[[], Any], episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of ``episodes`` whole episodes on a fresh env.

    Args:
        policy: maps one raw observation and the policy's state to one action and the next state
            (:data:`Policy`).
        make_env: builds the evaluation env (closed afterwards).
        episodes: number of episodes.
        seed: episode i is reset with ``seed + i``.
    """
    env = make_env()
    returns: list[float] = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done, state = 0.0, False, None
            while not done:
                action, state = policy(obs, state)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = bool(terminated or truncated)
            returns.append(total)
    finally:
        env.close()
    return returns


@dataclass
class EvalPoint:
    """One evaluation: after ``steps`` env steps and ``train_seconds`` of training."""

    steps: int
    train_seconds: float
    mean: float
    std: float


@dataclass
class Evaluator:
    """Evaluates on a step schedule and keeps the training clock (paused while evaluating).

    Args:
        policy: the deterministic policy to evaluate (reads the live model).
        make_env: builds the evaluation env.
        episodes: episodes per evaluation.
        seed: the first episode's seed.
        every: steps between periodic evaluations (0: none).
        total_steps: the budget; periodic evaluations stop short of it (the final one covers it).
        threshold: return for time-to-threshold, or None.
    """

    policy: Policy
    make_env: Callable[[], Any]
    episodes: int
    seed: int
    every: int
    total_steps: int
    threshold: float | None
    points: list[EvalPoint] = field(default_factory=list)
    eval_seconds: float = 0.0
    eval_cpu_seconds: float = 0.0
    t0: float = 0.0
    cpu0: float = 0.0
    reached: EvalPoint | None = None
    final_train_seconds: float = math.nan
    final_train_cpu_seconds: float = math.nan

    def start(self) -> None:
        """Start the training clock (right before ``learn``)."""
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def train_seconds(self) -> float:
        return time.perf_counter() - self.t0 - self.eval_seconds

    def train_cpu_seconds(self) -> float:
        return time.process_time() - self.cpu0 - self.eval_cpu_seconds

    def finish(self, steps: int) -> EvalPoint:
        """Stop the training clock (right after ``learn``) and run the final evaluation."""
        self.final_train_seconds, self.final_train_cpu_seconds = self.train_seconds(), self.train_cpu_seconds()
        return self.evaluate(steps)

    def due(self, steps: int) -> bool:
        """Whether a periodic evaluation is due after ``steps`` steps."""
        if self.every <= 0 or steps >= self.total_steps:
            return False
        last = self.points[-1].steps if self.points else 0
        return steps // self.every > last // self.every

    def evaluate(self, steps: int) -> EvalPoint:
        """Evaluate now (the clock is paused meanwhile) and record the point."""
        t, cpu = time.perf_counter(), time.process_time()
        train_s = t - self.t0 - self.eval_seconds
        returns = evaluate_policy(self.policy, self.make_env, self.episodes, self.seed)
        self.eval_seconds += time.perf_counter() - t
        self.eval_cpu_seconds += time.process_time() - cpu
        point = EvalPoint(int(steps), train_s, float(np.mean(returns)), float(np.std(returns)))
        self.points.append(point)
        if self.reached is None and self.threshold is not None and point.mean >= self.threshold:
            self.reached = point
        return point


def _base_row(job: Job) -> dict[str, Any]:
    return {
        "index": job.index,
        "library": job.library,
        "algo": job.algo,
        "env": job.env_id,
        "seed": job.seed,
        "status": "running",
        "error": None,
        "budget": job.total_steps,
        "threshold": job.expected_return,
        "preset": job.preset,
        "device": job.device if job.library != "tianshou" else "cpu",
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": run_versions(job.library),
    }


def failed_row(job: Job, error: str, tb: str | None = None) -> dict[str, Any]:
    """The row of a job that failed before or outside :func:`run_job` (a crashed worker)."""
    return {**_base_row(job), "status": "failed", "error": error, "traceback": tb}


def _wrapper_class(job: Job) -> Any:
    """The preset's env wrapper class (``"module:Class"``), or None.

    A preset is a file, so its wrapper is resolved from data only (:func:`natrl.rl.trusted.resolve_class`:
    gymnasium's and natrl's wrapper classes); the module of any other is not imported."""
    if job.wrapper is None:
        return None
    import gymnasium as gym

    from natrl.rl.trusted import resolve_class

    hint = "natrl bench runs only gymnasium's and natrl's wrappers; train with your own by natrl train --wrapper"
    return resolve_class(job.wrapper, gym.Wrapper, field=f"the wrapper of preset {job.preset or '(none)'}", hint=hint)


def evaluation_env_factory(job: Job) -> Callable[[], Any]:
    """The evaluation env factory, the same for both libraries: ``gymnasium.make`` with the preset's
    make-kwargs and wrapper (for Atari: rewards clipped as in training)."""
    from natrl.rl.env import env_factory

    return env_factory(job.env_id, job.env_kwargs, _wrapper_class(job))


def _train_natrl(job: Job, ev_args: dict[str, Any]) -> tuple[Evaluator, int, str]:
    from natrl import __version__
    from natrl.rl import AGENTS
    from natrl.rl.config import build_config

    cls = AGENTS[job.algo]
    # one torch thread whatever the preset says, as for the SB3 run
    config = build_config(cls.config_cls, {**job.hyperparameters, "torch_threads": 1})
    agent = cls(job.env_id, seed=job.seed, device=job.device, config=config, env_kwargs=job.env_kwargs,
                wrapper_class=_wrapper_class(job), policy=job.policy, policy_kwargs=job.policy_kwargs)  # fmt: skip
    try:
        ev = Evaluator(
            lambda obs, state: agent.predict(obs, state, deterministic=True), evaluation_env_factory(job), **ev_args
        )

        def callback(a: Any, stats: dict[str, float]) -> bool:
            if ev.due(a.num_timesteps):
                ev.evaluate(a.num_timesteps)
            return True

        # build (and reset) the training vector env before the clock starts, as SB3 does in its constructor
        _ = agent.collector
        ev.start()
        agent.learn(job.total_steps, callback=callback)
        steps = agent.num_timesteps
        ev.finish(steps)
    finally:
        agent.close()
    return ev, steps, f"natrl {__version__}"


def _train_sb3(job: Job, ev_args: dict[str, Any]) -> tuple[Evaluator, int, str]:
    from stable_baselines3.common.callbacks import BaseCallback

    from natrl.bench.peers import PEER_NAMES, PeerSpec, build_model

    if job.peer is None:
        raise ValueError(f"job {job.name} has no translated stable-baselines3 spec")
    spec = PeerSpec.from_dict(job.peer)
    model, vec_normalize = build_model(
        spec, job.env_id, job.seed, job.env_kwargs, _wrapper_class(job), device=job.device
    )

    def policy(obs: np.ndarray, state: Any) -> tuple[Any, Any]:
        if vec_normalize is not None:
            obs = vec_normalize.normalize_obs(obs)
        return model.predict(obs, state, deterministic=True)

    ev = Evaluator(policy, evaluation_env_factory(job), **ev_args)

    class _EvalCallback(BaseCallback):
        # on_rollout_start follows the previous update: the policy has learnt from num_timesteps steps
        def _on_rollout_start(self) -> None:
            if ev.due(self.model.num_timesteps):
                ev.evaluate(self.model.num_timesteps)

        def _on_step(self) -> bool:
            return True

    try:
        ev.start()
        model.learn(job.total_steps, callback=_EvalCallback(), progress_bar=False)
        steps = int(model.num_timesteps)
        ev.finish(steps)
    finally:
        model.get_env().close()
    name = PEER_NAMES.get(spec.algo_class.rpartition(".")[2] if spec.policy else job.algo, spec.algo_class)
    module = "sb3_contrib" if spec.algo_class.startswith("sb3_contrib") else "stable_baselines3"
    version = __import__(module).__version__
    return ev, steps, f"{name} {version}"


def _train_tianshou(job: Job, ev_args: dict[str, Any]) -> tuple[Evaluator, int, str]:
    import tianshou

    from natrl.bench.tianshou_peer import TIANSHOU_NAMES, TianshouSpec, build_tianshou

    if job.peer is None:
        raise ValueError(f"job {job.name} has no translated tianshou spec")
    spec = TianshouSpec.from_dict(job.peer)
    run = build_tianshou(spec, job.env_id, job.seed, job.total_steps, job.env_kwargs, _wrapper_class(job))
    ev = Evaluator(run.predict, evaluation_env_factory(job), **ev_args)

    def before_collect(env_step: int) -> None:  # after the previous update: learnt from env_step steps
        if ev.due(env_step):
            ev.evaluate(env_step)

    try:
        ev.start()
        steps = run.learn(before_collect)
        ev.finish(steps)
    finally:
        run.close()
    return ev, steps, f"{TIANSHOU_NAMES[job.algo]} {tianshou.__version__}"


_TRAIN = {"natrl": _train_natrl, "sb3": _train_sb3, "tianshou": _train_tianshou}


def run_job(job: Job) -> dict[str, Any]:
    """Run one job and return its result row (never raises).

    The row holds: library, algo, env, seed, status ("ok" or "failed"), error,
    steps (done), budget, train_seconds / train_cpu_seconds (learn only, evaluations
    excluded), eval_seconds, setup_seconds, wall_seconds (the whole job),
    steps_per_second (steps / train_seconds), final_eval_mean / final_eval_std,
    threshold, threshold_steps / threshold_seconds (first evaluation with mean ≥
    threshold; None if never), curve (every evaluation), implementation, host,
    hyperparameters and, for a peer, the translated spec ``peer``; date (when the job
    started) and versions (:func:`natrl.bench.provenance.run_versions`, read again after
    training so that lazily imported libraries count). The driver adds the sweep's id,
    commit, dirty flag and command line (:func:`natrl.bench.run`).
    """
    t_job = time.perf_counter()
    row = _base_row(job)
    row.update(host=platform.node(), hyperparameters=job.hyperparameters, peer=job.peer)
    try:
        import torch

        torch.set_num_threads(1)
        ev_args: dict[str, Any] = dict(
            episodes=job.eval_episodes,
            seed=EVAL_SEED_OFFSET + job.seed,
            every=job.eval_every,
            total_steps=job.total_steps,
            threshold=job.expected_return,
        )
        if job.library not in _TRAIN:
            raise ValueError(f"unknown library {job.library!r}")
        train = _TRAIN[job.library]
        t_setup = time.perf_counter()
        ev, steps, implementation = train(job, ev_args)
        train_s, train_cpu = ev.final_train_seconds, ev.final_train_cpu_seconds
        final = ev.points[-1]
        row.update(
            status="ok",
            implementation=implementation,
            steps=steps,
            train_seconds=train_s,
            train_cpu_seconds=train_cpu,
            eval_seconds=ev.eval_seconds,
            # model construction and teardown
            setup_seconds=time.perf_counter() - t_setup - train_s - ev.eval_seconds,
            steps_per_second=steps / train_s if train_s > 0 else math.nan,
            final_eval_mean=final.mean,
            final_eval_std=final.std,
            threshold_steps=ev.reached.steps if ev.reached else None,
            threshold_seconds=ev.reached.train_seconds if ev.reached else None,
            curve=[vars(p).copy() for p in ev.points],
            torch_threads=torch.get_num_threads(),
        )
    except Exception as exc:  # a failed job is a result, not a crash of the sweep
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    row["versions"] = run_versions(job.library)  # mujoco / ale-py are imported by the env, if at all
    row["wall_seconds"] = time.perf_counter() - t_job
    return row
