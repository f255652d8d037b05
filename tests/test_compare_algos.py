"""scripts/compare_algos.py: two natrl algorithms over a sweep's games, checked on rows whose answers are
worked out by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_algos.py"
_spec = importlib.util.spec_from_file_location("compare_algos", _SCRIPT)
assert _spec is not None and _spec.loader is not None
compare_algos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_algos)


def _row(env: str, algo: str, seed: int, curve: list[float], library: str = "natrl") -> dict:
    points = [{"steps": 100 * (i + 1), "mean": m} for i, m in enumerate(curve)]
    return {"env": env, "algo": algo, "library": library, "seed": seed, "status": "ok", "steps": 100 * len(curve),
            "final_eval_mean": curve[-1], "curve": points}  # fmt: skip


def test_the_mean_curve_keeps_the_points_every_run_has() -> None:
    a = _row("G", "x", 0, [1.0, 2.0, 3.0])
    b = _row("G", "x", 1, [3.0, 4.0])
    steps, means = compare_algos.mean_curve([a, b])
    np.testing.assert_array_equal(steps, [100, 200])
    np.testing.assert_array_equal(means, [2.0, 3.0])


def test_the_first_step_reaching_a_target() -> None:
    steps, means = np.array([100.0, 200.0, 300.0]), np.array([1.0, 5.0, 4.0])
    assert compare_algos.first_step_reaching(steps, means, 4.5) == 200.0
    assert compare_algos.first_step_reaching(steps, means, 5.0) == 200.0
    assert compare_algos.first_step_reaching(steps, means, 6.0) is None


def test_the_table_by_hand() -> None:
    # game A: x's mean curve 2, 6, 8, 9 reaches y's final mean (6) at step 200 of 400: 2.0x.
    # game B: x never reaches y's final mean 10. x wins every pair on A and loses every pair on B: P = 0.5.
    rows = [_row("A", "x", 0, [1, 5, 7, 8]), _row("A", "x", 1, [3, 7, 9, 10]),
            _row("A", "y", 0, [1, 2, 4, 5]), _row("A", "y", 1, [1, 3, 5, 7]),
            _row("B", "x", 0, [1, 1, 1, 1]), _row("B", "x", 1, [2, 2, 2, 2]),
            _row("B", "y", 0, [5, 9, 9, 10]), _row("B", "y", 1, [5, 9, 9, 10]),
            _row("A", "x", 2, [9, 9, 9, 9], library="sb3")]  # fmt: skip
    table = compare_algos.compare(rows, "x", "y")
    lines = table.splitlines()
    assert lines[2].startswith("| A | 9.0 [8.0, 10.0] | 6.0 [5.0, 7.0] | 2 / 2 | 200 | 2.0x |")
    assert lines[3].startswith("| B | 1.5 [1.0, 2.0] | 10.0 | 2 / 2 | – | – |")
    assert lines[-1].startswith("P(x > y) over 2 envs, final evaluations: 0.50")


@pytest.mark.parametrize("algos", [("x", "z"), ("z", "y")])
def test_an_algorithm_without_runs_gives_an_empty_table(algos: tuple[str, str]) -> None:
    rows = [_row("A", "x", 0, [1.0]), _row("A", "y", 0, [2.0])]
    assert len(compare_algos.compare(rows, *algos).splitlines()) == 2
