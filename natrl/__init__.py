"""natrl: natural-gradient reinforcement learning and second-order optimisation for PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and the API reference; at run time the agents load lazily
    from natrl.rl import A2C, ACKTR, NPG, PPO, TRPO
    from natrl.rl.sb3_vec_env import make_vec_env

__version__ = "0.1.0"
"""The natrl version (PEP 440), as in pyproject.toml."""

_AGENTS = {"TRPO", "NPG", "PPO", "ACKTR", "A2C"}


def __getattr__(name: str) -> Any:  # lazy: `import natrl` stays cheap (no gymnasium import)
    if name in _AGENTS:
        from natrl import rl

        return getattr(rl, name)
    if name == "make_vec_env":
        from natrl.rl.sb3_vec_env import make_vec_env

        return make_vec_env
    raise AttributeError(f"module 'natrl' has no attribute {name!r}")


__all__ = ["A2C", "ACKTR", "NPG", "PPO", "TRPO", "__version__", "make_vec_env"]
