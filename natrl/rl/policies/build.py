"""Building an agent's actor and critic from a policy argument, stable-baselines3 style.

``policy`` is one of

* a built-in name: ``"MlpPolicy"`` (any non-image observation space; Dict/Tuple
  observations get the combined extractor), ``"MultiInputPolicy"`` (the same, SB3's
  name for Dict observations) or ``"CnnPolicy"`` (image observations, NatureCNN);
* one ``nn.Module`` with two heads: ``module(obs) -> (actor_output, value)``, a trunk
  shared by actor and critic (as tianshou's ``ActorCritic``);
* a pair ``(actor_module, critic_module)``: ``actor_module(obs) -> actor_output``,
  ``critic_module(obs) -> value``.

A user's module receives the preprocessed observation (float32 of the space's shape;
a dict/tuple for Dict/Tuple spaces; one-hots for Discrete) and returns the
distribution's outputs (:attr:`natrl.rl.spaces.ActionSpec.n_outputs` columns: logits,
or the mean of a Gaussian whose state-independent log-std natrl adds) and the value.

``policy_kwargs`` (built-in policies only) takes stable-baselines3's keys:
``net_arch`` (a list for both networks or ``dict(pi=[...], vf=[...])``),
``activation_fn`` (an ``nn.Module`` class), ``features_extractor_class`` and
``features_extractor_kwargs`` (the class is called as ``cls(observation_space, **kwargs)``),
``share_features_extractor`` (default True), ``ortho_init`` and ``log_std_init``.

``ortho_init`` (default True) initialises orthogonally what stable-baselines3's ``ActorCriticPolicy`` does:
the MLPs (gain √2 hidden, 0.01 policy head, 1 value head) and the features extractor, shared or the actor's
and the critic's — every ``nn.Linear`` and ``nn.Conv2d`` in it, gain √2, biases zero
(:func:`~natrl.rl.policies.orthogonal_init_`), a ``features_extractor_class`` of the user's
included; a recurrent core keeps torch's initialisation, as in sb3-contrib, unless natrl's ``lstm_forget_bias``
(recurrent policies) adds a bias to its LSTMs' forget gates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from torch import nn

from natrl.rl.policies.extractors import OutputOf, default_extractor, extractor_width, orthogonal_init_
from natrl.rl.policies.modules import Actor, Critic
from natrl.rl.policies.recurrent import RNN_KINDS, RecurrentCore
from natrl.rl.spaces import is_image_space
from natrl.rl.trusted import UntrustedReferenceError, resolve_class

__all__ = [
    "BUILTIN_POLICIES",
    "POLICY_KWARGS",
    "RECURRENT_KWARGS",
    "RECURRENT_POLICIES",
    "PolicyError",
    "build_policy",
    "build_policy_for",
    "decode_policy_kwargs",
    "encode_policy_kwargs",
]

RECURRENT_POLICIES = {
    f"{base}{kind.capitalize()}Policy": kind for base in ("Mlp", "Cnn", "MultiInput") for kind in RNN_KINDS
}
"""sb3-contrib's ``MlpLstmPolicy``, ``CnnLstmPolicy``, ``MultiInputLstmPolicy`` and their GRU variants → kind."""
BUILTIN_POLICIES = ("MlpPolicy", "MultiInputPolicy", "CnnPolicy", *RECURRENT_POLICIES)
"""The policy names an agent accepts as ``policy=`` (stable-baselines3's and sb3-contrib's names)."""
POLICY_KWARGS = (
    "net_arch",
    "activation_fn",
    "features_extractor_class",
    "features_extractor_kwargs",
    "share_features_extractor",
    "ortho_init",
    "log_std_init",
)
"""The keys ``policy_kwargs`` accepts (with a built-in policy only); any other key is a :class:`PolicyError`."""
RECURRENT_KWARGS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm", "lstm_forget_bias")
"""sb3-contrib's keys of the recurrent policies (``lstm_*`` also size a GRU), accepted with a recurrent policy, and
natrl's ``lstm_forget_bias`` (added to the LSTMs' forget-gate biases at initialisation; default 0, torch's)."""


class PolicyError(ValueError):
    """A policy or policy_kwargs that natrl cannot build."""


