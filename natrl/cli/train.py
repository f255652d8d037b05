"""``natrl train``: a new run or ``--resume`` of one: the agent, the logger and natrl's callbacks, trained by
:func:`natrl.runs.train_run` (``agent.learn`` with an evaluation, a checkpoint, a progress and a stop-on-signal
callback)."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from natrl.cli.checks import (
    agent_class,
    check_device,
    check_env_id,
    import_gym_packages,
    preset_wrapper,
    recorded_gym_packages,
    recorded_wrapper,
    resolve_wrapper,
)
from natrl.cli.common import PROG, RUNS_ROOT, CLIError, display_path, print_error
from natrl.cli.values import check_env_kwargs, parse_env_kwargs
from natrl.schedules import linear_start

if TYPE_CHECKING:
    from natrl.logger import Logger
    from natrl.rl import OnPolicyAgent
    from natrl.runs import RunSpec


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
    cls = agent_class(args.algo)
    if args.resume and getattr(args, "hyperparams", None):
        raise CLIError("--hyperparams starts a new run; a resumed run keeps its hyperparameters")
    if args.resume:
        return _resume(args, cls)
    from natrl.presets import load_preset
    from natrl.rl.config import build_config, parse_overrides
    from natrl.rl.policies import PolicyError
    from natrl.runs import RunLock, RunSpec, default_run_dir

    algo, seed = cls.algo, 0 if args.seed is None else args.seed
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(RUNS_ROOT, algo, args.env, seed)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise CLIError(f"run directory {run_dir} already exists; continue it with --resume or choose another --run-dir")
    import_gym_packages(args.gym_packages)
    check_env_id(args.env)
    check_device(args.device or "cpu")
    zoo_notes: list[str] = []
    if getattr(args, "hyperparams", None):  # an rl-baselines3-zoo file instead of natrl's preset
        from natrl.cli.zoo import zoo_preset

        if args.agents_dir:
            raise CLIError("--hyperparams replaces the preset; --agents-dir has no use with it")
        preset, zoo_notes = zoo_preset(args.hyperparams, algo, args.env, cls.config_cls)
    else:
        preset = load_preset(algo, args.env, cls.config_cls, directory=args.agents_dir)
    # the preset's env settings (e.g. Atari preprocessing), which the command line's flags override
    cli_env_kwargs = parse_env_kwargs(args.env_kwargs)
    env_kwargs = {**preset.env_kwargs, **cli_env_kwargs}
    wrapper_path = args.wrapper or preset.wrapper
    if args.wrapper:  # the command line names the user's own code: imported
        wrapper = resolve_wrapper(args.wrapper)
    else:  # a file names it: only gymnasium's and natrl's wrappers
        where = f"[{preset.table}] in {display_path(preset.source)}" if preset.source else "the preset"
        wrapper = preset_wrapper(preset.wrapper, f"the wrapper of {where}")
    overrides = parse_overrides(args.overrides, cls.config_cls, algo)
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.ray_address is not None:
        overrides["ray_address"] = args.ray_address
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
        overrides=list(args.overrides)
        + ([f"n_envs={args.n_envs}"] if args.n_envs is not None else [])
        + ([f"workers={args.workers}"] if args.workers is not None else [])
        + ([f"ray_address={args.ray_address}"] if args.ray_address is not None else []),
        created=datetime.now().isoformat(timespec="seconds"),
        versions=_versions(),
        command=shlex.join([PROG, *getattr(args, "argv", [])]),
    )
    spec.env_kwargs, spec.gym_packages, spec.wrapper = env_kwargs, list(args.gym_packages), wrapper_path
    spec.policy = args.policy or preset.policy
    spec.policy_kwargs = dict(preset.policy_kwargs) if spec.policy == preset.policy else {}
    if env_kwargs:  # a keyword the env does not take: one line naming it and where it came from
        table = f"[{preset.table}.env_kwargs] in {display_path(preset.source)}" if preset.source else "the preset"
        check_env_kwargs(args.env, env_kwargs, cli_env_kwargs, table)
    try:
        agent = cls(args.env, seed=seed, device=device, config=config, env_kwargs=env_kwargs, wrapper_class=wrapper,
                    policy=spec.policy, policy_kwargs=spec.policy_kwargs)  # fmt: skip
    except PolicyError as exc:
        raise CLIError(str(exc)) from None
    lock = RunLock(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # one writer per run directory
        spec.write(run_dir)
        if not args.quiet:
            source = (
                f"{display_path(preset.source)} [{preset.table}]" if preset.source else "none found (built-in defaults)"
            )
            if preset.source and preset.table == "default":
                source += f" (no tuned preset for {args.env})"
            expect = f", expected return {preset.expected_return:g}" if preset.expected_return is not None else ""
            print(f"natrl train: {algo} on {args.env}, seed {seed}, {total:,} steps, device {device}")
            print(f"  preset:    {source}{expect}")
            for note in zoo_notes:
                print(f"  zoo name:  {note}")
            if spec.overrides:
                print(f"  overrides: {' '.join(spec.overrides)}")
            print(f"  run dir:   {display_path(run_dir)}", flush=True)
        from natrl.logger import configure

        logger = configure(run_dir, ["csv", "tensorboard"])
        return _train_loop(agent, spec, run_dir, logger, time_offset=0.0, quiet=args.quiet)
    finally:
        lock.release()
        agent.close()
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            with contextlib.suppress(OSError):  # a start that failed before writing anything leaves no empty dir
                run_dir.rmdir()


def _resume(args: argparse.Namespace, cls: type[OnPolicyAgent]) -> int:
    from natrl.rl.config import parse_overrides
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
    if args.steps is not None and args.steps != spec.total_steps:
        scheduled = sorted(k for k, v in spec.hyperparameters.items() if linear_start(v) is not None)
        if scheduled and not args.quiet:  # SB3's progress remaining is taken over the whole (new) budget
            print(
                f"natrl train: the linear schedules of {', '.join(scheduled)} now run to 0 at "
                f"{args.steps:,} steps instead of {spec.total_steps:,}",
                flush=True,
            )
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
        check_device(args.device)
        spec.device = args.device
    if not CheckpointManager(run_dir / CHECKPOINT_DIR).list():
        raise CLIError(
            f"cannot resume {run_dir}: it has no checkpoint yet (stopped before the first one); "
            "delete it and start a new run"
        )
    with RunLock(run_dir):  # one writer per run directory: resuming a run that still runs is refused
        return _resume_locked(args, run_dir, spec)


def _resume_locked(args: argparse.Namespace, run_dir: Path, spec: RunSpec) -> int:
    from natrl.logger import CSVOutput, configure
    from natrl.runs import resume_agent

    recorded_gym_packages(spec.gym_packages, args.gym_packages, spec.env_id)
    wrapper = recorded_wrapper(spec.wrapper, args.wrapper)
    state = resume_agent(run_dir, spec, device=spec.device, wrapper_class=wrapper)
    for message in state.skipped:
        print_error(f"warning: {message}")
    agent = state.agent
    try:
        # progress.csv cut back to the checkpoint's step, TensorBoard's later events hidden
        logger = configure(run_dir, ["csv", "tensorboard"], resume_step=agent.num_timesteps)
        rows = next(out.rows_kept for out in logger.outputs if isinstance(out, CSVOutput))
        spec.write(run_dir)
        if not args.quiet and agent.num_timesteps >= spec.total_steps:
            print(
                f"natrl train: {display_path(run_dir)} already reached its {spec.total_steps:,} steps; "
                "writing model.pt and evaluating (pass --steps N to train further)",
                flush=True,
            )
        elif not args.quiet:
            print(
                f"natrl train: resuming {display_path(run_dir)} at step "
                f"{agent.num_timesteps:,}/{spec.total_steps:,} "
                f"from {display_path(state.checkpoint)} ({rows} progress rows kept)",
                flush=True,
            )
        return _train_loop(
            agent,
            spec,
            run_dir,
            logger,
            time_offset=float(state.run_state.get("time_elapsed", 0.0)),
            quiet=args.quiet,
        )
    finally:
        agent.close()


def _train_loop(
    agent: OnPolicyAgent,
    spec: RunSpec,
    run_dir: Path,
    logger: Logger,
    *,
    time_offset: float,
    quiet: bool,
) -> int:
    """Train with :func:`natrl.runs.train_run` under the progress display and Ctrl-C handling; print the outcome."""
    from natrl.callbacks import ProgressBarCallback
    from natrl.cli.signals import StopTrainingOnSignal
    from natrl.runs import train_run

    display = None if quiet else ProgressBarCallback(spec.total_steps, desc=f"{spec.algo} {spec.env_id}")
    note = "stopping after this update to save a checkpoint (press Ctrl-C again to abort without one)"
    stopper = StopTrainingOnSignal(
        on_first=lambda signum: (display.write if display else print)(f"{signal.Signals(signum).name}: {note}")
    )
    try:
        with stopper:
            outcome = train_run(
                agent,
                spec,
                run_dir,
                time_offset=time_offset,
                callbacks=[*([display] if display else []), stopper],
                logger=logger,
            )
    finally:
        if display is not None:
            display.close()
    if outcome.interrupted:
        assert stopper.signum is not None and outcome.checkpoint is not None
        path = outcome.checkpoint
        print(f"interrupted at step {agent.num_timesteps:,}/{spec.total_steps:,}; checkpoint: {display_path(path)}")
        run_dir_arg = shlex.quote(display_path(run_dir))
        print(f"resume with: natrl train {spec.algo} {spec.env_id} --run-dir {run_dir_arg} --resume")
        return 128 + stopper.signum
    result, model = outcome.evaluation, outcome.model
    assert result is not None and model is not None and outcome.summary is not None
    reached = outcome.summary["reached_expected_return"]
    if not quiet:
        verdict = ""
        if spec.expected_return is not None:
            outcome_text = "reached" if reached else "not reached"
            verdict = f"  (preset expects {spec.expected_return:g}: {outcome_text})"
        print(
            f"evaluation at {agent.num_timesteps:,} steps "
            f"(deterministic, {len(result.returns)} episodes): "
            f"return {result.mean:.1f} ± {result.std:.1f}{verdict}"
        )
        rd = display_path(run_dir)
        print(f"files in {rd}/:")
        print(f"  model.pt      final model     natrl eval {shlex.quote(display_path(model))}")
        print(f"  progress.csv  learning curve  natrl plot {shlex.quote(rd)} -o curves.png")
        print("  events.out.*  TensorBoard     tensorboard --logdir " + shlex.quote(str(Path(rd).parent)))
        print("  checkpoints/  the last checkpoints; config.toml: the resolved run; eval.json: this evaluation")
    return 0
