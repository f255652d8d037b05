"""The ``"lin_<v>"`` schedule strings natrl's hyperparameters take (stable-baselines3's ``linear_schedule``: v times
the progress remaining, from v at the start to 0 at the end), read in one place for the configs, the command line
and the benchmark's peer translations. No dependencies, so that any layer can use it."""

from __future__ import annotations

__all__ = ["LINEAR_PREFIX", "linear_start"]

LINEAR_PREFIX = "lin_"
"""How a linear schedule string starts: ``"lin_3e-4"`` is 3e-4 times the progress remaining."""


def linear_start(value: object) -> float | None:
    """The start value v of a ``"lin_<v>"`` schedule, None for anything else (a number, a function, another
    string).

    Raises:
        ValueError: ``"lin_"`` followed by something that is not a number.
    """
    if isinstance(value, str) and value.startswith(LINEAR_PREFIX):
        return float(value[len(LINEAR_PREFIX) :])
    return None
