"""Resolving what the user named (algorithm, env id, gym packages, wrapper, device), with one-line errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from natrl.cli.common import CLIError

if TYPE_CHECKING:
    from natrl.rl import OnPolicyAgent


def _agent_class(name: str) -> type[OnPolicyAgent]:
    from natrl.rl import AGENTS

    algo = name.lower()
    if algo not in AGENTS:
        raise CLIError(f"unknown algorithm {name!r}; choose from {', '.join(AGENTS)} (see 'natrl list')")
    return AGENTS[algo]


def _check_env_id(env_id: str) -> None:
    from natrl.rl.env import env_factory

    env_factory(env_id)  # ValueError with close matches for an unknown id


def _import_gym_packages(packages: Sequence[str]) -> None:
    import importlib

    for pkg in packages:
        try:
            importlib.import_module(pkg)
        except ImportError as exc:
            raise CLIError(f"--gym-packages {pkg}: cannot import it ({exc})") from None


def _wrapper(path: str | None) -> Any:
    if path is None:
        return None
    import importlib

    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise CLIError(f"--wrapper expects MODULE:CLASS, e.g. gymnasium.wrappers:ClipAction; got {path!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"--wrapper {path}: {exc}") from None


def _check_device(device: str) -> None:
    """A one-line error for a device torch does not know or this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"unknown device {device!r}; use cpu or cuda (or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(
                f"--device {device}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
