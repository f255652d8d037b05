"""Agent specs: tuned hyperparameters per algorithm and environment, read from TOML.

Each algorithm has one file ``agents/<algo>.toml`` with a ``[default]`` table and
one table per environment id, in the spirit of rl-baselines3-zoo's hyperparams.
Two keys are not hyperparameters: ``total_steps`` (the step budget) and
``expected_return`` (the deterministic evaluation return a run of that budget
should reach). Every other key must be a field of the algorithm's config class;
an unknown key is an error naming the key and the file.

The folder is found, in order: the ``agents_dir`` argument, the environment
variable ``NATRL_AGENTS_DIR``, then the presets shipped with the package,
``natrl/agents`` read with :func:`importlib.resources.files` (the repository's
top-level ``agents/`` folder, which ``natrl/agents`` links to in a checkout or an
editable install and which the wheel holds as package data).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Preset", "PresetError", "agents_dir", "list_presets", "load_preset", "packaged_agents_dir", "read_spec"]

_META_KEYS = ("total_steps", "expected_return", "env_kwargs", "wrapper", "policy", "policy_kwargs")


class PresetError(ValueError):
    """A preset file is missing, unreadable, or has an unknown key."""


@dataclass(frozen=True)
class Preset:
    """The resolved preset of one (algorithm, environment).

    Attributes:
        algo: algorithm name, e.g. "trpo".
        env_id: environment id.
        table: the TOML table used ("default" when the env has none of its own).
        hyperparameters: config fields (the default table updated by the env table).
        total_steps: the step budget.
        expected_return: the evaluation threshold, if the preset states one.
        source: the TOML file.
        env_kwargs: keyword arguments of ``gym.make`` (a ``[ENV.env_kwargs]`` sub-table).
        wrapper: the env wrapper as ``"module:Class"`` (e.g. ``"natrl.rl.atari:AtariWrapper"``).
        policy: a built-in policy name (e.g. ``"MlpLstmPolicy"``; None: the agent's default).
        policy_kwargs: its stable-baselines3 keywords with plain values (a ``[ENV.policy_kwargs]``
            sub-table, e.g. ``lstm_hidden_size = 64``).
    """

    algo: str
    env_id: str
    table: str
    hyperparameters: dict[str, Any]
    total_steps: int
    expected_return: float | None
    source: Path | None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    wrapper: str | None = None
    policy: str | None = None
    policy_kwargs: dict[str, Any] = field(default_factory=dict)


def packaged_agents_dir() -> Path | None:
    """The presets shipped with the package (``natrl/agents``), or None when this installation has none.

    The folder is found with :func:`importlib.resources.files`, so it is the one of the natrl that is
    imported: the checkout's ``agents/`` for an editable install, the wheel's copy for a regular one. The
    path is resolved, so that messages name the checkout's ``agents/<algo>.toml`` and not the link.
    """
    folder = resources.files("natrl").joinpath("agents")
    if not isinstance(folder, Path) or not folder.is_dir():  # e.g. a zip import: not a folder of files
        return None
    return folder.resolve()


def agents_dir(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding the agent specs, or None when there is none.

    Args:
        path: a folder given by the caller (``--agents-dir``); it wins over ``NATRL_AGENTS_DIR``, which
            wins over the packaged presets (:func:`packaged_agents_dir`).

    Raises:
        PresetError: ``path`` (or ``NATRL_AGENTS_DIR``) was given but is not a folder: a typo must not
            fall back to the built-in presets silently.
    """
    given = ((path, "agents directory"), (os.environ.get("NATRL_AGENTS_DIR"), "NATRL_AGENTS_DIR"))
    for folder, what in given:
        if folder is not None and not Path(folder).is_dir():
            raise PresetError(f"{what} {folder} is not a folder; point it at a folder of <algo>.toml agent specs")
    for folder, _ in given:
        if folder is not None:
            return Path(folder)
    return packaged_agents_dir()


def read_spec(
    algo: str, directory: str | os.PathLike[str] | None = None
) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """All tables of ``<algo>.toml`` (empty when there is no presets folder)."""
    folder = agents_dir(directory)
    if folder is None:
        return {}, None
    path = folder / f"{algo}.toml"
    if not path.is_file():
        return {}, None
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML: {exc}") from None
    for name, table in data.items():
        if not isinstance(table, dict):
            raise PresetError(f"{path}: top-level key {name!r} must be a table like [{name}]")
    return data, path


def load_preset(
    algo: str,
    env_id: str,
    config_cls: type,
    *,
    directory: str | os.PathLike[str] | None = None,
) -> Preset:
    """The preset for ``env_id`` (its table over ``[default]``), validated against ``config_cls``.

    Raises:
        PresetError: a key that is neither a field of ``config_cls`` nor a meta key.
    """
    data, path = read_spec(algo, directory)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for table_name, entries in data.items():
        unknown = sorted(set(entries) - fields - set(_META_KEYS))
        if unknown:
            raise PresetError(
                f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in [{table_name}]; "
                f"valid keys: {', '.join(sorted(fields | set(_META_KEYS)))}"
            )
    merged: dict[str, Any] = dict(data.get("default", {}))
    table = "default"
    if env_id in data:
        merged.update(data[env_id])
        table = env_id
    total = merged.pop("total_steps", 1_000_000)
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise PresetError(f"{path}: total_steps = {total!r} in [{table}]; it must be a positive integer")
    expected = merged.pop("expected_return", None)
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, (int, float))):
        raise PresetError(f"{path}: expected_return = {expected!r} in [{table}]; it must be a number")
    env_kwargs = merged.pop("env_kwargs", {})
    wrapper = merged.pop("wrapper", None)
    if not isinstance(env_kwargs, dict):
        raise PresetError(f"{path}: env_kwargs in [{table}] must be a table, e.g. [{table}.env_kwargs]")
    if wrapper is not None and (not isinstance(wrapper, str) or ":" not in wrapper):
        raise PresetError(f'{path}: wrapper = {wrapper!r} in [{table}]; write it as "module:Class"')
    policy = merged.pop("policy", None)
    policy_kwargs = merged.pop("policy_kwargs", {})
    if policy is not None and not isinstance(policy, str):
        raise PresetError(f'{path}: policy = {policy!r} in [{table}]; write a built-in name such as "MlpLstmPolicy"')
    if not isinstance(policy_kwargs, dict):
        raise PresetError(f"{path}: policy_kwargs in [{table}] must be a table, e.g. [{table}.policy_kwargs]")
    expected_f = None if expected is None else float(expected)
    return Preset(
        algo, env_id, table, merged, total, expected_f, path, dict(env_kwargs), wrapper, policy, dict(policy_kwargs)
    )


def list_presets(algo: str, directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Environment ids with a table of their own in ``<algo>.toml``."""
    data, _ = read_spec(algo, directory)
    return [name for name in data if name != "default"]
