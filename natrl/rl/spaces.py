"""Gymnasium spaces as natrl stores, feeds and samples them.

Observations. :func:`observation_codec` maps an observation space to an
:class:`ObservationCodec`: how a batch of observations from a vector env is stored
in the rollout (one array per step, in the dtype the data needs: uint8 stays
uint8, indices stay integers) and how a stored batch becomes network input
(:meth:`ObservationCodec.preprocess`, on the agent's device, per minibatch):

* Box: stored as is (uint8, or float32 for every other dtype); fed as float32,
  image-like uint8 boxes (H, W, C) or (C, H, W) with bounds [0, 255] scaled by 1/255
  as stable-baselines3 does, other boxes unscaled.
* Discrete(n): stored as the index (int64, ``start`` removed), fed one-hot (n).
* MultiDiscrete(nvec): stored as indices, fed as the concatenated one-hots.
* MultiBinary: stored as uint8, fed as float32.
* Dict / Tuple of those: stored as one float32 row (each part's stored form
  flattened, side by side), fed as a dict / tuple of the parts' fed forms.

Actions. :func:`action_spec` maps an action space to an :class:`ActionSpec`: the
distribution family (with an analytic KL and output Fisher), how many outputs the
policy network produces for it, how raw samples are stored, and how they are sent
to the env:

* Discrete → :class:`~natrl.distributions.Categorical`;
* MultiDiscrete → :class:`~natrl.distributions.MultiCategorical`;
* MultiBinary → :class:`~natrl.distributions.Bernoulli`;
* Box of any shape → :class:`~natrl.distributions.DiagGaussian` over the flattened
  action, reshaped for the env; bounded boxes clip or squash (tanh) the raw sample.

Any other space is refused by :func:`check_spaces` with one line naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

from natrl.distributions import Bernoulli, Categorical, DiagGaussian, Distribution, MultiCategorical

__all__ = [
    "ActionSpec",
    "ObservationCodec",
    "UnsupportedSpaceError",
    "action_spec",
    "check_spaces",
    "is_image_space",
    "observation_codec",
]

Preprocessed = Tensor | dict[str, "Preprocessed"] | tuple["Preprocessed", ...]


class UnsupportedSpaceError(ValueError):
    """The environment's observation or action space is not one natrl supports."""


def is_image_space(space: spaces.Space) -> TypeGuard[spaces.Box]:
    """A uint8 Box of rank 3 with bounds [0, 255] (channels first or last), as stable-baselines3 detects images."""
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


# --------------------------------------------------------------------------- observations


