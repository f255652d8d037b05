"""Keyword-only, frozen hyperparameter dataclasses shared by the on-policy agents.

Each agent has one config class (``TRPOConfig``, ``NPGConfig``, ``PPOConfig``)
deriving from :class:`OnPolicyConfig`. Every field is documented in the class
docstring and validated on construction; an invalid value raises a
``ValueError`` naming the field and its allowed range. :func:`parse_overrides` reads
``key=value`` texts (``--set`` of ``natrl train`` and ``natrl bench``) into values typed by a config's
fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from natrl.schedules import linear_start

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "MAX_TORCH_THREADS",
    "SCHEDULABLE",
    "CriticConfig",
    "OnPolicyConfig",
    "Schedule",
    "build_config",
    "check",
    "checked_schedule_value",
    "parse_overrides",
    "parse_value",
    "schedule_value",
]

C = TypeVar("C", bound="OnPolicyConfig")


Schedule = Callable[[float], float]
"""A hyperparameter as a function of the progress remaining (1 at the start of ``learn``, 0 at its end), as in
stable-baselines3; rl-zoo3's ``"lin_<value>"`` strings mean ``value * progress_remaining``."""

MAX_TORCH_THREADS = 1024
"""The most ``torch_threads`` a config accepts: far above any machine's cores, far below what makes
OpenMP's thread pool abort the process (a fixed bound, so that a config saved on a big machine loads anywhere)."""

DEFAULT_MAX_SEQUENCE_LENGTH = 128
"""The longest sequence a recurrent policy's rollouts are cut into when ``sequence_length`` is None."""

SCHEDULABLE = ("learning_rate", "clip_range", "critic_lr", "max_kl", "step_size")
"""Fields that accept a :data:`Schedule` or a ``"lin_<value>"`` string besides a number."""


def schedule_value(value: float | str | Schedule, progress_remaining: float) -> float:
    """The value of a (possibly scheduled) hyperparameter at ``progress_remaining`` in [0, 1]."""
    if isinstance(value, str):
        start = linear_start(value)
        if start is None:
            raise ValueError(f"{value!r} is not a schedule: 'lin_<value>'")
        return start * progress_remaining
    if callable(value):
        return float(value(progress_remaining))
    return float(value)


def checked_schedule_value(name: str, value: float | str | Schedule, progress_remaining: float) -> float:
    """:func:`schedule_value`, refusing a result that is not a finite number >= 0 (a function schedule can go
    wrong late in a run): ValueError naming the hyperparameter ``name``."""
    result = schedule_value(value, progress_remaining)
    if not (math.isfinite(result) and result >= 0.0):
        raise ValueError(
            f"{name}'s schedule gave {result!r} at progress remaining {progress_remaining:.3f}; a schedule "
            "must return a finite number >= 0 all the way to 0"
        )
    return result


def _schedule_ok(value: object) -> bool:
    if isinstance(value, str):
        try:
            start = linear_start(value)
        except ValueError:
            return False
        return start is not None and math.isfinite(start)
    if callable(value):
        try:
            return math.isfinite(float(value(1.0)))
        except Exception:
            return False
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check(ok: bool, name: str, value: object, requirement: str) -> None:
    """Raise ``ValueError('invalid hyperparameter name=value: requirement')`` unless ok."""
    if not ok:
        raise ValueError(f"invalid hyperparameter {name}={value!r}: {requirement}")


