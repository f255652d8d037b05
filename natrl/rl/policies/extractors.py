"""Features extractors (preprocessed observations → (N, F) features) and the shape checks on sample
observations that the actor and critic run at construction.

natrl's extractors follow stable-baselines3's: :class:`FlattenExtractor` for flat spaces,
:class:`CombinedExtractor` for Dict/Tuple spaces, :class:`NatureCNN` for Atari-sized images and
:class:`MinAtarCNN` for small ones; :func:`default_extractor` picks one for a space. :class:`OutputOf`
takes one output of a module with several heads (a shared trunk).
"""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from natrl.rl.spaces import ObservationCodec, Preprocessed, is_image_space, observation_codec

__all__ = [
    "CombinedExtractor",
    "FlattenExtractor",
    "MinAtarCNN",
    "NatureCNN",
    "OutputOf",
    "default_extractor",
    "extractor_width",
    "image_layout",
    "orthogonal_init_",
    "output_width",
    "probe_batch",
    "probe_input",
]


class FlattenExtractor(nn.Module):
    """Preprocessed observations (N, ...) → (N, features_dim), no parameters."""

    def __init__(self, observation_space: spaces.Space | None = None) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class CombinedExtractor(nn.Module):
    """Dict/Tuple observations: each part flattened, the parts concatenated (SB3's MultiInputPolicy
    extractor for non-image keys); image parts go through a :class:`NatureCNN` each (a :class:`MinAtarCNN`
    for images smaller than 36×36).

    Raises:
        ValueError: a part is itself a Dict or Tuple (a nested space, which SB3 refuses too).
    """

    def __init__(self, observation_space: spaces.Dict | spaces.Tuple, cnn_output_dim: int = 256) -> None:
        super().__init__()
        parts: list[tuple[str | int, spaces.Space]]
        if isinstance(observation_space, spaces.Dict):
            parts = list(observation_space.spaces.items())
        else:
            parts = list(enumerate(observation_space.spaces))
        nested = next((k for k, part in parts if isinstance(part, (spaces.Dict, spaces.Tuple))), None)
        if nested is not None:  # as stable-baselines3, which refuses nested spaces when it builds the policy
            kind = type(observation_space).__name__
            raise ValueError(
                f"the {kind} observation space's entry {nested!r} is itself a "
                f"{type(dict(parts)[nested]).__name__}: nested observation spaces are not supported (as in "
                "stable-baselines3); flatten it: wrap the env in gymnasium.wrappers.FlattenObservation (for an id "
                "or a factory: wrapper_class=FlattenObservation), or give a features_extractor_class that reads "
                "nested observations"
            )
        self.keys = [k for k, _ in parts]
        cnns: dict[str, nn.Module] = {}
        for k, part in parts:  # in the space's order: the order of the parameters
            if is_image_space(part):
                cnns[str(k)] = _image_extractor(part, cnn_output_dim)
        self.cnns = nn.ModuleDict(cnns)

    def forward(self, x: dict[str, Tensor] | tuple[Tensor, ...]) -> Tensor:
        parts = []
        for k in self.keys:
            v = x[k]  # type: ignore[index]
            parts.append(self.cnns[str(k)](v) if str(k) in self.cnns else v.flatten(1))
        return torch.cat(parts, dim=-1)


def image_layout(shape: tuple[int, ...] | None, name: str = "a CNN") -> tuple[bool, int, int, int]:
    """(channels_last, channels, height, width) of an image shape: channels last when the last axis is the
    smallest (e.g. (84, 84, 4) or (210, 160, 3)), else first."""
    assert shape is not None and len(shape) == 3, f"{name} needs (C, H, W) or (H, W, C) observations"
    if shape[-1] < shape[0]:
        return True, shape[-1], shape[0], shape[1]
    return False, shape[0], shape[1], shape[2]


