"""Compact natrl-vs-SB3 table (the README's) from `natrl bench` results files.

Usage: python scripts/bench_summary.py bench-out/classic/results.json [more results.json ...]

One row per (env, algo): final and best deterministic evaluation (mean over seeds), how
many runs reached the preset's threshold, mean steps/s, and the natrl / peer ratio of
steps/s over paired seeds, by wall clock and by process CPU time.
"""

from __future__ import annotations

import json
import statistics as st
import sys
from collections import defaultdict
from typing import Any

Run = dict[str, Any]
ORDER = ("trpo", "npg", "ppo", "acktr")
HEADER = (
    "| env | algo | runs | natrl final return | SB3 final return | natrl / SB3 best evaluation "
    "| natrl / SB3 reached threshold | natrl steps/s | SB3 steps/s | steps/s ratio (wall) | ratio by CPU time |"
)


def mean_std(xs: list[float]) -> str:
    return f"{st.mean(xs):.1f} ± {st.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def best(runs: list[Run]) -> str:
    return f"{st.mean([max(p['mean'] for p in r['curve']) for r in runs]):.0f}"


def reached(runs: list[Run]) -> str:
    return f"{sum(r['threshold_steps'] is not None for r in runs)}/{len(runs)}"


def speed(runs: list[Run]) -> str:
    return f"{st.mean([r['steps_per_second'] for r in runs]):,.0f}"


def ratio(ours: list[Run], peer: list[Run], seconds: str) -> str:
    paired = {r["seed"] for r in ours} & {r["seed"] for r in peer}
    num = sum(r["steps"] / r[seconds] for r in ours if r["seed"] in paired)
    den = sum(r["steps"] / r[seconds] for r in peer if r["seed"] in paired)
    return f"{num / den:.2f}"


def table(runs: list[Run]) -> str:
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if r["status"] == "ok":
            groups[(r["env"], r["algo"], r["library"])].append(r)
    envs = list(dict.fromkeys(env for env, _, _ in groups))
    lines = [HEADER, "|" + "---|" * 11]
    for env in envs:
        for algo in ORDER:
            ours, peer = groups.get((env, algo, "natrl")), groups.get((env, algo, "sb3"))
            if not ours:
                continue
            row = [f"{env} (≥ {ours[0]['threshold']:g})", algo.upper(), str(len(ours))]
            row.append(mean_std([r["final_eval_mean"] for r in ours]))
            if peer:
                row += [
                    mean_std([r["final_eval_mean"] for r in peer]),
                    f"{best(ours)} / {best(peer)}",
                    f"{reached(ours)} / {reached(peer)}",
                    speed(ours),
                    speed(peer),
                    ratio(ours, peer, "train_seconds"),
                    ratio(ours, peer, "train_cpu_seconds"),
                ]
            else:
                row += ["no peer", best(ours), reached(ours), speed(ours), "–", "–", "–"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    runs: list[Run] = []
    for path in paths:
        with open(path) as f:
            runs += json.load(f)["runs"]
    print(table(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
