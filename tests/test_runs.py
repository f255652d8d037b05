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

from natrl.callbacks import CheckpointCallback
from natrl.rl import PPO, CheckpointError, PPOConfig, TRPOConfig, load_agent
from natrl.rl.config import parse_overrides, parse_value
from natrl.runs import (
    CheckpointManager,
    RunSpec,
    dumps_toml,
    get_rng_state,
    resume_agent,
    set_rng_state,
)

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


# ----------------------------------------------------------------------------- checkpoints
def test_rng_state_round_trip() -> None:
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    assert a == b


def test_checkpoints_keep_the_last_k_and_resume_skips_a_corrupt_one(tmp_path: Path) -> None:
    agent = PPO("CartPole-v1", seed=0, **TINY)
    saver = CheckpointCallback(
        None, tmp_path / "checkpoints", every_timesteps=32, keep=2, file_name="step_{steps}.pt",
        run_state=lambda: {"time_elapsed": float(agent.num_timesteps)},
    )  # fmt: skip
    agent.learn(96, callback=saver)
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert [s for s, _ in manager.list()] == [64, 96]
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary files left
    loaded = load_agent(str(saver.path_for(96)))  # an ordinary agent checkpoint
    assert loaded.num_timesteps == 96
    for p, q in zip(loaded.actor.parameters(), agent.actor.parameters(), strict=True):
        assert torch.equal(p, q)

    spec = RunSpec(
        algo="ppo", env_id="CartPole-v1", seed=0, total_steps=200, device="cpu",
        hyperparameters=agent.config.to_dict(), eval_every=0, eval_episodes=1,
        checkpoint_every=32, keep=2,
    )  # fmt: skip
    saver.path_for(96).write_bytes(b"garbage, as if the disk lied")
    (manager.directory / ".step_128.pt.abc.tmp").write_bytes(b"half")
    state = resume_agent(tmp_path, spec)
    assert state.checkpoint == saver.path_for(64)
    assert state.agent.num_timesteps == 64
    assert state.run_state["time_elapsed"] == 64.0
    assert len(state.skipped) == 1 and "step_96.pt" in state.skipped[0]
    assert not (manager.directory / ".step_128.pt.abc.tmp").exists()
    saver.path_for(64).unlink()
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        resume_agent(tmp_path, spec)
