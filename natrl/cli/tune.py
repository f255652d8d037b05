"""``natrl tune``: an Optuna study of an algorithm's hyperparameters on one env (:mod:`natrl.runs.tune`), the best
trial written as a preset table that ``natrl train --agents-dir`` runs."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from natrl.cli.checks import agent_class, check_device, check_env_id
from natrl.cli.common import AGENTS_DIR_HELP, PROG, CLIError, bounded_steps, display_path
from natrl.runs import parse_steps, positive_int

__all__ = ["TUNE_EXAMPLES", "add_tune_parser", "cmd_tune"]

TUNE_EXAMPLES = """\
examples:
  natrl tune trpo Pendulum-v1 --trials 20 --n-jobs 2        # 2 processes share 20 trials
  natrl tune ppo CartPole-v1 --steps 5e4 --seeds 0 1 2     # each trial: 3 agents of 50k steps
  natrl tune a2c CartPole-v1 --steps 1e5 --trials 30
  natrl tune trpo Pendulum-v1 --trials 20                  # again: 20 more trials of the same study
  natrl tune trpo Hopper-v5 --storage postgresql://me:pw@db/optuna --study-name hopper   # on every machine
  natrl train trpo Pendulum-v1 --agents-dir runs/tune/trpo-Pendulum-v1                 # run the best

