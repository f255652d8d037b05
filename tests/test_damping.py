"""Damping rules against hand-computed λ sequences."""

from __future__ import annotations

import math

import pytest
import torch

from natrl.linalg import ConstantDamping, Damping, LevenbergMarquardt
from natrl.linalg.damping import lm_update


def test_constant_damping() -> None:
    d = ConstantDamping(0.1)
    assert isinstance(d, Damping)
    assert d.value == 0.1
    for actual, predicted in [(1.0, 1.0), (-5.0, 1.0), (1.0, 0.0), (float("nan"), 1.0)]:
        assert d.update(actual, predicted) == 0.1
    assert d.value == 0.1
    assert ConstantDamping(0.0).value == 0.0


def test_constant_damping_state_dict_round_trip() -> None:
    d = ConstantDamping(0.3)
    e = ConstantDamping(1.0)
    e.load_state_dict(d.state_dict())
    assert e.value == 0.3
    with pytest.raises(ValueError, match="'value'"):
        e.load_state_dict({"lam": 0.3})
    with pytest.raises(ValueError, match="≥ 0"):
        e.load_state_dict({"value": -1.0})


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_constant_damping_rejects_bad_value(value: float) -> None:
    with pytest.raises(ValueError, match="value"):
        ConstantDamping(value)


def test_levenberg_marquardt_hand_sequence() -> None:
    # Defaults (Martens 2010 §4.1): ρ < 1/4 → ×3/2, ρ > 3/4 → ×2/3, else unchanged.
    lm = LevenbergMarquardt(1.0)
    assert isinstance(lm, Damping)
    steps = [
        # (actual, predicted, expected λ after the update), λ computed by hand
        (1.0, 1.0, 2 / 3),  # ρ = 1     > 3/4: good
        (0.1, 1.0, 1.0),  # ρ = 0.1   < 1/4: bad
        (0.5, 1.0, 1.0),  # ρ = 0.5: unchanged
        (0.25, 1.0, 1.0),  # ρ = 1/4 exactly: unchanged (strict inequality)
        (0.75, 1.0, 1.0),  # ρ = 3/4 exactly: unchanged
        (-1.0, 2.0, 1.5),  # ρ = −1/2: the objective went up
        (3.0, 2.0, 1.0),  # ρ = 3/2: better than predicted
        (1.0, 0.0, 1.5),  # predicted reduction 0: undefined ρ, bad
        (1.0, -1.0, 2.25),  # predicted increase: bad (even though ρ = −1 < 1/4 anyway)
        (-1.0, -1.0, 3.375),  # ρ would be +1 but predicted ≤ 0: bad
        (float("nan"), 1.0, 5.0625),  # non-finite actual: bad
        (float("inf"), 1.0, 7.59375),  # non-finite actual: bad even though "huge improvement"
        (1.0, float("inf"), 11.390625),  # non-finite prediction: bad
    ]
    for actual, predicted, expected in steps:
        assert lm.update(actual, predicted) == pytest.approx(expected, rel=1e-12)
        assert lm.value == pytest.approx(expected, rel=1e-12)


def test_levenberg_marquardt_custom_factors_kfac_style() -> None:
    omega = (19 / 20) ** 5  # Martens & Grosse 2015 §6.5 with T₁ = 5
    lm = LevenbergMarquardt(150.0, increase=1 / omega, decrease=omega)
    assert lm.update(0.9, 1.0) == pytest.approx(150.0 * omega)
    assert lm.update(0.9, 1.0) == pytest.approx(150.0 * omega**2)
    assert lm.update(0.0, 1.0) == pytest.approx(150.0 * omega)


def test_levenberg_marquardt_accepts_tensors_and_numpy_scalars() -> None:
    np = pytest.importorskip("numpy")
    lm = LevenbergMarquardt(1.0)
    assert lm.update(torch.tensor(1.0), torch.tensor([1.0])) == pytest.approx(2 / 3)
    assert lm.update(np.float32(0.0), np.float64(1.0)) == pytest.approx(1.0)


