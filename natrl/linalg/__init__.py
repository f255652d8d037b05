"""Linear algebra for second-order methods: conjugate gradient and damping rules."""

from natrl.linalg.cg import CGResult, conjugate_gradient
from natrl.linalg.damping import ConstantDamping, Damping, LevenbergMarquardt

__all__ = ["CGResult", "ConstantDamping", "Damping", "LevenbergMarquardt", "conjugate_gradient"]
