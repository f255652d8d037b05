"""The ``natrl`` argument parser: the subcommands, their options and help texts."""

from __future__ import annotations

import argparse
from typing import NoReturn

from natrl.cli.common import AGENTS_DIR_HELP, ENV_LIST_HINT, EXIT_ERROR, PROG, CLIError, bounded_steps
from natrl.cli.evaluate import cmd_eval
from natrl.cli.listing import cmd_list
from natrl.cli.plot import cmd_plot
from natrl.cli.train import cmd_train
from natrl.cli.tune import add_tune_parser
from natrl.runs import parse_steps, positive_int


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
    return bounded_steps(parse_steps(text, minimum=1), text)


def _positive_int(text: str) -> int:
    return positive_int(text)


def _seed(text: str) -> int:
    """A seed: an integer in [0, 2**63) (Gymnasium's, NumPy's and torch's seeds all take it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed lies in [0, 2**63), got {text}")
    return value


def _non_negative_steps(text: str) -> int:
    return bounded_steps(parse_steps(text, minimum=0), text)


TRAIN_EXAMPLES = """\
examples:
  natrl train trpo CartPole-v1                       # the preset of agents/trpo.toml
  natrl train ppo Hopper-v5 --steps 2e5 --seed 1
  natrl train trpo Pendulum-v1 --set max_kl=0.02 --set hidden_sizes=[128,128]
  natrl train npg InvertedPendulum-v5 --n-envs 4 --device cuda
  natrl train trpo CartPole-v1 --run-dir runs/cp --resume   # continue a killed run
  natrl train trpo Hopper-v5 --hyperparams rl-baselines3-zoo/hyperparams/trpo.yml

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
  natrl plot runs/ --metric rollout/ep_rew_mean --band std -o train_curves.png

Runs sharing algorithm and env are seeds: the line is their mean, the band their
range (--band std: ±1 std). y is eval/mean_reward when every run has evaluations,
else the training rollout/ep_rew_mean (progress.csv's SB3 column names; older natrl
files and stable-baselines3's own progress.csv are read too).
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
  natrl tune trpo Pendulum-v1 --trials 20 --n-jobs 2

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
    p.add_argument("--seed", type=_seed, metavar="S", help="random seed (default: 0)")
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
    p.add_argument(
        "--wrapper",
        metavar="MODULE:CLASS",
        help="wrap every env copy, e.g. gymnasium.wrappers:ClipAction; imports MODULE, your code (a preset's or "
        "config.toml's wrapper is never imported: only gymnasium's and natrl's wrapper classes are taken from a file)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="K",
        help="collect the rollouts with K Ray workers (n_envs envs each); same as --set workers=K",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster of the workers, e.g. auto (default: a local Ray)",
    )
    p.add_argument(
        "--policy",
        metavar="NAME",
        help="built-in policy (default: the preset's, else MlpPolicy), e.g. MlpLstmPolicy for a policy with memory",
    )
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
    p.add_argument("--agents-dir", metavar="DIR", help=AGENTS_DIR_HELP)
    p.add_argument(
        "--hyperparams",
        metavar="FILE.yml",
        help="run the table for ENV of an rl-baselines3-zoo hyperparameter file (hyperparams/trpo.yml, "
        "ppo.yml, a2c.yml) instead of natrl's preset, translated exactly or refused key by key",
    )
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
        type=_seed,
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
        help="progress.csv column for y, e.g. train/kl (default: eval/mean_reward, else rollout/ep_rew_mean)",
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
    p.add_argument("--agents-dir", metavar="DIR", help=AGENTS_DIR_HELP)
    p.set_defaults(handler=cmd_list)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    """Register ``natrl bench`` from :mod:`natrl.bench` (``add_arguments(parser)``, ``run(args)``).

    When that module is missing or broken, ``bench`` still parses but reports why
    it is unavailable, so train/eval/plot/list keep working.
    """
    description = "Benchmark algorithms over environments and seeds (optionally against SB3 and tianshou)."
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
        description="natrl: natural-gradient RL (TRPO, NPG, ACKTR; PPO and A2C as the baselines) on Gymnasium.",
        epilog=MAIN_EXAMPLES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"natrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_plot(sub)
    _add_list(sub)
    add_tune_parser(sub, _Formatter)
    _add_bench(sub)
    return parser
