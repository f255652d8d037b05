"""Unit tests of the run-directory machinery (natrl/runs.py) and `--set` parsing, in-process.

The end-to-end behaviour of the command line is in tests/test_cli.py.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from natrl.rl import PPO, CheckpointError, PPOConfig, TRPOConfig, load_agent
from natrl.rl.config import parse_overrides, parse_value
from natrl.runs import (
    KNOWN_COLUMNS,
    CheckpointManager,
    ProgressLog,
    RunSpec,
    dumps_toml,
    get_rng_state,
    read_progress,
    resume_agent,
    set_rng_state,
    truncate_progress,
)
from natrl.runs.files import RunFileWarning
from natrl.runs.progress import ProgressFileError

TINY = {"n_envs": 2, "n_steps": 16, "n_epochs": 1, "batch_size": 32}


# ----------------------------------------------------------------------------- --set values
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.02", 0.02),
        ("1e-4", 1e-4),
        ("8", 8),
        ("true", True),
        ("[128,128]", [128, 128]),
        ('"relu"', "relu"),
        ("relu", "relu"),  # not TOML: a plain string
        ("none", None),
    ],
)
def test_parse_value_reads_toml_and_falls_back_to_a_string(raw: str, expected: object) -> None:
    value = parse_value(raw)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_overrides_types_values_by_the_config_fields() -> None:
    out = parse_overrides(
        ["max_kl=0.02", "hidden_sizes=[128, 128]", "normalize_obs=true", "cg_iters=20", "damping=1"],
        TRPOConfig,
    )
    assert out == {
        "max_kl": 0.02,
        "hidden_sizes": (128, 128),
        "normalize_obs": True,
        "cg_iters": 20,
        "damping": 1.0,
    }
    assert isinstance(out["damping"], float)  # an int where a float is expected is widened
    assert parse_overrides(["target_kl=none", "clip_range_vf=0.2"], PPOConfig) == {
        "target_kl": None,
        "clip_range_vf": 0.2,
    }


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("max_kll=0.1", "unknown hyperparameter 'max_kll'"),
        ("max_kll=0.1", "did you mean max_kl?"),
        ("max_kll=0.1", "valid keys: "),
        ("damping=abc", "damping must be a number, got 'abc'"),
        ("cg_iters=2.5", "cg_iters must be an integer"),
        ("normalize_obs=1", "normalize_obs must be true or false"),
        ("hidden_sizes=64", "a list of integers"),
        ("hidden_sizes=[64, 0.5]", "a list of integers"),
        ("max_kl", "--set expects KEY=VALUE"),
    ],
)
def test_parse_overrides_rejects_bad_items_with_a_clear_message(item: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_overrides([item], TRPOConfig, "trpo")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- TOML writing
def test_dumps_toml_round_trips_through_tomllib() -> None:
    tables = {
        "run": {"algo": "trpo", "env": 'we"ird\\env', "seed": 3, "steps": 10**6, "flag": False},
        "hyperparameters": {"max_kl": 1e-5, "sizes": [64, 64], "gamma": 0.99, "unset": None},
    }
    text = dumps_toml(tables, header="two\nlines")
    assert text.startswith("# two\n# lines\n")
    back = tomllib.loads(text)
    assert back["run"] == tables["run"]
    assert back["hyperparameters"] == {"max_kl": 1e-5, "sizes": [64, 64], "gamma": 0.99}
    assert "# unset = none" in text


def test_run_spec_round_trips(tmp_path: Path) -> None:
    spec = RunSpec(
        algo="ppo", env_id="CartPole-v1", seed=2, total_steps=5000, device="cpu",
        hyperparameters=PPOConfig(**TINY).to_dict(), eval_every=500, eval_episodes=3,
        checkpoint_every=1000, keep=2, preset_source="agents/ppo.toml", preset_table="CartPole-v1",
        expected_return=475.0, overrides=["n_epochs=1"], created="2025-01-01T00:00:00",
    )  # fmt: skip
    spec.write(tmp_path)
    back = RunSpec.read(tmp_path)
    assert back == RunSpec(**{**spec.__dict__, "hyperparameters": back.hyperparameters})
    # None-valued fields are comments: reading back gives the same config
    assert PPOConfig(**back.hyperparameters) == PPOConfig(**TINY)


# ----------------------------------------------------------------------------- progress.csv
def test_progress_log_has_a_fixed_header_and_leaves_missing_cells_empty(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    log = ProgressLog(path)
    log.write({"timesteps": 10, "kl": 0.5, "custom": 1.5})
    log.write({"timesteps": 20, "eval_return_mean": 7.0, "late_key": 3.0})  # late_key is not a column
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == [*KNOWN_COLUMNS, "custom"]
    cols = read_progress(path)
    np.testing.assert_array_equal(cols["timesteps"], [10, 20])
    np.testing.assert_array_equal(cols["custom"], [1.5, np.nan])
    np.testing.assert_array_equal(cols["eval_return_mean"], [np.nan, 7.0])
    assert "late_key" not in cols
    # appending later keeps the existing header
    again = ProgressLog(path)
    again.write({"timesteps": 30, "custom": 2.0})
    again.close()
    np.testing.assert_array_equal(read_progress(path)["custom"], [1.5, np.nan, 2.0])


def test_truncate_progress_drops_rows_after_the_checkpoint_and_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    log = ProgressLog(path)
    for t in (100, 200, 300, 400):
        log.write({"timesteps": t, "kl": t / 1000})
    log.close()
    with path.open("a") as f:
        f.write("500,1,2,3")  # a row cut off by SIGKILL
    assert list(read_progress(path)["timesteps"]) == [100, 200, 300, 400]  # readers skip it
    with pytest.warns(RunFileWarning, match="its last line was cut off"):
        assert truncate_progress(path, 300) == 3
    text = path.read_text()
    assert text.endswith("\n")
    assert list(read_progress(path)["timesteps"]) == [100, 200, 300]
    log = ProgressLog(path)
    log.write({"timesteps": 400, "kl": 0.9})
    log.close()
    cols = read_progress(path)
    assert list(cols["timesteps"]) == [100, 200, 300, 400]
    assert cols["kl"][-1] == 0.9


def _progress_with_extras(path: Path, steps: tuple[int, ...] = (100, 200, 300, 400)) -> list[str]:
    log = ProgressLog(path)
    for t in steps:
        log.write({"timesteps": t, "kl": t / 1000, "value_loss": t / 10})
    log.close()
    return path.read_text().splitlines()


def test_truncate_progress_rewrites_a_damaged_header_when_the_rows_fit_it(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    log = ProgressLog(path)
    for t in (100, 200, 300):
        log.write({"timesteps": t, "kl": t / 1000})  # the known columns only
    log.close()
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["\x00\x00garbage", *lines[1:]]) + "\n")
    with pytest.raises(ProgressFileError, match=r"line 1 is not a natrl progress\.csv header"):
        ProgressLog(path)  # rows written under that header would be empty cells: refused
    with pytest.warns(RunFileWarning, match=r"line 1 was not a progress\.csv header and is rewritten") as record:
        assert truncate_progress(path, 300) == 3
    assert "kept as progress.csv.damaged" in str(record[0].message)
    assert path.read_text().splitlines() == lines
    assert (tmp_path / "progress.csv.damaged").read_text().startswith("\x00\x00garbage\n")
    log = ProgressLog(path)
    log.write({"timesteps": 400, "kl": 0.4})
    log.close()
    cols = read_progress(path)
    assert list(cols["timesteps"]) == [100, 200, 300, 400] and cols["kl"][-1] == 0.4


def test_truncate_progress_keeps_the_extra_column_names_a_damaged_header_still_has(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _progress_with_extras(path)
    damaged = ["tim?steps", *lines[0].split(",")[1:]]
    path.write_text("\n".join([",".join(damaged), *lines[1:]]) + "\n")
    with pytest.warns(RunFileWarning, match="rewritten from natrl's columns"):
        assert truncate_progress(path, 400) == 4
    assert path.read_text().splitlines() == lines


def test_truncate_progress_refuses_a_header_whose_columns_cannot_be_named(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _progress_with_extras(path)
    damaged = "garbage\n" + "\n".join(lines[1:]) + "\n"
    path.write_text(damaged)
    with pytest.raises(ProgressFileError) as info:
        truncate_progress(path, 400)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "names of its 12 columns are lost" in message and f"mv {path} {path}.damaged" in message
    assert path.read_text() == damaged  # untouched
    assert not (tmp_path / "progress.csv.damaged").exists()


def test_truncate_progress_keeps_the_rows_around_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _progress_with_extras(path, (100, 200, 300, 400, 500))
    cut = lines[2][: len(lines[2]) // 2]  # row 200 cut in the middle of the file
    path.write_text("\n".join([lines[0], lines[1], cut, "not,a,row", *lines[3:]]) + "\n")
    assert list(read_progress(path)["timesteps"]) == [100, 300, 400, 500]
    with pytest.warns(RunFileWarning) as record:
        assert truncate_progress(path, 400) == 3
    (warning,) = record
    assert "2 damaged rows (lines 3, 4) are dropped" in str(warning.message)
    assert "the original is kept as progress.csv.damaged" in str(warning.message)
    assert path.read_text().splitlines() == [lines[0], lines[1], lines[3], lines[4]]
    assert (tmp_path / "progress.csv.damaged").read_text().splitlines()[2] == cut
    # a second repair keeps the first original too
    path.write_text(path.read_text() + "oops\n")
    with pytest.warns(RunFileWarning, match=r"kept as progress\.csv\.damaged-2"):
        truncate_progress(path, 400)


def test_truncate_progress_refuses_a_file_with_no_readable_row(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    path.write_text(",".join(KNOWN_COLUMNS) + "\n" + "\n".join(["x,y", "1,2,3", "\x00\x01"]) + "\n")
    with pytest.raises(ProgressFileError, match="none of its 3 rows can be read"):
        truncate_progress(path, 400)
    # a file holding only a damaged header has nothing to lose: it starts afresh
    path.write_bytes(b"\xff\xfe garbage\n")
    with pytest.warns(RunFileWarning, match="started afresh"):
        assert truncate_progress(path, 400) == 0
    log = ProgressLog(path)
    log.write({"timesteps": 500})
    log.close()
    assert path.read_text().splitlines()[0].split(",") == list(KNOWN_COLUMNS)


def test_progress_log_starts_a_new_line_after_a_cut_off_row(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _progress_with_extras(path, (100,))
    path.write_text(path.read_text() + "200,2,")
    log = ProgressLog(path)
    log.write({"timesteps": 300})
    log.close()
    assert list(read_progress(path)["timesteps"]) == [100, 300]
    assert path.read_text().splitlines()[:2] == lines


# ----------------------------------------------------------------------------- checkpoints
def test_rng_state_round_trip() -> None:
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    assert a == b


def test_checkpoints_keep_the_last_k_and_resume_skips_a_corrupt_one(tmp_path: Path) -> None:
    agent = PPO("CartPole-v1", seed=0, **TINY)
    manager = CheckpointManager(tmp_path / "checkpoints", keep=2)
    for _ in range(3):
        agent.learn(32, reset_num_timesteps=False)
        manager.save(agent, {"time_elapsed": float(agent.num_timesteps)})
    assert [s for s, _ in manager.list()] == [64, 96]
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary files left
    loaded = load_agent(str(manager.path_for(96)))  # an ordinary agent checkpoint
    assert loaded.num_timesteps == 96
    for p, q in zip(loaded.actor.parameters(), agent.actor.parameters(), strict=True):
        assert torch.equal(p, q)

    spec = RunSpec(
        algo="ppo", env_id="CartPole-v1", seed=0, total_steps=200, device="cpu",
        hyperparameters=agent.config.to_dict(), eval_every=0, eval_episodes=1,
        checkpoint_every=32, keep=2,
    )  # fmt: skip
    manager.path_for(96).write_bytes(b"garbage, as if the disk lied")
    (manager.directory / ".step_128.pt.abc.tmp").write_bytes(b"half")
    state = resume_agent(tmp_path, spec)
    assert state.checkpoint == manager.path_for(64)
    assert state.agent.num_timesteps == 64
    assert state.run_state["time_elapsed"] == 64.0
    assert len(state.skipped) == 1 and "step_96.pt" in state.skipped[0]
    assert not (manager.directory / ".step_128.pt.abc.tmp").exists()
    manager.path_for(64).unlink()
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        resume_agent(tmp_path, spec)