def _net_arch(value: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    def sizes(v: Any, what: str) -> tuple[int, ...]:
        if not isinstance(v, (list, tuple)) or not all(isinstance(h, int) and h >= 1 for h in v):
            raise PolicyError(f"policy_kwargs net_arch{what} must be a list of positive integers, got {v!r}")
        return tuple(v)

    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"pi", "vf"})
        if unknown:
            raise PolicyError(f"policy_kwargs net_arch has unknown key(s) {unknown}; use dict(pi=[...], vf=[...])")
        return sizes(value.get("pi", [64, 64]), "['pi']"), sizes(value.get("vf", [64, 64]), "['vf']")
    arch = sizes(value, "")
    return arch, arch


def build_policy(
    policy: Any,
    policy_kwargs: Mapping[str, Any] | None,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    *,
    hidden_sizes: tuple[int, ...] = (64, 64),
    critic_hidden_sizes: tuple[int, ...] | None = None,
    activation: str = "tanh",
    ortho_init: bool = True,
    log_std_init: float = 0.0,
    state_dependent_std: bool = False,
    action_bound: str = "clip",
) -> tuple[Actor, Critic]:
    """The actor and critic for ``policy`` (see the module docstring); the keyword arguments are
    the agent's hyperparameters, which ``policy_kwargs`` override.

    Raises:
        PolicyError: unknown policy name or policy_kwargs key, policy_kwargs with a user's modules.
        TypeError: a network that is not an ``nn.Module``.
        ValueError: a network whose output does not fit the action space (from the modules).
    """
    if policy_kwargs is not None and not isinstance(policy_kwargs, Mapping):
        raise PolicyError(f"policy_kwargs must be a dict, got {type(policy_kwargs).__name__}")
    kwargs = dict(policy_kwargs or {})
    rnn_kind = RECURRENT_POLICIES.get(policy) if isinstance(policy, str) else None
    valid = POLICY_KWARGS + (RECURRENT_KWARGS if rnn_kind else ())
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        only = (
            " (lstm_* keys need a recurrent policy such as 'MlpLstmPolicy')"
            if set(unknown) & set(RECURRENT_KWARGS)
            else ""
        )
        if set(unknown) & {"optimizer_class", "optimizer_kwargs"}:
            only += (
                " (natrl's agents build their own optimisers: PPO's Adam takes ε 1e-5, SB3's default; A2C's is chosen "
                "by use_rms_prop and rms_prop_eps; the natural-gradient agents take critic_lr: drop these keys)"
            )
        raise PolicyError(
            f"unknown policy_kwargs key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(valid)}{only}"
        )
    if not isinstance(policy, str):
        if kwargs:
            raise PolicyError(
                "policy_kwargs apply to the built-in policies; a user's modules carry their own architecture"
            )
        if isinstance(policy, nn.Module):
            shared = policy
            actor = Actor(
                observation_space,
                action_space,
                features=nn.Identity(),
                net=OutputOf(shared, 0),
                state_dependent_std=state_dependent_std,
                action_bound=action_bound,
                log_std_init=log_std_init,
            )
            critic = Critic(observation_space, features=nn.Identity(), net=OutputOf(shared, 1))
            return actor, critic
        if isinstance(policy, (tuple, list)) and len(policy) == 2:
            actor_net, critic_net = policy
            actor = Actor(
                observation_space,
                action_space,
                features=nn.Identity(),
                net=actor_net,
                state_dependent_std=state_dependent_std,
                action_bound=action_bound,
                log_std_init=log_std_init,
            )
            critic = Critic(observation_space, features=nn.Identity(), net=critic_net)
            return actor, critic
        raise TypeError(
            "policy must be a built-in name ('MlpPolicy', 'MlpLstmPolicy', 'CnnPolicy', ...), an nn.Module "
            f"returning (actor_output, value), or a pair (actor_module, critic_module); got {type(policy).__name__}"
        )
    if policy not in BUILTIN_POLICIES:
        raise PolicyError(f"unknown policy {policy!r}; built-in policies: {', '.join(BUILTIN_POLICIES)}")
    if policy.startswith("Cnn") and not (
        is_image_space(observation_space)
        or (isinstance(observation_space, spaces.Dict) and any(is_image_space(s) for s in observation_space.values()))
    ):
        raise PolicyError(
            f"{policy!r} needs image observations (uint8 Box (H, W, C) or (C, H, W) in [0, 255]); got "
            f"{observation_space}. Use {policy.replace('Cnn', 'Mlp')!r}"
        )
    pi, vf = hidden_sizes, critic_hidden_sizes or hidden_sizes
    if "net_arch" in kwargs:
        pi, vf = _net_arch(kwargs["net_arch"])
    act: str | type[nn.Module] = kwargs.get("activation_fn", activation)
    if not (isinstance(act, str) or (isinstance(act, type) and issubclass(act, nn.Module))):
        raise PolicyError(f"policy_kwargs activation_fn must be an nn.Module class such as nn.Tanh, got {act!r}")
    ortho = kwargs.get("ortho_init", ortho_init)
    if not isinstance(ortho, (bool, np.bool_)):
        raise PolicyError(f"policy_kwargs ortho_init must be True or False, got {ortho!r}")
    log_std_given = kwargs.get("log_std_init", log_std_init)
    if isinstance(log_std_given, bool) or not isinstance(log_std_given, (int, float, np.integer, np.floating)):
        raise PolicyError(f"policy_kwargs log_std_init must be a number, got {log_std_given!r}")
    if not -20.0 <= float(log_std_given) <= 5.0:  # NaN fails too; the bounds of the log_std_init hyperparameter
        raise PolicyError(f"policy_kwargs log_std_init must lie in [-20, 5], got {log_std_given!r}")
    ortho, log_std = bool(ortho), float(log_std_given)
    fx_cls = kwargs.get("features_extractor_class")
    fx_kwargs = dict(kwargs.get("features_extractor_kwargs") or {})
    if fx_cls is not None and not (isinstance(fx_cls, type) and issubclass(fx_cls, nn.Module)):
        raise PolicyError(f"policy_kwargs features_extractor_class must be an nn.Module class, got {fx_cls!r}")
    if fx_kwargs and fx_cls is None:
        raise PolicyError("policy_kwargs features_extractor_kwargs given without features_extractor_class")

    def extractor() -> nn.Module:
        return fx_cls(observation_space, **fx_kwargs) if fx_cls is not None else default_extractor(observation_space)

    features_pi = extractor()
    features_vf = features_pi if kwargs.get("share_features_extractor", True) else extractor()
    core_pi = core_vf = None
    if rnn_kind is not None:
        core_pi, core_vf = _recurrent_cores(rnn_kind, kwargs, features_pi, features_vf, observation_space)
    actor = Actor(
        observation_space,
        action_space,
        pi,
        act,
        log_std_init=log_std,
        ortho_init=ortho,
        features=features_pi,
        core=core_pi,
        state_dependent_std=state_dependent_std,
        action_bound=action_bound,
    )
    critic = Critic(observation_space, vf, act, ortho_init=ortho, features=features_vf, core=core_vf)
    if ortho:  # after the networks: the MLPs draw the same weights as without it; lazy layers are materialised
        orthogonal_init_(features_pi)
        if features_vf is not features_pi:
            orthogonal_init_(features_vf)
    return actor, critic


