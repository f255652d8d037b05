"""The ``natrl`` command line: ``train``, ``eval``, ``plot``, ``list`` and ``bench``.

Errors a user can fix (unknown algorithm or environment, a bad ``--set``, a
missing or corrupt model file, an existing run directory) are reported as one
line ``natrl: error: …`` on stderr with exit code 2, without a traceback.
Ctrl-C during training writes a checkpoint, prints how to resume, and exits
with 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import json
import math
import os
import re
import shlex
import signal
import sys
import time
import types
import typing
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from natrl.runs import parse_steps, positive_int

if TYPE_CHECKING:
    from natrl.rl import EvalResult, OnPolicyAgent
    from natrl.runs import RunSpec

__all__ = ["CLIError", "build_parser", "main", "parse_overrides", "parse_value"]

PROG = "natrl"
RUNS_ROOT = "runs"
EXIT_ERROR = 2
ENV_LIST_HINT = "python -c 'import gymnasium; gymnasium.pprint_registry()'"


class CLIError(Exception):
    """A user error, reported as one line on stderr with exit code 2."""


# --------------------------------------------------------------------------- argument parsing
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows defaults where they are set."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS, []) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see '<prog> --help')`` and exit with 2."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _steps(text: str) -> int:
    return parse_steps(text, minimum=1)


def _positive_int(text: str) -> int:
    return positive_int(text)


def _non_negative_steps(text: str) -> int:
    return parse_steps(text, minimum=0)


TRAIN_EXAMPLES = """\
examples:
  natrl train trpo CartPole-v1                       # the preset of agents/trpo.toml
  natrl train ppo Hopper-v5 --steps 2e5 --seed 1
  natrl train trpo Pendulum-v1 --set max_kl=0.02 --set hidden_sizes=[128,128]
  natrl train npg InvertedPendulum-v5 --n-envs 4 --device cuda
  natrl train trpo CartPole-v1 --run-dir runs/cp --resume   # continue a killed run

A run writes runs/<algo>-<env>-s<seed>-<time>/ (or --run-dir): config.toml,
progress.csv, TensorBoard event files (tensorboard --logdir runs), checkpoints/
(the last --keep) and model.pt. --set takes TOML values (numbers, true/false,
"strings", [lists]; none for an unset optional); `natrl list --params ALGO`
shows the keys.
"""

EVAL_EXAMPLES = """\
examples:
  natrl eval runs/trpo-CartPole-v1-s0-20250101-120000/model.pt
  natrl eval runs/trpo-CartPole-v1-s0-20250101-120000 --episodes 20   # a run dir: its model.pt
  natrl eval model.pt --video cartpole.gif        # .gif needs pillow, .mp4 imageio-ffmpeg
  natrl eval model.pt --render                    # a window (needs a display)
"""

PLOT_EXAMPLES = """\
examples:
  natrl plot runs/trpo-CartPole-v1-s0-* runs/ppo-CartPole-v1-s0-* -o cartpole.png
  natrl plot runs/ -o curves.png            # every run under runs/, one panel per env
  natrl plot runs/ --metric ep_return_mean --band std -o train_curves.png

Runs sharing algorithm and env are seeds: the line is their mean, the band their
range (--band std: ±1 std). y is eval_return_mean when every run has evaluations,
else the training ep_return_mean.
"""

LIST_EXAMPLES = f"""\
examples:
  natrl list                  # algorithms and their presets
  natrl list --params trpo    # every hyperparameter of TRPO with its default

All registered environment ids: {ENV_LIST_HINT}
"""

MAIN_EXAMPLES = """\
examples:
  natrl list
  natrl train trpo CartPole-v1
  natrl eval runs/<run>/model.pt --episodes 10
  natrl plot runs/ -o curves.png
  natrl bench --algos trpo,ppo --envs CartPole-v1 --seeds 0,1,2

