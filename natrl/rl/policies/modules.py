"""The actor and critic modules: preprocessing → features extractor → network → head.

Both modules take *stored* observations (see :mod:`natrl.rl.spaces`: uint8 images,
integer indices, float vectors), preprocess them on their device, pass them through a
features extractor and a network:

* :class:`Actor` maps the network's output to the parameters of the action
  distribution: ``(logits,)`` for Discrete, MultiDiscrete and MultiBinary actions,
  ``(mean, log_std)`` for Box actions. A state-independent log-std (the default) is
  one parameter vector broadcast over the batch; it is part of ``actor.parameters()``
  like every other actor weight, so natural-gradient updates cover it (OpenAI
  baselines issue #262 lost it by selecting parameters by name).
* :class:`Critic` maps it to one value per observation.

The extractor and network are natrl's by default (an extractor of :mod:`natrl.rl.policies.extractors`,
then an MLP) or any ``nn.Module`` the user gives. Shapes are checked once at construction with a sample
observation, so a network that does not fit the spaces fails there with one line.

Bounded Box actions: the distribution lives on unbounded "raw" actions u; the env
receives clip(u, low, high) (``action_bound="clip"``, the usual TRPO/PPO choice;
log-probs are those of u) or low + (tanh(u) + 1)(high − low)/2 (``"squash"``; tanh is
a bijection, so likelihood ratios and KL of u equal those of the squashed action, and
:meth:`Actor.log_prob_env` adds the change of variables −Σ log(1 − tanh(u)²) for the
density of the env action).
"""

from __future__ import annotations

import itertools
import math
from typing import cast

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from natrl.distributions import Categorical, Distribution
from natrl.rl.policies.extractors import (
    default_extractor,
    orthogonal_init_,
    output_width,
    probe_batch,
    probe_input,
)
from natrl.rl.policies.recurrent import RecurrentCore
from natrl.rl.spaces import ActionSpec, action_spec, observation_codec

__all__ = [
    "ACTIVATIONS",
    "Actor",
    "ActorCritic",
    "Critic",
    "distribution_and_value",
    "mlp",
    "shares_trained_features",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def _activation_class(activation: str | type[nn.Module]) -> type[nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[activation]
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation
    raise TypeError(f"activation must be a name or an nn.Module class (e.g. nn.SiLU), got {activation!r}")


def mlp(
    in_dim: int,
    hidden: tuple[int, ...],
    out_dim: int,
    activation: str | type[nn.Module],
    *,
    out_gain: float,
    ortho: bool,
) -> nn.Sequential:
    """An MLP with orthogonal init (gain √2 hidden, ``out_gain`` last; zero biases)."""
    act = _activation_class(activation)
    layers: list[nn.Module] = []
    sizes = (in_dim, *hidden)
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), act()]
    layers.append(nn.Linear(sizes[-1], out_dim))
    if ortho:
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            nn.init.orthogonal_(lin.weight, gain=out_gain if i == len(linears) - 1 else math.sqrt(2.0))
            nn.init.zeros_(lin.bias)
    return nn.Sequential(*layers)


def _as_space(observation_space: spaces.Space | int) -> spaces.Space:
    if isinstance(observation_space, (int, np.integer)):
        return spaces.Box(-np.inf, np.inf, (int(observation_space),), np.float32)
    if not isinstance(observation_space, spaces.Space):
        raise TypeError(f"observation_space must be a gymnasium space, got {type(observation_space).__name__}")
    return observation_space


def _check_module(obj: object, what: str) -> nn.Module:
    if not isinstance(obj, nn.Module):
        raise TypeError(f"{what} must be a torch.nn.Module, got {type(obj).__name__}")
    return obj


