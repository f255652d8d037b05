"""``KEY=VALUE`` values of ``--set`` and ``--env-kwargs``: TOML syntax, typed by the config's fields."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import sys
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from natrl.cli.common import CLIError


def parse_value(raw: str) -> Any:
    """A ``--set`` value in TOML syntax (``0.02``, ``true``, ``[64, 64]``, ``"relu"``).

    ``none``/``null`` give None; anything TOML cannot read is a plain string
    (so ``--set activation=relu`` needs no quotes).
    """
    text = raw.strip()
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or none"
    if origin is tuple:
        return "a list of integers like [64, 64]" if args and args[0] is int else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


_NO = object()


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (int → float allowed), or ``_NO``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None) and (out := _coerce(value, a)) is not _NO:
                return out
        return _NO
    if origin is tuple:
        if not isinstance(value, list):
            return _NO
        items = [_coerce(v, args[0]) if args else v for v in value]
        return _NO if any(i is _NO for i in items) else tuple(items)
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if tp is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO
    if tp is str:
        return value if isinstance(value, str) else _NO
    return value


def parse_overrides(items: Sequence[str], config_cls: type, algo: str = "") -> dict[str, Any]:
    """``--set key=value`` items as hyperparameters typed by ``config_cls``'s fields.

    Raises:
        CLIError: a malformed item, an unknown key (naming the valid ones) or a
            value of the wrong type. Range checks are left to the config class.
    """
    names = [f.name for f in dataclasses.fields(config_cls)]
    hints = typing.get_type_hints(config_cls)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise CLIError(
                f"unknown hyperparameter {key!r} for {algo or config_cls.__name__} "
                f"(--set {item}){hint} "
                f"valid keys: {', '.join(sorted(names))}"
            )
        value = _coerce(parse_value(raw), hints[key])
        if value is _NO:
            raise CLIError(f"--set {item}: {key} must be {_describe(hints[key])}, got {raw.strip()!r}")
        out[key] = value
    return out


def _env_kwargs(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--env-kwargs expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(raw)
    return out


def _env_keywords(env_id: str) -> list[str] | None:
    """The named keywords of ``env_id``'s constructor (None when its entry point cannot be inspected)."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    try:
        spec = gym.spec(env_id)
        creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
        params = inspect.signature(creator).parameters.values()
    except Exception:
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_env_kwargs(
    env_id: str, env_kwargs: Mapping[str, Any], from_command_line: Collection[str], preset: str
) -> None:
    """Build one ``env_id`` with ``env_kwargs`` now, so that a keyword the env does not take (or a value it
    refuses) is one line naming the keyword and where it came from, not a traceback from the first rollout.

    Args:
        env_id: a registered id.
        env_kwargs: the ``gym.make`` keywords (the preset's updated by the command line's).
        from_command_line: the keys given with ``--env-kwargs`` (the others come from the preset).
        preset: where the preset's come from, e.g. ``[Hopper-v5.env_kwargs] in agents/trpo.toml``.

    Raises:
        CLIError: building the env failed with a TypeError, an AssertionError or a gymnasium error.
    """
    import gymnasium as gym

    from natrl.rl.env import env_factory

    def origin(key: str) -> str:
        return "--env-kwargs" if key in from_command_line else preset

    if "render_mode" in env_kwargs:
        raise CLIError(
            f"render_mode={env_kwargs['render_mode']!r} ({origin('render_mode')}): natrl train renders nothing; "
            "watch or record a saved agent with natrl eval --render or --video"
        )
    try:
        env = env_factory(env_id, env_kwargs)()
    except (TypeError, AssertionError, gym.error.Error) as exc:
        if isinstance(exc, gym.error.DependencyNotInstalled):
            raise
        text = " ".join(str(exc).split())
        match = re.search(r"unexpected keyword argument '(\w+)'", text)
        if isinstance(exc, TypeError) and match and match.group(1) in env_kwargs:
            key = match.group(1)
            known = _env_keywords(env_id)
            takes = f"; it takes {', '.join(known)}" if known else ""
            raise CLIError(f"{env_id} takes no keyword {key!r} (given with {origin(key)}){takes}") from None
        given = ", ".join(f"{k} (given with {origin(k)})" for k in env_kwargs)
        raise CLIError(f"{env_id} cannot be built with env_kwargs {given}: {type(exc).__name__}: {text}") from None
    env.close()
