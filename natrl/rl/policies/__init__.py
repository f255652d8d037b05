"""The policy seam: observation preprocessing → features extractor → network → distribution head,
and the value network; built-in policies by name, SB3-style ``policy_kwargs``, or the user's own
``nn.Module``s (:func:`build_policy`)."""

from natrl.rl.policies.build import BUILTIN_POLICIES, POLICY_KWARGS, PolicyError, build_policy
from natrl.rl.policies.modules import (
    Actor,
    CombinedExtractor,
    Critic,
    FlattenExtractor,
    NatureCNN,
    OutputOf,
    default_extractor,
    mlp,
)

__all__ = [
    "BUILTIN_POLICIES",
    "POLICY_KWARGS",
    "Actor",
    "CombinedExtractor",
    "Critic",
    "FlattenExtractor",
    "NatureCNN",
    "OutputOf",
    "PolicyError",
    "build_policy",
    "default_extractor",
    "mlp",
]
