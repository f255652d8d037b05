"""Agent checkpoints: what they hold, how they are written, read, checked and turned back into an agent.

A checkpoint holds everything needed to continue training (networks, optimiser states, normaliser statistics,
generator states, step counters, where the envs' episodes stand) as plain data and tensors, never code: it is
read with ``torch.load(weights_only=True)`` and anything it names (an env, a wrapper, a class) is resolved as
data by :mod:`natrl.rl.trusted`. Files are written atomically (temporary file + ``os.replace``) and never hold
a NaN or an infinity.

The agent's methods with stable-baselines3's names (``save``, ``load``, ``get_parameters``,
``set_parameters``) and its ``state_dict`` / ``load_state_dict`` call the functions here; writing and reading the
files themselves is :mod:`natrl.rl.checkpoint_files`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
from typing import Any, BinaryIO

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from natrl.rl.arguments import jsonable
from natrl.rl.checkpoint_files import (
    CHECKPOINT_SUFFIX,
    CheckpointError,
    checkpoint_name,
    checkpoint_path,
    in_memory,
    is_sb3_model_file,
    load_checkpoint_file,
    save_checkpoint,
    write_checkpoint,
)
from natrl.rl.config import SCHEDULABLE, OnPolicyConfig, build_config, schedule_value
from natrl.rl.env import SPEC_PREFIX, EnvLike
from natrl.rl.policies import PolicyError
from natrl.rl.policies.build import decode_class, decode_policy_kwargs, encode_class, encode_policy_kwargs
from natrl.rl.sb3_names import action_dims, sb3_names_in, translate_sb3_names
from natrl.rl.trusted import UntrustedReferenceError, registered_env_id, spec_env_factory

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIX",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "NonFiniteStateError",
    "agent_state",
    "checked_state",
    "checkpoint_name",
    "checkpoint_path",
    "config_with",
    "in_memory",
    "is_sb3_model_file",
    "load_agent_class",
    "load_networks",
    "load_parameters",
    "load_random_state",
    "loaded_config",
    "nonfinite_entries",
    "read_checkpoint",
    "rebuild_env",
    "save_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "natrl-agent"
CHECKPOINT_VERSION = 1

# what a checkpoint must hold, and of which type, before anything is built from it
_CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "algo": str,
    "env_id": str,
    "seed": int,
    "config": dict,
    "actor": dict,
    "critic": dict,
    "num_timesteps": int,
    "num_updates": int,
}
# the entries whose tensors are the agent's numerical state (a NaN in any of them is refused)
_NUMERIC_ENTRIES = ("actor", "critic", "obs_normalizer", "reward_scaler", "algo_state")
# sb3-contrib TRPO's names whose natrl value depends on the action space (translated once the agent exists)
_SCALED_SB3_NAMES = ("target_kl", "cg_damping")
# load()'s keywords besides hyperparameters (stable-baselines3 sets its keywords as the model's attributes)
_LOAD_ATTRIBUTES = ("seed", "verbose", "tensorboard_log")
# schedulable fields whose 0 an algorithm cannot take (ACKTR's learning rate scales its natural step's KL bound)
_NO_ZERO = {"ACKTRConfig": ("learning_rate",)}
_log = logging.getLogger("natrl")


class NonFiniteStateError(CheckpointError):
    """The agent holds a NaN or infinite parameter or state, which natrl does not save or load."""


def nonfinite_entries(obj: Any, prefix: str = "") -> list[str]:
    """The dotted names of the floating-point tensors (and floats) in ``obj`` that hold a NaN or an infinity."""
    if isinstance(obj, Tensor):
        return [prefix] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [prefix]
    if isinstance(obj, np.ndarray) and np.issubdtype(obj.dtype, np.floating):
        return [] if bool(np.isfinite(obj).all()) else [prefix]
    items: Any = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found: list[str] = []
    for key, value in items:
        found += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (torch's load_state_dict lists every mismatch on its own line)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def agent_state(agent: Any, *, algo_state: dict[str, Any], collector: dict[str, Any] | None, episodes: int) -> dict:
    """Everything a checkpoint holds about ``agent``, from its public attributes, plain data and tensors.

    Args:
        agent: an :class:`~natrl.rl.agent.OnPolicyAgent`.
        algo_state: the algorithm's state (optimisers, curvature factors).
        collector: where the envs' episodes stand (None: a resumed agent starts fresh episodes).
        episodes: episodes finished so far.
    """
    source = agent.env_source
    wrapper_class = source.wrapper_class
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "algo": agent.algo,
        "env_id": source.env_id,
        "env": source.stored,
        "env_kwargs": jsonable(source.env_kwargs),
        # a wrapper class by name (a function wrapper cannot be named: pass it again to load())
        "wrapper_class": encode_class(wrapper_class) if isinstance(wrapper_class, type) else None,
        "wrapper_kwargs": jsonable(source.wrapper_kwargs),
        "seed": agent.seed,
        # a function schedule cannot go into a weights-only file: its current value does (pass the
        # function again with load(..., custom_objects={name: fn})); "lin_<value>" strings are kept
        "config": {
            k: schedule_value(v, agent.progress_remaining) if callable(v) else v
            for k, v in agent.config.to_dict().items()
        },
        "policy": agent.policy_name,
        "policy_kwargs": encode_policy_kwargs(agent.policy_kwargs),
        "actor": agent.actor.state_dict(),
        "critic": agent.critic.state_dict(),
        "obs_normalizer": agent.obs_normalizer.state_dict() if agent.obs_normalizer else None,
        "reward_scaler": agent.reward_scaler.state_dict() if agent.reward_scaler else None,
        "generator": agent.generator.get_state(),
        "rng": agent.rng.bit_generator.state,
        "num_timesteps": agent.num_timesteps,
        "num_updates": agent.num_updates,
        "episodes": episodes,
        "algo_state": algo_state,
        "collector": collector,
    }


def checked_state(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` when its numerical entries are finite.

    Raises:
        NonFiniteStateError: a parameter, normaliser statistic or optimiser state is NaN or infinite
            (natrl never writes one to disk).
    """
    bad = nonfinite_entries({k: state[k] for k in _NUMERIC_ENTRIES})
    if bad:
        raise NonFiniteStateError(
            f"the agent's {', '.join(bad[:3])} {'is' if len(bad) == 1 else 'are'} not finite; natrl does not "
            "save non-finite values (load an earlier checkpoint or lower the step sizes)"
        )
    return state


