"""The policy seam: observation preprocessing → features extractor → [recurrent core] → network →
distribution head, and the value network; built-in policies by name (``"MlpLstmPolicy"`` and the other
recurrent names give actor and critic an LSTM or GRU each), SB3-style ``policy_kwargs``, or the user's own
``nn.Module``s (:func:`build_policy`)."""

from natrl.rl.policies.build import (
    BUILTIN_POLICIES,
    POLICY_KWARGS,
    RECURRENT_KWARGS,
    RECURRENT_POLICIES,
    PolicyError,
    build_policy,
)
from natrl.rl.policies.extractors import (
    CombinedExtractor,
    FlattenExtractor,
    MinAtarCNN,
    NatureCNN,
    OutputOf,
    default_extractor,
    orthogonal_init_,
)
from natrl.rl.policies.modules import Actor, ActorCritic, Critic, mlp
from natrl.rl.policies.recurrent import RecurrentCore

__all__ = [
    "BUILTIN_POLICIES",
    "POLICY_KWARGS",
    "RECURRENT_KWARGS",
    "RECURRENT_POLICIES",
    "Actor",
    "ActorCritic",
    "CombinedExtractor",
    "Critic",
    "FlattenExtractor",
    "MinAtarCNN",
    "NatureCNN",
    "OutputOf",
    "PolicyError",
    "RecurrentCore",
    "build_policy",
    "default_extractor",
    "mlp",
    "orthogonal_init_",
]
