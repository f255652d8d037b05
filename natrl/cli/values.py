"""``--env-kwargs KEY=VALUE`` values, checked by building the env once (``--set`` values are read by
:func:`natrl.rl.config.parse_overrides`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from natrl.cli.common import CLIError


def parse_env_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """``--env-kwargs`` items as ``gym.make`` keywords (values in TOML syntax, unchecked)."""
    from natrl.rl.config import parse_value

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
        if creator is None:
            return None
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
