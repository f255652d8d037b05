"""Where a TRPO run's time goes: a cProfile of natrl TRPO with its preset, bucketed by phase.

    python scripts/profile_trpo.py --env Walker2d-v5 --steps 100000

Trains ``agents/trpo.toml``'s preset for ``--steps`` steps (one torch thread) under cProfile and
prints the training seconds and their split into: the simulator (MuJoCo's ``mj_step`` and the env's
Python around it, i.e. ``VectorEnv.step``), the rollout's policy and bookkeeping (the rest of
rollout collection), GAE and batch building, the critic fit, the natural direction (policy
gradient, Fisher-vector products and CG), the line search, and the rest. The split is by the
cumulative time of one function per phase, so the numbers add up to the total by construction
("rest" absorbs what no phase names); cProfile's overhead inflates Python-heavy phases a little.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from natrl.presets import load_preset
from natrl.rl import AGENTS
from natrl.rl.config import build_config

# (phase, function file suffix, function name) whose cumulative time defines the phase
PHASES = (
    ("simulator: VectorEnv.step", "gymnasium/vector/sync_vector_env.py", "step"),
    ("rollout: policy + bookkeeping", "natrl/rl/rollout.py", "collect"),
    ("critic fit", "natrl/rl/critic.py", "fit_critic"),
    ("natural direction: gradient, Fisher-vector products, CG", "natrl/rl/trpo.py", "_direction"),
    ("line search", "natrl/linesearch/backtracking.py", "backtracking"),
    ("update (all of it)", "natrl/rl/trpo.py", "_update"),
    ("MuJoCo mj_step (inside the simulator)", "~", "<built-in method mujoco._functions.mj_step>"),
)


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    total = 0.0
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and file.endswith(suffix):
            total += ct
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Walker2d-v5")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = load_preset("trpo", args.env, AGENTS["trpo"].config_cls)
    config = build_config(AGENTS["trpo"].config_cls, {**preset.hyperparameters, "torch_threads": 1})
    agent = AGENTS["trpo"](args.env, seed=args.seed, config=config, env_kwargs=preset.env_kwargs)
    _ = agent.collector  # build the vector env before the clock starts
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    agent.learn(args.steps)
    profile.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profile)
    learn = cumulative(stats, "natrl/rl/agent.py", "learn")
    cells = {label: cumulative(stats, suffix, name) for label, suffix, name in PHASES}
    sim, rollout, update = (
        cells["simulator: VectorEnv.step"],
        cells["rollout: policy + bookkeeping"],
        cells["update (all of it)"],
    )
    critic, direction, search = (cells["critic fit"], cells[PHASES[3][0]], cells["line search"])
    rows = [
        ("simulator (VectorEnv.step)", sim),
        ("  of which MuJoCo mj_step", cells[PHASES[6][0]]),
        ("rollout policy and bookkeeping", rollout - sim),
        ("critic fit", critic),
        ("natural direction: gradient, Fisher-vector products, CG", direction),
        ("line search", search),
        ("rest of the update (advantages, batch, statistics)", update - critic - direction - search),
        ("rest of learn (GAE, logging, callbacks)", learn - rollout - update),
    ]
    steps = agent.num_timesteps
    source = preset.source.name if preset.source else ""
    print(f"natrl TRPO {args.env}, preset {source}[{preset.table}], {steps:,} steps in {wall:.1f} s under cProfile "
          f"({steps / wall:,.0f} steps/s)\n")  # fmt: skip
    print("| phase | seconds | share |\n|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {seconds / learn:.0%} |")
    print(f"| **learn** | **{learn:.1f}** | 100% |")
    agent.close()


if __name__ == "__main__":
    main()
