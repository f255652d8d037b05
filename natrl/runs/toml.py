"""A small TOML writer for ``config.toml`` (``tomllib`` only reads TOML)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps_toml"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} as TOML")


def dumps_toml(tables: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Serialise ``{table: {key: value}}`` as TOML (scalars, strings and flat lists).

    ``None`` has no TOML spelling; such a key is written as a comment
    (``# key = none``), so reading the file back gives the field's default.

    Args:
        tables: table name → key/value mapping, written in order.
        header: comment lines put at the top (without the leading ``#``).

    Returns:
        the TOML text; ``tomllib.loads`` reads it back to the same values.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, table in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {_toml_key(key)} = none")
            else:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
