"""Compact natrl-vs-SB3 table (the README's) from `natrl bench` results files.

Usage: python scripts/bench_summary.py bench-out/classic/results.json [more results.json ...]
       python scripts/bench_summary.py --per-seed LABEL=results.json [LABEL=results.json ...]
       python scripts/bench_summary.py --per-env results.json [more results.json ...]

One row per (env, algo): final and best deterministic evaluation (mean over seeds), how
many runs reached the preset's threshold, mean steps/s, and the natrl / peer ratio of
steps/s over paired seeds, by wall clock and by process CPU time. ``--per-env``: one table per env
with one row per (library, algo), every peer (SB3, tianshou) included: final return, the mean of the
last three evaluations, the best evaluation, steps/s by wall clock and by CPU time, and on each peer's
row natrl / that peer.
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


def per_seed(labelled: list[tuple[str, list[Run]]]) -> str:
    """One row per (label, library, algo, env): every seed's final evaluation, and the mean over
    seeds of the final evaluation, of the last three evaluations and of the best one (a single
    evaluation of 10 deterministic episodes moves by hundreds on Hopper, see the curves)."""
    lines = [
        "| variant | library | env | algo | seeds | final evaluation per seed | final (mean ± std) "
        "| last three evaluations (mean ± std) | best evaluation (mean) |",
        "|" + "---|" * 9,
    ]
    for label, runs in labelled:
        groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
        for r in runs:
            if r["status"] == "ok":
                groups[(r["library"], r["env"], r["algo"])].append(r)
        for (lib, env, algo), rs in groups.items():
            rs.sort(key=lambda r: r["seed"])
            last3 = [st.mean(p["mean"] for p in r["curve"][-3:]) for r in rs]
            row = [
                label,
                lib,
                env,
                algo.upper(),
                ",".join(str(r["seed"]) for r in rs),
                ", ".join(f"{r['final_eval_mean']:.0f}" for r in rs),
                mean_std([r["final_eval_mean"] for r in rs]),
                mean_std(last3),
                best(rs),
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _label(rs: list[Run]) -> str:
    if rs[0]["library"] == "natrl":
        return "natrl"
    return str(rs[0].get("implementation") or rs[0]["library"])


def per_env(runs: list[Run]) -> str:
    """One markdown table per env: a row per (library, algo), natrl first, the peers after it."""
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if r["status"] == "ok":
            groups[(r["env"], r["algo"], r["library"])].append(r)
    out = []
    for env in dict.fromkeys(e for e, _, _ in groups):
        lines = [
            f"**{env}**",
            "",
            "| algo | library | seeds | final return | last three evaluations | best evaluation | steps/s (wall) "
            "| steps/s (CPU) | natrl / peer, wall | natrl / peer, CPU |",
            "|" + "---|" * 10,
        ]
        for algo in ORDER:
            libs = [lib for lib in ("natrl", "sb3", "tianshou") if (env, algo, lib) in groups]
            ours = groups.get((env, algo, "natrl"))
            for lib in libs:
                rs = sorted(groups[(env, algo, lib)], key=lambda r: r["seed"])
                last3 = [st.mean(p["mean"] for p in r["curve"][-3:]) for r in rs]
                cpu = st.mean(r["steps"] / r["train_cpu_seconds"] for r in rs)
                ratios = ["", ""]
                if lib != "natrl" and ours:
                    ratios = [ratio(ours, rs, "train_seconds"), ratio(ours, rs, "train_cpu_seconds")]
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            algo.upper(),
                            _label(rs),
                            ",".join(str(r["seed"]) for r in rs),
                            mean_std([r["final_eval_mean"] for r in rs]),
                            mean_std(last3),
                            best(rs),
                            speed(rs),
                            f"{cpu:,.0f}",
                            *ratios,
                        ]
                    )
                    + " |"
                )
        out.append("\n".join(lines))
    return "\n\n".join(out)


def load(path: str) -> list[Run]:
    with open(path) as f:
        return json.load(f)["runs"]


def main(args: list[str]) -> None:
    if args and args[0] == "--per-seed":
        labelled: dict[str, list[Run]] = defaultdict(list)
        for arg in args[1:]:
            label, _, path = arg.rpartition("=")
            labelled[label or path] += load(path)
        print(per_seed(list(labelled.items())))
        return
    if args and args[0] == "--per-env":
        print(per_env([r for path in args[1:] for r in load(path)]))
        return
    runs: list[Run] = []
    for path in args:
        runs += load(path)
    print(table(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
