"""Argument types of the command lines: positive integers and step counts such as ``1e6`` or ``200k``."""

from __future__ import annotations

import math

__all__ = ["parse_steps", "positive_int"]


def positive_int(text: str) -> int:
    """An integer >= 1 (for argparse)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_steps(text: str, *, minimum: int = 0) -> int:
    """A step count written as ``100000``, ``100_000``, ``1e6``, ``100k`` or ``1M`` (for argparse).

    Raises:
        argparse.ArgumentTypeError: not a whole number, or below ``minimum``.
    """
    import argparse

    s = text.strip().replace("_", "").replace(",", "")
    scale = 1
    if s[-1:].lower() in ("k", "m"):
        scale = 1_000 if s[-1].lower() == "k" else 1_000_000
        s = s[:-1]
    try:
        value = float(s) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a step count: {text!r} (use e.g. 100000, 1e6 or 200k)") from None
    if not math.isfinite(value) or value != int(value) or value < minimum:
        what = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
        raise argparse.ArgumentTypeError(f"a step count must be {what}, got {text!r}")
    return int(value)
