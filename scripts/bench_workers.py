"""Throughput of one agent with its rollouts on K Ray workers, and where the time goes.

For each worker count K (0: the rollouts in the learner's process) the script trains TRPO for a few
updates of the same total batch B = K · n_envs · n_steps (n_steps scaled so that B is fixed) and
reports per update: the wall time, the learner's update time, the rollout time seen by the learner,
the workers' own rollout time (env steps and inference), and the transfer/scheduling overhead
(rollout time seen by the learner − the slowest worker's time). From those measured costs the
expected throughput on a cluster with K workers follows as

    steps/s(K) = B / (B · c_step / K + t_x(K) + t_u(B)),

c_step the cost of one env step with inference on one core, t_x the transfer and scheduling time per
update, t_u the learner's update time for a batch of B steps.

    python scripts/bench_workers.py --env Ant-v5 --workers 0,1,2 --batch 16384 --updates 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def run(env: str, workers: int, batch: int, n_envs: int, updates: int, seed: int, vec_env: str = "sync") -> dict:
    from natrl import TRPO

    k = max(workers, 1)
    n_steps = batch // (k * n_envs)
    agent = TRPO(env, seed=seed, n_envs=n_envs, n_steps=n_steps, workers=workers, torch_threads=1,
                 normalize_obs=True, critic_epochs=5, critic_batch_size=1024, vec_env=vec_env)  # fmt: skip
    rows: list[dict] = []

    def record(a, stats) -> bool:
        coll = a.collector
        worker_s = max(getattr(coll, "worker_seconds", [0.0]) or [0.0])
        rows.append(
            dict(
                rollout_s=stats["rollout_seconds"],
                update_s=stats["update_seconds"],
                worker_s=worker_s if workers else stats["rollout_seconds"],
            )
        )
        return True

    _ = agent.collector  # workers started and envs reset before the clock
    agent.learn(n_steps * k * n_envs, callback=record)  # one warm-up update (Ray's first calls, imports)
    rows.clear()
    t0 = time.perf_counter()
    agent.learn(updates * n_steps * k * n_envs, callback=record, reset_num_timesteps=False)
    wall = time.perf_counter() - t0
    agent.close()
    r = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    steps = updates * n_steps * k * n_envs
    return {
        "env": env,
        "workers": workers,
        "vec_env": vec_env,
        "batch": n_steps * k * n_envs,
        "steps_per_second": steps / wall,
        "update_seconds": r["update_s"],
        "rollout_seconds": r["rollout_s"],
        "worker_rollout_seconds": r["worker_s"],
        "transfer_seconds": max(0.0, r["rollout_s"] - r["worker_s"]) if workers else 0.0,
        "learner_share": r["update_s"] / (r["update_s"] + r["rollout_s"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Ant-v5")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vec-env", default="sync", help="each collector's vector env: sync or async (a process per env)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [
        run(args.env, int(w), args.batch, args.n_envs, args.updates, args.seed, args.vec_env)
        for w in args.workers.split(",")
    ]
    print("| env | workers | vector env | batch | steps/s | learner update s | rollout s (learner) | "
          "worker rollout s | transfer s | learner share |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['env']} | {r['workers']} | {r['vec_env']} | {r['batch']:,} | {r['steps_per_second']:,.0f} "
            f"| {r['update_seconds']:.2f} | {r['rollout_seconds']:.2f} | {r['worker_rollout_seconds']:.2f} "
            f"| {r['transfer_seconds']:.2f} | {r['learner_share']:.0%} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
