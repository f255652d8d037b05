"""natrl TRPO and sb3-contrib TRPO side by side, update by update, on one seed.

    python scripts/trpo_update_stats.py --env Walker2d-v5 --seed 0
    python scripts/trpo_update_stats.py --env Walker2d-v5 --seed 0 --set obs_norm_update=rollout --libs natrl

Trains ``agents/trpo.toml``'s preset (natrl) and its sb3-contrib translation (the one ``natrl bench
--against sb3`` runs) and records every update's statistics: the KL the accepted step reached, whether
the line search accepted a step, the policy's std and the critic's explained variance before its fit.
Prints them averaged over fifths of the budget, and writes every update's row to ``--out``
(``<out>/<lib>-<env>-<seed>.json``). The KL is reported as sb3-contrib logs it, the Gaussian KL averaged
over the k action dimensions (natrl's joint KL divided by k), and as a fraction of the trust region δ.
Both libraries scale their full step with the damped curvature xᵀ(F + λI)x, so with the presets' λ a
full step can reach well under δ (about half on Walker2d). natrl's rows also keep the line search's step
fraction (1.0: the full step); sb3-contrib does not log it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from natrl.presets import load_preset
from natrl.rl import AGENTS
from natrl.rl.config import build_config, parse_overrides, schedule_value


def run_natrl(
    config: Any, env_id: str, env_kwargs: dict[str, Any], seed: int, steps: int, k: int
) -> list[dict[str, float]]:
    agent = AGENTS["trpo"](env_id, seed=seed, config=config, env_kwargs=env_kwargs)
    rows: list[dict[str, float]] = []

    def record(a: Any, stats: dict[str, float]) -> bool:
        rows.append(
            {
                "steps": a.num_timesteps,
                "kl_per_dim": float(stats["kl"]) / k,
                "accepted": 1.0 - float(stats["line_search_failed"]),
                "step_fraction": float(stats.get("step_fraction", 0.0)),
                "std": float(stats["std"]),
                "explained_variance": float(stats["explained_variance"]),
            }
        )
        return True

    try:
        agent.learn(steps, callback=record)
    finally:
        agent.close()
    return rows


def run_sb3(
    config: Any, env_id: str, env_kwargs: dict[str, Any], seed: int, steps: int, k: int
) -> list[dict[str, float]]:
    from stable_baselines3.common.callbacks import BaseCallback

    from natrl.bench.peers import build_model, translate

    spec = translate("trpo", config, action_dims=k)
    if spec is None:
        raise SystemExit("this preset has no sb3-contrib translation")
    model, _ = build_model(spec, env_id, seed, env_kwargs)
    rows: list[dict[str, float]] = []

    class Record(BaseCallback):
        # SB3 dumps its logger after the next rollout: at a rollout's start it holds the last update's values
        def _on_rollout_start(self) -> None:
            values = self.model.logger.name_to_value
            if "train/kl_divergence_loss" in values:
                rows.append(
                    {
                        "steps": self.model.num_timesteps,
                        "kl_per_dim": float(values["train/kl_divergence_loss"]),
                        "accepted": float(values["train/is_line_search_success"]),
                        "std": float(values["train/std"]),
                        "explained_variance": float(values["train/explained_variance"]),
                    }
                )

        def _on_step(self) -> bool:
            return True

    try:
        model.learn(steps, callback=Record())
    finally:
        model.get_env().close()
    return rows


def summarise(lib: str, rows: list[dict[str, float]], delta: float, steps: int, parts: int = 5) -> str:
    t = np.array([r["steps"] for r in rows])
    kl = np.array([r["kl_per_dim"] for r in rows])
    ok = np.array([r["accepted"] for r in rows]) > 0
    std = np.array([r["std"] for r in rows])
    ev = np.array([r["explained_variance"] for r in rows])
    lines = [
        f"{lib}: {len(rows)} updates",
        "| steps | KL / δ (accepted) | accepted | std | explained variance |",
        "|---|---|---|---|---|",
    ]
    edges = np.linspace(0, steps, parts + 1)
    for lo, hi in itertools.pairwise(edges):
        m = (t > lo) & (t <= hi)
        if not m.any():
            continue
        a = m & ok
        kl_txt = f"{np.mean(kl[a]) / delta:.3f}" if a.any() else "–"
        lines.append(
            f"| {lo / 1e3:,.0f}k–{hi / 1e3:,.0f}k | {kl_txt} | {np.mean(ok[m]):.2f} | {np.mean(std[m]):.3f} | "
            f"{np.mean(ev[m]):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Walker2d-v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=float, default=None, help="step budget (default: the preset's)")
    parser.add_argument("--libs", default="natrl,sb3", help="natrl, sb3 or natrl,sb3")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a natrl field")
    parser.add_argument("--out", default="bench-out/update-stats")
    args = parser.parse_args()
    runners = {"natrl": run_natrl, "sb3": run_sb3}
    libs = args.libs.split(",")
    if not libs or any(lib not in runners for lib in libs):
        parser.error(f"--libs {args.libs!r}: give natrl, sb3 or natrl,sb3")
    torch.set_num_threads(1)
    cls = AGENTS["trpo"]
    preset = load_preset("trpo", args.env, cls.config_cls)
    try:
        overrides = parse_overrides(args.set, cls.config_cls, "trpo")
        config = build_config(cls.config_cls, {**preset.hyperparameters, **overrides, "torch_threads": 1})
    except ValueError as e:
        parser.error(str(e))
    steps = int(args.steps or preset.total_steps)
    env = gym.make(args.env, **preset.env_kwargs)
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box):
        parser.error(f"{args.env} has a {type(space).__name__} action space; std and KL per dimension need a Box one")
    k = int(np.prod(space.shape))
    delta = schedule_value(config.max_kl, 1.0) / k  # per action dimension, as sb3-contrib's target_kl
    os.makedirs(args.out, exist_ok=True)
    for lib in libs:
        run = runners[lib]
        start = time.perf_counter()
        rows = run(config, args.env, preset.env_kwargs, args.seed, steps, k)
        seconds = time.perf_counter() - start
        with open(os.path.join(args.out, f"{lib}-{args.env}-{args.seed}.json"), "w") as f:
            json.dump(rows, f)
        print(f"\n{summarise(lib, rows, delta, steps)}\n({seconds:.0f} s)")


if __name__ == "__main__":
    main()
