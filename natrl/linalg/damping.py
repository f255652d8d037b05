"""Damping rules: the λ in (C + λI) x = g for TRPO/NPG, Newton and K-FAC.

A damping rule holds the current λ and updates it from how well the quadratic
model of the last step predicted the actual change of the objective, through
the reduction ratio

    ρ = actual reduction / predicted reduction
      = (f(θ) − f(θ + δ)) / (m(0) − m(δ)),   m(δ) = f(θ) + gᵀδ + ½ δᵀ(C + λI)δ.

Both reductions are positive when the objective went (or was predicted to go)
down. ρ ≈ 1 means the model is trusted and λ can shrink; ρ small or negative
means the step was too long and λ must grow.

* :class:`ConstantDamping`: a fixed λ (TRPO's usual ``cg_damping = 0.1``).
* :class:`LevenbergMarquardt`: the Levenberg-Marquardt heuristic of Martens
  (2010), "Deep learning via Hessian-free optimization", ICML, §4.1:
  ρ < 1/4 → λ ← (3/2) λ, ρ > 3/4 → λ ← (2/3) λ. Martens & Grosse (2015),
  "Optimizing neural networks with Kronecker-factored approximate curvature",
  ICML, §6.5 use the same rule with factors ω₁ = (19/20)^T₁ (T₁ = 5 iterations
  between updates): pass ``increase=1/ω₁, decrease=ω₁`` for that.

:func:`lm_update` is the pure update rule; the classes are small stateful
wrappers with ``state_dict``/``load_state_dict`` for checkpointing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["ConstantDamping", "Damping", "LevenbergMarquardt", "lm_update"]


@runtime_checkable
class Damping(Protocol):
    """A damping rule: the current λ and how it reacts to the last step.

    ``update(actual_change, predicted_change)`` takes the actual and the
    predicted *reduction* of the objective for the step just taken (positive
    when it decreased) and returns the new λ, which ``value`` then reports.
    """

    @property
    def value(self) -> float:
        """The current damping λ ≥ 0."""
        ...

    def update(self, actual_change: float, predicted_change: float) -> float:
        """Update λ from the actual and predicted reductions; return the new λ."""
        ...

    def state_dict(self) -> dict[str, float]:
        """The mutable state, for checkpoints."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        ...


