"""MLP actor and critic with explicitly declared parameters.

The actor maps observations to the output parameters of its action
distribution: ``(logits,)`` for Discrete actions, ``(mean, log_std)`` for Box
actions. With a state-independent log-std (the default) ``log_std`` is one
parameter vector broadcast over the batch; it is part of ``actor.parameters()``
like every other actor weight, so natural-gradient updates cover it (OpenAI
baselines issue #262 lost it by selecting parameters by name).

Bounded Box actions: the distribution lives on unbounded "raw" actions u; the
env receives clip(u, low, high) (``action_bound="clip"``, the usual TRPO/PPO
choice; log-probs are those of u) or low + (tanh(u) + 1)(high − low)/2
(``"squash"``; tanh is a bijection, so likelihood ratios and KL of u equal those
of the squashed action, and :meth:`Actor.log_prob_env` adds the change of
variables −Σ log(1 − tanh(u)²) for the density of the env action).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from natrl.rl.distributions import Categorical, DiagGaussian, Distribution

__all__ = ["Actor", "Critic", "mlp"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}
_FUNCTIONAL: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.Tanh: torch.tanh,
    nn.ReLU: torch.relu,
    nn.ELU: nn.functional.elu,
    nn.GELU: nn.functional.gelu,
}


def mlp(
    in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str, *, out_gain: float, ortho: bool
) -> nn.Sequential:
    """An MLP with orthogonal init (gain √2 hidden, ``out_gain`` last; zero biases)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    sizes = (in_dim, *hidden)
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], out_dim))
    if ortho:
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            nn.init.orthogonal_(lin.weight, gain=out_gain if i == len(linears) - 1 else math.sqrt(2.0))
            nn.init.zeros_(lin.bias)
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Stochastic policy π(a | s) over a Discrete or 1-D Box action space."""

    def __init__(
        self,
        obs_dim: int,
        action_space: spaces.Space,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        *,
        log_std_init: float = 0.0,
        state_dependent_std: bool = False,
        action_bound: str = "clip",
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        if action_bound not in ("clip", "squash"):
            raise ValueError(f"action_bound must be 'clip' or 'squash', got {action_bound!r}")
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.state_dependent_std = state_dependent_std and not self.discrete
        self.action_bound = action_bound
        self.dist_cls: type[Distribution] = Categorical if self.discrete else DiagGaussian
        if self.discrete:
            assert isinstance(action_space, spaces.Discrete)
            out = int(action_space.n)
            self.act_dim = 1
        else:
            assert isinstance(action_space, spaces.Box)
            self.act_dim = int(action_space.shape[0])
            out = 2 * self.act_dim if self.state_dependent_std else self.act_dim
            low, high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
            self.low, self.high = low, high
            self.bounded = bool(np.isfinite(low).all() and np.isfinite(high).all())
            if action_bound == "squash" and not self.bounded:
                raise ValueError("action_bound='squash' needs a Box action space with finite bounds")
        self.net = mlp(obs_dim, tuple(hidden_sizes), out, activation, out_gain=0.01, ortho=ortho_init)
        if not self.discrete and not self.state_dependent_std:
            self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init)))
        elif self.state_dependent_std:
            with torch.no_grad():
                self.net[-1].bias[self.act_dim :] = float(log_std_init)  # type: ignore[index]

    def forward(self, obs: Tensor) -> tuple[Tensor, ...]:
        """Distribution output parameters for a batch of observations (N, obs_dim)."""
        return self.head(self.net(obs))

    def head(self, out: Tensor) -> tuple[Tensor, ...]:
        """Distribution output parameters from the network's output ``self.net(obs)``."""
        if self.discrete:
            return (out,)
        if self.state_dependent_std:
            mean, log_std = out.split(self.act_dim, dim=-1)
            return (mean, log_std)
        return (out, self.log_std.expand_as(out))

    def distribution(self, obs: Tensor) -> Distribution:
        return self.dist_cls(*self(obs))

    def numpy_sampler(self, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        """A NumPy ``obs -> raw action sample`` for CPU rollouts.

        One forward of a small MLP on a handful of observations costs a few
        microseconds of arithmetic but tens of microseconds of framework dispatch in
        torch; NumPy's dispatch is several times cheaper, and the rollout loop runs
        this once per vector step. The arrays are views of the (CPU) parameter
        tensors, so in-place updates of the parameters are seen without rebuilding.
        Categorical samples use the Gumbel-max trick; log-probabilities are
        recomputed in torch for the whole rollout afterwards.
        """
        if next(self.parameters()).device.type != "cpu":
            raise ValueError("numpy_sampler needs the actor on the CPU; use sampler() on other devices")
        layers: list[tuple[np.ndarray, np.ndarray] | str] = []
        for m in self.net:
            if isinstance(m, nn.Linear):
                layers.append((m.weight.detach().numpy().T, m.bias.detach().numpy()))
            else:
                layers.append(type(m).__name__)
        discrete, sd_std, k = self.discrete, self.state_dependent_std, self.act_dim
        log_std = None if discrete or sd_std else self.log_std.detach().numpy()

        def sample(obs: np.ndarray) -> np.ndarray:
            x = obs
            for layer in layers:
                if isinstance(layer, tuple):
                    x = x @ layer[0] + layer[1]
                elif layer == "Tanh":
                    np.tanh(x, out=x)
                elif layer == "ReLU":
                    np.maximum(x, 0.0, out=x)
                else:
                    x = _FUNCTIONAL[_ACTIVATIONS[layer.lower()]](torch.from_numpy(x)).numpy()
            if discrete:
                return (x + rng.gumbel(size=x.shape)).argmax(-1)
            if sd_std:
                x, ls = x[:, :k], x[:, k:]
            else:
                ls = log_std
            return (x + np.exp(ls) * rng.standard_normal(x.shape, dtype=np.float32)).astype(np.float32)

        return sample

    def sampler(self, generator: torch.Generator) -> Callable[[Tensor], Tensor]:
        """A lean ``obs -> raw action sample`` for rollouts (no grad, no nn.Module dispatch).

        Equivalent to ``self.distribution(obs).sample(generator)`` but built from the
        layers' tensors directly, which matters when one forward of a small MLP costs
        less than the Python around it. Categorical samples use the Gumbel-max trick.
        The returned closure holds references to the parameter tensors, which every
        natrl update modifies in place, so it stays valid across updates.
        """
        layers: list[tuple[Tensor, Tensor] | Callable[[Tensor], Tensor]] = []
        for m in self.net:
            if isinstance(m, nn.Linear):
                layers.append((m.weight, m.bias))
            else:
                layers.append(_FUNCTIONAL[type(m)])
        linear = nn.functional.linear
        discrete, sd_std, k = self.discrete, self.state_dependent_std, self.act_dim
        log_std = None if discrete or sd_std else self.log_std

        @torch.no_grad()
        def sample(obs: Tensor) -> Tensor:
            x = obs
            for layer in layers:
                x = linear(x, *layer) if isinstance(layer, tuple) else layer(x)
            if discrete:
                u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                return (x - torch.log(-torch.log(u))).argmax(-1)
            if sd_std:
                x, ls = x[:, :k], x[:, k:]
            else:
                ls = log_std
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return torch.addcmul(x, torch.exp(ls), noise)

        return sample

    def to_env_action(self, raw: np.ndarray) -> np.ndarray:
        """Map raw distribution samples to actions the env accepts."""
        if self.discrete:
            return raw.astype(np.int64)
        if self.action_bound == "squash":
            return self.low + (np.tanh(raw) + 1.0) * 0.5 * (self.high - self.low)
        if self.bounded:
            return np.clip(raw, self.low, self.high)
        return raw

    def log_prob_env(self, obs: Tensor, raw: Tensor) -> Tensor:
        """Log-density of the action sent to the env (squash: with the tanh Jacobian)."""
        lp = self.distribution(obs).log_prob(raw)
        if not self.discrete and self.action_bound == "squash":
            scale = torch.as_tensor(0.5 * (self.high - self.low), dtype=raw.dtype, device=raw.device)
            # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
            log_det = 2.0 * (math.log(2.0) - raw - nn.functional.softplus(-2.0 * raw))
            lp = lp - (log_det + torch.log(scale)).sum(-1)
        return lp


class Critic(nn.Module):
    """State-value function V(s)."""

    def __init__(
        self,
        obs_dim: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        *,
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, tuple(hidden_sizes), 1, activation, out_gain=1.0, ortho=ortho_init)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).squeeze(-1)