def _recurrent_cores(
    kind: str, kwargs: Mapping[str, Any], features_pi: nn.Module, features_vf: nn.Module, space: spaces.Space
) -> tuple[RecurrentCore, RecurrentCore]:
    """The recurrent cores of actor and critic: one each (sb3-contrib's default), or one shared
    (``shared_lstm=True``, with a shared features extractor)."""
    shared = bool(kwargs.get("shared_lstm", False))
    if shared and features_vf is not features_pi:
        raise PolicyError(
            "policy_kwargs shared_lstm=True needs the features extractor shared too; drop share_features_extractor"
        )
    if not kwargs.get("enable_critic_lstm", True) and not shared:
        raise PolicyError(
            "policy_kwargs enable_critic_lstm=False is not supported: the critic of a recurrent policy has a "
            "recurrent layer, its own or the actor's (shared_lstm=True); drop enable_critic_lstm"
        )
    hidden = kwargs.get("lstm_hidden_size", 256)
    layers = kwargs.get("n_lstm_layers", 1)
    for name, value in (("lstm_hidden_size", hidden), ("n_lstm_layers", layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PolicyError(f"policy_kwargs {name} must be a positive integer, got {value!r}")
    forget_bias = kwargs.get("lstm_forget_bias", 0.0)
    width_pi = extractor_width(features_pi, space)
    try:
        core_pi = RecurrentCore(width_pi, hidden, layers, kind, forget_bias)
    except ValueError as exc:  # the sizes are checked above: what RecurrentCore refuses is the forget-gate bias
        raise PolicyError(f"policy_kwargs lstm_forget_bias: {exc}") from None
    if shared:
        return core_pi, core_pi
    width_vf = width_pi if features_vf is features_pi else extractor_width(features_vf, space)
    return core_pi, RecurrentCore(width_vf, hidden, layers, kind, forget_bias)


# --------------------------------------------------------------------------- checkpoints

_CLASS_PREFIX = "class:"


def encode_class(cls: type) -> str:
    """A class as a weights-only checkpoint can hold it: ``"class:module.Name"``."""
    return f"{_CLASS_PREFIX}{cls.__module__}.{cls.__qualname__}"


def decode_class(
    encoded: str, hint: str, base: type | tuple[type, ...] = nn.Module, field: str = "the checkpoint"
) -> type:
    """Inverse of :func:`encode_class` for subclasses of ``base`` in torch.nn, gymnasium's wrappers and natrl;
    any other class must be passed again (a file never names code to import), which ``hint`` tells the user
    how to do (:func:`natrl.rl.trusted.resolve_class`)."""
    path = encoded[len(_CLASS_PREFIX) :] if encoded.startswith(_CLASS_PREFIX) else encoded
    try:
        return resolve_class(path, base, field=field, hint=hint)
    except UntrustedReferenceError as exc:
        raise PolicyError(str(exc)) from None


def encode_policy_kwargs(policy_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """policy_kwargs in a form a weights-only checkpoint can hold (classes as :func:`encode_class` writes them)."""

    def enc(v: Any) -> Any:
        if isinstance(v, type):
            return encode_class(v)
        if isinstance(v, Mapping):
            return {k: enc(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [enc(x) for x in v]
        return v

    return {k: enc(v) for k, v in (policy_kwargs or {}).items()}


def decode_policy_kwargs(encoded: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Inverse of :func:`encode_policy_kwargs`; classes other than torch.nn's, gymnasium's and natrl's must come
    back in ``given`` (the user passes the same policy_kwargs again)."""
    given = dict(given or {})

    def dec(key: str, v: Any) -> Any:
        if isinstance(v, str) and v.startswith(_CLASS_PREFIX):
            name = v.rpartition(".")[2]
            return decode_class(v, f"pass policy_kwargs={{{key!r}: {name}, ...}} to load()")
        if isinstance(v, Mapping):
            return {k: dec(key, x) for k, x in v.items()}
        if isinstance(v, list):
            return [dec(key, x) for x in v]
        return v

    for key, value in given.items():  # the networks are rebuilt as saved: a different value would not fit
        if key not in encoded:
            raise PolicyError(
                f"load: policy_kwargs {key!r} was not set when the agent was trained; the networks are rebuilt "
                f"as saved (saved policy_kwargs: {sorted(encoded) or 'none'})"
            )
        if encode_policy_kwargs({key: value})[key] != encoded[key]:
            raise PolicyError(
                f"load: policy_kwargs {key}={value!r} differs from the saved {encoded[key]!r}; the networks are "
                "rebuilt as saved: pass the same value (a class of your own) or none"
            )
    return {k: (given[k] if k in given else dec(k, v)) for k, v in encoded.items()}


def build_policy_for(
    policy: Any,
    policy_kwargs: Mapping[str, Any] | None,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    config: Any,
) -> tuple[Actor, Critic]:
    """:func:`build_policy` with the network hyperparameters of an agent's config (an
    :class:`~natrl.rl.config.OnPolicyConfig`: ``hidden_sizes``, ``critic_hidden_sizes``, ``activation``,
    ``ortho_init``, ``log_std_init``, ``state_dependent_std``, ``action_bound``)."""
    return build_policy(
        policy,
        policy_kwargs,
        observation_space,
        action_space,
        hidden_sizes=config.hidden_sizes,
        critic_hidden_sizes=config.critic_hidden_sizes,
        activation=config.activation,
        ortho_init=config.ortho_init,
        log_std_init=config.log_std_init,
        state_dependent_std=config.state_dependent_std,
        action_bound=config.action_bound,
    )