`natrl COMMAND --help` shows each command's options and examples.
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an agent with its preset and write a run directory",
        description="Train ALGO on the Gymnasium env ENV with the preset of agents/<algo>.toml.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=_Formatter,
    )
    p.add_argument("algo", metavar="ALGO", help="algorithm, e.g. trpo, npg or ppo (natrl list shows all)")
    p.add_argument("env", metavar="ENV", help="Gymnasium environment id, e.g. CartPole-v1 or Hopper-v5")
    p.add_argument("--steps", type=_steps, metavar="N", help="environment steps (default: the preset's budget)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default: 0)")
    p.add_argument(
        "--n-envs",
        type=_positive_int,
        metavar="K",
        help="parallel environments (the preset's n_envs)",
    )
    p.add_argument("--device", metavar="DEV", help="torch device: cpu or cuda (default: cpu)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter (repeatable), e.g. --set max_kl=0.02",
    )
    p.add_argument(
        "--env-kwargs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of gym.make (repeatable, TOML values), e.g. --env-kwargs frameskip=4",
    )
    p.add_argument(
        "--gym-packages",
        action="append",
        default=[],
        metavar="PKG",
        help="import a package that registers environments before making the env (repeatable)",
    )
    p.add_argument("--wrapper", metavar="MODULE:CLASS", help="wrap every env copy, e.g. gymnasium.wrappers:ClipAction")
    p.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<algo>-<env>-s<seed>-<time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir (default: the newest run of ALGO/ENV/seed under runs/) "
        "from its last checkpoint",
    )
    p.add_argument(
        "--eval-every",
        type=_non_negative_steps,
        metavar="N",
        help="steps between deterministic evaluations; 0: only at the end (default: steps/10)",
    )
    p.add_argument(
        "--eval-episodes",
        type=_positive_int,
        metavar="N",
        help="episodes per evaluation (default: 10)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_steps,
        metavar="N",
        help="steps between checkpoints (default: steps/10)",
    )
    p.add_argument("--keep", type=_positive_int, metavar="K", help="checkpoints to keep (default: 3)")
    p.add_argument("--agents-dir", metavar="DIR", help="folder of agent-spec TOML files (default: agents/)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=cmd_train)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a saved agent",
        description="Run episodes with a saved agent; report the mean and std of the returns.",
        epilog=EVAL_EXAMPLES,
        formatter_class=_Formatter,
    )
    p.add_argument("model", metavar="MODEL", help="a model.pt / checkpoint file, or a run directory")
    p.add_argument(
        "--episodes",
        type=_positive_int,
        metavar="N",
        help="episodes (default: 10; 1 with --video/--render)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the first episode (default: the agent's seed + 10000)",
    )
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    p.add_argument(
        "--env",
        metavar="ENV",
        help="evaluate on this env id (same spaces), e.g. for a model trained on a factory or another variant",
    )
    p.add_argument("--gym-packages", action="append", default=[], metavar="PKG", help="import to register --env")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device")
    p.add_argument("--render", action="store_true", help="show the episodes in a window (render_mode='human')")
    p.add_argument("--video", metavar="PATH", help="write the episodes as a video (.gif, .mp4, ...)")
    p.add_argument("--fps", type=_positive_int, metavar="N", help="video frame rate (default: the env's)")
    p.set_defaults(handler=cmd_eval)


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot learning curves of runs",
        description="Plot return against environment steps for run directories, one panel per env.",
        epilog=PLOT_EXAMPLES,
        formatter_class=_Formatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders of runs")
    p.add_argument("-o", "--output", default="curves.png", metavar="FILE", help="image file (.png, .svg, .pdf)")
    p.add_argument(
        "--metric",
        metavar="COLUMN",
        help="progress.csv column for y (default: eval or training return)",
    )
    p.add_argument("--band", choices=("minmax", "std", "none"), default="minmax", help="spread over seeds")
    p.add_argument("--title", help="figure title")
    p.set_defaults(handler=cmd_plot)


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="algorithms, presets and hyperparameters",
        description="List the algorithms with their presets, or one algorithm's hyperparameters.",
        epilog=LIST_EXAMPLES,
        formatter_class=_Formatter,
    )
    p.add_argument("--params", metavar="ALGO", help="show ALGO's hyperparameters with defaults and meaning")
    p.add_argument("--agents-dir", metavar="DIR", help="folder of agent-spec TOML files (default: agents/)")
    p.set_defaults(handler=cmd_list)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    """Register ``natrl bench`` from :mod:`natrl.bench` (``add_arguments(parser)``, ``run(args)``).

    When that module is missing or broken, ``bench`` still parses but reports why
    it is unavailable, so train/eval/plot/list keep working.
    """
    description = "Benchmark algorithms over environments and seeds (optionally against SB3)."
    try:
        from natrl import bench

        if not (callable(getattr(bench, "add_arguments", None)) and callable(getattr(bench, "run", None))):
            raise ImportError("natrl.bench defines no add_arguments(parser) and run(args)")
        bench.add_arguments(_Parser(prog=f"{PROG} bench"))  # a broken definition fails here, not below
    except ModuleNotFoundError as exc:
        if exc.name != "natrl.bench":
            reason = f"natrl bench needs a package that is not installed: {exc}"
        else:
            reason = "natrl bench is not available in this installation (natrl/bench is missing)"
    except Exception as exc:  # a broken bench module must not break train/eval/plot/list
        reason = f"natrl bench could not be loaded: {type(exc).__name__}: {exc}"
    else:
        p = sub.add_parser(
            "bench",
            help="benchmark algorithms over envs and seeds",
            description=description,
            formatter_class=_Formatter,
        )
        bench.add_arguments(p)
        p.set_defaults(handler=bench.run)
        return
    p = sub.add_parser("bench", help="benchmark algorithms (unavailable)", description=description)
    p.set_defaults(handler=lambda args: _unavailable(reason), accepts_unknown_args=True)