class _ObservationModule(nn.Module):
    """What Actor and Critic share: the observation space, its codec, the features extractor, an
    optional recurrent core, and a check of the network's output on sample observations.

    Without a core the module maps a batch of N stored observations to N outputs. With a core
    (:class:`~natrl.rl.policies.recurrent.RecurrentCore`) it is recurrent: its inputs are
    ``(obs (S, L, ...), starts (S, L), state (S, ...))`` — S sequences of L steps, the steps that
    begin an episode, the state before the first step — and its outputs are (S, L, ...).
    """

    core: RecurrentCore | None
    net: nn.Module

    def _init_input(
        self, observation_space: spaces.Space | int, features: nn.Module | None, core: RecurrentCore | None = None
    ) -> None:
        self.observation_space = _as_space(observation_space)
        self.obs_codec = observation_codec(self.observation_space)
        self.features = (
            default_extractor(self.observation_space)
            if features is None
            else _check_module(features, "the features extractor")
        )
        if core is not None and not isinstance(core, RecurrentCore):
            raise TypeError(f"core must be a natrl RecurrentCore, got {type(core).__name__}")
        self.core = core

    @property
    def recurrent(self) -> bool:
        """Whether the module has memory (a recurrent core)."""
        return self.core is not None

    def _features_dim(self) -> int:
        return output_width(self.features, self.obs_codec, "the features extractor")

    def _net_input_dim(self) -> int:
        """The width of the network's input: the features, or the core's hidden state."""
        if self.core is None:
            return self._features_dim()
        width = self._features_dim()
        if width != self.core.input_size:
            raise ValueError(
                f"the recurrent core takes {self.core.input_size} inputs but the features extractor gives {width}"
            )
        return self.core.hidden_size

    def _sample_output(self, what: str) -> tuple[int, ...] | str:
        """The shape of the network's output for a batch of 2 sample observations (a type name if not a tensor)."""
        with torch.no_grad():
            try:
                features = self.features(probe_input(self.obs_codec))
                if self.core is not None:
                    state = self.core.initial_state(2).to(features.dtype)
                    features = self.core.step(features, state)[0]
                out = self.net(features)
            except Exception as exc:
                raise ValueError(
                    f"the {what} failed on a sample observation of {self.observation_space}: {exc}"
                ) from None
        return tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__

    def _probe_inputs(self, device: torch.device) -> tuple[Tensor, ...]:
        """Sample inputs in the module's input form: (obs,), or sequences of one step with a zero state."""
        obs = probe_batch(self.obs_codec).to(device)
        if self.core is None:
            return (obs,)
        starts = torch.ones(obs.shape[0], 1, dtype=torch.bool, device=device)
        return obs.unsqueeze(1), starts, self.initial_state(obs.shape[0])

    def initial_state(self, batch: int) -> Tensor:
        """The zero recurrent state of ``batch`` sequences (recurrent modules only)."""
        if self.core is None:
            raise ValueError("this module has no recurrent state")
        return self.core.initial_state(batch)

    def features_of(self, obs: Tensor) -> Tensor:
        """The features extractor's output for a batch of stored observations."""
        return self.features(self.obs_codec.preprocess(obs))

    def net_input(self, obs: Tensor, starts: Tensor | None = None, state: Tensor | None = None) -> Tensor:
        """What the network takes: the features of (N, ...) observations, or for a recurrent module the
        core's output over (S, L, ...) sequences, (S, L, H)."""
        if self.core is None:
            return self.features_of(obs)
        if starts is None or state is None:
            raise ValueError("a recurrent module takes (obs (S, L, ...), starts (S, L), state (S, ...))")
        assert self.core is not None
        return self.core.outputs(self.sequence_features(obs), starts, state)

    def sequence_features(self, obs: Tensor) -> Tensor:
        """Features of (S, L, ...) stored observations, (S, L, F)."""
        S, L = obs.shape[:2]
        return self.features_of(obs.flatten(0, 1)).unflatten(0, (S, L))

    def core_of(
        self, features: Tensor, starts: Tensor, state: Tensor, *, return_states: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The recurrent core over (S, L, F) features (see :meth:`RecurrentCore.forward`)."""
        assert self.core is not None
        return self.core(features, starts, state, return_states=return_states)


class Actor(_ObservationModule):
    """Stochastic policy π(a | s) for any supported observation and action space.

    Args:
        observation_space: the env's observation space (an int n means a flat float Box (n,)).
        action_space: the env's action space.
        hidden_sizes: hidden widths of natrl's MLP (when ``net`` is not given).
        activation: its activation: a name (tanh, relu, elu, gelu) or an ``nn.Module`` class.
        log_std_init: initial log standard deviation of a Gaussian policy.
        state_dependent_std: the log-std is a network output instead of a free parameter.
        action_bound: "clip" or "squash" for bounded Box actions.
        ortho_init: orthogonal initialisation of natrl's MLP (gain √2 hidden, 0.01 last) and, when
            ``features`` is not given, of the default extractor's Linear and Conv2d layers (gain √2, zero
            biases: :func:`~natrl.rl.policies.orthogonal_init_`); a ``features`` module given here
            is left as it is (:func:`~natrl.rl.policies.build.build_policy` initialises those of
            ``policy_kwargs`` as stable-baselines3 does).
        features: the features extractor (preprocessed observations → (N, F)); default
            :func:`default_extractor`.
        net: the network from features (or the core's output) to the distribution's outputs
            (N, ``n_outputs``); default natrl's MLP.
        core: a :class:`~natrl.rl.policies.recurrent.RecurrentCore` between features and network
            (a policy with memory: it takes ``(obs (S, L, ...), starts (S, L), state (S, ...))``, sequences
            with their episode starts and initial state, see :mod:`natrl.rl.policies.recurrent`).
    """

    def __init__(
        self,
        observation_space: spaces.Space | int,
        action_space: spaces.Space,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str | type[nn.Module] = "tanh",
        *,
        log_std_init: float = 0.0,
        state_dependent_std: bool = False,
        action_bound: str = "clip",
        ortho_init: bool = True,
        features: nn.Module | None = None,
        net: nn.Module | None = None,
        core: RecurrentCore | None = None,
    ) -> None:
        super().__init__()
        self._init_input(observation_space, features, core)
        self.action: ActionSpec = action_spec(
            action_space,
            state_dependent_std=state_dependent_std and isinstance(action_space, spaces.Box),
            action_bound=action_bound,
        )
        if net is None:
            head = mlp(
                self._net_input_dim(),
                tuple(hidden_sizes),
                self.action.n_outputs,
                activation,
                out_gain=0.01,
                ortho=ortho_init,
            )
            if self.action.state_dependent_std:
                with torch.no_grad():
                    cast(nn.Linear, head[-1]).bias[self.act_dim :] = float(log_std_init)
            self.net = head
        else:
            self.net = _check_module(net, "the actor network")
        if self.free_log_std:
            self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init)))
        if ortho_init and features is None:
            orthogonal_init_(self.features)
        self._check_output()

    def _check_output(self) -> None:
        shape = self._sample_output("actor network")
        if shape != (2, self.action.n_outputs):
            raise ValueError(
                f"the actor network's output has shape {shape} for a batch of 2 observations; the action space "
                f"{self.action.space} needs (batch, {self.action.n_outputs}): {self.action.output_description()}"
            )

    def parameters_in_use(self) -> list[nn.Parameter]:
        """The trainable parameters the policy's output depends on (found by autograd on sample
        observations): all of them for natrl's networks; without the value head for a module
        with two heads."""
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.enable_grad():
            device = params[0].device if params else torch.device("cpu")
            out = self(*self._probe_inputs(device))
            total = sum(o.float().sum() for o in out)
            grads = torch.autograd.grad(total, params, allow_unused=True)
        return [p for p, g in zip(params, grads) if g is not None]

    # -- what the algorithms read
    @property
    def dist_cls(self) -> type[Distribution]:
        return self.action.dist_cls

    @property
    def discrete(self) -> bool:
        """Categorical over one Discrete action."""
        return self.action.dist_cls is Categorical

    @property
    def state_dependent_std(self) -> bool:
        return self.action.state_dependent_std

    @property
    def free_log_std(self) -> bool:
        """A Gaussian policy whose log-std is a state-independent parameter (``self.log_std``)."""
        return self.action.gaussian and not self.action.state_dependent_std

    @property
    def act_dim(self) -> int:
        return self.action.act_dim

    def forward(self, obs: Tensor, starts: Tensor | None = None, state: Tensor | None = None) -> tuple[Tensor, ...]:
        """Distribution output parameters for a batch of stored observations (N, ...) → (N, k), or for a
        recurrent actor for sequences (S, L, ...) with their episode starts and initial state → (S, L, k)."""
        return self.head(self.net(self.net_input(obs, starts, state)))

    def head(self, out: Tensor) -> tuple[Tensor, ...]:
        """Distribution output parameters from the network's output ``self.net(features)``."""
        if not self.action.gaussian:
            return (out,)
        if self.action.state_dependent_std:
            mean, log_std = out.split(self.act_dim, dim=-1)
            return (mean, log_std)
        return (out, self.log_std.expand_as(out))

    def distribution(self, obs: Tensor, starts: Tensor | None = None, state: Tensor | None = None) -> Distribution:
        """π(·|s) for a batch of observations, or for every step of a batch of sequences (flattened to S·L rows,
        sequence by sequence)."""
        return self.distribution_from_features(self.net_input(obs, starts, state))

    def step(self, obs: Tensor, state: Tensor, starts: Tensor) -> tuple[Distribution, Tensor]:
        """One step of a recurrent actor: π(·|history) for a batch of observations (B, ...), their states
        (B, ...) and episode-start flags (B,), and the states after the step."""
        assert self.core is not None, "step() is for recurrent actors"
        y, new_state = self.core.step(self.features_of(obs), state, starts)
        return self.dist_cls(*self.head(self.net(y))), new_state

    def distribution_from_features(self, features: Tensor) -> Distribution:
        """The distribution for the network's input already computed (``net_input``: features shared with
        the critic, or a recurrent core's output, whose S·L steps become rows sequence by sequence)."""
        out = self.head(self.net(features))
        if self.core is not None:
            out = tuple(o.flatten(0, 1) for o in out)
        return self.dist_cls(*out)

    def to_env_action(self, raw: np.ndarray) -> np.ndarray:
        """Map a batch of raw distribution samples to actions the env accepts."""
        return self.action.to_env(raw)

    def log_prob_env(self, obs: Tensor, raw: Tensor) -> Tensor:
        """Log-density of the action sent to the env (squash: with the tanh Jacobian)."""
        lp = self.distribution(obs).log_prob(raw)
        if self.action.gaussian and self.action.action_bound == "squash":
            space = self.action.space
            assert isinstance(space, spaces.Box)
            half = 0.5 * (space.high.reshape(-1).astype(np.float64) - space.low.reshape(-1).astype(np.float64))
            scale = torch.as_tensor(half, dtype=raw.dtype, device=raw.device)
            # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
            log_det = 2.0 * (math.log(2.0) - raw - nn.functional.softplus(-2.0 * raw))
            lp = lp - (log_det + torch.log(scale)).sum(-1)
        return lp


