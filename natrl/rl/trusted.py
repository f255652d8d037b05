"""What a file may name: files are data, never code.

A checkpoint, a run directory's ``config.toml`` or a preset names environments, wrappers and classes as
strings. Turning such a string into something natrl calls is where a file could run code: Gymnasium's
``gym.make`` imports the module of a ``"module:Env-v0"`` id and calls whatever ``entry_point`` a spec
names (``"os:system"`` included), and a ``"module:attr"`` path can name any function. This module turns
those strings into objects without importing a module or calling anything the file chose:

* an environment id is looked up in Gymnasium's registry as it is in this process (the ``module:`` part
  of ``"module:Env-v0"`` is not imported; ``ALE/`` and ``MinAtar/`` ids register their packages, which
  natrl names, not the file);
* an environment spec is rebuilt only when its id is registered with the same entry point; the spec
  contributes data (make-kwargs, time limit, Gymnasium's own wrappers), never a callable;
* a class is resolved only among classes of the modules listed here (``torch.nn``, Gymnasium's wrappers,
  natrl's own), only when it is a subclass of what the field needs (an ``nn.Module``, a ``gym.Wrapper``).

Anything else is refused with :class:`UntrustedReferenceError`, whose one line names the field and how
to pass the object yourself (``TRPO.load(path, env=..., wrapper_class=...)``, ``natrl eval PATH --env``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, WrapperSpec

__all__ = [
    "UntrustedReferenceError",
    "register_namespace",
    "registered_env_id",
    "resolve_class",
    "spec_env_factory",
]


class UntrustedReferenceError(ValueError):
    """A file names code (a module, an entry point, a function) that natrl does not load from a file."""


# namespaces whose ids a package registers: (module, how to register, what the id needs, natrl's extra)
_NAMESPACES: dict[str, tuple[str, Callable[[Any], None], str, str]] = {
    "ALE": ("ale_py", gym.register_envs, "an Atari game, which needs ale-py", "atari"),
    "MinAtar": ("minatar.gym", lambda module: module.register_envs(), "a MinAtar game, which needs MinAtar", "minatar"),
}


def register_namespace(env_id: str) -> str:
    """Register the package behind an ``ALE/…`` or ``MinAtar/…`` id (natrl's list, never the caller's module)
    when the id is not registered yet; returns ``env_id``."""
    namespace = env_id.partition("/")[0] if "/" in env_id else None
    if env_id not in gym.registry and namespace in _NAMESPACES:
        module, register, what, extra = _NAMESPACES[namespace]
        try:
            package = importlib.import_module(module)
        except ImportError:
            raise ValueError(f"environment id {env_id!r} is {what}: pip install 'natrl[{extra}]'") from None
        register(package)
    return env_id


# Modules whose classes a file may name. natrl's own modules may be imported (natrl names them here);
# the others only when they are already imported (torch.nn and gymnasium's wrappers always are).
_NATRL_WRAPPER_MODULES = ("natrl.rl.atari", "natrl.rl.minatar", "natrl.rl.pomdp")
_CLASS_MODULE_PREFIXES = ("torch.nn.", "gymnasium.wrappers.", "natrl.")
_CLASS_MODULES = ("torch.nn", "gymnasium.wrappers", "gymnasium")


def _module_allowed(module: str) -> bool:
    return module in _CLASS_MODULES or module.startswith(_CLASS_MODULE_PREFIXES)


def resolve_class(path: str, base: type | tuple[type, ...], *, field: str, hint: str) -> type:
    """The class a file names as ``"module.Name"`` or ``"module:Name"``, when it is an allowed class.

    Args:
        path: the dotted or colon-separated path.
        base: the class (or classes) the result must subclass, e.g. ``nn.Module`` or ``gym.Wrapper``.
        field: the file's field, for the message.
        hint: how to pass the class yourself, for the message.

    Raises:
        UntrustedReferenceError: the module is not one natrl loads classes from, is not imported, the name
            is not a class, or the class is not a subclass of ``base``.
    """
    if ":" in path:
        module_name, _, name = path.partition(":")
    else:
        module_name, _, name = path.rpartition(".")
    refuse = f"{field} names {path!r}, which natrl does not load from a file"
    if not module_name or not name or "." in name or not _module_allowed(module_name):
        raise UntrustedReferenceError(f"{refuse} (only classes of torch.nn, gymnasium.wrappers and natrl); {hint}")
    module = sys.modules.get(module_name)
    if module is None and module_name in _NATRL_WRAPPER_MODULES:
        module = importlib.import_module(module_name)
    obj = getattr(module, name, None) if module is not None else None
    bases = base if isinstance(base, tuple) else (base,)
    if not isinstance(obj, type) or not issubclass(obj, bases):
        wanted = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)
        raise UntrustedReferenceError(f"{refuse} (it is not a {wanted} subclass of a loaded module); {hint}")
    return obj


def registered_env_id(stored: str, *, field: str, hint: str) -> str:
    """The id ``stored`` names, as registered in this process (``"module:"`` prefixes are not imported).

    Raises:
        UntrustedReferenceError: the id is not registered.
    """
    env_id = stored.partition(":")[2] if ":" in stored else stored
    register_namespace(env_id)
    if env_id not in gym.registry:
        prefix = stored.partition(":")[0]
        module = f"; it names the module {prefix!r}, which natrl does not import" if ":" in stored else ""
        raise UntrustedReferenceError(
            f"{field} names the environment {stored!r}, which is not registered in this process{module}; "
            f"import the package that registers it yourself, or {hint}"
        )
    return env_id


def _check_wrapper_spec(wrapper: WrapperSpec, field: str, hint: str) -> None:
    entry = wrapper.entry_point
    if not isinstance(entry, str):
        raise UntrustedReferenceError(f"{field} has a wrapper without a named entry point; {hint}")
    resolve_class(entry, gym.Wrapper, field=f"{field} (wrapper {wrapper.name})", hint=hint)
    if wrapper.kwargs is not None and not isinstance(wrapper.kwargs, dict):
        raise UntrustedReferenceError(f"{field}: wrapper {wrapper.name} has kwargs that are not a table; {hint}")


def spec_env_factory(spec_json: str, *, field: str, hint: str) -> Callable[[], gym.Env]:
    """A factory for the env a Gymnasium spec (``EnvSpec.to_json``) describes, from data only.

    The spec's id must be registered in this process with the same entry point; its make-kwargs, time
    limit and checker flags are taken from the file, its wrappers only when they are Gymnasium's or
    natrl's wrapper classes. Checked now, so a refused file fails at load, not at the first reset.

    Raises:
        UntrustedReferenceError: what the spec names is not registered or not allowed.
    """
    try:
        spec = EnvSpec.from_json(spec_json)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise UntrustedReferenceError(f"{field} is not a readable environment spec ({exc}); {hint}") from None
    env_id = registered_env_id(spec.id, field=field, hint=hint)
    registered = gym.registry[env_id]
    if not isinstance(spec.entry_point, str) or spec.entry_point != registered.entry_point:
        raise UntrustedReferenceError(
            f"{field} gives the environment {env_id!r} the entry point {spec.entry_point!r}, which is not the one "
            f"registered for it ({registered.entry_point!r}); natrl calls only registered entry points; {hint}"
        )
    if not isinstance(spec.kwargs, dict):
        raise UntrustedReferenceError(f"{field}: the spec's kwargs are not a table; {hint}")
    for wrapper in spec.additional_wrappers:
        _check_wrapper_spec(wrapper, field, hint)
    steps = spec.max_episode_steps
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise UntrustedReferenceError(f"{field}: max_episode_steps={steps!r} is not a positive integer; {hint}")
    safe = dataclasses.replace(
        registered,
        max_episode_steps=steps,
        order_enforce=bool(spec.order_enforce),
        disable_env_checker=bool(spec.disable_env_checker),
        kwargs=dict(spec.kwargs),
        additional_wrappers=tuple(spec.additional_wrappers),
    )

    def make() -> gym.Env:
        return gym.make(safe)

    return make