class ConstantDamping:
    """A fixed damping λ; ``update`` leaves it unchanged.

    Args:
        value: λ, finite and ≥ 0 (0 means no damping).
    """

    def __init__(self, value: float) -> None:
        self._value = _nonnegative("ConstantDamping", "value", value)

    @property
    def value(self) -> float:
        """The damping λ."""
        return self._value

    def update(self, actual_change: float, predicted_change: float) -> float:
        """Return λ unchanged (the arguments are checked to be real numbers)."""
        _as_float("ConstantDamping.update", "actual_change", actual_change)
        _as_float("ConstantDamping.update", "predicted_change", predicted_change)
        return self._value

    def state_dict(self) -> dict[str, float]:
        return {"value": self._value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._value = _nonnegative("ConstantDamping.load_state_dict", "value", _get_value(state))

    def __repr__(self) -> str:
        return f"ConstantDamping({self._value!r})"


class LevenbergMarquardt:
    """Levenberg-Marquardt adaptation of λ from the reduction ratio ρ.

    After each step, with ρ = actual reduction / predicted reduction::

        ρ < lower  →  λ ← increase · λ
        ρ > upper  →  λ ← decrease · λ
        otherwise  →  λ unchanged
        λ ← clamp(λ, min_value, max_value)

    A step whose predicted reduction is ≤ 0, or whose actual or predicted
    reduction is not finite, has no meaningful ρ and counts as a bad step
    (λ increases).

    Defaults are those of Martens (2010), §4.1 (1/4, 3/4, 3/2, 2/3); see the
    module docstring for the K-FAC variant of Martens & Grosse (2015), §6.5.

    Args:
        initial: starting λ, in [min_value, max_value].
        lower: ρ below this is a bad step; 0 ≤ lower < upper.
        upper: ρ above this is a good step.
        increase: factor > 1 applied on a bad step.
        decrease: factor in (0, 1) applied on a good step.
        min_value: lower clamp, > 0 (λ is updated multiplicatively, so it must
            stay away from 0).
        max_value: upper clamp, ≥ min_value.

    Raises:
        ValueError: if a hyperparameter is out of range (the message names it).
    """

    def __init__(
        self,
        initial: float = 1e-2,
        *,
        lower: float = 0.25,
        upper: float = 0.75,
        increase: float = 1.5,
        decrease: float = 2.0 / 3.0,
        min_value: float = 1e-8,
        max_value: float = 1e4,
    ) -> None:
        _validate("LevenbergMarquardt", lower, upper, increase, decrease, min_value, max_value)
        self.lower = float(lower)
        self.upper = float(upper)
        self.increase = float(increase)
        self.decrease = float(decrease)
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self._value = self._check_in_range("LevenbergMarquardt", "initial", initial)

    @property
    def value(self) -> float:
        """The current damping λ."""
        return self._value

    def update(self, actual_change: float, predicted_change: float) -> float:
        """Update λ from the actual and predicted reductions of the objective.

        Args:
            actual_change: f(θ) − f(θ + δ), positive if the objective decreased.
            predicted_change: m(0) − m(δ), the decrease the quadratic model
                predicted; should be positive.

        Returns:
            The new λ (also available as :attr:`value`).
        """
        actual = _as_float("LevenbergMarquardt.update", "actual_change", actual_change)
        predicted = _as_float("LevenbergMarquardt.update", "predicted_change", predicted_change)
        if math.isfinite(actual) and math.isfinite(predicted) and predicted > 0.0:
            rho = actual / predicted
        else:
            rho = -math.inf  # undefined ratio: a bad step
        self._value = lm_update(
            self._value,
            rho,
            lower=self.lower,
            upper=self.upper,
            increase=self.increase,
            decrease=self.decrease,
            min_value=self.min_value,
            max_value=self.max_value,
        )
        return self._value

    def state_dict(self) -> dict[str, float]:
        """``{"value": λ}``; the hyperparameters come from the constructor."""
        return {"value": self._value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore λ; it must lie in [min_value, max_value]."""
        self._value = self._check_in_range("LevenbergMarquardt.load_state_dict", "value", _get_value(state))

    def _check_in_range(self, where: str, name: str, value: object) -> float:
        v = _as_float(where, name, value)
        if not (self.min_value <= v <= self.max_value):
            raise ValueError(
                f"{where}: {name} must lie in [min_value, max_value] = "
                f"[{self.min_value:g}, {self.max_value:g}], got {v!r}"
            )
        return v

    def __repr__(self) -> str:
        return (
            f"LevenbergMarquardt({self._value!r}, lower={self.lower!r}, upper={self.upper!r}, "
            f"increase={self.increase!r}, decrease={self.decrease!r}, "
            f"min_value={self.min_value!r}, max_value={self.max_value!r})"
        )


def lm_update(
    lam: float,
    rho: float,
    *,
    lower: float = 0.25,
    upper: float = 0.75,
    increase: float = 1.5,
    decrease: float = 2.0 / 3.0,
    min_value: float = 1e-8,
    max_value: float = 1e4,
) -> float:
    """One Levenberg-Marquardt update of the damping λ (pure function).

        λ' = clamp(increase · λ, min_value, max_value)   if ρ < lower or ρ is not finite
        λ' = clamp(decrease · λ, min_value, max_value)   if ρ > upper
        λ' = clamp(λ, min_value, max_value)              otherwise

    Reference: Martens (2010), "Deep learning via Hessian-free optimization",
    ICML, §4.1; Martens & Grosse (2015), ICML, §6.5.

    Args:
        lam: current λ, finite and > 0.
        rho: reduction ratio actual / predicted reduction; NaN or ±inf counts
            as a bad step.
        lower, upper, increase, decrease, min_value, max_value: as in
            :class:`LevenbergMarquardt`.

    Returns:
        The new λ.

    Raises:
        ValueError: if ``lam`` is not finite and positive, or a hyperparameter
            is out of range.
    """
    _validate("lm_update", lower, upper, increase, decrease, min_value, max_value)
    lam_f = _as_float("lm_update", "lam", lam)
    if not (math.isfinite(lam_f) and lam_f > 0.0):
        raise ValueError(f"lm_update: lam must be finite and > 0, got {lam_f!r}")
    rho_f = _as_float("lm_update", "rho", rho)
    if not math.isfinite(rho_f) or rho_f < lower:
        lam_f *= increase
    elif rho_f > upper:
        lam_f *= decrease
    return min(max(lam_f, min_value), max_value)


def _validate(
    where: str,
    lower: float,
    upper: float,
    increase: float,
    decrease: float,
    min_value: float,
    max_value: float,
) -> None:
    vals = {
        "lower": lower,
        "upper": upper,
        "increase": increase,
        "decrease": decrease,
        "min_value": min_value,
        "max_value": max_value,
    }
    for name, v in vals.items():
        if not math.isfinite(_as_float(where, name, v)):
            raise ValueError(f"{where}: {name} must be finite, got {v!r}")
    if not (0.0 <= lower < upper):
        raise ValueError(
            f"{where}: need 0 ≤ lower < upper for the reduction-ratio thresholds, got lower={lower!r}, upper={upper!r}"
        )
    if not increase > 1.0:
        raise ValueError(f"{where}: increase must be > 1 (it grows λ on bad steps), got {increase!r}")
    if not (0.0 < decrease < 1.0):
        raise ValueError(f"{where}: decrease must lie in (0, 1) (it shrinks λ on good steps), got {decrease!r}")
    if not min_value > 0.0:
        raise ValueError(f"{where}: min_value must be > 0 (λ is updated multiplicatively), got {min_value!r}")
    if not max_value >= min_value:
        raise ValueError(
            f"{where}: max_value must be ≥ min_value, got min_value={min_value!r}, max_value={max_value!r}"
        )


def _as_float(where: str, name: str, value: object) -> float:
    """A real number (Python, NumPy or one-element tensor) as a float."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(
                f"{where}: {name} must be a real scalar, got a tensor of shape "
                f"{tuple(value.shape)} and dtype {value.dtype}"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {type(value).__name__}")
    return float(value)


def _nonnegative(where: str, name: str, value: object) -> float:
    v = _as_float(where, name, value)
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{where}: {name} must be finite and ≥ 0, got {v!r}")
    return v


def _get_value(state: Mapping[str, Any]) -> object:
    if not isinstance(state, Mapping) or "value" not in state:
        raise ValueError(
            f"load_state_dict: expected a mapping with key 'value' (as returned by state_dict()), got {state!r}"
        )
    return state["value"]
