"""Where the presets are found: the ``agents_dir`` argument, then ``NATRL_AGENTS_DIR``, then the package's own.

The reference for the packaged folder is the checkout's top-level ``agents/`` (this test runs against the
checkout or its editable install); the reference for the values is that folder's TOML read with ``tomllib``.
An installed wheel is checked in tests/test_wheel.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from natrl.presets import PresetError, agents_dir, list_presets, load_preset, packaged_agents_dir
from natrl.rl import PPOConfig, TRPOConfig

ROOT = Path(__file__).resolve().parent.parent


def _spec(folder: Path, algo: str, default: dict[str, object], env: str, table: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[default]", *(f"{k} = {v}" for k, v in default.items()), f'["{env}"]']
    lines += [f"{k} = {v}" for k, v in table.items()]
    path = folder / f"{algo}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_packaged_presets_are_the_checkouts_agents_folder(monkeypatch) -> None:
    monkeypatch.delenv("NATRL_AGENTS_DIR", raising=False)
    assert packaged_agents_dir() == (ROOT / "agents").resolve()
    assert agents_dir() == (ROOT / "agents").resolve()
    preset = load_preset("ppo", "CartPole-v1", PPOConfig)
    with (ROOT / "agents" / "ppo.toml").open("rb") as f:
        spec = tomllib.load(f)
    merged = {**spec["default"], **spec["CartPole-v1"]}
    assert preset.source == (ROOT / "agents" / "ppo.toml").resolve()
    assert preset.total_steps == merged["total_steps"]
    assert preset.hyperparameters == {k: v for k, v in merged.items() if k not in ("total_steps", "expected_return")}
    trpo_tables = tomllib.loads((ROOT / "agents" / "trpo.toml").read_text())
    assert list_presets("trpo") == [name for name in trpo_tables if name != "default"]


def test_the_argument_wins_over_the_environment_which_wins_over_the_package(tmp_path, monkeypatch) -> None:
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    _spec(env_dir, "trpo", {"max_kl": 0.03}, "CartPole-v1", {"total_steps": 111})
    _spec(arg_dir, "trpo", {"max_kl": 0.04}, "CartPole-v1", {"total_steps": 222})
    monkeypatch.setenv("NATRL_AGENTS_DIR", str(env_dir))
    assert agents_dir() == env_dir
    from_env = load_preset("trpo", "CartPole-v1", TRPOConfig)
    assert (from_env.total_steps, from_env.hyperparameters, from_env.source) == (
        111, {"max_kl": 0.03}, env_dir / "trpo.toml"
    )  # fmt: skip
    from_arg = load_preset("trpo", "CartPole-v1", TRPOConfig, directory=arg_dir)
    assert (from_arg.total_steps, from_arg.hyperparameters) == (222, {"max_kl": 0.04})
    # a folder without the algorithm's file gives the defaults, not the package's presets
    assert load_preset("ppo", "CartPole-v1", PPOConfig, directory=arg_dir).source is None


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_a_missing_folder_is_an_error_not_a_fallback(tmp_path, monkeypatch, where: str) -> None:
    missing = tmp_path / "nope"
    good = tmp_path / "good"
    _spec(good, "trpo", {}, "CartPole-v1", {})
    if where == "argument":
        monkeypatch.setenv("NATRL_AGENTS_DIR", str(good))
        call = {"directory": missing}
    else:
        monkeypatch.setenv("NATRL_AGENTS_DIR", str(missing))
        call = {"directory": good}  # a bad NATRL_AGENTS_DIR is reported even when an argument is given
    with pytest.raises(PresetError, match=f"{missing} is not a folder") as info:
        load_preset("trpo", "CartPole-v1", TRPOConfig, **call)
    assert "\n" not in str(info.value)
