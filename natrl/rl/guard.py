"""The finite guard around an agent's update: no parameter or optimiser state ever becomes NaN or infinite.

:class:`UpdateGuard` runs an update and checks what it left behind. An update after which a network parameter
or an algorithm state (optimiser moments, curvature factors, …) is non-finite, or whose value or policy loss is
infinite, is undone, the previous values restored bit for bit, and reported as ``update_rejected``; a run of
``max_rejected_updates`` rejections in a row raises :class:`NonFiniteUpdateError`, so no NaN ever reaches a
checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from natrl.rl.batch import Batch

__all__ = ["NonFiniteUpdateError", "UpdateGuard", "all_finite", "clone_tensors"]


class NonFiniteUpdateError(FloatingPointError):
    """Several updates in a row would have made a parameter or optimiser state non-finite (each undone)."""


def clone_tensors(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples in which every tensor is cloned (a snapshot of live state)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tensors(v) for v in obj)
    return obj


def all_finite(obj: Any) -> bool:
    """Every floating-point tensor and float in nested dicts/lists/tuples is finite."""
    if isinstance(obj, Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(all_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


class UpdateGuard:
    """Runs updates under the finite guard and counts the rejections in a row.

    Attributes:
        rejected_in_a_row: updates undone since the last accepted one.
    """

    def __init__(self) -> None:
        self.rejected_in_a_row = 0

    def __call__(
        self,
        update: Callable[[Batch], dict[str, float]],
        batch: Batch,
        *,
        policy: nn.Module,
        algo_state: Callable[[], dict[str, Any]],
        load_algo_state: Callable[[dict[str, Any]], None],
        max_rejected: int,
        hyperparameters: Callable[[], dict[str, Any]],
        step: int,
    ) -> dict[str, float]:
        """``update(batch)``, undone when it leaves a non-finite parameter, state or loss.

        Args:
            update: the algorithm's update of ``policy`` (and of the state ``algo_state`` returns).
            batch: its batch.
            policy: the module holding every network parameter (a trunk shared by actor and critic once).
            algo_state: the algorithm's state (optimisers, curvature), as nested dicts of tensors.
            load_algo_state: restores ``algo_state``'s snapshot.
            max_rejected: rejections in a row that stop training.
            hyperparameters: the agent's hyperparameters, for the step sizes the error names.
            step: the agent's step count, for the error.

        Returns:
            the update's statistics with ``update_rejected`` 0.0, or ``{"update_rejected": 1.0, "kl": 0.0}``
            when it was undone.

        Raises:
            NonFiniteUpdateError: the ``max_rejected``-th rejection in a row.
        """
        named = dict(policy.named_parameters())
        params = list(named.values())
        before = [p.detach().clone() for p in params]
        algo_before = clone_tensors(algo_state())
        stats = update(batch)
        bad = [n for n, p in named.items() if not bool(torch.isfinite(p.detach()).all())]
        # an infinite loss means the update's gradients overflowed (optimisers that skip such steps,
        # like KFAC, leave finite parameters behind, but nothing was learned)
        bad += [k for k in ("value_loss", "policy_loss") if math.isinf(stats.get(k, 0.0))]
        if not bad and all_finite(algo_state()):
            self.rejected_in_a_row = 0
            stats["update_rejected"] = 0.0
            return stats
        with torch.no_grad():
            for p, b in zip(params, before):
                p.copy_(b)
        load_algo_state(algo_before)
        self.rejected_in_a_row += 1
        if self.rejected_in_a_row >= max_rejected:
            raise NonFiniteUpdateError(rejection_message(self.rejected_in_a_row, bad, batch, hyperparameters(), step))
        return {"update_rejected": 1.0, "kl": 0.0}


def rejection_message(count: int, bad: list[str], batch: Batch, hyperparameters: dict[str, Any], step: int) -> str:
    """The one line of :class:`NonFiniteUpdateError`: what went non-finite and which step sizes to lower.

    Args:
        count: rejections in a row.
        bad: the non-finite parameters' names and the infinite losses' (``value_loss``, ``policy_loss``).
        batch: the last batch (its largest return is named).
        hyperparameters: the agent's hyperparameters.
        step: the step count the networks are back at.
    """
    rates = ", ".join(
        f"{k}={hyperparameters[k]:g}" if isinstance(hyperparameters[k], (int, float)) else f"{k}={hyperparameters[k]!r}"
        for k in ("learning_rate", "critic_lr", "critic_kfac_lr", "max_kl", "step_size")
        if k in hyperparameters
    )
    losses = [b for b in bad if b in ("value_loss", "policy_loss")]
    params = [b for b in bad if b not in losses]
    if params:
        what = f"non-finite parameters ({', '.join(params[:2])}{', …' if len(params) > 2 else ''})"
    elif losses:
        what = f"an infinite {' and '.join(losses)}"
    else:
        what = "a non-finite optimiser state"
    scale = float(batch.returns.abs().max()) if len(batch) else float("nan")
    return (
        f"{count} updates in a row produced {what} and were undone; the networks are those "
        f"of step {step:,}. The steps are too large for this problem: lower the step sizes "
        f"({rates}) or scale the rewards (normalize_reward=True or a wrapper; the largest |return| in the last "
        f"batch was {scale:.3g})"
    )
