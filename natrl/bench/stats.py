"""Statistics of a benchmark over a handful of seeds: IQM, stratified bootstrap intervals, probability of improvement.

The estimators and intervals of rliable (Agarwal et al., 2021, "Deep Reinforcement Learning at the Edge of
the Statistical Precipice", NeurIPS; github.com/google-research/rliable), written with NumPy and SciPy:

* IQM, the interquartile mean: the mean of the middle 50% of the runs,
  ``scipy.stats.trim_mean(x, 0.25)`` over all runs of all tasks, as ``rliable.metrics.aggregate_iqm``. It
  drops ``floor(n/4)`` runs at each end (no fractional weights): of 5 runs the middle 3, of 10 the middle 6.
* Stratified bootstrap: every bootstrap sample redraws, with replacement, the runs *within* each task (each
  stratum) and keeps the number of runs per task; the interval is the percentile interval of the statistic
  over the samples (rliable's ``get_interval_estimates`` with ``method="percentile"``). With one task it is the
  ordinary bootstrap over seeds.
* Probability of improvement ``P(X > Y)``: for each task the Mann–Whitney U statistic over ``n·m``,
  ``(#{x_i > y_j} + ½ #{x_i = y_j}) / (n m)``, averaged over tasks (``rliable.metrics.probability_of_improvement``);
  its interval redraws the runs of X and of Y independently within each task.

Every interval uses ``np.random.default_rng(seed)`` (seed 0 by default), so a report computed twice from
the same results shows the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import trim_mean

__all__ = [
    "BOOTSTRAP_REPS",
    "Interval",
    "iqm",
    "iqm_interval",
    "probability_of_improvement",
    "probability_of_improvement_interval",
    "stratified_bootstrap",
]

BOOTSTRAP_REPS = 50_000
"""Bootstrap samples per interval (rliable's default)."""
_CHUNK = 2_000  # bootstrap samples drawn at once (bounds the memory of the PoI comparisons)

Statistic = Callable[..., np.ndarray]
"""``statistic(*samples) -> values``: one array of shape ``(reps, n_i)`` per stratum in, shape ``(reps,)`` out."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval.

    Attributes:
        estimate: the statistic of the data.
        low, high: the interval's bounds (equal to the estimate when no stratum has two runs).
        confidence: the interval's nominal coverage, e.g. 0.95.
        n: the runs behind the estimate (all strata together).
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n: int

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point."""
        return self.low <= other.high and other.low <= self.high


def _strata(samples: Sequence[ArrayLike], what: str) -> list[np.ndarray]:
    arrays = [np.asarray(s, dtype=float).ravel() for s in samples]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError(f"{what} needs at least one task, each with at least one run")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError(f"{what}: the runs' scores must be finite")
    return arrays


def stratified_bootstrap(
    samples: Sequence[ArrayLike],
    statistic: Statistic,
    *,
    reps: int = BOOTSTRAP_REPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of ``statistic`` under the stratified bootstrap.

    Each bootstrap sample draws ``n_i`` of the ``n_i`` values of stratum i with replacement, independently per
    stratum; the interval is ``[q_{(1-c)/2}, q_{(1+c)/2}]`` of the ``reps`` bootstrap values (``np.percentile``,
    linear interpolation), the percentile method of Efron & Tibshirani (1993), §13.3.

    Args:
        samples: one 1-D array per stratum (a task; or, for two algorithms, each task's runs of X and of Y).
        statistic: the statistic, vectorised over bootstrap samples (:data:`Statistic`).
        reps: the number of bootstrap samples.
        confidence: the interval's coverage, in (0, 1).
        seed: the seed of ``np.random.default_rng``.

    Raises:
        ValueError: no strata, an empty or non-finite stratum, ``reps < 1`` or a confidence outside (0, 1).
    """
    arrays = _strata(samples, "stratified_bootstrap")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    estimate = float(statistic(*[a[None, :] for a in arrays])[0])
    n = sum(a.size for a in arrays)
    if all(a.size == 1 for a in arrays):  # nothing to redraw
        return Interval(estimate, estimate, estimate, confidence, n)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, reps, _CHUNK):
        k = min(_CHUNK, reps - start)
        values.append(np.asarray(statistic(*[a[rng.integers(0, a.size, size=(k, a.size))] for a in arrays])))
    boot = np.concatenate(values)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return Interval(estimate, float(low), float(high), confidence, n)


def iqm(scores: ArrayLike) -> float:
    """The interquartile mean of all ``scores``: ``scipy.stats.trim_mean(scores, 0.25, axis=None)``."""
    x = np.asarray(scores, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("iqm needs at least one score")
    return float(trim_mean(x, 0.25))


def _iqm_of_strata(*samples: np.ndarray) -> np.ndarray:
    return np.asarray(trim_mean(np.concatenate(samples, axis=1), 0.25, axis=1))


def iqm_interval(
    scores_by_task: Sequence[ArrayLike], *, reps: int = BOOTSTRAP_REPS, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """IQM over all runs of all tasks, with its stratified-bootstrap interval (runs redrawn within each task).

    Args:
        scores_by_task: one array of run scores per task (a single task: ``[scores]``). Scores of different
            tasks must be on one scale (normalised) for the aggregate to mean something.
        reps, confidence, seed: as in :func:`stratified_bootstrap`.
    """
    return stratified_bootstrap(scores_by_task, _iqm_of_strata, reps=reps, confidence=confidence, seed=seed)


def _poi_of_pairs(*samples: np.ndarray) -> np.ndarray:
    """Mean over tasks of U/(n m); ``samples`` = X's strata then Y's, task by task."""
    half = len(samples) // 2
    per_task = []
    for x, y in zip(samples[:half], samples[half:], strict=True):
        a, b = x[:, :, None], y[:, None, :]
        per_task.append((a > b).mean(axis=(1, 2)) + 0.5 * (a == b).mean(axis=(1, 2)))
    return np.mean(per_task, axis=0)


def probability_of_improvement(x_by_task: Sequence[ArrayLike], y_by_task: Sequence[ArrayLike]) -> float:
    """``P(X > Y)``: per task ``(#{x_i > y_j} + ½ #{x_i = y_j}) / (n m)`` (Mann–Whitney U over n·m), averaged
    over tasks.

    Args:
        x_by_task, y_by_task: per task, the run scores of X and of Y (same task order; n and m may differ).
    """
    x, y = _pairs(x_by_task, y_by_task)
    return float(_poi_of_pairs(*[a[None, :] for a in x + y])[0])


def _pairs(x_by_task: Sequence[ArrayLike], y_by_task: Sequence[ArrayLike]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(x_by_task) != len(y_by_task):
        raise ValueError(f"X has {len(x_by_task)} tasks and Y {len(y_by_task)}; give both the same tasks")
    return _strata(x_by_task, "probability_of_improvement"), _strata(y_by_task, "probability_of_improvement")


def probability_of_improvement_interval(
    x_by_task: Sequence[ArrayLike],
    y_by_task: Sequence[ArrayLike],
    *,
    reps: int = BOOTSTRAP_REPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """:func:`probability_of_improvement` with its interval: the runs of X and of Y redrawn independently
    within each task (rliable's ``StratifiedIndependentBootstrap``).

    Its ``n`` is the number of X's runs; ``m`` is the caller's.
    """
    x, y = _pairs(x_by_task, y_by_task)
    interval = stratified_bootstrap([*x, *y], _poi_of_pairs, reps=reps, confidence=confidence, seed=seed)
    return Interval(interval.estimate, interval.low, interval.high, confidence, sum(a.size for a in x))
