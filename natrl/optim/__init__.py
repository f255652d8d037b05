"""Second-order optimisation for PyTorch: ``minimize`` over tensors and torch.optim classes.

* :func:`minimize` — scipy-like minimisation of a function of a tensor (any device):
  ``"newton"``, ``"newton-cg"``, ``"trust-ncg"``, ``"bfgs"``, ``"lbfgs"``; returns an
  :class:`OptimizeResult`.
* torch.optim classes for ``nn.Module`` parameters: :class:`LBFGS`, :class:`BFGS`,
  :class:`Newton` (Newton-CG with Hessian or Gauss-Newton products, damping),
  :class:`NaturalGradient` (any curvature operator of :mod:`natrl.curvature` + CG),
  :class:`KFAC` (Kronecker-factored natural gradient for Linear/Conv2d layers, as an optimizer
  or as a preconditioner in front of another optimizer).

The functional cores (``run_bfgs``, ``run_lbfgs``, ``run_newton_cg``, ``run_trust_ncg``,
``run_newton``, ``bfgs_update``, ``lbfgs_direction``, ``truncated_cg``, ``steihaug_cg``) live
in the submodules and are pure functions over flat tensors.
"""

from natrl.optim.kfac import KFAC, KFACStats
from natrl.optim.minimize import minimize
from natrl.optim.result import OptimizeResult
from natrl.optim.torch_optim import (
    BFGS,
    LBFGS,
    NaturalGradient,
    NaturalGradientStats,
    Newton,
    NewtonStats,
)

__all__ = [
    "BFGS",
    "KFAC",
    "LBFGS",
    "KFACStats",
    "NaturalGradient",
    "NaturalGradientStats",
    "Newton",
    "NewtonStats",
    "OptimizeResult",
    "minimize",
]
