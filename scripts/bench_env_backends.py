"""TRPO's steps/s by env backend (``vec_env``: sync, async, envpool, mujoco) with its preset, one torch thread.

    python scripts/bench_env_backends.py Walker2d-v5
    python scripts/bench_env_backends.py Ant-v5 --agents-dir agents/workers   # the large-batch preset
    python scripts/bench_env_backends.py Hopper-v5 --backends sync,mujoco --steps 100000

Each row trains ``agents/trpo.toml``'s preset (or that of ``--agents-dir``) for one warm-up update and
then at least ``--steps`` steps (30k by default; whole updates), and prints steps/s by wall clock and by the
process's CPU time (which leaves out the async env processes and counts EnvPool's threads). EnvPool needs
``pip install 'natrl[envpool]'``.
"""

from __future__ import annotations

import argparse
import time

import torch

from natrl.presets import load_preset
from natrl.rl import AGENTS
from natrl.rl.config import build_config

BACKENDS = ("sync", "async", "envpool")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("envs", nargs="+", help="Gymnasium environment ids")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated vec_env values")
    parser.add_argument("--agents-dir", default=None, help="folder of the <algo>.toml presets (default: agents/)")
    parser.add_argument("--steps", type=int, default=30_000, help="timed steps at least (whole updates)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cls = AGENTS["trpo"]
    print("| env | backend | envs × steps | steps/s (wall) | steps/s (process CPU) |\n|---|---|---|---|---|")
    for env in args.envs:
        preset = load_preset("trpo", env, cls.config_cls, directory=args.agents_dir)
        for backend in args.backends.split(","):
            config = build_config(cls.config_cls, {**preset.hyperparameters, "vec_env": backend})
            agent = cls(env, seed=0, config=config, env_kwargs=preset.env_kwargs)
            batch = agent.config.n_envs * agent.config.n_steps
            agent.learn(batch)
            steps = max(3 * batch, args.steps // batch * batch)
            wall, cpu = time.perf_counter(), time.process_time()
            agent.learn(steps, reset_num_timesteps=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            shape = f"{agent.config.n_envs} × {agent.config.n_steps}"
            print(f"| {env} | {backend} | {shape} | {steps / wall:,.0f} | {steps / cpu:,.0f} |", flush=True)
            agent.close()


if __name__ == "__main__":
    main()
