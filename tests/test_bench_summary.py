"""Tests of natrl.bench.summary: the summary's numbers are those of table.md for the same rows, its CPU
ratio is the hand-computed one, ratios never pair runs of two sweeps, and the sweep writes summary.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scipy.stats import trim_mean

from natrl.bench import main
from natrl.bench.report import markdown_table
from natrl.bench.results import write_results
from natrl.bench.summary import HEADER, rewrite_summaries, summary_markdown, summary_of_results

FINALS = {"natrl": [500.0, 410.0, 480.0, 300.0, 495.0], "sb3": [450.0, 470.0, 200.0, 500.0, 460.0]}
RATES = {"natrl": [1000.0, 1200.0, 900.0, 1100.0, 1000.0], "sb3": [400.0, 500.0, 450.0, 300.0, 350.0]}
CPU_SECONDS = {"natrl": [1.2, 1.0, 1.5, 1.1, 0.9], "sb3": [2.0, 2.5, 2.2, 3.0, 2.8]}
STEPS = 1000


def _rows(sweeps: dict[str, str] | None = None, algo: str = "trpo") -> list[dict[str, Any]]:
    """Five seeds of natrl and sb3 on one env, interleaved as a sweep runs them; ``sweeps``: library → sweep id."""
    rows = []
    for seed in range(5):
        for library in ("natrl", "sb3"):
            rows.append(
                {
                    "index": len(rows),
                    "library": library,
                    "algo": algo,
                    "env": "CartPole-v1",
                    "seed": seed,
                    "status": "ok",
                    "budget": STEPS,
                    "steps": STEPS,
                    "steps_per_second": RATES[library][seed],
                    "train_seconds": STEPS / RATES[library][seed],
                    "train_cpu_seconds": CPU_SECONDS[library][seed],
                    "final_eval_mean": FINALS[library][seed],
                    "threshold": 475.0,
                    "threshold_steps": None,
                    "threshold_seconds": None,
                    "implementation": "natrl 0.1.0" if library == "natrl" else "sb3-contrib TRPO 2.9.2",
                    "sweep": (sweeps or {}).get(library, "s-one"),
                    "commit": "0123456789abcdef",
                    "dirty": False,
                    "command": "natrl bench --algos trpo --envs CartPole-v1 --seeds 0-4 --against sb3",
                }
            )
    return rows


def _table_rows(text: str, first: str) -> list[dict[str, str]]:
    """Every row of the markdown table whose header starts with ``| first |``, as {column: cell}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    out = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        out.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return out


def test_summary_numbers_are_those_of_the_table() -> None:
    rows = _rows()
    meta = {"command": rows[0]["command"], "versions": {}, "sweep": "s-one", "date": "2026-12-07T12:00:00+00:00"}
    summary, table = summary_markdown(rows, meta), markdown_table(rows, meta)

    (line, blank, *_) = summary.splitlines()
    assert line == (
        "Sweep: natrl commit `0123456789ab` (clean), 2026-12-07T12:00:00+00:00; "
        "command `natrl bench --algos trpo --envs CartPole-v1 --seeds 0-4 --against sb3`"
    )
    assert blank == ""
    [row] = _table_rows(summary, "env")
    assert tuple(row) == HEADER
    main_rows = {r["library"]: r for r in _table_rows(table, "env")}
    [poi] = _table_rows(table, "env | algo | peer | runs natrl / peer")
    assert (row["env"], row["algo"], row["peer"]) == ("CartPole-v1", "trpo", "sb3-contrib TRPO 2.9.2")
    assert row["natrl final IQM [95% CI]"] == main_rows["natrl"]["final IQM [95% CI]"] == poi["final IQM natrl"]
    assert row["peer final IQM [95% CI]"] == main_rows["sb3-contrib TRPO 2.9.2"]["final IQM [95% CI]"]
    assert row["P(natrl > peer) [95% CI]"] == main_rows["sb3-contrib TRPO 2.9.2"]["P(natrl > peer), final"]
    assert row["P(natrl > peer) [95% CI]"] == poi["P(natrl > peer), final"]
    assert row["wall"] == main_rows["sb3-contrib TRPO 2.9.2"]["steps/s ratio"]
    assert row["verdict"] == poi["verdict"]
    # the same numbers computed another way: IQM of 5 = mean of the middle 3, PoI by counting, sums of steps/s
    natrl_iqm = float(trim_mean(FINALS["natrl"], 0.25))
    assert natrl_iqm == pytest.approx((480.0 + 410.0 + 495.0) / 3)
    assert row["natrl final IQM [95% CI]"].startswith(f"{natrl_iqm:.1f} [")
    wins = sum((x > y) + 0.5 * (x == y) for x in FINALS["natrl"] for y in FINALS["sb3"])
    assert row["P(natrl > peer) [95% CI]"].startswith(f"{wins / 25:.2f} [")
    assert row["wall"] == f"{sum(RATES['natrl']) / sum(RATES['sb3']):.2f}"
    cpu = sum(STEPS / c for c in CPU_SECONDS["natrl"]) / sum(STEPS / c for c in CPU_SECONDS["sb3"])
    assert row["steps/s ratio, CPU"] == f"{cpu:.2f}"
    assert row["verdict"] == "level (intervals overlap)"