class NatureCNN(nn.Module):
    """The convolutional torso of Mnih et al. (2015), "Human-level control through deep
    reinforcement learning" (32×8×8/4, 64×4×4/2, 64×3×3/1, then a ReLU Linear layer), on image
    observations scaled to [0, 1], channels first or last (detected from the space)."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 512) -> None:
        super().__init__()
        shape = observation_space.shape
        self.channels_last, c, h, w = image_layout(shape, "NatureCNN")
        if min(h, w) < 36:
            raise ValueError(
                f"NatureCNN needs images of at least 36×36 pixels, got observations of shape {tuple(shape)}; "
                "resize the frames (gymnasium.wrappers.ResizeObservation) or pass "
                "policy_kwargs=dict(features_extractor_class=...)"
            )
        self.cnn = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            probe = torch.zeros(1, *shape)
            n_flat = self.cnn(self._channels_first(probe)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.features_dim = features_dim

    def _channels_first(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.cnn(self._channels_first(x)))


class MinAtarCNN(nn.Module):
    """The network of Young & Tian (2019), "MinAtar: An Atari-Inspired Testbed for Thorough and
    Reproducible Reinforcement Learning Experiments": one 16×3×3 convolution (stride 1) and a ReLU Linear
    layer of 128 units, for small images (MinAtar's 10×10 frames) scaled to [0, 1], channels first or last
    (detected as :class:`NatureCNN` does)."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128, channels: int = 16) -> None:
        super().__init__()
        self.channels_last, c, h, w = image_layout(observation_space.shape, "MinAtarCNN")
        self.cnn = nn.Sequential(nn.Conv2d(c, channels, 3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(channels * (h - 2) * (w - 2), features_dim), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.cnn(x.permute(0, 3, 1, 2) if self.channels_last else x))


def image_extractor_class(observation_space: spaces.Box) -> type[NatureCNN] | type[MinAtarCNN]:
    """NatureCNN for images of at least 36×36 pixels (Atari's 84×84), MinAtarCNN for smaller ones."""
    _, _, h, w = image_layout(observation_space.shape)
    return NatureCNN if min(h, w) >= 36 else MinAtarCNN


def _image_extractor(observation_space: spaces.Box, features_dim: int | None = None) -> nn.Module:
    """natrl's image extractor (:func:`image_extractor_class`), its default width or ``features_dim``."""
    cls = image_extractor_class(observation_space)
    return cls(observation_space) if features_dim is None else cls(observation_space, features_dim)


def orthogonal_init_(module: nn.Module, gain: float = math.sqrt(2.0)) -> nn.Module:
    """Orthogonal initialisation of every ``nn.Linear`` and ``nn.Conv2d`` inside ``module`` (itself included), in
    the order of ``module.modules()``; biases set to zero, other layers left as they are. Returns ``module``.

    A weight W of shape (out, in) — (out, in·kh·kw) for a convolution — becomes ``gain`` times a random
    orthogonal matrix (Saxe, McClelland & Ganguli, 2014, "Exact solutions to the nonlinear dynamics of learning
    in deep linear neural networks"): W Wᵀ = gain² I when out ≤ in, Wᵀ W = gain² I otherwise, so every singular
    value of W is ``gain``. With the default gain √2 this is what stable-baselines3's ``ortho_init`` does to a
    policy's features extractor (openai/baselines' gain for ReLU layers); draws from torch's global generator.

    Raises:
        ValueError: ``gain`` is not a finite real number >= 0 (checked before any weight changes).
    """
    if isinstance(gain, bool) or not isinstance(gain, numbers.Real) or not math.isfinite(gain) or gain < 0:
        raise ValueError(f"orthogonal_init_: gain must be a finite number >= 0, got {gain!r}")
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def default_extractor(observation_space: spaces.Space) -> nn.Module:
    """natrl's default extractor for a space: for images NatureCNN (at least 36×36 pixels) or MinAtarCNN
    (smaller), combined for Dict/Tuple, else flatten."""
    if is_image_space(observation_space):
        return _image_extractor(observation_space)
    if isinstance(observation_space, (spaces.Dict, spaces.Tuple)):
        return CombinedExtractor(observation_space)
    return FlattenExtractor(observation_space)


class OutputOf(nn.Module):
    """Output ``index`` of a module that returns several (one module with two heads, shared trunk)."""

    def __init__(self, module: nn.Module, index: int) -> None:
        super().__init__()
        self.module = module
        self.index = index

    def forward(self, x: Preprocessed) -> Tensor:
        out = self.module(x)
        if not isinstance(out, (tuple, list)) or len(out) <= self.index:
            raise ValueError(
                f"the shared policy module must return (actor_output, value); got {type(out).__name__}"
                + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
            )
        return out[self.index]


def probe_batch(codec: ObservationCodec, n: int = 2) -> Tensor:
    """A stored batch of ``n`` sample observations (for shape checks at construction)."""
    space = copy.deepcopy(codec.space)  # seeding the copy leaves the caller's space RNG alone
    space.seed(0)
    samples = [space.sample() for _ in range(n)]
    rows = [codec.encode(codec.batch_of_one(s)) for s in samples]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(rows)))


def probe_input(codec: ObservationCodec) -> Preprocessed:
    """Preprocessed sample observations in torch's default dtype (that of freshly built modules)."""

    def cast(x: Preprocessed) -> Preprocessed:
        if isinstance(x, dict):
            return {k: cast(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return tuple(cast(v) for v in x)
        return x.to(torch.get_default_dtype()) if x.is_floating_point() else x

    return cast(codec.preprocess(probe_batch(codec)))


def output_width(features: nn.Module, codec: ObservationCodec, what: str) -> int:
    """The width F of ``features``' (batch, F) output on sample observations of ``codec``'s space.

    Raises:
        ValueError: the module fails on the sample, or its output is not a (batch, features) tensor
            (``what`` names the module in the message).
    """
    with torch.no_grad():
        try:
            out = features(probe_input(codec))
        except Exception as exc:
            raise ValueError(f"{what} failed on a sample observation of {codec.space}: {exc}") from None
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what} must return a (batch, features) tensor, got {shape} for a batch of 2 observations")
    return int(out.shape[1])


def extractor_width(features: nn.Module, observation_space: spaces.Space) -> int:
    """The width F of a features extractor's output, found on sample observations of the space."""
    return output_width(features, observation_codec(observation_space), "the features extractor")