class ObservationCodec:
    """Storage and network input of one observation space (see the module docstring).

    Attributes:
        space: the observation space.
        shape: the stored shape of one observation.
        dtype: the stored NumPy dtype.
        flat_float: True for a 1-D float Box (stored and fed as the same float32 vector; the
            only kind the NumPy fast sampler accepts).
        normalizable: a float Box, which the running observation normaliser accepts.
    """

    def __init__(self, space: spaces.Space) -> None:
        self.space = space
        self.shape: tuple[int, ...] = ()
        self.dtype: np.dtype = np.dtype(np.float32)
        self.flat_float = False
        self.normalizable = False

    def encode(self, obs: Any) -> np.ndarray:
        """A batch of observations as a vector env returns them → the stored array (n, *shape)."""
        raise NotImplementedError

    def batch_of_one(self, obs: Any) -> object:
        """One observation as a batch of one (a leading axis on every array)."""
        return np.asarray(obs)[None]

    def preprocess(self, stored: Tensor) -> Preprocessed:
        """Stored batch (N, *shape) → network input (float32, on the stored tensor's device)."""
        raise NotImplementedError

    def is_batch(self, obs: Any) -> bool:
        """Whether ``obs`` is a batch of observations (True) or one observation (False)."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class _BoxCodec(ObservationCodec):
    def __init__(self, space: spaces.Box) -> None:
        super().__init__(space)
        self.shape = tuple(space.shape)
        self.dtype = np.dtype(np.uint8) if space.dtype == np.uint8 else np.dtype(np.float32)
        self.flat_float = len(self.shape) == 1 and self.dtype == np.float32
        self.normalizable = self.dtype == np.float32
        self.scale = 1.0 / 255.0 if is_image_space(space) else None

    def encode(self, obs: Any) -> np.ndarray:
        return np.asarray(obs).reshape(-1, *self.shape).astype(self.dtype, copy=False)

    def preprocess(self, stored: Tensor) -> Tensor:
        x = stored if stored.is_floating_point() else stored.float()
        return x * self.scale if self.scale is not None else x

    def is_batch(self, obs: Any) -> bool:
        shape = np.shape(obs)
        if shape == self.shape:
            return False
        if shape[1:] == self.shape:
            return True
        raise ValueError(f"observation shape {shape} does not match the space's {self.shape} (or a batch of it)")


class _DiscreteCodec(ObservationCodec):
    def __init__(self, space: spaces.Discrete) -> None:
        super().__init__(space)
        self.n, self.start = int(space.n), int(space.start)
        self.dtype = np.dtype(np.int64)

    def encode(self, obs: Any) -> np.ndarray:
        return (np.asarray(obs, dtype=np.int64) - self.start).reshape(-1)

    def preprocess(self, stored: Tensor) -> Tensor:
        return F.one_hot(stored.long(), self.n).float()

    def is_batch(self, obs: Any) -> bool:
        return np.ndim(obs) == 1


class _MultiDiscreteCodec(ObservationCodec):
    def __init__(self, space: spaces.MultiDiscrete) -> None:
        super().__init__(space)
        self.nvec = tuple(int(n) for n in space.nvec.reshape(-1))
        self.start = space.start.reshape(-1).astype(np.int64)
        self.shape = (len(self.nvec),)
        self.dtype = np.dtype(np.int64)
        self.space_shape = tuple(space.shape)

    def encode(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, dtype=np.int64).reshape(-1, len(self.nvec)) - self.start

    def preprocess(self, stored: Tensor) -> Tensor:
        idx = stored.long()
        return torch.cat([F.one_hot(idx[:, k], m).float() for k, m in enumerate(self.nvec)], dim=-1)

    def is_batch(self, obs: Any) -> bool:
        return np.ndim(obs) == len(self.space_shape) + 1


class _MultiBinaryCodec(ObservationCodec):
    def __init__(self, space: spaces.MultiBinary) -> None:
        super().__init__(space)
        self.space_shape = tuple(space.shape)
        self.shape = (math.prod(self.space_shape),)
        self.dtype = np.dtype(np.uint8)

    def encode(self, obs: Any) -> np.ndarray:
        return np.asarray(obs).reshape(-1, self.shape[0]).astype(np.uint8, copy=False)

    def preprocess(self, stored: Tensor) -> Tensor:
        return stored.float()

    def is_batch(self, obs: Any) -> bool:
        return np.ndim(obs) == len(self.space_shape) + 1


class _CompositeCodec(ObservationCodec):
    """Dict or Tuple: one float32 row per observation, each part's stored form flattened."""

    def __init__(self, space: spaces.Dict | spaces.Tuple) -> None:
        super().__init__(space)
        self.keys: list[str | int] = (
            list(space.spaces.keys()) if isinstance(space, spaces.Dict) else list(range(len(space.spaces)))
        )
        parts = space.spaces.values() if isinstance(space, spaces.Dict) else space.spaces  # in the order of keys
        self.parts = [observation_codec(part) for part in parts]
        self.sizes = [p.size for p in self.parts]
        self.shape = (sum(self.sizes),)
        self.dtype = np.dtype(np.float32)

    def encode(self, obs: Any) -> np.ndarray:
        cols = [p.encode(obs[k]) for k, p in zip(self.keys, self.parts)]
        n = cols[0].shape[0]
        return np.concatenate([c.reshape(n, -1).astype(np.float32) for c in cols], axis=1)

    def batch_of_one(self, obs: Any) -> object:
        parts = [p.batch_of_one(obs[k]) for k, p in zip(self.keys, self.parts)]
        return dict(zip(self.keys, parts)) if isinstance(self.space, spaces.Dict) else tuple(parts)

    def preprocess(self, stored: Tensor) -> Preprocessed:
        chunks = stored.split(self.sizes, dim=-1)
        fed = []
        for part, chunk in zip(self.parts, chunks):
            stored_part = chunk.reshape(chunk.shape[0], *part.shape)
            if part.dtype != np.float32:
                stored_part = stored_part.round().to(torch.long if part.dtype == np.int64 else torch.uint8)
            fed.append(part.preprocess(stored_part))
        if isinstance(self.space, spaces.Dict):
            return dict(zip(self.space.spaces.keys(), fed))
        return tuple(fed)

    def is_batch(self, obs: Any) -> bool:
        k = self.keys[0]
        return self.parts[0].is_batch(obs[k])