def test_clamping() -> None:
    lm = LevenbergMarquardt(0.2, min_value=0.1, max_value=0.5)
    values = [lm.update(1.0, 1.0) for _ in range(3)]  # 0.2·2/3 = 0.1333, then 0.0889 → 0.1
    assert values == pytest.approx([0.2 * 2 / 3, 0.1, 0.1])
    values = [lm.update(-1.0, 1.0) for _ in range(6)]  # 0.15, 0.225, 0.3375, 0.50625 → 0.5
    assert values == pytest.approx([0.15, 0.225, 0.3375, 0.5, 0.5, 0.5])
    assert lm.value == 0.5


def test_many_bad_steps_reach_max_value_exactly() -> None:
    lm = LevenbergMarquardt(1e-2)
    for _ in range(100):
        lm.update(-1.0, 1.0)
    assert lm.value == 1e4
    for _ in range(200):
        lm.update(1.0, 1.0)
    assert lm.value == 1e-8


def test_lm_update_pure_function_matches_class() -> None:
    kwargs = {
        "lower": 0.1,
        "upper": 0.9,
        "increase": 3.0,
        "decrease": 0.5,
        "min_value": 1e-3,
        "max_value": 10.0,
    }
    assert lm_update(1.0, 0.05, **kwargs) == 3.0
    assert lm_update(1.0, 0.95, **kwargs) == 0.5
    assert lm_update(1.0, 0.5, **kwargs) == 1.0
    assert lm_update(1.0, math.nan, **kwargs) == 3.0
    assert lm_update(1.0, math.inf, **kwargs) == 3.0
    assert lm_update(5.0, -2.0, **kwargs) == 10.0
    assert lm_update(1.5e-3, 1.0, **kwargs) == 1e-3
    lm = LevenbergMarquardt(1.0, **kwargs)
    lam = 1.0
    for actual, predicted in [(0.05, 1.0), (2.0, 2.0), (0.5, 1.0), (-3.0, 1.0), (1.0, 1.0)]:
        lam = lm_update(lam, actual / predicted, **kwargs)
        assert lm.update(actual, predicted) == lam


def test_state_dict_round_trip() -> None:
    lm = LevenbergMarquardt(1.0)
    for actual in (1.0, 1.0, 0.0):
        lm.update(actual, 1.0)
    state = lm.state_dict()
    assert state == {"value": pytest.approx(2 / 3)}
    other = LevenbergMarquardt(5.0)
    other.load_state_dict(state)
    assert other.value == lm.value
    for actual, predicted in [(0.9, 1.0), (0.1, 1.0), (0.5, 1.0)]:
        assert other.update(actual, predicted) == lm.update(actual, predicted)
    with pytest.raises(ValueError, match=r"\[min_value, max_value\]"):
        other.load_state_dict({"value": 1e9})
    with pytest.raises(ValueError, match="'value'"):
        other.load_state_dict({})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lower": 0.8, "upper": 0.5}, "lower < upper"),
        ({"lower": 0.5, "upper": 0.5}, "lower < upper"),
        ({"lower": -0.1}, "lower < upper"),
        ({"increase": 1.0}, "increase must be > 1"),
        ({"increase": 0.5}, "increase must be > 1"),
        ({"decrease": 1.0}, "decrease must lie in"),
        ({"decrease": 0.0}, "decrease must lie in"),
        ({"min_value": 0.0}, "min_value must be > 0"),
        ({"min_value": 1.0, "max_value": 0.5, "initial": 0.7}, "max_value must be ≥ min_value"),
        ({"upper": float("nan")}, "upper must be finite"),
        ({"initial": 0.0}, "initial must lie in"),
        ({"initial": 1e5}, "initial must lie in"),
    ],
)
def test_levenberg_marquardt_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LevenbergMarquardt(**kwargs)


def test_lm_update_validation() -> None:
    with pytest.raises(ValueError, match="lam must be finite and > 0"):
        lm_update(0.0, 1.0)
    with pytest.raises(ValueError, match="increase"):
        lm_update(1.0, 1.0, increase=0.9)
    with pytest.raises(TypeError, match="rho must be a real number"):
        lm_update(1.0, "0.5")  # type: ignore[arg-type]


def test_update_rejects_non_numbers() -> None:
    lm = LevenbergMarquardt()
    with pytest.raises(TypeError, match="actual_change"):
        lm.update("1.0", 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="predicted_change must be a real scalar"):
        lm.update(1.0, torch.ones(2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="predicted_change"):
        ConstantDamping(0.1).update(1.0, None)  # type: ignore[arg-type]
