"""The report of a sweep: a markdown table and learning-curve plots, from the rows of
:mod:`natrl.bench.results`.

* ``table.md``: per (env, algo, library) first the IQM over seeds of the final
  return and of the mean of the last three evaluations, each with its 95%
  bootstrap interval, and P(natrl > peer) (:mod:`natrl.bench.stats`); then the
  mean ± sample std over seeds of the final evaluation, steps/s, training time and
  time-to-threshold, with natrl/peer ratios on each peer's row, computed on paired
  seeds (seeds where both runs succeeded *in the same sweep*; for time-to-threshold,
  where both reached the threshold). The commit(s) the rows ran at head the table;
  a section compares natrl with each peer (probability of improvement, a verdict
  only with ≥ 5 seeds and disjoint intervals), over envs as well when there are several.
* ``curves_<env>.png``: evaluation return against steps and against training
  seconds, the mean over seeds with a min–max band, one line per (library, algo).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from natrl.bench.results import Row
from natrl.bench.stats import Interval, iqm_interval, probability_of_improvement_interval

__all__ = [
    "LAST_EVALUATIONS",
    "MIN_SEEDS_TO_RANK",
    "Group",
    "Sweep",
    "group_rows",
    "iqm_of_runs",
    "last_evaluations_mean",
    "markdown_table",
    "plot_curves",
    "run_score",
    "sweeps_of",
]

# the peer of each natrl algorithm, per peer library
_PEER_LABELS = {
    "sb3": {"trpo": "sb3-contrib TRPO", "ppo": "SB3 PPO", "a2c": "SB3 A2C"},
    "tianshou": {"trpo": "tianshou TRPO", "npg": "tianshou NPG", "ppo": "tianshou PPO"},
}
_LIBRARY_NAMES = {"sb3": "stable-baselines3", "tianshou": "tianshou"}
_LIBRARY_ORDER = {"natrl": 0, "sb3": 1, "tianshou": 2}
_LINESTYLES = {"natrl": "-", "sb3": "--", "tianshou": ":"}
_ALGO_COLORS = {"trpo": "tab:blue", "npg": "tab:green", "ppo": "tab:orange", "acktr": "tab:red", "a2c": "tab:purple"}


# --------------------------------------------------------------------------- aggregation
@dataclass
class Group:
    """The runs of one (env, algo, library, step budget) over seeds."""

    env: str
    algo: str
    library: str
    budget: int | None
    rows: list[Row]

    @property
    def pair_key(self) -> tuple[str, str, int | None]:
        """What a natrl group and its peer share."""
        return (self.env, self.algo, self.budget)

    @property
    def ok(self) -> list[Row]:
        return [r for r in self.rows if r.get("status") == "ok"]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.get("status") != "ok"]

    def by_seed(self) -> dict[int, Row]:
        return {int(r["seed"]): r for r in self.ok}

    def label(self) -> str:
        if self.library == "natrl":
            return "natrl"
        impl = next((r.get("implementation") for r in self.ok if r.get("implementation")), None)
        return impl or _PEER_LABELS.get(self.library, {}).get(self.algo, self.library)


def group_rows(rows: Iterable[Row]) -> list[Group]:
    """Rows grouped by (env, algo, library, budget), in first-appearance order (the sweep's order)."""
    groups: dict[tuple[str, str, str, int | None], Group] = {}
    for row in sorted(rows, key=lambda r: r.get("index", 0)):
        key = (row["env"], row["algo"], row["library"], row.get("budget"))
        groups.setdefault(key, Group(*key, rows=[])).rows.append(row)
    # natrl first, its peers right after (stable-baselines3, then tianshou), within each (env, algo)
    env_order = {e: i for i, e in enumerate(dict.fromkeys(g.env for g in groups.values()))}
    order = {k: i for i, k in enumerate(dict.fromkeys(g.pair_key for g in groups.values()))}
    return sorted(
        groups.values(),
        key=lambda g: (env_order[g.env], order[g.pair_key], _LIBRARY_ORDER.get(g.library, len(_LIBRARY_ORDER))),
    )


def _values(rows: Iterable[Row], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]


def _mean_std(values: Sequence[float], digits: int, *, thousands: bool = False) -> str:
    if not values:
        return "–"
    fmt = f"{{:,.{digits}f}}" if thousands else f"{{:.{digits}f}}"
    mean = fmt.format(float(np.mean(values)))
    if len(values) == 1:
        return mean
    return f"{mean} ± {fmt.format(float(np.std(values, ddof=1)))}"


def _sweep_key(row: Row) -> str:
    """The id of the sweep a row ran in ("" for rows written before rows recorded it)."""
    return str(row.get("sweep") or "")


@dataclass
class Sweep:
    """One sweep behind a table: its id, label (s1, s2, … in the table's order) and provenance."""

    key: str
    label: str
    commit: str | None
    dirty: bool | None
    dirty_paths: list[str]
    date: str | None
    command: str | None
    source_changed: str | None = None
    mixed: bool = False  # rows of a merged results file written before rows carried their sweep


def sweeps_of(rows: Sequence[Row], metadata: dict[str, Any]) -> dict[str, Sweep]:
    """The sweeps the rows come from, by id, in row order, with what the rows and the metadata record."""
    known: dict[str, Any] = dict(metadata.get("sweeps") or {})
    if metadata.get("sweep"):
        known.setdefault(str(metadata["sweep"]), metadata)
    out: dict[str, Sweep] = {}
    for r in sorted(rows, key=lambda r: r.get("index", 0)):
        key = _sweep_key(r)
        if key in out:
            continue
        info = known.get(key, {}) if key else metadata
        out[key] = Sweep(
            key=key,
            label=f"s{len(out) + 1}",
            commit=r.get("commit", info.get("commit")),
            dirty=r.get("dirty", info.get("dirty")),
            dirty_paths=list(info.get("dirty_paths") or []),
            date=info.get("date") or r.get("date"),
            command=r.get("command") or info.get("command"),
            source_changed=info.get("source_changed"),
            mixed=bool(info.get("mixed")) or (not key and "merged_from" in metadata),
        )
    return out


def code_line(sweep: Sweep) -> str:
    if sweep.commit is None:
        code = "natrl commit not recorded (not a git checkout, or written before runs recorded it)"
    else:
        state = {True: "with uncommitted changes", False: "clean", None: "state unknown"}[sweep.dirty]
        paths = f": {', '.join(sweep.dirty_paths)}" if sweep.dirty and sweep.dirty_paths else ""
        code = f"natrl commit `{sweep.commit[:12]}` ({state}{paths})"
    return code + (f", {sweep.date}" if sweep.date else "")


_RATIO_NAMES = {"steps_per_second": "steps/s ratio", "threshold_seconds": "time-to-threshold ratio"}


def ratio_text(natrl: Group | None, peer: Group, key: str, warnings: list[str] | None = None) -> str:
    """sum(natrl) / sum(peer) of ``key`` over the seeds where both runs have it and ran in one sweep.

    A ratio is never computed between runs of different sweeps (another commit, another machine load):
    such seeds are left out, with a line in ``warnings``.
    """
    if natrl is None:
        return "–"
    a, b = natrl.by_seed(), peer.by_seed()
    both = [s for s in a if s in b and a[s].get(key) is not None and b[s].get(key) is not None]
    seeds = [s for s in both if _sweep_key(a[s]) == _sweep_key(b[s])]
    crossed = [s for s in both if s not in seeds]
    if crossed and warnings is not None:
        warnings.append(
            f"{peer.env} {peer.algo} {_RATIO_NAMES.get(key, key)} natrl / {peer.label()}: seed"
            f"{'s' if len(crossed) > 1 else ''} {', '.join(map(str, crossed))} ran in different sweeps; "
            "no ratio across sweeps, left out"
        )
    if not seeds:
        return "– (other sweep)" if crossed else "–"
    num, den = sum(float(a[s][key]) for s in seeds), sum(float(b[s][key]) for s in seeds)
    if den <= 0 or not math.isfinite(num / den):
        return "–"
    n = "" if len(seeds) == len(a) == len(b) else f" ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
    return f"{num / den:.2f}{n}"


def _threshold(group: Group) -> float | None:
    return next((float(r["threshold"]) for r in group.rows if r.get("threshold") is not None), None)


# --------------------------------------------------------------------------- statistics
LAST_EVALUATIONS = 3
"""The "last 3" score of a run: the mean of its last three evaluations."""
MIN_SEEDS_TO_RANK = 5
"""A table calls one library better than another only with at least this many seeds on each side."""


def last_evaluations_mean(row: Row, k: int = LAST_EVALUATIONS) -> float | None:
    """Mean of the finite ones among a run's last ``k`` evaluations (its final evaluation when it has no
    curve; None when it has no finite value)."""
    curve = row.get("curve") or []
    tail = [p.get("mean") for p in curve[-k:] if isinstance(p, dict)]
    means = [float(m) for m in tail if m is not None and math.isfinite(float(m))]
    if means:
        return float(np.mean(means))
    final = row.get("final_eval_mean")
    return float(final) if final is not None and math.isfinite(float(final)) else None


def run_score(row: Row, metric: str) -> float | None:
    """A run's score: ``"final"`` (its final evaluation's mean return) or ``"last3"``
    (:func:`last_evaluations_mean`)."""
    if metric == "final":
        value = row.get("final_eval_mean")
        return float(value) if value is not None and math.isfinite(float(value)) else None
    if metric == "last3":
        return last_evaluations_mean(row)
    raise ValueError(f"unknown metric {metric!r}; use 'final' or 'last3'")


def _scores(rows: Iterable[Row], metric: str) -> list[float]:
    return [v for v in (run_score(r, metric) for r in rows) if v is not None]


def iqm_of_runs(rows: Sequence[Row], metric: str = "final") -> Interval | None:
    """IQM of the runs' scores over seeds with its 95% bootstrap interval (None without a score)."""
    scores = _scores(rows, metric)
    return iqm_interval([scores]) if scores else None


def poi_interval(ours: Group, peer: Group, metric: str) -> Interval | None:
    x, y = _scores(ours.ok, metric), _scores(peer.ok, metric)
    return probability_of_improvement_interval([x], [y]) if x and y else None


def interval_text(interval: Interval | None, digits: int = 1) -> str:
    if interval is None:
        return "–"
    fmt = f"{{:.{digits}f}}"
    if interval.low == interval.high == interval.estimate:
        return fmt.format(interval.estimate) + (" (1 run)" if interval.n == 1 else "")
    return f"{fmt.format(interval.estimate)} [{fmt.format(interval.low)}, {fmt.format(interval.high)}]"


def verdict_text(ours: Interval | None, theirs: Interval | None, peer_label: str) -> str:
    """Which of two IQMs is higher, said only with ≥ 5 seeds each and intervals that do not overlap."""
    if ours is None or theirs is None:
        return "–"
    if min(ours.n, theirs.n) < MIN_SEEDS_TO_RANK:
        return f"not ranked: < {MIN_SEEDS_TO_RANK} seeds"
    if ours.overlaps(theirs):
        return "level (intervals overlap)"
    return "natrl higher" if ours.low > theirs.high else f"{peer_label} higher"


def _minmax(values: Sequence[float], lo: float, hi: float) -> list[float]:
    """(x − lo)/(hi − lo); 1 for every run when all the runs of the env score the same."""
    return [1.0 if hi <= lo else (v - lo) / (hi - lo) for v in values]


def _statistics_sections(groups: Sequence[Group]) -> list[str]:
    """Probability of improvement per (env, algo) and natrl vs each peer; over envs when there are several."""
    natrl_groups = {g.pair_key: g for g in groups if g.library == "natrl"}
    pairs = [(natrl_groups[g.pair_key], g) for g in groups if g.library != "natrl" and g.pair_key in natrl_groups]
    pairs = [(a, b) for a, b in pairs if a.ok and b.ok]
    if not pairs:
        return []
    lines = [
        "",
        "## Probability of improvement",
        "",
        "P(natrl > peer) = (#{x_i > y_j} + ½ #{x_i = y_j}) / (n·m) over natrl's n and the peer's m runs (the "
        "Mann–Whitney U over n·m): 0.5 is a tie, 1 means every natrl run beats every peer run. Brackets: 95% "
        "bootstrap interval over seeds. The verdict compares the final IQM intervals: a library is called higher "
        f"only with ≥ {MIN_SEEDS_TO_RANK} seeds on both sides and intervals that do not overlap.",
        "",
        "| env | algo | peer | runs natrl / peer | P(natrl > peer), final | P(natrl > peer), last 3 | "
        "final IQM natrl | final IQM peer | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ours, peer in pairs:
        a, b = iqm_of_runs(ours.ok), iqm_of_runs(peer.ok)
        lines.append(
            f"| {peer.env} | {peer.algo} | {peer.label()} | {len(ours.ok)} / {len(peer.ok)} | "
            f"{interval_text(poi_interval(ours, peer, 'final'), 2)} | "
            f"{interval_text(poi_interval(ours, peer, 'last3'), 2)} | "
            f"{interval_text(a)} | {interval_text(b)} | {verdict_text(a, b, peer.label())} |"
        )
    # over envs: each (algo, peer library) on the envs where both ran, runs redrawn within each env
    by_kind: dict[tuple[str, str], list[tuple[Group, Group]]] = {}
    for ours, peer in pairs:
        by_kind.setdefault((peer.algo, peer.library), []).append((ours, peer))
    multi = {k: v for k, v in by_kind.items() if len({p.env for _, p in v}) >= 2}
    if multi:
        lines += [
            "",
            "### Over envs",
            "",
            "Stratified over envs: each bootstrap sample redraws the runs within every env. P(natrl > peer) is "
            "the mean over envs; the IQMs are of final returns normalised per env to (x − min)/(max − min) over "
            "the two libraries' runs on that env (a relative scale: 1 is the best run of either).",
            "",
            "| algo | peer | envs | P(natrl > peer), final | P(natrl > peer), last 3 | "
            "normalised IQM natrl | normalised IQM peer |",
            "|---|---|---|---|---|---|---|",
        ]
        for (algo, _), items in multi.items():
            poi = {
                m: probability_of_improvement_interval(
                    [_scores(o.ok, m) for o, _ in items], [_scores(p.ok, m) for _, p in items]
                )
                for m in ("final", "last3")
            }
            ours_n, theirs_n = [], []
            for o, p in items:
                x, y = _scores(o.ok, "final"), _scores(p.ok, "final")
                lo, hi = min(x + y), max(x + y)
                ours_n.append(_minmax(x, lo, hi))
                theirs_n.append(_minmax(y, lo, hi))
            envs = ", ".join(p.env for _, p in items)
            lines.append(
                f"| {algo} | {items[0][1].label()} | {envs} | {interval_text(poi['final'], 2)} | "
                f"{interval_text(poi['last3'], 2)} | {interval_text(iqm_interval(ours_n), 2)} | "
                f"{interval_text(iqm_interval(theirs_n), 2)} |"
            )
    return lines


def markdown_table(rows: Sequence[Row], metadata: dict[str, Any]) -> str:
    """The sweep's table with its command, code revision, machine, protocol, statistics and notes, as markdown."""
    groups = group_rows(rows)
    v = metadata.get("versions", {})
    sweeps = sweeps_of(rows, metadata)
    several = len(sweeps) > 1
    code_lines = [
        f"Code{f' ({s.label})' if several else ''}: {code_line(s)}"
        + (f"; command `{s.command}`" if several and s.command else "")
        + "  "
        for s in sweeps.values()
    ]
    warnings: list[str] = [
        f"{s.label + ': ' if several else ''}{s.source_changed}" for s in sweeps.values() if s.source_changed
    ]
    mixed = [s for s in sweeps.values() if s.mixed]
    if mixed:
        warnings.append(
            "some rows come from a merged results file written before rows recorded their sweep: their ratios "
            "may pair runs of different sweeps"
        )
    lines = [
        "# natrl benchmark",
        "",
        *[f"Command: `{c}`  " for c in metadata.get("commands", [metadata.get("command", "")])],
        *[f"Replaced: {line}  " for line in metadata.get("replaced", [])],
        *code_lines,
        "",
        f"Machine: {metadata.get('cpu_count')} CPUs ({metadata.get('platform', '')}), "
        f"{metadata.get('date', '')}; natrl {v.get('natrl')}, torch {v.get('torch')}, "
        f"gymnasium {v.get('gymnasium')}, mujoco {v.get('mujoco')}, stable-baselines3 "
        f"{v.get('stable-baselines3')}, sb3-contrib {v.get('sb3-contrib')}"
        + (f", tianshou {v['tianshou']}" if v.get("tianshou") else "")
        + "; "
        f"execution: {metadata.get('execution', '')}.",
        "",
        "Protocol: every run uses the natrl preset (agents/<algo>.toml; the peers' runs get it translated, see "
        "the notes), one torch thread, and the same evaluation: a separate env, deterministic actions, "
        f"{metadata.get('eval_episodes')} episodes seeded 10000 + seed + i, every "
        f"{metadata.get('eval_every_text', 'budget/10')} steps and at the end. Returns: a run's final score is "
        "its last evaluation, its last-3 score the mean of its last three evaluations; IQM is the interquartile "
        "mean over seeds (scipy.stats.trim_mean(·, 0.25): the middle 50% of the runs, as rliable), in brackets "
        "its 95% percentile-bootstrap interval over seeds (50,000 samples, fixed seed). Training time excludes "
        "evaluations and model construction; steps/s = steps / training seconds (wall clock); train CPU s "
        "is the process's CPU time over the same span (≈ train s on a quiet machine; a gap means other load). "
        "Threshold: the preset's "
        "expected_return, reached at the first evaluation whose mean is ≥ it. Other values are mean ± sample std "
        "over seeds (successful runs); the ratios on a peer's row are natrl / that peer (sum over seeds where "
        "both have a value and ran in the same sweep): "
        "steps/s ratio > 1 means natrl is faster, time-to-threshold ratio < 1 means natrl gets there sooner.",
        "",
    ]
    peers: dict[tuple[str, str, int | None], list[Group]] = {}
    for g in groups:
        if g.library != "natrl":
            peers.setdefault(g.pair_key, []).append(g)
    natrl_groups = {g.pair_key: g for g in groups if g.library == "natrl"}
    header = ["env", "algo", "library", "runs"]
    if several:
        header.append("sweep")
    header += ["final IQM [95% CI]", "last-3 IQM [95% CI]"]
    if peers:
        header.append("P(natrl > peer), final")
    header += [
        "steps",
        "final mean ± std",
        "steps/s",
        "train s",
        "train CPU s",
        "reached",
        "steps to threshold",
        "s to threshold",
    ]
    if peers:
        header += ["steps/s ratio", "time-to-threshold ratio"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        thr = _threshold(g)
        env = f"{g.env} (≥ {thr:g})" if thr is not None else g.env
        ok = g.ok
        runs = f"{len(ok)}" + (f" (+{len(g.failed)} failed)" if g.failed else "")
        steps = _values(ok, "steps")
        steps_txt = f"{int(np.mean(steps)):,}" if steps else "–"
        reached = [r for r in ok if r.get("threshold_steps") is not None]
        reached_txt = f"{len(reached)}/{len(ok)}" if thr is not None and ok else "–"
        ours = natrl_groups.get(g.pair_key)
        cells = [env, g.algo, g.label(), runs]
        if several:
            cells.append(",".join(dict.fromkeys(sweeps[_sweep_key(r)].label for r in g.rows)))
        cells += [interval_text(iqm_of_runs(ok, "final")), interval_text(iqm_of_runs(ok, "last3"))]
        if peers:
            cells.append(
                "" if g.library == "natrl" or ours is None else interval_text(poi_interval(ours, g, "final"), 2)
            )
        cells += [
            steps_txt,
            _mean_std(_values(ok, "final_eval_mean"), 1),
            _mean_std(_values(ok, "steps_per_second"), 0, thousands=True),
            _mean_std(_values(ok, "train_seconds"), 1),
            _mean_std(_values(ok, "train_cpu_seconds"), 1),
            reached_txt,
            _mean_std(_values(reached, "threshold_steps"), 0, thousands=True),
            _mean_std(_values(reached, "threshold_seconds"), 1),
        ]
        if peers:
            if g.library == "natrl":
                cells += ["", ""] if g.pair_key in peers else ["no peer", "–"]
            else:
                cells += [
                    ratio_text(ours, g, "steps_per_second", warnings),
                    ratio_text(ours, g, "threshold_seconds", warnings),
                ]
        lines.append("| " + " | ".join(cells) + " |")
    if warnings:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in warnings]]
    lines += _statistics_sections(groups)
    # each distinct note once per peer, with the envs it concerns when not all of them
    notes: dict[str, dict[str, list[str]]] = {}
    peer_envs: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: r.get("index", 0)):
        peer = r.get("peer")
        if r.get("library") == "natrl" or not peer:
            continue
        impl = str(r.get("implementation") or "")
        algo = str(r["algo"])
        fallback = _PEER_LABELS.get(str(r["library"]), {}).get(algo, algo)
        label = impl.rsplit(" ", 1)[0] if " " in impl else fallback
        envs = peer_envs.setdefault(label, [])
        if r["env"] not in envs:
            envs.append(r["env"])
        for note in peer.get("notes", []):
            where = notes.setdefault(label, {}).setdefault(note, [])
            if r["env"] not in where:
                where.append(r["env"])
    if notes:
        lines += ["", "## Matching notes (natrl preset → peer)", ""]
        for label, items in notes.items():
            for note, envs in items.items():
                scope = "" if len(envs) == len(peer_envs[label]) else f" ({', '.join(envs)})"
                lines.append(f"- {label}{scope}: {note}")
    for library in dict.fromkeys(g.library for g in groups if g.library != "natrl"):
        no_peer = sorted({g.algo for g in groups if g.algo not in _PEER_LABELS.get(library, {})})
        if no_peer:
            lines.append(f"- {', '.join(no_peer)}: no {_LIBRARY_NAMES.get(library, library)} peer.")
    failed = [r for r in sorted(rows, key=lambda r: r.get("index", 0)) if r.get("status") != "ok"]
    if failed:
        lines += ["", "## Failed runs", ""]
        for r in failed:
            lines.append(f"- {r['library']} {r['algo']} {r['env']} seed {r['seed']}: {r.get('error')}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots
def _safe_name(env_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id)


def _band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, min, max) of curves interpolated onto their common x range."""
    end = min(float(x[-1]) for x, _ in curves)
    grid = np.unique(np.concatenate([x[x <= end] for x, _ in curves]))
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def plot_curves(rows: Sequence[Row], out_dir: Path) -> list[Path]:
    """One ``curves_<env>.png`` per env: return vs steps and vs training seconds.

    Returns:
        the files written (none when no run has a curve).

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written: list[Path] = []
    for env in dict.fromkeys(r["env"] for r in rows):
        groups = [g for g in group_rows(rows) if g.env == env and any(r.get("curve") for r in g.ok)]
        if not groups:
            continue
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax_steps, ax_time = fig.subplots(1, 2, sharey=True)
        for g in groups:
            runs = [r["curve"] for r in g.ok if r.get("curve")]
            label = f"{g.label()} {g.algo.upper()}" if g.library == "natrl" else g.label()
            if len({h.budget for h in groups}) > 1:
                label += f", budget {g.budget:,}"
            style = {"color": _ALGO_COLORS.get(g.algo), "linestyle": _LINESTYLES.get(g.library, "-.")}
            for ax, key in ((ax_steps, "steps"), (ax_time, "train_seconds")):
                curves = [(np.array([p[key] for p in c], float), np.array([p["mean"] for p in c], float)) for c in runs]
                x, mean, lo, hi = _band(curves)
                ax.plot(x, mean, label=f"{label} (n={len(runs)})", marker="." if len(x) < 30 else None, **style)
                if len(runs) > 1:
                    ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15, linewidth=0)
        thr = next((_threshold(g) for g in groups if _threshold(g) is not None), None)
        for ax in (ax_steps, ax_time):
            if thr is not None:
                ax.axhline(thr, color="gray", linestyle=":", linewidth=1)
            ax.grid(alpha=0.3)
        ax_steps.set_xlabel("environment steps")
        ax_time.set_xlabel("training seconds (evaluation excluded)")
        ax_steps.set_ylabel("evaluation return (deterministic)")
        ax_steps.legend(fontsize="small")
        fig.suptitle(f"{env}: mean over seeds, band min–max" + (f", threshold {thr:g}" if thr is not None else ""))
        path = out_dir / f"curves_{_safe_name(env)}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
