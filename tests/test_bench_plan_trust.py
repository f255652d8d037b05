"""Planning a sweep imports nothing a preset names: ``natrl bench`` (``--dry-run`` included) resolves a preset's
wrapper only among the classes a file may name (natrl.rl.trusted), as ``natrl tune`` does. natrl's own wrappers
still reach the peer's translation (tests/test_bench.py: MinAtarImage's frames give SB3 natrl's MinAtarCNN)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from natrl.bench.jobs import plan_jobs


def test_planning_does_not_import_the_module_a_presets_wrapper_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "natrl_test_preset_named_module"
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\nclass Wrap:\n    pass\n",
        encoding="utf-8",
    )
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "ppo.toml").write_text(
        f'[default]\ntotal_steps = 1000\n\n["CartPole-v1"]\nwrapper = "{module}:Wrap"\n', encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    jobs = plan_jobs(["ppo"], ["CartPole-v1"], [0], against="sb3", steps=1000, agents_dir=agents)
    assert [(j.library, j.wrapper) for j in jobs] == [("natrl", f"{module}:Wrap"), ("sb3", f"{module}:Wrap")]
    assert not marker.exists() and module not in sys.modules