class Critic(_ObservationModule):
    """State-value function V(s) for any supported observation space.

    Args:
        observation_space: the env's observation space (an int n means a flat float Box (n,)).
        hidden_sizes: hidden layer widths of natrl's MLP (when ``net`` is not given).
        activation: the MLP's activation (when ``net`` is not given).
        ortho_init: orthogonal initialisation of the MLP (when ``net`` is not given) and of the default
            extractor (when ``features`` is not given), as for :class:`Actor`.
        features: the features extractor (default :func:`default_extractor`; pass the actor's
            to share it).
        net: the network from features (or the core's output) to the value, (N,) or (N, 1); default
            natrl's MLP.
        core: a recurrent core (a value function with memory), as for :class:`Actor`.
    """

    def __init__(
        self,
        observation_space: spaces.Space | int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str | type[nn.Module] = "tanh",
        *,
        ortho_init: bool = True,
        features: nn.Module | None = None,
        net: nn.Module | None = None,
        core: RecurrentCore | None = None,
    ) -> None:
        super().__init__()
        self._init_input(observation_space, features, core)
        if net is None:
            self.net = mlp(self._net_input_dim(), tuple(hidden_sizes), 1, activation, out_gain=1.0, ortho=ortho_init)
        else:
            self.net = _check_module(net, "the critic network")
        if ortho_init and features is None:
            orthogonal_init_(self.features)
        shape = self._sample_output("critic network")
        if shape not in ((2,), (2, 1)):
            raise ValueError(
                f"the critic network's output has shape {shape} for a batch of 2 observations; "
                "it must be (batch,) or (batch, 1): one value per observation"
            )

    def forward(self, obs: Tensor, starts: Tensor | None = None, state: Tensor | None = None) -> Tensor:
        """V for a batch of stored observations (N,), or for every step of recurrent sequences (S, L)."""
        return self.value_from_features(self.net_input(obs, starts, state))

    def value_from_features(self, features: Tensor) -> Tensor:
        """V for the network's input already computed (``net_input``: features shared with the actor, or a
        recurrent core's output): (N,), or (S, L) for sequences."""
        v = self.net(features)
        ranks = 3 if self.core is not None else 2  # the network's output with a trailing value axis
        return v.squeeze(-1) if v.dim() == ranks and v.shape[-1] == 1 else v


def shares_trained_features(actor: Actor, critic: Critic) -> bool:
    """Whether actor and critic share one features extractor that has parameters (a CNN): its output is then
    computed once for both (:func:`distribution_and_value`)."""
    return actor.features is critic.features and any(True for _ in actor.features.parameters())


def distribution_and_value(actor: Actor, critic: Critic, obs: Tensor) -> tuple[Distribution, Tensor]:
    """π(·|obs) and V(obs), with a shared features extractor run once."""
    if shares_trained_features(actor, critic):
        features = actor.features_of(obs)
        return actor.distribution_from_features(features), critic.value_from_features(features)
    return actor.distribution(obs), critic(obs)


class ActorCritic(nn.Module):
    """The agent's networks as one module (stable-baselines3's ``model.policy``): parameters a trunk shared by
    actor and critic owns appear once."""

    def __init__(self, actor: Actor, critic: Critic) -> None:
        super().__init__()
        self.actor = actor
        self.critic = critic

    def forward(self, obs: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """The action distribution's parameters and the value of a batch of stored observations."""
        dist, value = distribution_and_value(self.actor, self.critic, obs)
        return dist.params, value
