"""Resolving what the user named (algorithm, env id, gym packages, wrapper, device), with one-line errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from natrl.cli.common import CLIError

if TYPE_CHECKING:
    from natrl.rl import OnPolicyAgent


def agent_class(name: str) -> type[OnPolicyAgent]:
    from natrl.rl import AGENTS

    algo = name.lower()
    if algo not in AGENTS:
        raise CLIError(f"unknown algorithm {name!r}; choose from {', '.join(AGENTS)} (see 'natrl list')")
    return AGENTS[algo]


def check_env_id(env_id: str) -> None:
    from natrl.rl.env import env_factory

    env_factory(env_id)  # ValueError with close matches for an unknown id


def import_gym_packages(packages: Sequence[str]) -> None:
    import importlib

    for pkg in packages:
        try:
            importlib.import_module(pkg)
        except (ImportError, TypeError, ValueError) as exc:  # TypeError: a relative name such as ".pkg"
            raise CLIError(f"--gym-packages {pkg}: cannot import it ({exc})") from None


def resolve_wrapper(path: str | None) -> Any:
    if path is None:
        return None
    import importlib

    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise CLIError(f"--wrapper expects MODULE:CLASS, e.g. gymnasium.wrappers:ClipAction; got {path!r}")
    try:
        wrapper = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"--wrapper {path}: {exc}") from None
    import gymnasium as gym

    if not isinstance(wrapper, type) or not issubclass(wrapper, gym.Wrapper):
        raise CLIError(f"--wrapper {path}: {name} is not a gymnasium.Wrapper class")
    return wrapper


def preset_wrapper(path: str | None, field: str, hint: str = "to use it") -> Any:
    """The wrapper a file names (a preset's ``wrapper = "module:Class"``, a run's config.toml), resolved from data
    only: gymnasium's and natrl's wrapper classes (:func:`natrl.rl.trusted.resolve_class`); any other must be given
    with ``--wrapper``, which imports the module the command line names."""
    if path is None:
        return None
    import gymnasium as gym

    from natrl.rl.trusted import UntrustedReferenceError, resolve_class

    try:
        return resolve_class(path, gym.Wrapper, field=field, hint=f"pass --wrapper {path} {hint}".rstrip())
    except UntrustedReferenceError as exc:
        raise CLIError(str(exc)) from None


def recorded_wrapper(path: str | None, given: str | None) -> Any:
    """The wrapper a run directory's config.toml records, resolved from data only: gymnasium's and natrl's wrapper
    classes (:func:`natrl.rl.trusted.resolve_class`); any other must be given again with ``--wrapper``."""
    if given is not None:
        if given != path:
            recorded = path or "none"
            raise CLIError(f"--wrapper {given} differs from the run's wrapper ({recorded}); a resumed run keeps it")
        return resolve_wrapper(given)
    return preset_wrapper(path, "the run's config.toml wrapper", hint="")


def recorded_gym_packages(recorded: Sequence[str], given: Sequence[str], env_id: str) -> None:
    """Import the packages given on the command line; those a run directory records are not imported from the
    file: when the env still needs them, one line says to pass them again."""
    import gymnasium as gym

    import_gym_packages(given)
    missing = [p for p in recorded if p not in given]
    bare = env_id.partition(":")[2] if ":" in env_id else env_id
    if missing and bare not in gym.registry:
        flags = " ".join(f"--gym-packages {p}" for p in missing)
        raise CLIError(
            f"the run registers {env_id} by importing {', '.join(missing)}; natrl does not import modules a run "
            f"directory names: pass {flags} again"
        )


def check_device(device: str) -> None:
    """A one-line error for a device torch does not know or this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"unknown device {device!r}; use cpu or cuda (or cuda:N)") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {device}: natrl trains on cpu or cuda (or cuda:N), not on {dev.type}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {device}: this machine has no MPS device; use --device cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(
                f"--device {device}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