def observation_codec(space: spaces.Space) -> ObservationCodec:
    """The :class:`ObservationCodec` of a supported observation space (else :class:`UnsupportedSpaceError`)."""
    if isinstance(space, spaces.Box):
        if space.shape is None or len(space.shape) == 0:
            raise UnsupportedSpaceError(f"unsupported observation space {space}: a Box needs at least one dimension")
        return _BoxCodec(space)
    if isinstance(space, spaces.Discrete):
        return _DiscreteCodec(space)
    if isinstance(space, spaces.MultiDiscrete):
        return _MultiDiscreteCodec(space)
    if isinstance(space, spaces.MultiBinary):
        return _MultiBinaryCodec(space)
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        if len(space.spaces) == 0:
            raise UnsupportedSpaceError(f"unsupported observation space {space}: it is empty")
        return _CompositeCodec(space)
    raise UnsupportedSpaceError(
        f"unsupported observation space {space}; natrl supports Box, Discrete, MultiDiscrete, MultiBinary and "
        "Dict/Tuple of those (wrap the env to turn other spaces into one of them)"
    )


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class ActionSpec:
    """How a policy acts in one action space.

    Attributes:
        space: the action space.
        dist_cls: the distribution family over raw actions.
        n_outputs: the width of the policy network's output (logits, or the mean; twice the
            action size for a Gaussian with a state-dependent log-std).
        raw_shape: the shape of one stored raw action: () for Discrete, (K,) otherwise.
        raw_dtype: the stored NumPy dtype (int64 for indices, float32 otherwise).
        gaussian: a diagonal Gaussian family (Box actions).
        state_dependent_std: the Gaussian's log-std is a network output.
        action_bound: "clip" or "squash" for bounded Box actions.
    """

    space: spaces.Space
    dist_cls: type[Distribution]
    n_outputs: int
    raw_shape: tuple[int, ...]
    raw_dtype: np.dtype
    gaussian: bool = False
    state_dependent_std: bool = False
    action_bound: str = "clip"
    # (low, high, any bound finite) of a Box action space, low and high as flat float64 vectors, set in
    # __post_init__
    _bounds: tuple[np.ndarray, np.ndarray, bool] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def act_dim(self) -> int:
        """Number of scalars in one raw action (1 for Discrete)."""
        return math.prod(self.raw_shape) if self.raw_shape else 1

    def output_description(self) -> str:
        """What the policy network must output, for error messages."""
        if self.dist_cls is Categorical:
            return f"{self.n_outputs} logits"
        if issubclass(self.dist_cls, MultiCategorical):
            return f"{self.n_outputs} logits ({' + '.join(map(str, self.dist_cls.nvec))})"
        if self.dist_cls is Bernoulli:
            return f"{self.n_outputs} logits (one per binary action)"
        if self.state_dependent_std:
            return f"{self.n_outputs} values (mean and log-std of {self.n_outputs // 2} action dimensions)"
        return f"{self.n_outputs} values (the mean of each action dimension)"

    def __post_init__(self) -> None:
        # bounds of Box actions as flat float64 vectors, computed once (to_env runs every env step)
        if isinstance(self.space, spaces.Box):
            low = self.space.low.reshape(-1).astype(np.float64)
            high = self.space.high.reshape(-1).astype(np.float64)
            object.__setattr__(self, "_bounds", (low, high, bool(np.isfinite(low).any() or np.isfinite(high).any())))

    def to_env(self, raw: np.ndarray) -> np.ndarray:
        """Raw samples (..., *raw_shape) → actions the env accepts (..., *space.shape): elements of the space.

        Box actions are clipped to every finite bound (an infinite one clips nothing) and given the space's
        dtype (rounded first for an integer Box). Clipping float32 samples to a float32 space's bounds and
        casting back is exact: the values are those computed in float64.
        """
        space = self.space
        if isinstance(space, spaces.Discrete):
            return raw.astype(np.int64) + int(space.start) if space.start else raw.astype(np.int64)
        lead = raw.shape[: raw.ndim - len(self.raw_shape)]
        if isinstance(space, spaces.MultiDiscrete):
            return (raw.astype(np.int64) + space.start.reshape(-1)).reshape(*lead, *space.shape)
        if isinstance(space, spaces.MultiBinary):
            return raw.astype(np.int8).reshape(*lead, *space.shape)
        if not isinstance(space, spaces.Box) or self._bounds is None:
            raise UnsupportedSpaceError(f"unsupported action space {space}")
        low, high, clipped = self._bounds
        if self.action_bound == "squash":
            out = low + (np.tanh(raw) + 1.0) * 0.5 * (high - low)
        elif clipped:
            out = np.clip(raw, low, high)
        else:
            out = raw
        if space.dtype.kind in "iu":
            out = np.rint(out)
        out = out.astype(space.dtype, copy=False)
        return out if len(space.shape) == 1 else out.reshape(*lead, *space.shape)