def read_checkpoint(path: str | os.PathLike[str] | BinaryIO) -> dict[str, Any]:
    """Load and sanity-check a checkpoint file; ``path`` without a suffix is looked for as given, then with
    ``.pt`` (what :func:`checkpoint_path` adds), then with ``.zip`` (as stable-baselines3's ``load`` looks). A
    binary file object (what :func:`save_checkpoint` wrote to one) is read from its position.

    Raises:
        CheckpointError: no such file, not a natrl checkpoint (a stable-baselines3 model file is named as such),
            another version, a damaged or non-finite entry.
    """
    state, name = load_checkpoint_file(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{name} is not a natrl agent checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{name} has checkpoint version {state.get('version')}, this natrl reads {CHECKPOINT_VERSION}"
        )
    for key, kind in _CHECKPOINT_FIELDS.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            what = "has no" if key not in state else f"has a {type(value).__name__} as its"
            raise CheckpointError(f"{name} {what} {key!r} entry: it is damaged or not written by natrl")
    if not 0 <= state["seed"] < 2**63:
        raise CheckpointError(f"{name} has the seed {state['seed']}, outside [0, 2**63): it is damaged")
    for key in ("algo_state", "policy_kwargs", "env_kwargs", "wrapper_kwargs", "collector"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            raise CheckpointError(f"{name} has a {type(state[key]).__name__} as its {key!r} entry: it is damaged")
    if state["num_timesteps"] < 0 or state["num_updates"] < 0:
        raise CheckpointError(f"{name} has negative step counters: it is damaged or not written by natrl")
    bad = nonfinite_entries({k: state.get(k) for k in _NUMERIC_ENTRIES})
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"{name} holds non-finite values ({', '.join(bad[:3])}{more}); natrl does not load them: "
            "use an earlier checkpoint of the run"
        )
    return state


def load_parameters(
    policy: nn.Module,
    parameters: dict[str, dict[str, Tensor]] | str | os.PathLike[str] | BinaryIO,
    *,
    strict: bool = True,
) -> None:
    """Load ``get_parameters()``'s dict, or a checkpoint's weights (a file or a binary file object), into ``policy``
    (an agent's :class:`~natrl.rl.agent.ActorCritic`)."""
    if not isinstance(strict, bool):
        raise TypeError(f"set_parameters: exact_match must be True or False, got {strict!r}")
    if not isinstance(parameters, (dict, str, os.PathLike)) and not hasattr(parameters, "read"):
        raise TypeError(
            "set_parameters takes get_parameters()'s dict, a checkpoint path or a binary file object, got "
            f"{type(parameters).__name__}"
        )
    if not isinstance(parameters, dict):
        state = read_checkpoint(parameters)
        parameters = {"policy": {**{f"actor.{k}": v for k, v in state["actor"].items()},
                                 **{f"critic.{k}": v for k, v in state["critic"].items()}}}  # fmt: skip
    bad = nonfinite_entries(parameters)
    if bad:
        raise NonFiniteStateError(f"set_parameters: {', '.join(bad[:3])} holds NaN or infinite values")
    try:
        policy.load_state_dict(parameters["policy"], strict=strict)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the parameters do not fit this agent's networks: {_one_line(exc)}") from None


