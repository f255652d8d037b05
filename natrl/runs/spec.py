"""The run's config, :class:`RunSpec`, stored as ``config.toml`` in the run directory."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natrl.atomic import atomic_write_text
from natrl.runs.files import CONFIG_FILE
from natrl.runs.toml import dumps_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunSpec"]


@dataclass
class RunSpec:
    """Everything that defines one training run; stored as ``config.toml`` in the run directory.

    Attributes:
        algo: algorithm name (a key of :data:`natrl.rl.AGENTS`).
        env_id: Gymnasium environment id.
        seed: the agent's seed.
        total_steps: the run's step budget (environment transitions over all envs).
        device: torch device of the agent.
        hyperparameters: every field of the algorithm's config (preset + overrides + defaults).
        eval_every: steps between deterministic evaluations (0: only at the end).
        eval_episodes: episodes per evaluation.
        checkpoint_every: steps between checkpoints.
        keep: checkpoints kept (older ones are deleted).
        preset_source: the agent-spec TOML file the hyperparameters came from.
        preset_table: the table of that file (the env id, or "default").
        expected_return: the return the preset expects after ``total_steps``.
        overrides: the ``--set key=value`` items, as given.
        created: ISO time the run was started.
        versions: package versions (natrl, torch, gymnasium, python).
        command: the command line that started the run.
        env_kwargs: keyword arguments of ``gym.make`` (``--env-kwargs``).
        gym_packages: packages imported to register the env (``--gym-packages``).
        wrapper: the env wrapper as ``module:Class`` (``--wrapper``).
        policy: the built-in policy name (``--policy`` or the preset's; None: the agent's default).
        policy_kwargs: the preset's policy keywords.
    """

    algo: str
    env_id: str
    seed: int
    total_steps: int
    device: str
    hyperparameters: dict[str, Any]
    eval_every: int
    eval_episodes: int
    checkpoint_every: int
    keep: int
    preset_source: str | None = None
    preset_table: str | None = None
    expected_return: float | None = None
    overrides: list[str] = field(default_factory=list)
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    gym_packages: list[str] = field(default_factory=list)
    wrapper: str | None = None
    policy: str | None = None
    policy_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> str:
        """The ``config.toml`` text."""
        run = {
            "algo": self.algo,
            "env": self.env_id,
            "seed": self.seed,
            "steps": self.total_steps,
            "device": self.device,
            "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes,
            "checkpoint_every": self.checkpoint_every,
            "keep": self.keep,
            "preset_source": self.preset_source,
            "preset_table": self.preset_table,
            "expected_return": self.expected_return,
            "overrides": list(self.overrides),
            "created": self.created,
            "command": self.command,
            "gym_packages": list(self.gym_packages),
            "wrapper": self.wrapper,
            "policy": self.policy,
        }
        header = (
            "natrl run configuration, written by `natrl train`.\n"
            "[hyperparameters] holds every field of the algorithm's config as used by this run."
        )
        tables = {
            "run": run,
            "env_kwargs": self.env_kwargs,
            "policy_kwargs": self.policy_kwargs,
            "hyperparameters": self.hyperparameters,
        }
        return dumps_toml({**tables, "versions": self.versions}, header)

    def write(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``run_dir/config.toml`` atomically."""
        return atomic_write_text(Path(run_dir) / CONFIG_FILE, self.to_toml())

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> RunSpec:
        """Read ``run_dir/config.toml``.

        Raises:
            FileNotFoundError: there is no config.toml (not a natrl run directory).
            ValueError: the file is not valid TOML or lacks required keys.
        """
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a natrl run directory (no {CONFIG_FILE})")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            run = data["run"]
            return cls(
                algo=str(run["algo"]),
                env_id=str(run["env"]),
                seed=int(run["seed"]),
                total_steps=int(run["steps"]),
                device=str(run.get("device", "cpu")),
                hyperparameters=dict(data.get("hyperparameters", {})),
                eval_every=int(run.get("eval_every", 0)),
                eval_episodes=int(run.get("eval_episodes", 10)),
                checkpoint_every=int(run.get("checkpoint_every", max(1, int(run["steps"]) // 10))),
                keep=int(run.get("keep", 3)),
                preset_source=run.get("preset_source"),
                preset_table=run.get("preset_table"),
                expected_return=run.get("expected_return"),
                overrides=list(run.get("overrides", [])),
                created=str(run.get("created", "")),
                versions=dict(data.get("versions", {})),
                command=str(run.get("command", "")),
                env_kwargs=dict(data.get("env_kwargs", {})),
                gym_packages=list(run.get("gym_packages", [])),
                wrapper=run.get("wrapper"),
                policy=run.get("policy"),
                policy_kwargs=dict(data.get("policy_kwargs", {})),
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a valid natrl run config: {exc}") from None
