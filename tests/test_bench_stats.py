"""Tests of natrl.bench.stats (IQM, stratified bootstrap, probability of improvement) against hand
computations and scipy, of the report's use of them, and of the runs' provenance (natrl.bench.provenance)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from natrl.bench import main
from natrl.bench.provenance import new_sweep_id, run_versions, source_revision
from natrl.bench.report import last_evaluations_mean, markdown_table
from natrl.bench.results import write_results
from natrl.bench.stats import (
    Interval,
    iqm,
    iqm_interval,
    probability_of_improvement,
    probability_of_improvement_interval,
    stratified_bootstrap,
)


# --------------------------------------------------------------------------- IQM
def test_iqm_by_hand_and_as_scipy_trim_mean() -> None:
    # 1..8: the quartiles drop 1, 2 and 7, 8; the mean of 3, 4, 5, 6 is 4.5
    assert iqm(np.arange(1, 9)) == 4.5
    # 5 runs: floor(5/4) = 1 dropped at each end, the outlier with them: mean(2, 3, 4)
    assert iqm([100.0, 1.0, 3.0, 2.0, 4.0]) == 3.0
    # 10 runs: floor(10/4) = 2 at each end: mean(2, ..., 7)
    assert iqm(np.arange(10.0)) == pytest.approx(np.mean(np.arange(2, 8)))
    # 1-3 runs: nothing dropped
    assert iqm([7.0]) == 7.0 and iqm([1.0, 2.0, 6.0]) == 3.0
    rng = np.random.default_rng(1)
    for n in range(1, 30):
        x = rng.normal(size=n)
        assert iqm(x) == pytest.approx(float(sps.trim_mean(x, 0.25)), rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="at least one score"):
        iqm([])


def test_iqm_over_tasks_is_the_trimmed_mean_of_all_runs() -> None:
    tasks = [[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]
    # all 8 runs pooled: drop 1, 2 and 30, 40 → mean(3, 4, 10, 20) = 9.25
    assert iqm_interval(tasks).estimate == 9.25 == iqm(np.concatenate(tasks))


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_of_two_runs_is_known_exactly() -> None:
    # resamples of (a, b): (a, a), (a, b), (b, a), (b, b); IQM of 2 = mean: {a: 1/4, (a+b)/2: 1/2, b: 1/4},
    # whose 2.5% and 97.5% quantiles are a and b
    interval = iqm_interval([[3.0, 7.0]])
    assert (interval.estimate, interval.low, interval.high, interval.n) == (5.0, 3.0, 7.0, 2)
    wide = iqm_interval([[3.0, 7.0]], confidence=0.8)  # 10% and 90% quantiles: still a and b
    assert (wide.low, wide.high) == (3.0, 7.0)
    narrow = iqm_interval([[3.0, 7.0]], confidence=0.4)  # 30% and 70% quantiles: the middle atom
    assert narrow.low == narrow.high == 5.0


def test_interval_contains_the_iqm_and_shrinks_with_more_seeds() -> None:
    widths = []
    for n in (10, 40, 160):
        # evenly spread quantiles of N(100, 20²): the spread of the scores does not depend on sampling noise
        x = 100.0 + 20.0 * sps.norm.ppf((np.arange(n) + 0.5) / n)
        interval = iqm_interval([x])
        assert interval.low <= interval.estimate <= interval.high and interval.n == n
        assert interval.estimate == pytest.approx(float(sps.trim_mean(x, 0.25)))
        widths.append(interval.high - interval.low)
    # about 1/sqrt(n): 4 times the seeds, about half the width
    assert widths[0] > widths[1] > widths[2]
    assert 1.7 < widths[0] / widths[1] < 2.3 and 1.7 < widths[1] / widths[2] < 2.3


def test_intervals_are_reproducible_and_depend_on_the_seed() -> None:
    x = [[12.0, 3.5, 8.0, 9.5, 1.0, 15.0, 7.0]]
    first, again = iqm_interval(x), iqm_interval(x)
    assert first == again
    other = iqm_interval(x, seed=1)
    assert other.estimate == first.estimate and (other.low, other.high) != (first.low, first.high)
    y = [[1.0, 2.0, 9.0, 4.0]]
    assert probability_of_improvement_interval(x, y) == probability_of_improvement_interval(x, y)


def test_one_task_bootstrap_matches_scipy_bootstrap() -> None:
    x = np.array([210.0, 480.0, 500.0, 355.0, 500.0, 120.0, 430.0, 500.0, 275.0, 460.0])
    ours = iqm_interval([x], reps=50_000)
    theirs = sps.bootstrap(
        (x,),
        lambda s, axis: sps.trim_mean(s, 0.25, axis=axis),
        n_resamples=50_000,
        method="percentile",
        rng=np.random.default_rng(123),
    ).confidence_interval
    # two Monte Carlo estimates of the same percentiles: equal up to the resampling noise
    width = ours.high - ours.low
    assert ours.low == pytest.approx(theirs.low, abs=0.03 * width)
    assert ours.high == pytest.approx(theirs.high, abs=0.03 * width)


def test_the_bootstrap_is_stratified_over_tasks() -> None:
    # two tasks on different scales, 5 runs each. Redrawn within each task, every bootstrap sample holds
    # five 0s and five 10s, so the pooled IQM (drop 2 at each end: mean of three 0s and three 10s) is always 5.
    tasks = [np.zeros(5), np.full(5, 10.0)]
    interval = iqm_interval(tasks)
    assert (interval.estimate, interval.low, interval.high) == (5.0, 5.0, 5.0)
    # redrawn across tasks it would vary
    pooled = iqm_interval([np.concatenate(tasks)])
    assert pooled.low < 5.0 < pooled.high


def test_stratified_bootstrap_checks_its_input() -> None:
    def mean(*xs: np.ndarray) -> np.ndarray:
        return np.concatenate(xs, axis=1).mean(axis=1)

    assert stratified_bootstrap([[4.0], [6.0]], mean) == Interval(5.0, 5.0, 5.0, 0.95, 2)  # nothing to redraw
    with pytest.raises(ValueError, match="at least one task"):
        stratified_bootstrap([], mean)
    with pytest.raises(ValueError, match="at least one task"):
        stratified_bootstrap([[1.0], []], mean)
    with pytest.raises(ValueError, match="finite"):
        stratified_bootstrap([[1.0, float("nan")]], mean)
    with pytest.raises(ValueError, match="confidence"):
        stratified_bootstrap([[1.0, 2.0]], mean, confidence=95)
    with pytest.raises(ValueError, match="reps"):
        stratified_bootstrap([[1.0, 2.0]], mean, reps=0)


# --------------------------------------------------------------------------- probability of improvement
def test_probability_of_improvement_by_hand_and_as_mann_whitney() -> None:
    # x = (1, 2, 3), y = (0, 2, 5): 1 beats 0; 2 beats 0 and ties 2; 3 beats 0 and 2 → (1 + 1.5 + 2) / 9
    assert probability_of_improvement([[1, 2, 3]], [[0, 2, 5]]) == pytest.approx(4.5 / 9)
    # x = (3, 4), y = (1, 2, 3): 3 beats 1, 2 and ties 3; 4 beats all → (2.5 + 3) / 6
    assert probability_of_improvement([[3, 4]], [[1, 2, 3]]) == pytest.approx(5.5 / 6)
    assert probability_of_improvement([[1, 2, 3]], [[3, 4]]) == pytest.approx(1 - 5.5 / 6)
    rng = np.random.default_rng(3)
    for n, m in ((3, 5), (10, 10), (7, 2)):
        x, y = rng.integers(0, 6, n).astype(float), rng.integers(0, 6, m).astype(float)  # with ties
        u = sps.mannwhitneyu(x, y).statistic
        assert probability_of_improvement([x], [y]) == pytest.approx(u / (n * m))
    # over tasks: the mean of the per-task probabilities
    assert probability_of_improvement([[1, 2, 3], [3, 4]], [[0, 2, 5], [1, 2, 3]]) == pytest.approx(
        (4.5 / 9 + 5.5 / 6) / 2
    )
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement([[1.0]], [[1.0], [2.0]])


def test_probability_of_improvement_interval() -> None:
    x, y = [[5.0, 6.0, 7.0, 8.0, 9.0]], [[1.0, 2.0, 3.0, 4.0, 5.5]]
    interval = probability_of_improvement_interval(x, y)
    assert interval.estimate == pytest.approx(24 / 25) and interval.low <= interval.estimate <= interval.high <= 1.0
    assert interval.n == 5
    # separated samples: every redraw gives 1
    sep = probability_of_improvement_interval([[5.0, 6.0]], [[1.0, 2.0, 3.0]])
    assert (sep.estimate, sep.low, sep.high) == (1.0, 1.0, 1.0)
    # X and Y redrawn independently: the same as scipy's unpaired two-sample bootstrap
    a = np.array([3.0, 8.0, 5.0, 9.0, 4.0, 7.0])
    b = np.array([2.0, 6.0, 5.0, 1.0, 7.0, 3.0, 4.0])

    def poi(s: np.ndarray, t: np.ndarray, axis: int) -> np.ndarray:
        d = s[..., :, None] - t[..., None, :]
        return (d > 0).mean(axis=(-2, -1)) + 0.5 * (d == 0).mean(axis=(-2, -1))

    theirs = sps.bootstrap(
        (a, b), poi, n_resamples=20_000, method="percentile", rng=np.random.default_rng(5)
    ).confidence_interval
    ours = probability_of_improvement_interval([a], [b], reps=20_000)
    assert ours.low == pytest.approx(theirs.low, abs=0.02) and ours.high == pytest.approx(theirs.high, abs=0.02)


# --------------------------------------------------------------------------- the report
def _row(library: str, seed: int, final: float, curve: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "index": 100 * (library == "sb3") + seed,
        "library": library,
        "algo": "trpo",
        "env": "CartPole-v1",
        "seed": seed,
        "status": "ok",
        "steps": 1000,
        "budget": 1000,
        "train_seconds": 1.0,
        "steps_per_second": 1000.0 if library == "natrl" else 500.0,
        "final_eval_mean": final,
        "final_eval_std": 0.0,
        "implementation": "natrl 0.1.0" if library == "natrl" else "sb3-contrib TRPO 2.9.2",
        "curve": [{"steps": 100 * i, "train_seconds": i, "mean": m, "std": 0.0} for i, m in enumerate(curve or [])],
        **extra,
    }


def test_last_three_evaluations() -> None:
    assert last_evaluations_mean(_row("natrl", 0, 9.0, [1.0, 2.0, 3.0, 4.0, 9.0])) == pytest.approx(16 / 3)
    assert last_evaluations_mean(_row("natrl", 0, 4.0, [2.0, 4.0])) == 3.0  # fewer than three: all of them
    assert last_evaluations_mean(_row("natrl", 0, 7.0)) == 7.0  # no curve: the final evaluation
    row = _row("natrl", 0, 9.0, [5.0, 6.0, 9.0])
    row["curve"][1]["mean"] = None  # a NaN written as null
    assert last_evaluations_mean(row) == 7.0


def test_report_ranks_only_with_five_seeds_and_disjoint_intervals() -> None:
    ours = [_row("natrl", s, 500.0 - s, [400.0, 480.0, 500.0 - s]) for s in range(5)]
    theirs = [_row("sb3", s, 200.0 + 10 * s, [150.0, 180.0, 200.0 + 10 * s]) for s in range(5)]
    table = markdown_table(ours + theirs, {"command": "natrl bench", "versions": {}})
    line = next(x for x in table.splitlines() if x.startswith("| CartPole-v1 | trpo | sb3-contrib TRPO 2.9.2 | 5 / 5"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "1.00" and cells[5] == "1.00"  # every natrl run beats every peer run: no spread
    assert cells[6].startswith("498.0 [49") and cells[7].startswith("220.0 [2")  # IQM: mean of the middle 3
    assert cells[-1] == "natrl higher"
    # 4 seeds: no verdict, whatever the intervals
    table4 = markdown_table(ours[:4] + theirs[:4], {"command": "natrl bench", "versions": {}})
    assert "not ranked: < 5 seeds" in table4 and "natrl higher" not in table4


def test_report_aggregates_over_envs_stratified() -> None:
    rows = []
    for env, scale in (("CartPole-v1", 500.0), ("Pendulum-v1", -200.0)):
        for s in range(3):
            rows.append({**_row("natrl", s, scale + s), "env": env, "index": len(rows)})
            rows.append({**_row("sb3", s, scale - 10 - s), "env": env, "index": len(rows)})
    table = markdown_table(rows, {"command": "natrl bench", "versions": {}})
    assert "### Over envs" in table
    line = next(
        x for x in table.splitlines() if x.startswith("| trpo | sb3-contrib TRPO 2.9.2 | CartPole-v1, Pendulum-v1")
    )
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "1.00"  # natrl's runs beat the peer's on both envs


# --------------------------------------------------------------------------- provenance
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_source_revision_of_a_checkout_and_of_a_plain_folder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    package = repo / "natrl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", "natrl/__init__.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    head = _git(repo, "rev-parse", "HEAD")
    assert source_revision(package) == {"commit": head, "dirty": False, "dirty_paths": []}
    (package / "__init__.py").write_text("x = 1\n")
    assert source_revision(package) == {"commit": head, "dirty": True, "dirty_paths": ["natrl/__init__.py"]}
    # an installed copy inside a repository that does not track it (a venv's site-packages, say)
    other = repo / "venv" / "natrl"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    assert source_revision(other)["commit"] is None
    plain = tmp_path / "plain" / "natrl"
    plain.mkdir(parents=True)
    assert source_revision(plain) == {"commit": None, "dirty": None, "dirty_paths": []}


def test_run_versions_name_the_peer_libraries_used() -> None:
    assert set(run_versions("natrl")) >= {"natrl", "torch", "gymnasium", "numpy"}
    assert "stable-baselines3" not in run_versions("natrl")
    assert {"stable-baselines3", "sb3-contrib"} <= set(run_versions("sb3"))
    assert "tianshou" in run_versions("tianshou")
    assert new_sweep_id() != new_sweep_id()


def test_report_shows_commits_and_refuses_ratios_across_sweeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = "a" * 40, "b" * 40
    sweep_a = [_row("natrl", s, 500.0, sweep="A", commit=a, dirty=False, command="natrl bench a") for s in (0, 1)]
    sweep_a.append(_row("sb3", 0, 480.0, sweep="A", commit=a, dirty=False, command="natrl bench a"))
    sweep_b = [_row("sb3", 1, 490.0, sweep="B", commit=b, dirty=True, command="natrl bench b")]
    for name, rows, sweep, commit in (("a", sweep_a, "A", a), ("b", sweep_b, "B", b)):
        (tmp_path / name).mkdir()
        meta = {"command": f"natrl bench {name}", "sweep": sweep, "commit": commit, "dirty": name == "b"}
        write_results(tmp_path / name, rows, {**meta, "dirty_paths": ["natrl/x.py"] if name == "b" else []})
    out = tmp_path / "merged"
    assert main(["--report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "the rows come from 2 sweeps" in captured.err and "ratios pair only runs of one sweep" in captured.err
    table = (out / "table.md").read_text()
    assert f"Code (s1): natrl commit `{a[:12]}` (clean)" in table
    assert f"Code (s2): natrl commit `{b[:12]}` (with uncommitted changes: natrl/x.py)" in table
    peer = next(x for x in table.splitlines() if x.startswith("| CartPole-v1 | trpo | sb3-contrib"))
    # seed 0 pairs within sweep A; seed 1's natrl run is in A and its peer run in B: left out
    assert peer.rstrip(" |").endswith("| 2.00 (1 seed) | –")
    assert "seed 1 ran in different sweeps; no ratio across sweeps" in table
    merged = json.loads((out / "results.json").read_text())["metadata"]
    assert set(merged["sweeps"]) == {"A", "B"} and merged["sweeps"]["B"]["commit"] == b
    # only the peer's seed 1 run, in another sweep: no ratio at all
    only_b = [r for r in sweep_a if r["library"] == "natrl"][1:] + sweep_b
    table = markdown_table(only_b, {"command": "", "versions": {}, "sweeps": {}})
    assert "– (other sweep)" in table


def test_index_lists_the_sweeps_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = [_row("natrl", 0, 500.0)]
    new = [_row("natrl", 0, 500.0, sweep="S", commit="c" * 40, dirty=True, command="natrl bench --seeds 0 | x")]
    write_results(tmp_path, old, {"command": "natrl bench old", "date": "2026-11-01T10:00:00+00:00"})
    (tmp_path / "results.json").rename(tmp_path / "old-results.json")
    (tmp_path / "old-table.md").write_text("# old\n")
    meta = {"command": "natrl bench --seeds 0 | x", "date": "2026-12-01T10:00:00+00:00", "commit": "c" * 40}
    write_results(tmp_path, new, {**meta, "dirty": True})
    (tmp_path / "results.json").rename(tmp_path / "new-results.json")
    (tmp_path / "notes.json").write_text("[1, 2]")
    assert main(["--index", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = (tmp_path / "index.md").read_text()
    lines = [x for x in text.splitlines() if x.startswith("| ")][1:]  # the rows below the header
    assert lines[0].startswith("| new ([json](new-results.json)) | 2026-12-01 10:00:00 | `cccccccccccc`+ | 1 |")
    assert "`natrl bench --seeds 0 \\| x`" in lines[0]  # a pipe in a command does not split the cell
    assert lines[1].startswith("| [old](old-table.md) ([json](old-results.json)) | 2026-11-01 10:00:00 | – | 1 |")
    assert "Other JSON files (no sweep metadata): [notes.json](notes.json)." in text
    assert main(["--index", str(tmp_path)]) == 0 and (tmp_path / "index.md").read_text() == text  # stable
    assert main(["--index", str(tmp_path / "missing")]) == 2