def _unavailable(reason: str) -> int:
    raise CLIError(reason)


def build_parser() -> argparse.ArgumentParser:
    """The ``natrl`` argument parser with its subcommands."""
    from natrl import __version__

    parser = _Parser(
        prog=PROG,
        description="natrl: natural-gradient RL (TRPO, NPG, ACKTR; PPO as the baseline) on Gymnasium.",
        epilog=MAIN_EXAMPLES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"natrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_plot(sub)
    _add_list(sub)
    _add_bench(sub)
    return parser


# --------------------------------------------------------------------------- --set values
def parse_value(raw: str) -> Any:
    """A ``--set`` value in TOML syntax (``0.02``, ``true``, ``[64, 64]``, ``"relu"``).

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

    Raises:
        CLIError: a malformed item, an unknown key (naming the valid ones) or a
            value of the wrong type. Range checks are left to the config class.
    """
    names = [f.name for f in dataclasses.fields(config_cls)]
    hints = typing.get_type_hints(config_cls)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise CLIError(
                f"unknown hyperparameter {key!r} for {algo or config_cls.__name__} "
                f"(--set {item}){hint} "
                f"valid keys: {', '.join(sorted(names))}"
            )
        value = _coerce(parse_value(raw), hints[key])
        if value is _NO:
            raise CLIError(f"--set {item}: {key} must be {_describe(hints[key])}, got {raw.strip()!r}")
        out[key] = value
    return out


# --------------------------------------------------------------------------- output helpers
def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _Progress:
    """Training display: a tqdm bar on a terminal, else a line every ~10% and at evaluations."""

    def __init__(self, spec: RunSpec, start_step: int, quiet: bool) -> None:
        self.spec = spec
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.bar: Any = None
        self.lines = not quiet and not sys.stderr.isatty()
        self.line_every = max(spec.total_steps // 10, 1)
        self.next_line = (start_step // self.line_every + 1) * self.line_every
        self.last_eval: str = "—"
        if not quiet and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=spec.total_steps,
                initial=start_step,
                unit=" steps",
                unit_scale=True,
                dynamic_ncols=True,
                desc=f"{spec.algo} {spec.env_id}",
                file=sys.stderr,
                smoothing=0.1,
            )

    def update(self, row: dict[str, float]) -> None:
        """Show one update's row (the TrainingMonitor's ``report`` hook)."""
        step = int(row["timesteps"])
        fps = (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)
        if "eval_return_mean" in row:
            self.last_eval = f"{row['eval_return_mean']:.1f}±{row['eval_return_std']:.1f}"
        ret, kl = row.get("ep_return_mean"), row.get("kl")
        if self.bar is not None:
            self.bar.update(min(step, self.spec.total_steps) - self.bar.n)
            # tqdm shows steps/s itself
            self.bar.set_postfix_str(f"return={_fmt(ret)} kl={_fmt(kl, '.4f')} eval={self.last_eval}", refresh=False)
        elif self.lines and ("eval_return_mean" in row or step >= self.next_line):
            self.next_line = (step // self.line_every + 1) * self.line_every
            pct = 100.0 * step / self.spec.total_steps
            self.write(
                f"step {step:>10,}/{self.spec.total_steps:,} ({pct:5.1f}%)  steps/s {fps:6.0f}  "
                f"return {_fmt(ret):>8}  kl {_fmt(kl, '.4f')}  eval {self.last_eval}"
            )

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, flush=True)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _StopOnSignal:
    """SIGINT/SIGTERM set a flag (training stops after the current update); a second one aborts."""

    def __init__(self, on_first: Any = None) -> None:
        self.signum: int | None = None
        self.on_first = on_first
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.on_first is not None:
            self.on_first(signum)

    def __enter__(self) -> _StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None


# --------------------------------------------------------------------------- train
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


def _env_kwargs(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--env-kwargs expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(raw)
    return out


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


def _versions() -> dict[str, str]:
    import gymnasium
    import torch

    from natrl import __version__

    return {
        "natrl": __version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "python": sys.version.split()[0],
    }


def cmd_train(args: argparse.Namespace) -> int:
    """``natrl train``: a new run, or ``--resume`` of an existing one."""
    cls = _agent_class(args.algo)
    if args.resume:
        return _resume(args, cls)
    from natrl.presets import load_preset
    from natrl.rl.config import build_config
    from natrl.runs import RunLock, RunSpec, default_run_dir

    algo, seed = cls.algo, 0 if args.seed is None else args.seed
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(RUNS_ROOT, algo, args.env, seed)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise CLIError(f"run directory {run_dir} already exists; continue it with --resume or choose another --run-dir")
    _import_gym_packages(args.gym_packages)
    env_kwargs, wrapper = _env_kwargs(args.env_kwargs), _wrapper(args.wrapper)
    _check_env_id(args.env)
    _check_device(args.device or "cpu")
    preset = load_preset(algo, args.env, cls.config_cls, directory=args.agents_dir)
    overrides = parse_overrides(args.overrides, cls.config_cls, algo)
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    # the command line owns its process: one torch thread unless asked (small networks run faster so)
    config = build_config(cls.config_cls, {"torch_threads": 1, **preset.hyperparameters, **overrides})
    total = args.steps or preset.total_steps
    device = args.device or "cpu"
    spec = RunSpec(
        algo=algo,
        env_id=args.env,
        seed=seed,
        total_steps=total,
        device=device,
        hyperparameters=config.to_dict(),
        eval_every=max(total // 10, 1) if args.eval_every is None else args.eval_every,
        eval_episodes=args.eval_episodes or 10,
        checkpoint_every=args.checkpoint_every or max(total // 10, 1),
        keep=args.keep or 3,
        preset_source=str(preset.source) if preset.source else None,
        preset_table=preset.table if preset.source else None,
        expected_return=preset.expected_return,
        overrides=list(args.overrides) + ([f"n_envs={args.n_envs}"] if args.n_envs is not None else []),
        created=datetime.now().isoformat(timespec="seconds"),
        versions=_versions(),
        command=shlex.join([PROG, *getattr(args, "argv", [])]),
    )
    spec.env_kwargs, spec.gym_packages, spec.wrapper = env_kwargs, list(args.gym_packages), args.wrapper
    agent = cls(args.env, seed=seed, device=device, config=config, env_kwargs=env_kwargs, wrapper_class=wrapper)
    lock = RunLock(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # one writer per run directory
        spec.write(run_dir)
        if not args.quiet:
            source = f"{_rel(preset.source)} [{preset.table}]" if preset.source else "none found (built-in defaults)"
            if preset.source and preset.table == "default":
                source += f" (no tuned preset for {args.env})"
            expect = f", expected return {preset.expected_return:g}" if preset.expected_return is not None else ""
            print(f"natrl train: {algo} on {args.env}, seed {seed}, {total:,} steps, device {device}")
            print(f"  preset:    {source}{expect}")
            if spec.overrides:
                print(f"  overrides: {' '.join(spec.overrides)}")
            print(f"  run dir:   {_rel(run_dir)}", flush=True)
        return _train_loop(agent, spec, run_dir, start_step=0, time_offset=0.0, quiet=args.quiet)
    finally:
        lock.release()
        agent.close()


def _resume(args: argparse.Namespace, cls: type[OnPolicyAgent]) -> int:
    from natrl.runs import CHECKPOINT_DIR, CheckpointManager, RunLock, RunSpec, find_latest_run

    algo, seed = cls.algo, 0 if args.seed is None else args.seed
    if args.run_dir:
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            raise CLIError(f"cannot resume: run directory {run_dir} does not exist")
    else:
        found = find_latest_run(RUNS_ROOT, algo, args.env, seed)
        if found is None:
            raise CLIError(
                f"nothing to resume: no {algo} run on {args.env} with seed {seed} "
                f"under {RUNS_ROOT}/; "
                "pass --run-dir DIR"
            )
        run_dir = found
    try:
        spec = RunSpec.read(run_dir)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    if (spec.algo, spec.env_id) != (algo, args.env):
        raise CLIError(f"{run_dir} is a {spec.algo} run on {spec.env_id}, not {algo} on {args.env}")
    if args.seed is not None and args.seed != spec.seed:
        raise CLIError(f"{run_dir} was started with seed {spec.seed}, not {args.seed}")
    requested = parse_overrides(args.overrides, cls.config_cls, algo)
    if args.n_envs is not None:
        requested["n_envs"] = args.n_envs
    for key, value in requested.items():
        recorded = spec.hyperparameters.get(key)
        if (list(value) if isinstance(value, tuple) else value) != recorded:
            shown = "none" if recorded is None else json.dumps(recorded)
            raise CLIError(
                f"{key}={json.dumps(value) if value is not None else 'none'} differs from the run's "
                f"{key}={shown}; a resumed run keeps its hyperparameters (start a new run to change them)"
            )
    if args.steps is not None:
        spec.total_steps = args.steps
    if args.eval_every is not None:
        spec.eval_every = args.eval_every
    if args.eval_episodes is not None:
        spec.eval_episodes = args.eval_episodes
    if args.checkpoint_every is not None:
        spec.checkpoint_every = args.checkpoint_every
    if args.keep is not None:
        spec.keep = args.keep
    if args.device is not None:
        _check_device(args.device)
        spec.device = args.device
    if not CheckpointManager(run_dir / CHECKPOINT_DIR).list():
        raise CLIError(
            f"cannot resume {run_dir}: it has no checkpoint yet (stopped before the first one); "
            "delete it and start a new run"
        )
    with RunLock(run_dir):  # one writer per run directory: resuming a run that still runs is refused
        return _resume_locked(args, run_dir, spec)


def _resume_locked(args: argparse.Namespace, run_dir: Path, spec: RunSpec) -> int:
    from natrl.runs import PROGRESS_FILE, resume_agent, truncate_progress

    _import_gym_packages(spec.gym_packages)
    state = resume_agent(run_dir, spec, device=spec.device, wrapper_class=_wrapper(spec.wrapper))
    for message in state.skipped:
        _err(f"warning: {message}")
    agent = state.agent
    try:
        rows = truncate_progress(run_dir / PROGRESS_FILE, agent.num_timesteps)
        spec.write(run_dir)
        if not args.quiet and agent.num_timesteps >= spec.total_steps:
            print(
                f"natrl train: {_rel(run_dir)} already reached its {spec.total_steps:,} steps; "
                "writing model.pt and evaluating (pass --steps N to train further)",
                flush=True,
            )
        elif not args.quiet:
            print(
                f"natrl train: resuming {_rel(run_dir)} at step "
                f"{agent.num_timesteps:,}/{spec.total_steps:,} "
                f"from {_rel(state.checkpoint)} ({rows} progress rows kept)",
                flush=True,
            )
        return _train_loop(
            agent,
            spec,
            run_dir,
            start_step=agent.num_timesteps,
            time_offset=float(state.run_state.get("time_elapsed", 0.0)),
            quiet=args.quiet,
        )
    finally:
        agent.close()


def _train_loop(
    agent: OnPolicyAgent,
    spec: RunSpec,
    run_dir: Path,
    *,
    start_step: int,
    time_offset: float,
    quiet: bool,
) -> int:
    from natrl.runs import (
        EVAL_FILE,
        MODEL_FILE,
        TrainingMonitor,
        atomic_write_text,
        write_checkpoint,
    )

    display = _Progress(spec, start_step, quiet)
    stopper = _StopOnSignal(
        on_first=lambda signum: display.write(
            f"{signal.Signals(signum).name}: stopping after this update to save a checkpoint "
            "(press Ctrl-C again to abort without one)"
        )
    )
    monitor = TrainingMonitor(
        run_dir,
        spec,
        start_step=start_step,
        time_offset=time_offset,
        report=display.update,
        should_stop=stopper.is_set,
    )
    try:
        with stopper:
            remaining = spec.total_steps - agent.num_timesteps
            if remaining > 0:
                # schedules (PPO's anneal_lr) span the whole run, also when it is resumed
                span = {"run_start": 0} if "run_start" in inspect.signature(agent.learn).parameters else {}
                agent.learn(remaining, progress=False, callback=monitor, reset_num_timesteps=False, **span)
            if stopper.signum is not None and agent.num_timesteps < spec.total_steps:
                path = (
                    monitor.last_checkpoint
                    if monitor.last_checkpoint_step == agent.num_timesteps and monitor.last_checkpoint
                    else monitor.checkpoint(agent)
                )
                display.close()
                print(f"interrupted at step {agent.num_timesteps:,}/{spec.total_steps:,}; checkpoint: {_rel(path)}")
                print(
                    f"resume with: natrl train {spec.algo} {spec.env_id} "
                    f"--run-dir {shlex.quote(_rel(run_dir))} --resume"
                )
                return 128 + stopper.signum
            if monitor.last_checkpoint_step != agent.num_timesteps:
                monitor.checkpoint(agent)
            model = write_checkpoint(agent, run_dir / MODEL_FILE)
            result = (
                monitor.last_eval
                if monitor.last_eval is not None and monitor.last_eval_step == agent.num_timesteps
                else monitor.evaluate(agent)
            )
    finally:
        monitor.close()
        display.close()
    reached = None if spec.expected_return is None else result.mean >= spec.expected_return
    summary = {
        "timesteps": agent.num_timesteps,
        "episodes": len(result.returns),
        "deterministic": True,
        "return_mean": result.mean,
        "return_std": result.std,
        "returns": result.returns,
        "lengths": result.lengths,
        "expected_return": spec.expected_return,
        "reached_expected_return": reached,
    }
    atomic_write_text(run_dir / EVAL_FILE, json.dumps(summary, indent=2) + "\n")
    if not quiet:
        verdict = ""
        if spec.expected_return is not None:
            outcome = "reached" if reached else "not reached"
            verdict = f"  (preset expects {spec.expected_return:g}: {outcome})"
        print(
            f"evaluation at {agent.num_timesteps:,} steps "
            f"(deterministic, {len(result.returns)} episodes): "
            f"return {result.mean:.1f} ± {result.std:.1f}{verdict}"
        )
        rd = _rel(run_dir)
        print(f"files in {rd}/:")
        print(f"  model.pt      final model     natrl eval {shlex.quote(_rel(model))}")
        print(f"  progress.csv  learning curve  natrl plot {shlex.quote(rd)} -o curves.png")
        print("  events.out.*  TensorBoard     tensorboard --logdir " + shlex.quote(str(Path(rd).parent)))
        print("  checkpoints/  the last checkpoints; config.toml: the resolved run; eval.json: this evaluation")
    return 0


# --------------------------------------------------------------------------- eval
def _model_path(arg: str) -> Path:
    from natrl.runs import CHECKPOINT_DIR, MODEL_FILE, CheckpointManager

    path = Path(arg)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        checkpoints = CheckpointManager(path / CHECKPOINT_DIR).list()
        if checkpoints:
            return checkpoints[-1][1]
        raise CLIError(f"{path} holds no {MODEL_FILE} and no checkpoints")
    return path


def _episodes(
    agent: OnPolicyAgent, env: Any, episodes: int, seed: int, stochastic: bool, frames: list | None
) -> EvalResult:
    import numpy as np

    from natrl.rl import EvalResult

    returns: list[float] = []
    lengths: list[int] = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, length, done = 0.0, 0, False
        if frames is not None:
            frames.append(env.render())
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.predict(obs, deterministic=not stochastic)[0])
            total += float(reward)
            length += 1
            done = bool(terminated or truncated)
            if frames is not None:
                frames.append(env.render())
        returns.append(total)
        lengths.append(length)
    return EvalResult(float(np.mean(returns)), float(np.std(returns)), returns, lengths)


def _video_writer_check(path: Path) -> None:
    suffix = path.suffix.lower()
    try:
        import imageio  # noqa: F401
    except ImportError:
        raise CLIError("--video needs imageio: pip install imageio (and imageio-ffmpeg for .mp4)") from None
    if suffix == ".gif":
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise CLIError("writing .gif videos needs pillow: pip install pillow") from None
    elif suffix in (".mp4", ".webm", ".avi", ".mkv", ".mov"):
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise CLIError(
                f"writing {suffix} videos needs imageio-ffmpeg: pip install imageio-ffmpeg (or use --video out.gif)"
            ) from None
    else:
        raise CLIError(f"--video: unsupported file type {suffix or '(none)'!r}; use .gif or .mp4")


def cmd_eval(args: argparse.Namespace) -> int:
    """``natrl eval``: load a model, run episodes, optionally render or record them."""
    from natrl.rl import load_agent

    if args.video and "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"  # headless MuJoCo rendering (must be set before mujoco loads)
    path = _model_path(args.model)
    _check_device(args.device)
    _import_gym_packages(args.gym_packages)
    if args.env is not None:
        _check_env_id(args.env)
    agent = load_agent(str(path), device=args.device, **({"env": args.env} if args.env else {}))
    try:
        visual = args.render or args.video is not None
        episodes = args.episodes or (1 if visual else 10)
        seed = agent.seed + 10_000 if args.seed is None else args.seed
        if not visual:
            result = agent.evaluate(episodes, deterministic=not args.stochastic, seed=seed)
        else:
            result = _visual_eval(agent, args, episodes, seed)
    finally:
        agent.close()
    mode = "stochastic" if args.stochastic else "deterministic"
    print(
        f"{agent.algo} on {agent.env_id} ({agent.num_timesteps:,} steps) from {_rel(path)}: "
        f"return {result.mean:.1f} ± {result.std:.1f} over {episodes} "
        f"episode{'s' if episodes > 1 else ''} ({mode})"
    )
    print("returns: " + ", ".join(f"{r:.1f}" for r in result.returns))
    if args.video:
        print(f"video: {args.video}")
    return 0


def _visual_eval(agent: OnPolicyAgent, args: argparse.Namespace, episodes: int, seed: int) -> EvalResult:
    import gymnasium as gym

    if agent.env_id not in gym.registry:
        raise CLIError(f"cannot render {agent.env_id}: not a registered Gymnasium id")
    video = Path(args.video) if args.video else None
    if video is not None and args.render:
        raise CLIError("--render and --video cannot be combined; record with --video alone")
    if video is not None:
        _video_writer_check(video)
    mode = "human" if args.render else "rgb_array"
    frames: list | None = [] if video is not None and not args.render else None
    try:
        env = gym.make(agent.env_id, render_mode=mode)
    except gym.error.DependencyNotInstalled as exc:
        raise CLIError(f"rendering {agent.env_id} needs an extra package: {exc}") from None
    try:
        result = _episodes(agent, env, episodes, seed, args.stochastic, frames)
    except gym.error.DependencyNotInstalled as exc:
        raise CLIError(f"rendering {agent.env_id} needs an extra package: {exc}") from None
    except Exception as exc:
        hint = " (no display? use --video, or for MuJoCo set MUJOCO_GL=egl or osmesa)"
        raise CLIError(f"rendering {agent.env_id} failed: {type(exc).__name__}: {exc}{hint}") from None
    finally:
        env.close()
    if video is not None and frames:
        import imageio.v2 as imageio

        fps = args.fps or int(env.metadata.get("render_fps") or 30)
        video.parent.mkdir(parents=True, exist_ok=True)
        if video.suffix.lower() == ".gif":
            imageio.mimsave(video, frames, duration=1000.0 / fps, loop=0)
        else:
            imageio.mimsave(video, frames, fps=fps)
    return result


# --------------------------------------------------------------------------- plot
def cmd_plot(args: argparse.Namespace) -> int:
    """``natrl plot``: learning curves of run directories into one image."""
    from natrl.plotting import plot_runs

    out = plot_runs(args.runs, args.output, metric=args.metric, band=args.band, title=args.title)
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- list
def _field_docs(config_cls: type) -> dict[str, str]:
    """Field name → its line in the ``Attributes:`` sections of the config class and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        text = klass.__doc__ or ""
        in_attrs, current = False, None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped == "Attributes:":
                in_attrs, current = True, None
                continue
            if not in_attrs:
                continue
            m = re.match(r"^(\w+):\s*(.*)$", stripped)
            indent = len(line) - len(line.lstrip())
            if m and indent <= 8:
                current = m.group(1)
                docs[current] = m.group(2)
            elif stripped and current is not None:
                docs[current] += " " + stripped
            elif not stripped:
                current = None
    return docs


def _short_doc(klass: type) -> str:
    line = (klass.__doc__ or "").strip().splitlines()[0] if klass.__doc__ else ""
    return re.sub(r"\s*\(see [^)]*\)", "", line)


def cmd_list(args: argparse.Namespace) -> int:
    """``natrl list``: algorithms with presets, or ``--params ALGO``."""
    from natrl.presets import agents_dir, list_presets, load_preset
    from natrl.rl import AGENTS

    if args.params:
        cls = _agent_class(args.params)
        docs = _field_docs(cls.config_cls)
        print(f"{cls.config_cls.__name__}: natrl train {cls.algo} ENV --set KEY=VALUE")
        for f in dataclasses.fields(cls.config_cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            value = "none" if default is None else json.dumps(list(default) if isinstance(default, tuple) else default)
            print(f"  {f.name:<28} {value:<12} {docs.get(f.name, '')}")
        return 0
    folder = agents_dir(args.agents_dir)
    print("algorithms (natrl train ALGO ENV):")
    for name, cls in AGENTS.items():
        print(f"  {name:<6} {_short_doc(cls)}")
        envs = list_presets(name, args.agents_dir)
        if not envs:
            print("         no presets; trains with the built-in defaults")
            continue
        print(f"         presets ({_rel(folder / (name + '.toml')) if folder else name + '.toml'}):")
        for env_id in envs:
            p = load_preset(name, env_id, cls.config_cls, directory=args.agents_dir)
            expect = f"expected return {p.expected_return:g}" if p.expected_return is not None else ""
            print(f"           {env_id:<24} {p.total_steps:>11,} steps  {expect}")
    print()
    print("other envs train with the [default] table; hyperparameters: natrl list --params ALGO")
    print(f"list all registered env ids: {ENV_LIST_HINT}")
    return 0


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``natrl`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.handler(args) or 0)
    except (CLIError, ValueError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        # ValueError covers natrl's PresetError, CheckpointError, UnsupportedSpaceError and
        # the config classes' validation; unexpected exceptions keep their traceback
        _err(f"error: {_one_line(exc)}")
        return EXIT_ERROR
    except FloatingPointError as exc:  # natrl.rl.NonFiniteError: the env produced NaN/inf
        _err(f"error: {_one_line(exc)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:
        gym_error = sys.modules.get("gymnasium.error")
        if gym_error is not None and isinstance(exc, gym_error.DependencyNotInstalled):
            _err(f"error: {_one_line(exc)}")  # e.g. Box2D or pygame for an env
            return EXIT_ERROR
        raise
    except BrokenPipeError:  # `natrl list | head`
        return 0


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
