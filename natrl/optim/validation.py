"""Checks of numeric options, shared by ``minimize``, the torch.optim classes and K-FAC.

Each check returns the value as a Python ``float`` / ``int`` or raises with one line that names
the argument, the value and the valid range:

* ``TypeError`` for a value of the wrong type (a string, a bool, a float where an int is needed),
* ``ValueError`` for a value out of range (NaN and ±inf are out of every range unless allowed).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["check_int", "check_real"]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(high):
        return f"{'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_real(
    where: str,
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a float after checking that it is a real number in the given interval.

    Args:
        where: the caller, first word of the message (e.g. ``"LBFGS"``).
        name: the argument's name.
        value: a Python or NumPy real number or a one-element real tensor (not a bool or str).
        low: the lower end of the interval.
        high: the upper end.
        low_open: exclude ``low``.
        high_open: exclude ``high``.
        allow_inf: accept +inf (when ``high`` is inf); NaN is never accepted.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is NaN, infinite (unless allowed) or outside the interval.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        v = float(value.item())
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {_describe(value)}")
    else:
        v = float(value)
    inside = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    finite = math.isfinite(v) or (allow_inf and v == math.inf)
    if not (inside and finite):
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{where}: {name} must be {kind} {_interval(low, high, low_open, high_open)}, got {value!r}")
    return v


def check_int(where: str, name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int after checking that it is an integer ≥ ``minimum``.

    Raises:
        TypeError: ``value`` is not an integer (a bool, a float, a string).
        ValueError: ``value`` < ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int >= {minimum}, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)