Trials sample rl-baselines3-zoo's search space in natrl's names over natrl's preset
for ENV; every agent is evaluated deterministically every steps/10 and after its
last update (as natrl train does), Optuna's median pruner stops trials below the
median, and the objective is the final evaluation averaged over --seeds. The study
lives in --storage (default sqlite:///runs/tune/ALGO-ENV.db): rerunning the command
continues it, and a trial whose process was killed is retried. The best trial is
written to --out as an [ENV] table in agents/ALGO.toml format.
"""


def _steps(text: str) -> int:
    return bounded_steps(parse_steps(text, minimum=1), text)


def _seeds(values: list[str]) -> tuple[int, ...]:
    seeds: list[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                seed = int(part)
            except ValueError:
                raise CLIError(f"--seeds {value}: seeds are non-negative integers, e.g. --seeds 0 1 2") from None
            if not 0 <= seed < 2**63:
                raise CLIError(f"--seeds {value}: seeds are integers in [0, 2**63)")
            seeds.append(seed)
    if len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds {' '.join(values)}: a seed is given twice")
    return tuple(seeds)


def add_tune_parser(sub: argparse._SubParsersAction, formatter_class: type[argparse.HelpFormatter]) -> None:
    """Register ``natrl tune`` on the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "tune",
        help="search hyperparameters with Optuna and write the best as a preset",
        description="Tune ALGO's hyperparameters on the Gymnasium env ENV with Optuna (TPE, median pruning).",
        epilog=TUNE_EXAMPLES,
        formatter_class=formatter_class,
    )
    p.add_argument("algo", metavar="ALGO", help="algorithm with a search space: trpo, npg, ppo, a2c or acktr")
    p.add_argument("env", metavar="ENV", help="Gymnasium environment id, e.g. Pendulum-v1")
    p.add_argument("--trials", type=positive_int, default=10, metavar="N", help="trials this run adds")
    p.add_argument("--n-jobs", type=positive_int, default=1, metavar="J", help="parallel trials (processes)")
    p.add_argument("--storage", metavar="URL", help="Optuna database URL (default: sqlite:///runs/tune/ALGO-ENV.db)")
    p.add_argument("--study-name", metavar="NAME", help="the study in the storage (default: ALGO-ENV)")
    p.add_argument("--steps", type=_steps, metavar="N", help="steps per agent (default: the preset's)")
    p.add_argument("--seeds", nargs="+", metavar="S", help="one agent per seed; the objective is the mean (default: 0)")
    p.add_argument("--eval-episodes", type=positive_int, default=10, metavar="N", help="episodes per evaluation")
    p.add_argument("--out", metavar="FILE", help="the best trial's preset (default: runs/tune/ALGO-ENV/ALGO.toml)")
    p.add_argument("--sampler-seed", type=int, default=0, metavar="S", help="seed of the TPE sampler")
    p.add_argument(
        "--startup-trials",
        type=positive_int,
        default=10,
        metavar="N",
        help="random trials before TPE, and finished trials before pruning (rl-baselines3-zoo's default)",
    )
    p.add_argument(
        "--heartbeat",
        type=positive_int,
        default=10,
        metavar="S",
        help="seconds between a running trial's heartbeats; a trial silent for 3·S is failed and retried",
    )
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device of the agents")
    p.add_argument("--agents-dir", metavar="DIR", help=AGENTS_DIR_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no line per trial")
    p.set_defaults(handler=cmd_tune)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _trial_line(trial: Any) -> str:
    state = trial.state.name.lower()
    if state == "complete":
        returns = ", ".join(f"{r:.1f}" for r in trial.user_attrs.get("returns", []))
        hp = trial.user_attrs.get("hyperparameters", {})
        params = " ".join(f"{k}={_short(v)}" for k, v in hp.items() if k != "critic_hidden_sizes")
        if trial.user_attrs.get("natrl_preset"):  # natrl.runs.tune.PRESET_ATTR
            params = "natrl's preset"
        return f"trial {trial.number:>3}  return {trial.value:9.1f}  (seeds: {returns})  {params}"
    if state == "pruned":
        at = trial.user_attrs.get("pruned_at", {})
        return (
            f"trial {trial.number:>3}  pruned at {at.get('steps', 0):,} steps of seed {at.get('seed', '?')} "
            f"(evaluation {at.get('return', float('nan')):.1f})"
        )
    reason = trial.system_attrs.get("fail_reason", "")
    return f"trial {trial.number:>3}  {state}{': ' + ' '.join(str(reason).split()) if reason else ''}"


def cmd_tune(args: argparse.Namespace) -> int:
    """``natrl tune``: run the trials, print one line per finished trial, write the best trial's preset."""
    cls = agent_class(args.algo)
    algo = cls.algo
    try:
        import optuna
    except ModuleNotFoundError:
        raise CLIError("natrl tune needs Optuna, which is not installed: pip install 'natrl[tune]'") from None
    from natrl.presets import load_preset
    from natrl.runs.tune import (
        SEARCH_SPACES,
        TuneSpec,
        best_table,
        check_preset_path,
        default_storage,
        run_study,
        write_preset,
    )

    if algo not in SEARCH_SPACES:
        raise CLIError(f"natrl tune has search spaces for {', '.join(SEARCH_SPACES)}, not for {algo}")
    check_env_id(args.env)
    check_device(args.device)
    preset = load_preset(algo, args.env, cls.config_cls, directory=args.agents_dir)
    steps = args.steps or preset.total_steps
    seeds = _seeds(args.seeds or ["0"])
    safe = args.env.replace("/", "_").replace(":", "_")
    storage = args.storage or default_storage(algo, args.env)
    if args.study_name is not None and not args.study_name.strip():
        raise CLIError("--study-name is empty; give a name, or leave the option out for ALGO-ENV")
    name = args.study_name or f"{algo}-{args.env}"
    out = Path(args.out) if args.out else Path("runs") / "tune" / f"{algo}-{safe}" / f"{algo}.toml"
    check_preset_path(out)  # refused before hours of trials, not after
    spec = TuneSpec(algo, args.env, steps, seeds, args.eval_episodes, args.device, args.agents_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this process is the command's: one line per trial
    if not args.quiet:
        jobs = f", {args.n_jobs} processes" if args.n_jobs > 1 else ""
        print(f"natrl tune: {algo} on {args.env}, {args.trials} trials{jobs}, {steps:,} steps per agent, "
              f"seeds {' '.join(map(str, seeds))}")  # fmt: skip
        print(f"  study:     {name} in {storage}", flush=True)
    report = None if args.quiet else (lambda t: print(_trial_line(t), flush=True))
    study = run_study(spec, storage=storage, study_name=name, trials=args.trials, n_jobs=args.n_jobs,
                      sampler_seed=args.sampler_seed, startup_trials=args.startup_trials, heartbeat=args.heartbeat,
                      report=report)  # fmt: skip
    table, base = best_table(study, spec)
    best = study.best_trial
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running") if s in states)
    command = shlex.join([PROG, *getattr(args, "argv", [])])
    header = (
        f"best of study {name!r} ({counts}): trial {best.number}, final deterministic evaluation {best.value:.1f} "
        f"(mean over seeds {', '.join(map(str, seeds))}; {args.eval_episodes} episodes each) after {steps:,} steps.\n"
        f"Written by: {command}\n"
        "expected_return is unset: measure it with natrl train on seeds the study did not see."
    )
    path = write_preset(out, args.env, table, header=header, env_kwargs=base.env_kwargs, wrapper=base.wrapper,
                        policy=base.policy, policy_kwargs=base.policy_kwargs)  # fmt: skip
    if not args.quiet:
        print(f"best: trial {best.number}, return {best.value:.1f} ({counts} in the study)")
        print(f"  preset:    {display_path(path)} [{args.env}]")
        if path.name == f"{algo}.toml":
            print(f"  run it:    natrl train {algo} {args.env} --agents-dir {display_path(path.parent)}")
    return 0
