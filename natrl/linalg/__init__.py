"""Linear algebra for second-order methods: conjugate gradient and damping rules."""

from natrl.linalg.cg import CGResult, NonFiniteError, conjugate_gradient
from natrl.linalg.damping import ConstantDamping, Damping, LevenbergMarquardt

__all__ = ["CGResult", "ConstantDamping", "Damping", "LevenbergMarquardt", "NonFiniteError", "conjugate_gradient"]