def test_summary_ratios_stay_within_one_sweep() -> None:
    # natrl in one sweep, the peer in another: returns are compared, speeds are not
    crossed = _rows({"natrl": "a", "sb3": "b"})
    summary = summary_markdown(crossed, {"sweeps": {"a": {"date": "d1"}, "b": {"date": "d2"}}})
    assert summary.splitlines()[:2] == [
        "Sweep s1: natrl commit `0123456789ab` (clean), d1; command `natrl bench --algos trpo --envs CartPole-v1 "
        "--seeds 0-4 --against sb3`  ",
        "Sweep s2: natrl commit `0123456789ab` (clean), d2; command `natrl bench --algos trpo --envs CartPole-v1 "
        "--seeds 0-4 --against sb3`  ",
    ]
    [row] = _table_rows(summary, "env")
    assert row["steps/s ratio, CPU"] == row["wall"] == "– (other sweep)"
    assert (
        row["P(natrl > peer) [95% CI]"]
        == _table_rows(summary_markdown(_rows(), {}), "env")[0]["P(natrl > peer) [95% CI]"]
    )
    # seeds 3 and 4 of the peer re-run in a later sweep: the ratios pair seeds 0-2 only
    partial = [{**r, "sweep": "b"} if r["library"] == "sb3" and r["seed"] >= 3 else r for r in _rows()]
    [row] = _table_rows(summary_markdown(partial, {}), "env")
    wall = sum(RATES["natrl"][:3]) / sum(RATES["sb3"][:3])
    cpu = sum(STEPS / c for c in CPU_SECONDS["natrl"][:3]) / sum(STEPS / c for c in CPU_SECONDS["sb3"][:3])
    assert (row["wall"], row["steps/s ratio, CPU"]) == (f"{wall:.2f} (3 seeds)", f"{cpu:.2f} (3 seeds)")


def test_a_natrl_only_sweep_says_so() -> None:
    rows = [r for r in _rows(algo="npg") if r["library"] == "natrl"]
    summary = summary_markdown(rows, {})
    assert "| env |" not in summary and summary.endswith("No peer library ran beside natrl in these results.\n")


def test_report_writes_the_summary_and_a_page_block_is_regenerated(tmp_path: Path) -> None:
    rows = _rows()
    (tmp_path / "a").mkdir()
    write_results(tmp_path / "a", rows, {"command": rows[0]["command"], "sweep": "s-one", "eval_episodes": 10})
    out = tmp_path / "merged"
    assert main(["--report", str(tmp_path / "a"), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary == summary_of_results(out) == summary_of_results(tmp_path / "a" / "results.json")
    page = "intro:\n<!-- summary: merged/results.json -->\nstale\n<!-- /summary -->\nafter\n"
    fresh = rewrite_summaries(page, tmp_path)
    assert fresh == f"intro:\n<!-- summary: merged/results.json -->\n{summary}\n<!-- /summary -->\nafter\n"
    assert rewrite_summaries(fresh, tmp_path) == fresh
    with pytest.raises(ValueError, match=r"summary block of missing\.json"):
        rewrite_summaries("<!-- summary: missing.json -->\n<!-- /summary -->", tmp_path)