def load_networks(actor: nn.Module, critic: nn.Module, state: dict[str, Any]) -> None:
    """A checkpoint's ``actor`` and ``critic`` weights into the agent's networks."""
    try:
        actor.load_state_dict(state["actor"])
        critic.load_state_dict(state["critic"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            "the checkpoint does not fit this agent's networks (trained on an env with other spaces, or with "
            f"other policy_kwargs?): {_one_line(exc)}"
        ) from None


def load_random_state(generator: torch.Generator, rng: np.random.Generator, state: dict[str, Any]) -> None:
    """A checkpoint's torch generator state (when saved on this device type) and NumPy generator state."""
    saved = state.get("generator")
    if isinstance(saved, Tensor) and saved.dtype == torch.uint8:
        try:
            generator.set_state(saved)
        except RuntimeError:  # a generator state saved on another device type: this device's stream
            pass
    if "rng" in state:
        try:
            rng.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"the checkpoint's rng entry is not a NumPy generator state ({exc})") from None


def rebuild_env(stored: Any, *, hint: str) -> EnvLike | None:
    """The env a checkpoint's ``env`` field describes, from data only (:mod:`natrl.rl.trusted`): a registered
    id, or a factory for a spec whose id is registered with the same entry point; None when none is stored.

    Raises:
        UntrustedReferenceError: the field names code (an unregistered ``module:`` id, a foreign entry point or
            wrapper); ``hint`` says how to pass the env yourself.
    """
    if stored is None:
        return None
    if not isinstance(stored, str):
        raise UntrustedReferenceError(f"the checkpoint's env field is not a string ({type(stored).__name__}); {hint}")
    if stored.startswith(SPEC_PREFIX):
        return spec_env_factory(stored[len(SPEC_PREFIX) :], field="the checkpoint's env spec", hint=hint)
    return registered_env_id(stored, field="the checkpoint's env", hint=hint)


def _build_loaded(cls: Any, path: Any, env: Any, **kwargs: Any) -> Any:
    """``cls(env, **kwargs)`` for a loaded checkpoint: networks too large for this machine are one line."""
    try:
        return cls(env, **kwargs)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
            raise
        raise CheckpointError(f"{path}: its networks do not fit in this machine's memory (hidden_sizes?)") from None


def _is_zero(value: Any) -> bool:
    """``value`` (a number, ``"lin_<value>"`` or a schedule) is 0 all the way (a frozen model's step size)."""
    if isinstance(value, bool):
        return False
    try:
        return schedule_value(value, 1.0) == 0.0 and schedule_value(value, 0.0) == 0.0
    except Exception:  # not a number or schedule: the config's validation names it
        return False


def loaded_config(config_cls: type[OnPolicyConfig], values: dict[str, Any]) -> OnPolicyConfig:
    """The config of a loaded agent: ``config_cls(**values)``, except that a step size or clip range (a schedulable
    field) may be 0, as stable-baselines3 takes ``custom_objects={"learning_rate": 0.0, ...}`` for a model that only
    acts (rl-baselines3-zoo's enjoy; not ACKTR's learning rate, which scales the KL bound of its natural step); a
    new agent still refuses 0 at construction."""
    refused = _NO_ZERO.get(config_cls.__name__, ())
    zeros = {k: v for k, v in values.items() if k in SCHEDULABLE and k not in refused and _is_zero(v)}
    config = build_config(config_cls, {k: v for k, v in values.items() if k not in zeros})
    for name, value in zeros.items():  # the frozen dataclass's own way of setting a field after validation
        object.__setattr__(config, name, value)
    return config


