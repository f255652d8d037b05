"""Where a ``natrl train`` run's CPU time goes, per environment step: MuJoCo, the env's Python, the rollout
policy, the critic regression, the natural direction and the rest.

    OMP_NUM_THREADS=1 python scripts/profile_train.py --mode timers -- \\
        trpo Walker2d-v5 --steps 61440 --eval-every 0 -q --set 'vec_env="sync"'
    OMP_NUM_THREADS=1 python scripts/profile_train.py --mode cprofile --top 40 -- \\
        trpo Walker2d-v5 --steps 61440 --eval-every 0 -q

Runs ``natrl train`` (the arguments after ``--``; ``--run-dir`` defaults to a temporary folder) in this
process and splits the CPU time of the agent's ``learn`` call (the training, without the final evaluation)
into buckets, each divided by the environment steps learnt:

* ``mujoco``: MuJoCo's ``mj_step`` and ``mj_rnePostConstraint`` (whoever calls them);
* ``env python``: the vector env's ``step`` (gymnasium's ``SyncVectorEnv`` or natrl's ``MujocoSameStep``) less MuJoCo;
* ``policy sample``: the rollout sampler (the actor's forward and the draw, once per vector step);
* ``rollout rest``: ``RolloutCollector.collect`` less env steps and samples: the loop's bookkeeping
  (normalisers, checks, buffers) and the batched forwards after the loop (log-probabilities, values);
* ``critic``: ``fit_critic`` (the critic regression);
* ``natural``: the agent's ``_policy_step`` (policy gradient, Fisher-vector products, CG, line search);
* ``other``: the rest of ``learn`` (GAE, batch, statistics, logging, checkpoints).

``--mode timers`` wraps those functions in process-CPU-time clocks (about 1 µs per wrapped call, a few
per env step); ``--mode cprofile`` runs cProfile with the process CPU time as its clock and reads the same
buckets from the cumulative times (cProfile inflates every Python call); ``--mode plain`` wraps only
``learn`` (the total without any instrumentation inside it).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

BUCKETS = ("mujoco", "env python", "policy sample", "rollout rest", "critic", "natural", "other")
clock = time.process_time
spent: dict[str, float] = defaultdict(float)  # every wrapped call
window: dict[str, float] = defaultdict(float)  # the wrapped calls inside learn (not the final evaluation's)
learnt = {"steps": 0}
profile: cProfile.Profile | None = None  # cprofile mode: enabled inside learn only


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += clock() - t

    return wrapper


def patch(mode: str) -> None:
    """Wrap the functions of the buckets (``timers``) or only ``learn`` (``plain``, ``cprofile``)."""
    from natrl.rl.agent import OnPolicyAgent

    learn = OnPolicyAgent.learn

    @functools.wraps(learn)
    def counted_learn(self: OnPolicyAgent, *args: Any, **kwargs: Any) -> Any:
        before, start = self.num_timesteps, dict(spent)
        if profile is not None:
            profile.enable()
        t = clock()
        try:
            return learn(self, *args, **kwargs)
        finally:
            window["learn"] += clock() - t
            if profile is not None:
                profile.disable()
            for k, v in spent.items():
                window[k] += v - start.get(k, 0.0)
            learnt["steps"] += self.num_timesteps - before

    OnPolicyAgent.learn = counted_learn  # type: ignore[method-assign]
    if mode != "timers":
        return
    import mujoco
    from gymnasium.vector import SyncVectorEnv

    import natrl.rl.accel as accel
    import natrl.rl.trpo as trpo
    from natrl.rl.mujoco_env import MujocoSameStep
    from natrl.rl.rollout import RolloutCollector

    mujoco.mj_step = timed("mujoco", mujoco.mj_step)  # natrl's backend binds it when built, gymnasium per call
    mujoco.mj_rnePostConstraint = timed("mujoco", mujoco.mj_rnePostConstraint)
    SyncVectorEnv.step = timed("venv.step", SyncVectorEnv.step)  # type: ignore[method-assign]
    MujocoSameStep.step = timed("venv.step", MujocoSameStep.step)  # type: ignore[method-assign]
    RolloutCollector.collect = timed("collect", RolloutCollector.collect)  # type: ignore[method-assign]
    numpy_sampler = accel.numpy_sampler

    def timed_sampler(*args: Any, **kwargs: Any) -> Any:
        sample = numpy_sampler(*args, **kwargs)
        return None if sample is None else timed("policy sample", sample)

    accel.numpy_sampler = timed_sampler
    trpo.fit_critic = timed("critic", trpo.fit_critic)
    for cls in (trpo.TRPO, trpo.NPG):
        cls._policy_step = timed("natural", cls._policy_step)  # type: ignore[method-assign]


def buckets_from_timers() -> dict[str, float]:
    spent = window
    out = {
        "mujoco": spent["mujoco"],
        "env python": spent["venv.step"] - spent["mujoco"],
        "policy sample": spent["policy sample"],
        "rollout rest": spent["collect"] - spent["venv.step"] - spent["policy sample"],
        "critic": spent["critic"],
        "natural": spent["natural"],
    }
    out["other"] = spent["learn"] - sum(out.values())
    return out


def buckets_from_profile(stats: pstats.Stats) -> dict[str, float]:
    def cum(suffix: str, name: str, own: bool = False) -> float:
        total = 0.0
        for (file, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if func == name and file.endswith(suffix):
                total += tt if own else ct
        return total

    mj = cum("~", "<built-in method mujoco._functions.mj_step>", own=True)
    mj += cum("~", "<built-in method mujoco._functions.mj_rnePostConstraint>", own=True)
    venv = cum("gymnasium/vector/sync_vector_env.py", "step") + cum("natrl/rl/mujoco_env.py", "step")
    sample = cum("natrl/rl/accel.py", "sample")
    collect = cum("natrl/rl/rollout.py", "collect")
    out = {
        "mujoco": mj,
        "env python": venv - mj,
        "policy sample": sample,
        "rollout rest": collect - venv - sample,
        "critic": cum("natrl/rl/critic.py", "fit_critic"),
        "natural": cum("natrl/rl/trpo.py", "_policy_step"),
    }
    out["other"] = cum("natrl/rl/agent.py", "learn") - sum(out.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("timers", "cprofile", "plain"), default="timers")
    parser.add_argument("--label", default="", help="the row's first cell (default: the train arguments)")
    parser.add_argument("--top", type=int, default=0, help="cprofile: also print the N largest own times")
    parser.add_argument("train", nargs=argparse.REMAINDER, help="natrl train's arguments, after --")
    args = parser.parse_args()
    train = [a for a in args.train if a != "--"] if args.train[:1] == ["--"] else args.train
    import torch

    from natrl.cli import main as natrl_main

    global profile
    torch.set_num_threads(1)
    patch(args.mode)
    if args.mode == "cprofile":
        profile = cProfile.Profile(time.process_time)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", *train] + ([] if "--run-dir" in train else ["--run-dir", f"{tmp}/run"])
        code = natrl_main(argv)
    if code:
        raise SystemExit(code)
    steps = learnt["steps"]
    learn = window["learn"]
    if profile is not None:
        stats = pstats.Stats(profile)
        cells = buckets_from_profile(stats)
        learn = sum(cells.values())
    elif args.mode == "timers":
        cells = buckets_from_timers()
    else:
        cells = {}
    label = args.label or " ".join(train)
    per = 1e6 / steps
    row = [label, args.mode, f"{steps:,}", f"{steps / learn:,.0f}", f"{learn * per:.1f}"]
    row += [f"{cells[b] * per:.1f}" if cells else "" for b in BUCKETS]
    outside = (learn - cells["mujoco"]) / learn if cells else None
    row.append(f"{outside:.0%}" if outside is not None else "")
    print("| run | mode | env steps | steps/s (CPU) | µs/step: total | " + " | ".join(BUCKETS) + " | outside MuJoCo |")
    print("|---" * (len(row)) + "|")
    print("| " + " | ".join(row) + " |", flush=True)
    if profile is not None and args.top:
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
