"""The learning tests' protocol (natrl bench's): train for a budget, evaluating the deterministic policy on
10 episodes every tenth of it."""

from __future__ import annotations

from typing import Any


def learn_with_evaluations(agent: Any, total_steps: int) -> list[tuple[int, float]]:
    """Train ``agent`` for ``total_steps`` steps; (steps, mean return) of every periodic evaluation."""
    every = total_steps // 10
    evaluations: list[tuple[int, float]] = []

    def evaluate_periodically(a: Any, stats: dict[str, float]) -> None:
        if a.num_timesteps // every > len(evaluations):
            evaluations.append((a.num_timesteps, a.evaluate(episodes=10, deterministic=True).mean))

    agent.learn(total_steps, progress=False, callback=evaluate_periodically)
    return evaluations
