"""One update's data: the rollout flattened to rows, and for recurrent policies its cut into sequences.

A :class:`Batch` holds N = T·E rows. With a policy without memory every row is its own unit: minibatches
draw rows, and the networks take ``(obs,)``. With a recurrent policy the rows are ordered env by env and
cut into S = N / L :class:`Sequences` of L consecutive steps (rows s·L … s·L + L − 1); minibatches draw
whole sequences, and the networks take ``(obs (S, L, ...), starts (S, L), state (S, ...))``, the state
being the one recorded in the rollout at the sequence's first step. At the parameters that collected the
rollout, recomputing a sequence from its recorded state reproduces the rollout's log-probabilities and
values exactly; the updates backpropagate through every step of a sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from natrl.rl.rollout import Rollout

__all__ = ["Batch", "Sequences", "batch_from_rollout", "explained_variance"]


@dataclass
class Sequences:
    """S sequences of L consecutive steps of one env each; sequence s holds rows s·L … s·L + L − 1."""

    length: int  # L
    starts: Tensor  # (S, L) bool: the step begins an episode (the recurrent state is zeroed before it)
    actor_state: Tensor  # (S, *actor state shape): the actor's state before the first step
    critic_state: Tensor  # (S, *critic state shape)

    def __len__(self) -> int:
        return self.starts.shape[0]

    def rows(self, seqs: Tensor) -> Tensor:
        """The row indices of sequences ``seqs``, sequence by sequence."""
        steps = torch.arange(self.length, device=seqs.device)
        return (seqs.unsqueeze(1) * self.length + steps).flatten()

    def select(self, seqs: Tensor) -> Sequences:
        return Sequences(self.length, self.starts[seqs], self.actor_state[seqs], self.critic_state[seqs])

    def actor_inputs(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The actor's inputs for these sequences from their rows of stored observations (S·L, ...)."""
        return obs.unflatten(0, (len(self), self.length)), self.starts, self.actor_state

    def critic_inputs(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return obs.unflatten(0, (len(self), self.length)), self.starts, self.critic_state


@dataclass
class Batch:
    """One update's data, flattened over (T, E) to N = T·E rows (env by env for a recurrent policy)."""

    obs: Tensor  # (N, *stored observation shape), in the stored dtype (see natrl.rl.spaces)
    actions: Tensor  # (N,) or (N, act_dim)
    log_probs: Tensor  # (N,)
    values: Tensor  # (N,)
    advantages: Tensor  # (N,)
    returns: Tensor  # (N,)
    seq: Sequences | None = None  # recurrent policies: how the rows are cut into sequences

    def __len__(self) -> int:
        return self.advantages.shape[0]

    @property
    def units(self) -> int:
        """What minibatches draw: rows, or whole sequences for a recurrent policy."""
        return len(self) if self.seq is None else len(self.seq)

    @property
    def unit_length(self) -> int:
        """Rows per unit: 1, or the sequence length."""
        return 1 if self.seq is None else self.seq.length

    def actor_inputs(self) -> tuple[Tensor, ...]:
        """What the actor takes for these rows: ``(obs,)`` or a recurrent actor's sequences."""
        return (self.obs,) if self.seq is None else self.seq.actor_inputs(self.obs)

    def critic_inputs(self) -> tuple[Tensor, ...]:
        """What the critic takes: ``(obs,)`` or a recurrent critic's sequences."""
        return (self.obs,) if self.seq is None else self.seq.critic_inputs(self.obs)

    def per_unit(self, rows: Tensor) -> Tensor:
        """A per-row tensor (N, ...) arranged per unit: itself, or (S, L, ...) for sequences."""
        return rows if self.seq is None else rows.unflatten(0, (len(self.seq), self.seq.length))


def batch_from_rollout(ro: Rollout, advantages: Tensor, returns: Tensor, sequence_length: int) -> Batch:
    """A rollout (T, E, ...) and its advantages and returns as one :class:`Batch` of N = T·E rows: step by step,
    or env by env cut into sequences of ``sequence_length`` steps for a recurrent policy."""
    n = ro.n_steps
    seq = None
    if ro.starts is None:

        def rows(x: Tensor) -> Tensor:
            return x.reshape(n, *x.shape[2:])

    else:  # a recurrent policy: rows env by env, cut into sequences of L steps

        def rows(x: Tensor) -> Tensor:
            return x.transpose(0, 1).reshape(n, *x.shape[2:])

        L = sequence_length
        assert ro.actor_states is not None and ro.critic_states is not None
        seq = Sequences(
            L,
            ro.starts.T.reshape(-1, L),
            ro.actor_states[:, ::L].flatten(0, 1),
            ro.critic_states[:, ::L].flatten(0, 1),
        )
    return Batch(
        obs=rows(ro.obs),
        actions=rows(ro.actions),
        log_probs=rows(ro.log_probs),
        values=rows(ro.values),
        advantages=rows(advantages),
        returns=rows(returns),
        seq=seq,
    )


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """1 − Var[target − pred] / Var[target] (nan when the target is constant)."""
    var = target.var()
    return float("nan") if var == 0 else float(1.0 - (target - pred).var() / var)