def action_spec(space: spaces.Space, *, state_dependent_std: bool = False, action_bound: str = "clip") -> ActionSpec:
    """The :class:`ActionSpec` of a supported action space (else :class:`UnsupportedSpaceError`)."""
    if action_bound not in ("clip", "squash"):
        raise ValueError(f"action_bound must be 'clip' or 'squash', got {action_bound!r}")
    if isinstance(space, spaces.Discrete):
        return ActionSpec(space, Categorical, int(space.n), (), np.dtype(np.int64))
    if isinstance(space, spaces.MultiDiscrete):
        nvec = tuple(int(n) for n in space.nvec.reshape(-1))
        return ActionSpec(space, MultiCategorical.of(nvec), sum(nvec), (len(nvec),), np.dtype(np.int64))
    if isinstance(space, spaces.MultiBinary):
        d = int(np.prod(space.shape))
        return ActionSpec(space, Bernoulli, d, (d,), np.dtype(np.float32))
    if isinstance(space, spaces.Box):
        if space.shape is None or len(space.shape) == 0:
            raise UnsupportedSpaceError(f"unsupported action space {space}: a Box needs at least one dimension")
        d = int(np.prod(space.shape))
        bounded = bool(np.isfinite(space.low).all() and np.isfinite(space.high).all())
        if action_bound == "squash" and not bounded:
            raise ValueError("action_bound='squash' needs a Box action space with finite bounds")
        n_out = 2 * d if state_dependent_std else d
        return ActionSpec(
            space, DiagGaussian, n_out, (d,), np.dtype(np.float32), True, state_dependent_std, action_bound
        )
    raise UnsupportedSpaceError(
        f"unsupported action space {space}; natrl supports Discrete, MultiDiscrete, MultiBinary and Box actions"
    )


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise :class:`UnsupportedSpaceError` unless natrl supports both spaces."""
    observation_codec(observation_space)
    action_spec(action_space)
