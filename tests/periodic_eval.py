"""The learning tests' protocols.

:func:`train_as_the_cli` runs ``natrl train`` itself and returns the final deterministic evaluation it
prints (``eval.json``): what a preset's ``expected_return`` means. :func:`learn_with_evaluations` is natrl
bench's protocol in Python: train for a budget, evaluating the deterministic policy on 10 episodes every
tenth of it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import natrl


def learn_with_evaluations(agent: Any, total_steps: int) -> list[tuple[int, float]]:
    """Train ``agent`` for ``total_steps`` steps; (steps, mean return) of every periodic evaluation."""
    every = total_steps // 10
    evaluations: list[tuple[int, float]] = []

    def evaluate_periodically(a: Any, stats: dict[str, float]) -> None:
        if a.num_timesteps // every > len(evaluations):
            evaluations.append((a.num_timesteps, a.evaluate(episodes=10, deterministic=True).mean))

    agent.learn(total_steps, callback=evaluate_periodically)
    return evaluations


def train_as_the_cli(
    algo: str, env_id: str, run_dir: Path, *, seed: int = 0, timeout: float = 3000.0
) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """``natrl train ALGO ENV --seed S --run-dir RUN_DIR --quiet`` in a subprocess (the preset, its budget,
    the CLI's evaluations every tenth of it) with the natrl under test.

    Returns:
        the run's ``eval.json`` (``return_mean`` is the final evaluation ``natrl train`` prints) and the
        (steps, mean return) of every evaluation in ``progress.csv``, the final one last.
    """
    source = str(Path(natrl.__file__).parents[1])  # the checkout under test, not whatever is installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]))
    argv = ["train", algo, env_id, "--seed", str(seed), "--run-dir", str(run_dir), "--quiet"]
    done = subprocess.run([sys.executable, "-m", "natrl", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, f"natrl {' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    final = json.loads((run_dir / "eval.json").read_text())
    with (run_dir / "progress.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["eval/mean_reward"]]
    evaluations = [(int(float(r["time/total_timesteps"])), float(r["eval/mean_reward"])) for r in rows]
    return final, evaluations