@dataclass(frozen=True, kw_only=True)
class OnPolicyConfig:
    """Hyperparameters common to every on-policy agent.

    Attributes:
        n_envs: parallel environments in the training vector env.
        n_steps: steps per env per rollout; one update uses n_envs * n_steps transitions.
        gamma: discount factor γ in [0, 1].
        gae_lambda: GAE λ in [0, 1].
        normalize_advantage: standardise advantages per update (zero mean, unit std).
        normalize_obs: running mean/std normalisation of observations (saved with the agent).
        obs_norm_update: when observation statistics are updated: "rollout" (once per rollout,
            from all its observations; one set of statistics per rollout) or "step" (after every
            vector step, as stable-baselines3's VecNormalize does).
        normalize_reward: scale rewards by the running std of the discounted return.
        hidden_sizes: hidden layer widths of the actor MLP.
        critic_hidden_sizes: hidden layer widths of the critic MLP (default: hidden_sizes).
        activation: hidden activation, one of tanh, relu, elu, gelu.
        ortho_init: orthogonal initialisation, as stable-baselines3's ``ortho_init``: the MLPs (gain √2 hidden,
            0.01 policy head, 1 value head) and the features extractor (the actor's and the critic's when not
            shared): every Linear and Conv2d layer of a CNN (NatureCNN, MinAtarCNN, a CombinedExtractor's) or
            of a ``features_extractor_class`` of the user's, gain √2, biases zero. A recurrent core keeps
            torch's initialisation (as in sb3-contrib).
        log_std_init: initial log standard deviation of Gaussian policies.
        state_dependent_std: the log-std is a network output instead of a free parameter.
        action_bound: how Gaussian samples meet bounded Box actions: "clip" or "squash" (tanh).
        vec_env: "sync" (one process), "async" (one subprocess per env) or "ale" (ALE's own C++ vector
            env for ``ALE/`` ids with ``wrapper_class=AtariWrapper``: :func:`natrl.rl.atari.make_ale_vector_env`)
            or "envpool" (EnvPool's C++ envs for the ids it implements: :class:`natrl.rl.envpool_env.EnvPoolSameStep`).
            or "mujoco" (gymnasium's MuJoCo tasks stepped without its per-step Python, equal bit for bit:
            :class:`natrl.rl.mujoco_env.MujocoSameStep`).
        torch_threads: torch intra-op threads set on construction (None, the default, leaves torch's
            process-wide setting alone; ``natrl train`` and ``natrl bench`` use 1, faster for small networks).
        fast_paths: use natrl's CPU fast paths (NumPy sampler, hand-written MLP backward, PPO's
            closed-form gradient) where they apply: natrl's own MLPs on flat observations on the CPU
            (:mod:`natrl.rl.accel`). False forces the generic path (same mathematics, to float rounding).
        max_rejected_updates: an update that would make a parameter or optimiser state non-finite is
            undone; this many in a row stop training with an error naming the step sizes.
        sequence_length: recurrent policies: the rollout of each env is cut into sequences of this many
            steps, each with the recurrent state recorded at its start; the updates backpropagate through
            whole sequences (PPO's minibatches and the critic's hold whole sequences, batch_size // L of
            them, at least one). None (:meth:`sequence_steps`): the largest divisor of n_steps that is at
            most min(128, :meth:`minibatch_steps`), so that a minibatch of batch_size steps is
            batch_size // L whole sequences and gradients reach at most that far back (with sb3-contrib
            RecurrentPPO's defaults, n_steps 2048 and batch_size 64: 64); n_steps itself where that
            divisor is below a quarter of the bound (a prime n_steps). Must divide n_steps.
        workers: rollout workers (Ray actors, :mod:`natrl.rl.distributed`), each stepping its own n_envs
            envs with a copy of the policy; a rollout then holds workers · n_envs · n_steps steps. 0 (the
            default): the rollouts are collected in this process.
        ray_address: the Ray cluster of the workers ("auto", "ray://host:port", …); None: a local Ray
            started for this process.
    """

    n_envs: int = 1
    n_steps: int = 2048
    gamma: float = 0.99
    gae_lambda: float = 0.95
    normalize_advantage: bool = True
    normalize_obs: bool = False
    obs_norm_update: str = "rollout"
    normalize_reward: bool = False
    hidden_sizes: tuple[int, ...] = (64, 64)
    critic_hidden_sizes: tuple[int, ...] | None = None
    activation: str = "tanh"
    ortho_init: bool = True
    log_std_init: float = 0.0
    state_dependent_std: bool = False
    action_bound: str = "clip"
    vec_env: str = "sync"
    torch_threads: int | None = None
    fast_paths: bool = True
    max_rejected_updates: int = 3
    sequence_length: int | None = None
    workers: int = 0
    ray_address: str | None = None

    def __post_init__(self) -> None:
        # Lists from TOML/CLI become tuples so the config stays hashable and frozen.
        for name in ("hidden_sizes", "critic_hidden_sizes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def _check_types(self) -> None:
        """Every field has its declared type: numbers are real and finite (no bool, no string, no inf/nan),
        integers integral, flags bool, names strings; None only where a field allows it."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, tp = getattr(self, f.name), hints[f.name]
            if f.name in SCHEDULABLE:
                check(
                    _schedule_ok(value),
                    f.name,
                    value,
                    "must be a finite number, 'lin_<number>' or a function of the progress remaining",
                )
                continue
            args = typing.get_args(tp)
            optional = type(None) in args
            if value is None:
                check(optional, f.name, value, "must not be None")
                continue
            base = next((a for a in args if a is not type(None)), tp) if optional else tp
            if base is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                check(ok, f.name, value, "must be a finite number")
            elif base is int:
                check(isinstance(value, int) and not isinstance(value, bool), f.name, value, "must be an integer")
            elif base is bool:
                check(isinstance(value, bool), f.name, value, "must be true or false")
            elif base is str:
                check(isinstance(value, str), f.name, value, "must be a string")

    def validate(self) -> None:
        """Check every field; subclasses extend it."""
        self._check_types()
        check(-20.0 <= self.log_std_init <= 5.0, "log_std_init", self.log_std_init, "must lie in [-20, 5]")
        check(isinstance(self.n_envs, int) and self.n_envs >= 1, "n_envs", self.n_envs, "an integer >= 1")
        check(isinstance(self.n_steps, int) and self.n_steps >= 1, "n_steps", self.n_steps, "an integer >= 1")
        check(0.0 <= self.gamma <= 1.0, "gamma", self.gamma, "must lie in [0, 1]")
        check(0.0 <= self.gae_lambda <= 1.0, "gae_lambda", self.gae_lambda, "must lie in [0, 1]")
        for name in ("hidden_sizes", "critic_hidden_sizes"):
            sizes = getattr(self, name)
            if sizes is None and name == "critic_hidden_sizes":
                continue
            check(
                isinstance(sizes, tuple) and all(isinstance(h, int) and h >= 1 for h in sizes),
                name,
                sizes,
                "a list of positive integers, e.g. [64, 64]",
            )
        check(
            self.activation in ("tanh", "relu", "elu", "gelu"),
            "activation",
            self.activation,
            "one of tanh, relu, elu, gelu",
        )
        check(
            self.obs_norm_update in ("rollout", "step"), "obs_norm_update", self.obs_norm_update, "'rollout' or 'step'"
        )
        check(self.action_bound in ("clip", "squash"), "action_bound", self.action_bound, "'clip' or 'squash'")
        check(
            isinstance(self.max_rejected_updates, int) and self.max_rejected_updates >= 1,
            "max_rejected_updates",
            self.max_rejected_updates,
            "an integer >= 1",
        )
        check(
            self.vec_env in ("sync", "async", "ale", "envpool", "mujoco"),
            "vec_env",
            self.vec_env,
            "'sync', 'async', 'ale', 'envpool' or 'mujoco'",
        )
        check(isinstance(self.workers, int) and self.workers >= 0, "workers", self.workers, "an integer >= 0")
        check(
            self.workers == 0 or not self.normalize_obs or self.obs_norm_update == "rollout",
            "obs_norm_update",
            self.obs_norm_update,
            "with workers the observation statistics are merged once per rollout: use 'rollout'",
        )
        check(
            self.sequence_length is None
            or (isinstance(self.sequence_length, int) and self.sequence_length >= 1
                and self.n_steps % self.sequence_length == 0),
            "sequence_length",
            self.sequence_length,
            f"None or an integer >= 1 that divides n_steps={self.n_steps}",
        )  # fmt: skip
        check(
            self.torch_threads is None
            or (isinstance(self.torch_threads, int) and 1 <= self.torch_threads <= MAX_TORCH_THREADS),
            "torch_threads",
            self.torch_threads,
            f"None or an integer from 1 to {MAX_TORCH_THREADS} (this machine has {os.cpu_count()} CPUs)",
        )

    def minibatch_steps(self) -> int:
        """Steps in one minibatch of the update (the whole rollout of one env here; PPO's ``batch_size``,
        the critic's ``critic_batch_size`` in the algorithms that have one)."""
        return self.n_steps

    def sequence_steps(self) -> int:
        """L, the steps of the sequences a recurrent policy's rollouts are cut into: ``sequence_length``, or
        for None the largest divisor of ``n_steps`` that is at most min(128, :meth:`minibatch_steps`), or
        ``n_steps`` itself where that divisor is below a quarter of the bound (a prime ``n_steps``)."""
        if self.sequence_length is not None:
            return self.sequence_length
        cap = max(1, min(DEFAULT_MAX_SEQUENCE_LENGTH, self.minibatch_steps(), self.n_steps))
        best = max(d for d in range(1, cap + 1) if self.n_steps % d == 0)
        # an n_steps without a divisor near the cap (a prime) would cut memory short: the whole rollout then
        return best if 4 * best >= cap else self.n_steps

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)
        }


