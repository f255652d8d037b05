"""The compact summary of a sweep, ``summary.md``: one row per natrl/peer pair, the README's headline table.

``natrl bench`` and ``natrl bench --report`` write it beside ``table.md``. A line per sweep names the
commit, date and command the rows come from (the "Code" and "Command" lines of ``table.md``); then one
row per (env, algo, peer) where natrl and a peer library ran with the same budget:

* natrl's and the peer's final return, IQM over seeds with its 95% bootstrap interval;
* P(natrl > peer) of the final returns with its interval;
* natrl's steps/s over the peer's, by training CPU time (steps / train CPU seconds) and by wall clock
  (the ``steps/s ratio`` of ``table.md``), each summed over the seeds whose two runs ran in the same sweep,
  "– (other sweep)" when there is none;
* the verdict of ``table.md``'s "Probability of improvement" section.

Every number comes from the functions behind ``table.md`` (:mod:`natrl.bench.report`,
:mod:`natrl.bench.stats`), so the two files agree. A markdown page quotes a summary between
``<!-- summary: <results.json> -->`` and ``<!-- /summary -->``; :func:`rewrite_summaries` regenerates
every such block from its results file (``python scripts/readme_summary.py`` does it for README.md).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from natrl.bench.report import (
    code_line,
    group_rows,
    interval_text,
    iqm_of_runs,
    poi_interval,
    ratio_text,
    sweeps_of,
    verdict_text,
)
from natrl.bench.results import Row, read_results

__all__ = ["HEADER", "SUMMARY_BLOCK", "rewrite_summaries", "summary_markdown", "summary_of_results"]

HEADER = (
    "env",
    "algo",
    "peer",
    "natrl final IQM [95% CI]",
    "peer final IQM [95% CI]",
    "P(natrl > peer) [95% CI]",
    "steps/s ratio, CPU",
    "wall",
    "verdict",
)
"""The summary table's columns."""

SUMMARY_BLOCK = re.compile(r"(<!-- summary: (?P<path>[^\s>]+) -->\n)(?P<body>.*?)(<!-- /summary -->)", re.DOTALL)
"""A summary quoted in a markdown page: the results file it comes from (relative to the repository root)
in the opening comment, the summary up to the closing comment."""

_CPU_RATE = "steps_per_train_cpu_second"  # steps / train CPU seconds, per run


def _with_cpu_rate(row: Row) -> Row:
    steps, cpu = row.get("steps"), row.get("train_cpu_seconds")
    if steps is None or cpu is None or not math.isfinite(float(cpu)) or float(cpu) <= 0:
        return row
    return {**row, _CPU_RATE: float(steps) / float(cpu)}


def summary_markdown(rows: Sequence[Row], metadata: dict[str, Any]) -> str:
    """The summary of a sweep's (or a merge's) rows as markdown: provenance lines, a blank line, the table."""
    sweeps = sweeps_of(rows, metadata)
    several = len(sweeps) > 1
    lines = [
        f"Sweep{f' {s.label}' if several else ''}: {code_line(s)}"
        + (f"; command `{s.command}`" if s.command else "")
        + ("  " if several else "")
        for s in sweeps.values()
    ]
    groups = group_rows([_with_cpu_rate(r) for r in rows])
    natrl = {g.pair_key: g for g in groups if g.library == "natrl"}
    pairs = [(natrl[g.pair_key], g) for g in groups if g.library != "natrl" and g.pair_key in natrl]
    if not pairs:
        return "\n".join([*lines, "", "No peer library ran beside natrl in these results."]) + "\n"
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for ours, peer in pairs:
        a, b = iqm_of_runs(ours.ok), iqm_of_runs(peer.ok)
        cells = [
            peer.env,
            peer.algo,
            peer.label(),
            interval_text(a),
            interval_text(b),
            interval_text(poi_interval(ours, peer, "final"), 2),
            ratio_text(ours, peer, _CPU_RATE),
            ratio_text(ours, peer, "steps_per_second"),
            verdict_text(a, b, peer.label()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_of_results(path: str | os.PathLike[str]) -> str:
    """:func:`summary_markdown` of a results.json (or of the folder holding it).

    Raises:
        OSError, ValueError: as :func:`natrl.bench.results.read_results`.
    """
    metadata, rows = read_results(path)
    return summary_markdown(rows, metadata)


def rewrite_summaries(text: str, root: str | os.PathLike[str]) -> str:
    """``text`` with every :data:`SUMMARY_BLOCK` regenerated from the results file it names (relative to
    ``root``); the summary is followed by a blank line so that the table ends before the closing comment.

    Raises:
        ValueError: a block's results file cannot be read or is not a results.json (the message names it).
    """

    def regenerate(match: re.Match[str]) -> str:
        source = Path(root) / match["path"]
        try:
            summary = summary_of_results(source)
        except (OSError, ValueError) as exc:
            raise ValueError(f"summary block of {match['path']}: {exc}") from None
        return f"{match[1]}{summary}\n{match[4]}"

    return SUMMARY_BLOCK.sub(regenerate, text)
