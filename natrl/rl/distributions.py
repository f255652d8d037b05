"""The action distributions, re-exported from :mod:`natrl.distributions` (where they live, below
:mod:`natrl.curvature`, which uses them without importing the RL layer)."""

from natrl.distributions import Bernoulli, Categorical, DiagGaussian, Distribution, MultiCategorical

__all__ = ["Bernoulli", "Categorical", "DiagGaussian", "Distribution", "MultiCategorical"]
