"""Running normalisation of observations and rewards (saved with the agent).

Observations: x ↦ clip((x − μ) / sqrt(σ² + ε), ±c) with μ, σ² running moments
merged batch-wise (Chan et al., 1979, parallel variance algorithm).

Rewards: scaled by the standard deviation of the running discounted return
Rₜ = γ Rₜ₋₁ + rₜ (reset at episode ends), as in Engstrom et al. (2020),
"Implementation matters in deep policy gradients", §3 ("reward scaling").
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ObsNormalizer", "RewardScaler", "RunningMeanStd"]


def _clip(x: np.ndarray, c: float) -> np.ndarray:
    """np.clip(x, -c, c) as two ufuncs (the same values, NaN included; np.clip's dispatch costs more on a
    per-step vector of a few numbers)."""
    return np.minimum(np.maximum(x, -c), c)


class RunningMeanStd:
    """Running mean and variance over the leading axis of batches."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon

    @staticmethod
    def moments(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(mean, variance, count) of a batch over its leading axis, for :meth:`merge`."""
        # the arithmetic of ndarray.mean(0) and .var(0), bit for bit, without their Python-level wrappers
        # (which cost more than the sums on the per-step batches of a few envs)
        batch = np.asarray(batch, np.float64)
        n = batch.shape[0]
        mean = np.add.reduce(batch, 0) / n
        centred = batch - mean
        return mean, np.add.reduce(centred * centred, 0) / n, n

    def update(self, batch: np.ndarray) -> None:
        self.merge(*self.moments(batch))

    def merge(self, b_mean: np.ndarray, b_var: np.ndarray, b_count: int) -> None:
        """Merge the moments of a batch (Chan et al.'s parallel update: exact up to rounding, so batches
        collected apart — by rollout workers — merge to the statistics of their union)."""
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], np.float64)
        if mean.shape != self.mean.shape:
            raise ValueError(f"normaliser shape mismatch: saved {mean.shape}, expected {self.mean.shape}")
        self.mean = mean
        self.var = np.asarray(state["var"], np.float64)
        self.count = float(state["count"])


class ObsNormalizer:
    """Observation normalisation; ``update=False`` for evaluation."""

    def __init__(self, shape: tuple[int, ...], *, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(shape)
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, obs: np.ndarray, *, update: bool = False) -> np.ndarray:
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.epsilon)
        return _clip(out, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict(state)


class RewardScaler:
    """Divides rewards by the running std of the discounted return, per env."""

    def __init__(self, n_envs: int, gamma: float, *, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(n_envs, np.float64)
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + rewards
        self.rms.update(self.ret)
        self.ret[dones] = 0.0
        return _clip(rewards / np.sqrt(self.rms.var + self.epsilon), self.clip)

    def state_dict(self) -> dict[str, Any]:
        return {**self.rms.state_dict(), "ret": self.ret.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict(state)
        ret = np.asarray(state.get("ret", self.ret), np.float64)
        if ret.shape == self.ret.shape:
            self.ret = ret