def config_with(config: OnPolicyConfig, values: dict[str, Any]) -> OnPolicyConfig:
    """``config`` with the fields of ``values`` replaced, validated as at construction, except that a step size or
    clip range a loaded model holds at 0 (:func:`loaded_config`) and does not replace stays 0.

    Raises:
        ValueError: a replaced value the config's validation refuses (one line naming the field).
    """
    kept = {k: v for k in SCHEDULABLE if k not in values and hasattr(config, k) and _is_zero(v := getattr(config, k))}
    new = build_config(type(config), {k: v for k, v in {**config.to_dict(), **values}.items() if k not in kept})
    for name, value in kept.items():  # as loaded_config sets them
        object.__setattr__(new, name, value)
    return new


def _replacements(
    cls: Any, custom_objects: dict[str, Any], fields: set[str]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``custom_objects`` as natrl's hyperparameters: ``(natrl values, action-space-scaled sb3-contrib values,
    ignored keys)``. Keys that name no hyperparameter of ``cls`` are ignored, as stable-baselines3 ignores keys
    the file does not hold (``lr_schedule``, TRPO's ``clip_range``)."""
    sb3 = sb3_names_in(cls.algo, custom_objects)
    natrl = {k: v for k, v in custom_objects.items() if k in fields and k not in sb3}
    ignored = sorted(k for k in custom_objects if k not in sb3 and k not in fields)
    scaled = {k: v for k, v in sb3.items() if k in _SCALED_SB3_NAMES}
    rest = {k: v for k, v in sb3.items() if k not in _SCALED_SB3_NAMES}
    translated, notes = translate_sb3_names(cls.algo, rest, 1, set(natrl), contrib_defaults=False)
    for note in notes:
        _log.info("%s.load: %s", cls.__name__, note)
    return {**natrl, **translated}, scaled, ignored


def _print_system_info() -> None:
    """stable-baselines3's ``print_system_info``: this system's versions."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        natrl_version = version("natrl")
    except PackageNotFoundError:  # a source tree that is not installed
        natrl_version = "not installed"
    versions = {
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "natrl": natrl_version,
        "PyTorch": torch.__version__,
        "GPU Enabled": torch.cuda.is_available(),
        "Numpy": np.__version__,
        "Gymnasium": gym.__version__,
    }
    print("== CURRENT SYSTEM INFO ==")
    for name, value in versions.items():
        print(f"- {name}: {value}")


def load_agent_class(
    cls: Any,
    path: str | os.PathLike[str] | BinaryIO,
    *,
    device: str | torch.device,
    env: EnvLike | None,
    policy: Any,
    policy_kwargs: dict[str, Any] | None,
    custom_objects: dict[str, Any] | None,
    wrapper_class: Any,
    print_system_info: bool = False,
    force_reset: bool = True,
    attributes: dict[str, Any] | None = None,
) -> Any:
    """An agent of class ``cls`` rebuilt from a checkpoint (the body of ``OnPolicyAgent.load``).

    Args:
        path: the checkpoint (``.pt`` may be left out), or a binary file object holding one.
        device: where to put the networks (``"auto"``: a GPU when there is one).
        env: the env (id, Env, factory or vector env) when the agent was not built from an id, or another
            one with the same spaces (its episodes start fresh).
        policy: the user's own module(s), when the agent was built with them (the same architecture; their
            weights come from the checkpoint).
        policy_kwargs: classes in the saved policy_kwargs that are neither torch.nn's nor natrl's (a user's
            features extractor or activation), passed again.
        custom_objects: hyperparameters replacing the saved ones (stable-baselines3's name): natrl's names or
            SB3's (sb3-contrib TRPO's ``learning_rate`` replaces ``critic_lr``), e.g. a schedule function, which
            a checkpoint holds as its value at the time of saving. A step size or clip range may be 0 (a model
            that only acts). Keys naming nothing the algorithm has (``lr_schedule``, TRPO's ``clip_range``)
            are ignored, as stable-baselines3 ignores keys its file does not hold.
        wrapper_class: the env wrapper the agent was trained with, when it is neither gymnasium's nor natrl's
            (a checkpoint never names code to import).
        print_system_info: print this system's versions (natrl's checkpoints do not record the saving system's).
        force_reset: stable-baselines3's; natrl always starts fresh episodes on an ``env`` given here.
        attributes: stable-baselines3's ``**kwargs``: ``seed`` (re-seeds the loaded agent as
            ``set_random_seed``), ``verbose``, ``tensorboard_log``, and hyperparameters (as ``custom_objects``,
            applied after them).

    Raises:
        CheckpointError: the file is not a checkpoint of ``cls``, or cannot be rebuilt without ``env``/``policy``.
        TypeError: ``custom_objects`` is not a dict, or a keyword is neither an attribute above nor a
            hyperparameter.
    """
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"load: custom_objects must be a dict or None, got {type(custom_objects).__name__}")
    if not isinstance(force_reset, bool):
        raise TypeError(f"load: force_reset must be True or False, got {force_reset!r}")
    if print_system_info:
        _print_system_info()
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    attributes = dict(attributes or {})
    given = {k: attributes.pop(k) for k in _LOAD_ATTRIBUTES if k in attributes}
    unknown = sorted(k for k in attributes if k not in fields and not sb3_names_in(cls.algo, {k: 0}))
    if unknown:
        raise TypeError(
            f"{cls.__name__}.load() got unexpected keyword argument(s) {', '.join(unknown)}; it takes seed, "
            f"verbose, tensorboard_log and {cls.config_cls.__name__}'s hyperparameters (natrl's or SB3's names)"
        )
    replaced, scaled, ignored = _replacements(cls, {**(custom_objects or {}), **attributes}, fields)
    if ignored:
        _log.info("%s.load: %s not held by the checkpoint: ignored (as stable-baselines3)", cls.__name__, ignored)
    name, path = checkpoint_name(path), in_memory(path)
    state = read_checkpoint(path)
    if cls.algo and state["algo"] != cls.algo:
        raise CheckpointError(f"{name} holds a {state['algo']} agent, not {cls.algo}; load it with natrl.rl.load_agent")
    env_given = env
    if env is None:
        hint = f"pass the env yourself: {cls.__name__}.load(path, env=...) or natrl eval PATH --env ID"
        try:
            env = rebuild_env(state.get("env"), hint=hint)
        except UntrustedReferenceError as exc:
            raise CheckpointError(f"{name}: {exc}") from None
    if env is None:
        raise CheckpointError(f"{name} was trained on a custom env ({state['env_id']}); pass env=... to load it")
    retired = getattr(cls.config_cls, "retired_fields", ())
    saved = {k: v for k, v in state["config"].items() if k not in retired}
    config = loaded_config(cls.config_cls, {**saved, **replaced})
    saved_policy = state.get("policy", "MlpPolicy")
    if saved_policy == "custom" and policy is None:
        raise CheckpointError(
            f"{name} was trained with your own policy module(s); pass them again: {cls.__name__}.load(path, policy=...)"
        )
    kwargs = decode_policy_kwargs(state.get("policy_kwargs") or {}, policy_kwargs)
    # the env as it was made: make-kwargs for an id, the wrapper when the env comes from the checkpoint
    env_kwargs = (state.get("env_kwargs") or {}) if isinstance(env, str) else {}
    if not isinstance(env_kwargs, dict):
        raise CheckpointError(f"{name}: its env_kwargs entry is not a table: it is damaged")
    if wrapper_class is None and env_given is None and state.get("wrapper_class"):
        try:
            wrapper_class = decode_class(
                state["wrapper_class"], "pass load(..., wrapper_class=YourWrapper)", gym.Wrapper,
                field="the checkpoint's wrapper_class",
            )  # fmt: skip
        except PolicyError as exc:
            raise CheckpointError(f"{name}: {exc}") from None
    agent = _build_loaded(
        cls,
        name,
        env,
        seed=state["seed"],
        device=device,
        config=config,
        policy=policy if policy is not None else saved_policy,
        policy_kwargs=kwargs if policy is None or isinstance(policy, str) else None,
        env_kwargs=env_kwargs,
        wrapper_class=wrapper_class,
        wrapper_kwargs=(state.get("wrapper_kwargs") or {}) if wrapper_class is not None else None,
        **{k: v for k, v in given.items() if k != "seed"},
    )
    if scaled:  # sb3-contrib's per-dimension KL names, now that the action space is known
        translated, _ = translate_sb3_names(
            cls.algo, scaled, action_dims(agent.action_space), set(replaced), contrib_defaults=False
        )
        agent.config = loaded_config(cls.config_cls, {**agent.config.to_dict(), **translated})
    # another env than the saved one: its episodes start fresh
    agent.load_state_dict(state if env_given is None else {**state, "collector": None})
    source = agent.env_source
    if env_given is None and isinstance(env, str):  # the registered id (a stored "module:" prefix dropped)
        source.env_id, source.stored = env, env
    elif env_given is None and state.get("env") is not None:  # rebuilt from the stored spec
        source.env_id, source.stored = state["env_id"].rpartition(":")[2], state["env"]
    agent.set_random_seed(given.get("seed"))  # stable-baselines3 re-seeds a model loaded with seed=...
    return agent