@dataclass(frozen=True, kw_only=True)
class CriticConfig(OnPolicyConfig):
    """Hyperparameters of a critic regressed on its own, after the policy step (TRPO, NPG, ACKTR; PPO
    trains its critic inside its joint loss with its ``learning_rate``, ``n_epochs`` and ``batch_size``).

    Attributes:
        critic_lr: Adam learning rate of the critic.
        critic_epochs: passes over the rollout when fitting the critic.
        critic_batch_size: minibatch size for the critic.
    """

    critic_lr: float | str | Schedule = 1e-3
    critic_epochs: int = 10
    critic_batch_size: int = 64

    def minibatch_steps(self) -> int:
        return self.critic_batch_size

    def validate(self) -> None:
        super().validate()
        check(schedule_value(self.critic_lr, 1.0) > 0, "critic_lr", self.critic_lr, "must be > 0")
        check(
            isinstance(self.critic_epochs, int) and self.critic_epochs >= 1,
            "critic_epochs",
            self.critic_epochs,
            "an integer >= 1 (with 0 the critic would never train)",
        )
        check(
            isinstance(self.critic_batch_size, int) and self.critic_batch_size >= 1,
            "critic_batch_size",
            self.critic_batch_size,
            "an integer >= 1",
        )


def build_config(cls: type[C], values: Mapping[str, Any]) -> C:
    """Build ``cls(**values)``, turning unknown keys into a ValueError listing valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
            f"{cls.__name__}; valid ones: {', '.join(sorted(names))}"
        )
    return cls(**values)


def parse_value(raw: str) -> Any:
    """A ``key=value`` value in TOML syntax (``0.02``, ``true``, ``[64, 64]``, ``"relu"``).

    ``none``/``null`` give None; anything TOML cannot read is a plain string
    (so ``--set activation=relu`` needs no quotes).
    """
    text = raw.strip()
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or none"
    if origin is tuple:
        return "a list of integers like [64, 64]" if args and args[0] is int else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


_NO = object()


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (int → float allowed), or ``_NO``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None) and (out := _coerce(value, a)) is not _NO:
                return out
        return _NO
    if origin is tuple:
        if not isinstance(value, list):
            return _NO
        items = [_coerce(v, args[0]) if args else v for v in value]
        return _NO if any(i is _NO for i in items) else tuple(items)
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if tp is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO
    if tp is str:
        return value if isinstance(value, str) else _NO
    return value


def parse_overrides(items: Sequence[str], config_cls: type, algo: str = "") -> dict[str, Any]:
    """``--set key=value`` items as hyperparameters typed by ``config_cls``'s fields.

    Args:
        items: ``key=value`` texts; the value in TOML syntax (see :func:`parse_value`).
        config_cls: the config dataclass whose fields name the keys and their types.
        algo: the algorithm's name for the messages (default: the class name).

    Returns:
        The typed values by key (an int where a float is expected is widened; a list becomes a tuple).

    Raises:
        ValueError: a malformed item, an unknown key (naming the valid ones) or a
            value of the wrong type, as one line. Range checks are left to the config class.
    """
    names = [f.name for f in dataclasses.fields(config_cls)]
    hints = typing.get_type_hints(config_cls)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(
                f"unknown hyperparameter {key!r} for {algo or config_cls.__name__} "
                f"(--set {item}){hint} "
                f"valid keys: {', '.join(sorted(names))}"
            )
        value = _coerce(parse_value(raw), hints[key])
        if value is _NO:
            raise ValueError(f"--set {item}: {key} must be {_describe(hints[key])}, got {raw.strip()!r}")
        out[key] = value
    return out
