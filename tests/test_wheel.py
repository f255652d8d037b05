"""The wheel ships the presets: built with ``pip wheel``, installed outside the checkout, it finds them.

The wheel is built from a copy of the files the build reads (``pyproject.toml``, ``README.md``, ``natrl/``
with its ``agents`` link, ``agents/``), so that a ``build/`` folder left in the checkout by an earlier
build (which setuptools does not clean) cannot slip stale modules into it. The installed package is
imported by a fresh interpreter whose working directory is outside the checkout and whose ``PYTHONPATH``
starts with the install target; the reference values are read from the checkout's ``agents/trpo.toml``
with ``tomllib`` directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
META = ("total_steps", "expected_return", "env_kwargs", "wrapper", "policy", "policy_kwargs")

_PROBE = """
import json, natrl
from natrl.presets import load_preset, packaged_agents_dir
from natrl.rl import TRPOConfig
p = load_preset("trpo", "CartPole-v1", TRPOConfig)
print(json.dumps({"natrl": natrl.__file__, "folder": str(packaged_agents_dir()), "source": str(p.source),
                  "hyperparameters": p.hyperparameters, "total_steps": p.total_steps,
                  "expected_return": p.expected_return, "table": p.table}))
"""


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "natrl", dest / "natrl", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "agents", dest / "agents", ignore=ignore)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheels")
    _copy_sources(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(out)], cwd=src)
    (found,) = out.glob("natrl-*.whl")
    return found


def test_the_wheel_holds_every_preset_of_the_checkout(wheel: Path) -> None:
    expected = sorted(
        f"natrl/agents/{p.relative_to(ROOT / 'agents').as_posix()}" for p in (ROOT / "agents").rglob("*.toml")
    )
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert len(expected) >= 5
    assert sorted(n for n in names if n.startswith("natrl/agents/")) == expected
    assert not [n for n in names if ".data/" in n]  # no data-files outside the package any more


def test_an_installed_wheel_finds_its_presets_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NATRL_AGENTS_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    proc = _run([sys.executable, "-c", _PROBE], cwd=elsewhere, env=env)
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    assert Path(got["natrl"]).resolve().is_relative_to(site.resolve())
    assert Path(got["folder"]) == (site / "natrl" / "agents").resolve()
    assert Path(got["source"]) == (site / "natrl" / "agents" / "trpo.toml").resolve()
    # the reference: the checkout's file, read and merged here
    with (ROOT / "agents" / "trpo.toml").open("rb") as f:
        spec = tomllib.load(f)
    merged = {**spec["default"], **spec["CartPole-v1"]}
    assert got["table"] == "CartPole-v1"
    assert got["total_steps"] == merged["total_steps"]
    assert got["expected_return"] == merged.get("expected_return")
    assert got["hyperparameters"] == {k: v for k, v in merged.items() if k not in META}
