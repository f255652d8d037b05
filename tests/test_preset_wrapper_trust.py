"""A preset is a file, so the wrapper it names is never imported: ``natrl train`` and the bench worker resolve a
preset's ``wrapper = "module:Class"`` among gymnasium's and natrl's wrapper classes (natrl.rl.trusted), as
``natrl tune``, resumed runs and bench planning do; anything else is refused with one line naming the field and how
to pass one's own wrapper. ``--wrapper MODULE:CLASS`` typed on the command line is the user's code and is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from natrl.bench.jobs import plan_jobs
from natrl.bench.worker import evaluation_env_factory, run_job
from natrl.cli import main

_SCRATCH = "natrl_test_preset_wrapper_module"


def _scratch_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module that leaves a marker file when imported and defines a real gymnasium wrapper."""
    marker = tmp_path / "imported"
    (tmp_path / f"{_SCRATCH}.py").write_text(
        "from pathlib import Path\nimport gymnasium as gym\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "class Wrap(gym.Wrapper):\n    pass\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, _SCRATCH, raising=False)
    return marker


def _agents_dir(tmp_path: Path, wrapper: str) -> Path:
    agents = tmp_path / "agents"
    agents.mkdir(exist_ok=True)
    (agents / "ppo.toml").write_text(
        f'[default]\ntotal_steps = 64\n\n["CartPole-v1"]\nwrapper = "{wrapper}"\n', encoding="utf-8"
    )
    return agents


_TRAIN = ["--steps", "64", "--set", "n_steps=64", "--set", "batch_size=64", "--eval-every", "0", "--quiet"]


@pytest.mark.parametrize("wrapper", [f"{_SCRATCH}:Wrap", "os:system"])
def test_train_refuses_a_preset_wrapper_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wrapper: str
) -> None:
    marker = _scratch_module(tmp_path, monkeypatch)
    agents = _agents_dir(tmp_path, wrapper)
    run = tmp_path / "run"
    assert main(["train", "ppo", "CartPole-v1", "--agents-dir", str(agents), "--run-dir", str(run), *_TRAIN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not load from a file" in err, err
    assert "[CartPole-v1] in" in err and f"pass --wrapper {wrapper}" in err, err
    assert not marker.exists() and _SCRATCH not in sys.modules
    assert not run.exists()


def test_train_imports_a_wrapper_typed_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = _scratch_module(tmp_path, monkeypatch)
    run = tmp_path / "run"
    argv = ["train", "ppo", "CartPole-v1", "--wrapper", f"{_SCRATCH}:Wrap", "--run-dir", str(run), *_TRAIN]
    assert main(argv) == 0, capsys.readouterr().err
    assert marker.exists() and _SCRATCH in sys.modules
    assert f'wrapper = "{_SCRATCH}:Wrap"' in (run / "config.toml").read_text()


def test_train_runs_the_minatar_preset_and_its_natrl_wrapper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("minatar")
    run = tmp_path / "run"
    small = ["--set", "n_envs=1", "--set", "n_steps=16", "--set", "batch_size=16", "--set", "n_epochs=1"]
    argv = ["train", "ppo", "MinAtar/Breakout-v1", "--steps", "16", *small, "--eval-every", "0", "--quiet"]
    assert main([*argv, "--run-dir", str(run)]) == 0, capsys.readouterr().err
    assert 'wrapper = "natrl.rl.minatar:MinAtarImage"' in (run / "config.toml").read_text()


@pytest.mark.parametrize("wrapper", [f"{_SCRATCH}:Wrap", "os:system"])
def test_bench_jobs_refuse_a_preset_wrapper_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrapper: str
) -> None:
    marker = _scratch_module(tmp_path, monkeypatch)
    agents = _agents_dir(tmp_path, wrapper)
    jobs = plan_jobs(["ppo"], ["CartPole-v1"], [0], against="sb3", steps=64, agents_dir=agents)
    assert [j.library for j in jobs] == ["natrl", "sb3"]
    for job in jobs:
        error = run_job(job)["error"]
        assert error.startswith("UntrustedReferenceError: ") and "\n" not in error, error
        assert "preset ppo.toml[CartPole-v1]" in error and "natrl train --wrapper" in error, error
    assert not marker.exists() and _SCRATCH not in sys.modules


def test_a_bench_job_makes_the_minatar_presets_env_with_natrls_wrapper() -> None:
    pytest.importorskip("minatar")
    from natrl.rl.minatar import MinAtarImage

    (job,) = plan_jobs(["ppo"], ["MinAtar/Breakout-v1"], [0], steps=64)
    assert job.wrapper == "natrl.rl.minatar:MinAtarImage"
    env = evaluation_env_factory(job)()
    try:
        assert isinstance(env, MinAtarImage)
        assert env.reset(seed=0)[0].shape == env.observation_space.shape
    finally:
        env.close()
