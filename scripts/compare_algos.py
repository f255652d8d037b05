"""Two of natrl's algorithms compared over the games of a sweep (``natrl bench --report`` pairs natrl with its
peers only): the ACKTR paper's claim against A2C, read off the MinAtar suite (docs/bench/minatar-plan.md).

For each game: both algorithms' final-evaluation IQM with its 95% bootstrap interval, and the sample-efficiency
reading of the curves: the first evaluation step at which X's mean over seeds reaches Y's final mean, and the
budget divided by that step (how many times fewer steps X needed to match where Y ended; "–" when X never
does). Over all games: the probability that a run of X ends above a run of Y, with the bootstrap stratified by
game (no score normalisation across games is needed for it).

Usage::

    python scripts/compare_algos.py bench-out/minatar-1m-p1 bench-out/minatar-1m-p4 ... --x acktr --y a2c
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from natrl.bench.report import interval_text
from natrl.bench.results import read_results
from natrl.bench.stats import iqm_interval, probability_of_improvement_interval

Row = dict[str, Any]


def mean_curve(runs: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean over runs) of the evaluation curves, on the evaluation points that every run has."""
    curves = [{int(p["steps"]): float(p["mean"]) for p in r["curve"]} for r in runs if r.get("curve")]
    if not curves:
        return np.zeros(0), np.zeros(0)
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return np.array(steps, float), np.array([np.mean([c[s] for c in curves]) for s in steps])


def first_step_reaching(steps: np.ndarray, means: np.ndarray, target: float) -> float | None:
    """The first evaluation step whose mean is ≥ ``target``; None when none is."""
    hit = np.flatnonzero(means >= target)
    return float(steps[hit[0]]) if hit.size else None


def compare(rows: Sequence[Row], x: str, y: str) -> str:
    """The markdown comparison of natrl's algorithms ``x`` and ``y`` over the envs where both ran."""
    ok = [r for r in rows if r.get("library") == "natrl" and r.get("status") == "ok"]
    games = sorted({r["env"] for r in ok if r["algo"] == x} & {r["env"] for r in ok if r["algo"] == y})
    lines = [
        f"| env | {x} final IQM [95% CI] | {y} final IQM [95% CI] | seeds | step where {x}'s mean reaches "
        f"{y}'s final mean | budget / that step |",
        "|---|---|---|---|---|---|",
    ]
    finals_x, finals_y = [], []
    for game in games:
        rx = [r for r in ok if (r["env"], r["algo"]) == (game, x)]
        ry = [r for r in ok if (r["env"], r["algo"]) == (game, y)]
        fx, fy = [r["final_eval_mean"] for r in rx], [r["final_eval_mean"] for r in ry]
        finals_x.append(fx)
        finals_y.append(fy)
        steps, means = mean_curve(rx)
        reached = first_step_reaching(steps, means, float(np.mean(fy)))
        budget = max(int(r["steps"]) for r in rx)
        lines.append(
            f"| {game} | {interval_text(iqm_interval([fx]))} | {interval_text(iqm_interval([fy]))} | "
            f"{len(fx)} / {len(fy)} | {'–' if reached is None else f'{reached:,.0f}'} | "
            f"{'–' if reached is None else f'{budget / reached:.1f}x'} |"
        )
    if games:
        poi = probability_of_improvement_interval(finals_x, finals_y)
        lines += ["", f"P({x} > {y}) over {len(games)} envs, final evaluations: {interval_text(poi, 2)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files or sweep directories")
    parser.add_argument("--x", default="acktr")
    parser.add_argument("--y", default="a2c")
    args = parser.parse_args(argv)
    rows = [row for path in args.results for row in read_results(path)[1]]
    print(compare(rows, args.x, args.y))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
