"""Learning tests with fixed seeds and the shipped presets (slow: run with `pytest -m slow`).

Each trains with the preset of agents/<algo>.toml for its budget, evaluates the
deterministic policy on 10 episodes every tenth of the budget (the protocol of
`natrl bench`), and asserts an evaluation reaches the issue's threshold within
the budget. The final evaluation is reported in the failure message.
"""

from __future__ import annotations

import pytest

from natrl.presets import load_preset
from natrl.rl import AGENTS

CASES = [
    ("trpo", "CartPole-v1", 475.0),
    ("npg", "CartPole-v1", 475.0),
    ("ppo", "CartPole-v1", 475.0),
    ("trpo", "Pendulum-v1", -250.0),
    ("ppo", "Pendulum-v1", -250.0),
    ("acktr", "CartPole-v1", 475.0),  # within 200k steps (issue: ACKTR)
]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("algo", "env_id", "threshold"), CASES, ids=[f"{a}-{e}" for a, e, _ in CASES])
def test_reaches_threshold_within_budget(algo: str, env_id: str, threshold: float) -> None:
    cls = AGENTS[algo]
    preset = load_preset(algo, env_id, cls.config_cls)
    assert preset.total_steps <= (200_000 if algo == "acktr" else 100_000)
    agent = cls(env_id, seed=0, **preset.hyperparameters)
    every = preset.total_steps // 10
    evaluations: list[tuple[int, float]] = []

    def evaluate_periodically(a, stats) -> None:
        if a.num_timesteps // every > len(evaluations):
            evaluations.append((a.num_timesteps, a.evaluate(episodes=10, deterministic=True).mean))

    agent.learn(preset.total_steps, progress=False, callback=evaluate_periodically)
    best = max(score for _, score in evaluations)
    assert best >= threshold, f"{algo} {env_id}: best evaluation {best:.1f} < {threshold}; all: {evaluations}"
