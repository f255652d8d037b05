"""``natrl bench``: natrl's agents against stable-baselines3 and tianshou, fairly and reproducibly.

A sweep is the product algos × envs × seeds of jobs, each one training run with
the natrl preset of ``agents/<algo>.toml``; with ``--against sb3`` every natrl
TRPO/PPO/A2C job is followed by sb3-contrib TRPO / SB3 PPO / SB3 A2C with the preset
translated to matched arguments (:mod:`natrl.bench.peers`), with ``--against
tianshou`` every TRPO/NPG/PPO job by tianshou's (:mod:`natrl.bench.tianshou_peer`),
on the same env, budget and seed (``--against sb3,tianshou``: both). Every run
is evaluated the same way (:mod:`natrl.bench.worker`) and writes one row, which
records the sweep, the natrl commit and whether the tree was dirty (read once per
sweep), the command line, the date and the library versions
(:mod:`natrl.bench.provenance`); the sweep writes ``results.json`` and ``results.csv``
(:mod:`natrl.bench.results`), ``table.md`` (IQM over seeds with 95% bootstrap intervals, the probability
of improvement over each peer: :mod:`natrl.bench.stats`), ``summary.md`` (one row per natrl/peer
pair: :mod:`natrl.bench.summary`) and ``curves_<env>.png`` (:mod:`natrl.bench.report`). ``--report``
merges sweeps, pairing runs for a ratio only within one sweep; ``--index DIR`` lists the sweeps
recorded in a folder.

Jobs run one after another, each in a fresh subprocess, or with ``--ray`` as
Ray tasks of one CPU each (:mod:`natrl.bench.executors`).

Usage::

    natrl bench --algos trpo,npg,ppo --envs CartPole-v1,Pendulum-v1 --seeds 0,1,2 --against sb3
    natrl bench --algos trpo,ppo --envs Hopper-v5 --seeds 0,1 --against sb3 --ray
    python -m natrl.bench ...          # the same without the natrl console script

The command line registers this module through :func:`add_arguments` and
dispatches to :func:`run`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from natrl.bench.jobs import BenchError

__all__ = ["BenchError", "add_arguments", "main", "run"]

DEFAULT_OUT_ROOT = "bench-out"
EXAMPLES = """\
examples:
  natrl bench --algos trpo,ppo --envs CartPole-v1 --seeds 0 --steps 20k --against sb3
  natrl bench --algos trpo,npg,ppo --envs CartPole-v1,Pendulum-v1 --seeds 0,1,2 --against sb3
  natrl bench --algos trpo,ppo --envs Hopper-v5 --seeds 0,1 --against sb3 --ray --ray-cpus 2
  natrl bench --algos trpo --envs Hopper-v5 --seeds 0-4 --ray --ray-address auto
  natrl bench --algos trpo,npg --envs Hopper-v5 --seeds 0,1,2 --against sb3,tianshou --ray --ray-cpus 2
  natrl bench --algos trpo,ppo --envs Pendulum-v1 --against sb3 --dry-run   # show the matched kwargs
  natrl bench --report bench-out/a bench-out/b --out bench-out/ab            # one table of two sweeps
  natrl bench --index docs/bench                                             # docs/bench/index.md

Each job trains with the preset of agents/<algo>.toml (budget: its total_steps unless
--steps). With --against sb3 every natrl TRPO/PPO/A2C job is followed by sb3-contrib TRPO /
SB3 PPO / SB3 A2C with the same hyperparameters, env, budget and seed; with --against tianshou every
TRPO/NPG/PPO job by tianshou's. Output: results.json,
results.csv, table.md and curves_<env>.png in --out (default bench-out/<time>/).
Exit status: 0 when every job succeeded, 1 when some failed (they are in the results).
"""


def _steps(text: str) -> int:
    from natrl.runs import parse_steps

    return parse_steps(text, minimum=0)


def _peers(text: str) -> tuple[str, ...]:
    from natrl.bench.jobs import parse_peers

    try:
        return parse_peers(text)
    except BenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_steps(text: str) -> int:
    from natrl.runs import parse_steps

    return parse_steps(text, minimum=1)


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. trpo,ppo")
    return list(dict.fromkeys(names))


def _seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (inclusive) or a mix: ``0-2,7``."""
    seeds: list[int] = []
    try:
        for part in _names(text):
            lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2 or 0-4, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    bad = [s for s in seeds if not 0 <= s < 2**63]
    if bad:
        raise argparse.ArgumentTypeError(f"a seed lies in [0, 2**63) (natrl train's), got {bad[0]} in {text!r}")
    return list(dict.fromkeys(seeds))


def _positive_int(text: str) -> int:
    from natrl.runs import positive_int

    return positive_int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser`` (used by ``natrl bench`` and :func:`main`)."""
    if parser.epilog is None:
        parser.epilog = EXAMPLES
    parser.add_argument(
        "--algos",
        type=_names,
        default="trpo,npg,ppo",
        metavar="A,B",
        help="natrl algorithms (default: %(default)s)",
    )
    parser.add_argument(
        "--envs",
        type=_names,
        default="CartPole-v1,Pendulum-v1",
        metavar="ENV,ENV",
        help="Gymnasium environment ids (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default="0,1,2",
        metavar="S,S",
        help="training seeds, e.g. 0,1,2 or 0-4 (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=_positive_steps,
        metavar="N",
        help="step budget of every run, e.g. 20k or 1e6 (default: each preset's total_steps)",
    )
    parser.add_argument(
        "--against",
        type=_peers,
        metavar="PEER[,PEER]",
        help="also run peers with matched hyperparameters, interleaved with natrl's runs: sb3 "
        "(sb3-contrib TRPO, SB3 PPO, SB3 A2C), tianshou (its TRPO, NPG, PPO) or sb3,tianshou",
    )
    parser.add_argument(
        "--eval-every",
        type=_steps,
        metavar="N",
        help="steps between evaluations; 0: only at the end (default: budget/10)",
    )
    parser.add_argument(
        "--eval-episodes",
        type=_positive_int,
        default=10,
        metavar="N",
        help="deterministic episodes per evaluation (default: %(default)s)",
    )
    parser.add_argument(
        "--ray",
        action="store_true",
        help="run every job as a Ray task of one CPU (a local Ray started in-process unless --ray-address)",
    )
    parser.add_argument(
        "--ray-address", metavar="ADDR", help="an existing Ray cluster, e.g. auto or ray://head:10001 (implies --ray)"
    )
    parser.add_argument(
        "--ray-cpus",
        type=_positive_int,
        metavar="K",
        help="CPUs of the local Ray, i.e. jobs at once (default: all CPUs)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEV",
        help="torch device of the natrl and SB3 jobs: cpu or cuda (tianshou's stay on the CPU; not with --ray, "
        "whose tasks reserve no GPU) (default: %(default)s)",
    )
    parser.add_argument("--out", metavar="DIR", help=f"output folder (default: {DEFAULT_OUT_ROOT}/<time>/)")
    parser.add_argument("--agents-dir", metavar="DIR", help="folder of agent-spec TOML files (default: agents/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a hyperparameter of every natrl job (repeatable), e.g. --set fast_paths=false",
    )
    parser.add_argument(
        "--policy",
        metavar="NAME",
        help="built-in policy of every job instead of the presets' (e.g. MlpPolicy on a task whose preset has a "
        "recurrent policy; the peers get the translated policy)",
    )
    parser.add_argument(
        "--status-every",
        type=_positive_float,
        default="60",
        metavar="SEC",
        help="seconds between status lines while jobs run (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the jobs and the translated SB3 arguments, run nothing"
    )
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="RESULTS",
        help="run nothing: merge these results.json files (or their folders) and write the table and "
        "curves into --out, e.g. to combine a classic-control and a MuJoCo sweep in one table",
    )
    parser.add_argument(
        "--index",
        metavar="DIR",
        help="run nothing: write DIR/index.md, a list of the sweeps whose JSON results lie in DIR (date, commit, "
        "command), e.g. --index docs/bench",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _command_line(args: argparse.Namespace) -> str:
    if getattr(args, "command_line", None):
        return str(args.command_line)
    if getattr(args, "argv", None) is not None:  # set by natrl.cli.main
        return "natrl " + shlex.join(args.argv)
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _metadata(args: argparse.Namespace, n_jobs: int) -> dict[str, Any]:
    dists = ("natrl", "torch", "gymnasium", "mujoco", "stable-baselines3", "sb3-contrib", "tianshou", "numpy", "ray")
    if args.ray or args.ray_address:
        execution = f"Ray ({args.ray_address or 'local'}), one CPU per job"
    else:
        execution = "one job at a time, each in a fresh subprocess"
    device = getattr(args, "device", "cpu")
    if device != "cpu":
        execution += f"; natrl and SB3 on {device}"
    from natrl.bench.provenance import new_sweep_id, source_revision

    now = datetime.now().astimezone()
    return {
        "sweep": new_sweep_id(now),
        **source_revision(),  # commit, dirty, dirty_paths: once per sweep, every row carries them
        "command": _command_line(args),
        "date": now.isoformat(timespec="seconds"),
        "versions": {d: _version(d) for d in dists} | {"python": platform.python_version()},
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "algos": args.algos,
        "envs": args.envs,
        "seeds": args.seeds,
        "steps": args.steps,
        "against": args.against,
        "eval_every": args.eval_every,
        "eval_every_text": "budget/10" if args.eval_every is None else f"{args.eval_every:,}",
        "eval_episodes": args.eval_episodes,
        "execution": execution,
        "jobs": n_jobs,
    }


def _out_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else Path(DEFAULT_OUT_ROOT) / datetime.now().strftime("%Y%m%d-%H%M%S")
    if (out / "results.json").exists():
        raise BenchError(f"{out} already holds results.json; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the sweep described by ``args`` (from :func:`add_arguments`).

    Returns:
        0 when every job succeeded, 1 when at least one failed (failures are in the results).

    Raises:
        BenchError: an invalid request or a missing optional dependency (one-line message).
        natrl.presets.PresetError: an unreadable preset file.
    """
    from natrl.bench.jobs import plan_jobs, plan_warnings
    from natrl.presets import agents_dir

    if args.agents_dir is not None:
        agents_dir(args.agents_dir)  # a folder that is not there is an error, also where nothing reads it (--report)
    if getattr(args, "index", None):
        return _write_index(Path(args.index))
    if args.report:
        return _merge_reports(args)
    use_ray = bool(args.ray or args.ray_address)
    if "sb3" in (args.against or ()):
        missing = [m for m in ("stable_baselines3", "sb3_contrib") if importlib.util.find_spec(m) is None]
        if missing:
            raise BenchError(f"--against sb3 needs {' and '.join(missing)}: pip install 'natrl[bench]'")
    if "tianshou" in (args.against or ()) and importlib.util.find_spec("tianshou") is None:
        raise BenchError("--against tianshou needs tianshou, which is not installed: pip install 'natrl[tianshou]'")
    if use_ray and importlib.util.find_spec("ray") is None:
        raise BenchError("--ray needs Ray, which is not installed: pip install 'natrl[ray]'")
    if args.ray_cpus is not None and args.ray_address:
        raise BenchError("--ray-cpus sets the size of a local Ray; it cannot be used with --ray-address")
    device = getattr(args, "device", "cpu")
    if use_ray and device != "cpu":
        raise BenchError(
            f"--device {device} with --ray: Ray tasks reserve no GPU (Ray hides it from them); "
            "run a GPU sweep without --ray (one job at a time)"
        )
    jobs = plan_jobs(
        args.algos,
        args.envs,
        args.seeds,
        against=args.against,
        steps=args.steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        agents_dir=args.agents_dir,
        overrides=args.overrides,
        policy=args.policy,
        device=device,
    )
    if args.dry_run:
        for line in plan_warnings(args.envs, args.algos, args.against, jobs):
            print(line)
        for job in jobs:
            print(
                f"{job.index:3d}  {job.name}  steps={job.total_steps:,} eval_every={job.eval_every:,} "
                f"threshold={job.expected_return}  preset={job.preset}"
            )
            if job.peer is not None:
                print("     " + json.dumps({k: v for k, v in job.peer.items() if k != "notes"}))
                for note in job.peer["notes"]:
                    print(f"     note: {note}")
        return 0

    from natrl.bench import results
    from natrl.bench.executors import Progress, run_ray, run_sequential

    out = _out_dir(args)
    meta = _metadata(args, len(jobs))
    rows: list[dict[str, Any]] = []
    progress = Progress(len(jobs), stream=None if args.quiet else sys.stderr)

    provenance = {k: meta[k] for k in ("sweep", "commit", "dirty", "command")}

    def on_row(job: Any, row: dict[str, Any]) -> None:
        rows.append({**row, **provenance})
        results.write_results(out, rows, meta)

    if not args.quiet:
        counts = ", ".join(
            f"{sum(j.library == lib for j in jobs)} {lib}" for lib in dict.fromkeys(j.library for j in jobs)
        )
        print(
            f"natrl bench: {len(jobs)} jobs ({counts}), {meta['execution']} → {out}",
            file=sys.stderr,
            flush=True,
        )
    results.write_results(out, rows, meta)
    try:
        if use_ray:
            meta["ray"] = run_ray(
                jobs, on_row, progress, address=args.ray_address, num_cpus=args.ray_cpus, status_every=args.status_every
            )
        else:
            run_sequential(jobs, on_row, progress, status_every=args.status_every)
    finally:
        meta["elapsed_seconds"] = round(progress.elapsed(), 1)
        meta["complete"] = len(rows) == len(jobs)
        _check_source_unchanged(meta)
        results.write_results(out, rows, meta)
    _write_report(out, rows, meta)
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        print(f"{len(failed)} of {len(rows)} jobs failed (see the table and results.json)")
    return 1 if failed else 0


def _check_source_unchanged(meta: dict[str, Any]) -> None:
    """Read the source revision again after the sweep: every job imports natrl afresh, so a commit or an
    edit during the sweep (a shared checkout) means its runs may not all have run the recorded code."""
    from natrl.bench.provenance import source_revision

    now = source_revision()
    before = {k: meta.get(k) for k in now}
    if now != before:
        what = []
        if now["commit"] != before["commit"]:
            what.append(f"commit {str(before['commit'])[:12]} → {str(now['commit'])[:12]}")
        moved = sorted(set(before["dirty_paths"] or ()) ^ set(now["dirty_paths"] or ()))
        if moved:
            what.append(f"uncommitted changes began or ended in {', '.join(moved[:10])}")
            what[-1] += f" and {len(moved) - 10} more" if len(moved) > 10 else ""
        meta["source_changed"] = "the natrl source changed during the sweep: " + "; ".join(what or ["edits"])
        print(f"natrl bench: warning: {meta['source_changed']}", file=sys.stderr)


def _write_report(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """table.md, summary.md and the curves (results.json/csv are written already); print the table."""
    from natrl.bench import report
    from natrl.bench.summary import summary_markdown

    table = report.markdown_table(rows, meta)
    (out / "table.md").write_text(table, encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(rows, meta), encoding="utf-8")
    try:
        plots = report.plot_curves(rows, out)
    except ModuleNotFoundError:
        plots = []
        print(
            "natrl bench: matplotlib is not installed, no curves plotted (pip install 'natrl[bench]')", file=sys.stderr
        )
    print(table)
    files = [out / "results.json", out / "results.csv", out / "table.md", out / "summary.md", *plots]
    print("results: " + ", ".join(str(f) for f in files))


def _latest_runs(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep one run per experiment: a later run of the same library, algorithm, env, seed, budget,
    hyperparameters and device (a re-run of a disturbed job, say) replaces the earlier one, in the earlier one's place.

    Returns:
        the runs kept, and one line per replaced run.
    """

    def key(r: dict[str, Any]) -> str:
        fields = ("library", "algo", "env", "seed", "budget", "hyperparameters", "peer", "policy")
        # rows written before the device was recorded ran on the CPU
        return json.dumps([r.get(f) for f in fields] + [r.get("device", "cpu")], sort_keys=True, default=str)

    latest: dict[str, int] = {}
    for i, r in enumerate(rows):
        latest[key(r)] = i
    kept, replaced, placed = [], [], set()
    for i, r in enumerate(rows):
        k = key(r)
        if k in placed:
            continue
        placed.add(k)
        j = latest[k]
        if j != i:
            replaced.append(
                f"{r.get('library')} {r.get('algo')} {r.get('env')} seed {r.get('seed')}: the later run "
                f"({rows[j].get('steps_per_second') or 0:,.0f} steps/s) replaces the earlier "
                f"({r.get('steps_per_second') or 0:,.0f} steps/s)"
            )
        kept.append(rows[j])
    return kept, replaced


def _write_index(folder: Path) -> int:
    """``--index DIR``: DIR/index.md from the sweeps' JSON files in DIR."""
    from natrl.bench import results

    if not folder.is_dir():
        raise BenchError(f"--index {folder}: not a folder")
    print(f"natrl bench: wrote {results.write_index(folder)}")
    return 0


def _sweep_record(meta: dict[str, Any]) -> dict[str, Any]:
    """What a merged report keeps of one sweep's metadata."""
    keys = ("commit", "dirty", "dirty_paths", "date", "command", "source_changed")
    return {k: meta[k] for k in keys if meta.get(k) is not None}


def _merge_reports(args: argparse.Namespace) -> int:
    """``--report``: merge results files into one results.json/csv, table and set of curves."""
    from natrl.bench import results

    metas, rows = [], []
    sweeps: dict[str, dict[str, Any]] = {}
    for source in args.report:
        try:
            meta, runs = results.read_results(source)
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(f"cannot read results from {source}: {exc}") from None
        sweeps.update(meta.get("sweeps") or {})
        if meta.get("sweep"):
            sweeps[str(meta["sweep"])] = _sweep_record(meta)
        if any(not r.get("sweep") for r in runs):
            # written before rows recorded their sweep: one sweep per file, unless the file is itself a merge
            legacy = f"file:{source}"
            sweeps[legacy] = {**_sweep_record(meta), "mixed": "merged_from" in meta}
            runs = [r if r.get("sweep") else {**r, "sweep": legacy} for r in runs]
        rows += sorted(runs, key=lambda r: r.get("index", 0))
        metas.append(meta)
    rows, replaced = _latest_runs(rows)
    rows = [{**r, "index": i} for i, r in enumerate(rows)]
    for line in replaced:
        print(f"natrl bench: {line}")
    out = _out_dir(args)
    merged = dict(metas[0])
    merged["commands"] = [m.get("command", "") for m in metas]
    merged["command"] = " ; ".join(merged["commands"])
    merged["merged_from"] = [str(s) for s in args.report]
    # a library missing from one sweep (tianshou, say) is reported with the version of the sweep that had it
    merged["versions"] = {k: v for m in reversed(metas) for k, v in m.get("versions", {}).items() if v} | {
        k: v for k, v in metas[0].get("versions", {}).items() if v
    }
    merged["complete"] = all(m.get("complete", False) for m in metas)
    for key in ("sweep", "commit", "dirty", "dirty_paths", "source_changed"):
        merged.pop(key, None)  # per sweep now, in merged["sweeps"]
    kept = {str(r.get("sweep")) for r in rows}
    merged["sweeps"] = {k: v for k, v in sweeps.items() if k in kept}
    commits = list(dict.fromkeys(v.get("commit") for v in merged["sweeps"].values()))
    if len(merged["sweeps"]) > 1:
        print(
            f"natrl bench: the rows come from {len(merged['sweeps'])} sweeps (commits: "
            f"{', '.join(str(c)[:12] if c else 'not recorded' for c in commits)}); ratios pair only runs of one "
            "sweep",
            file=sys.stderr,
        )
    if replaced:
        merged["replaced"] = replaced
    for key in ("eval_every_text", "eval_episodes", "execution"):
        values = list(dict.fromkeys(str(m.get(key)) for m in metas))
        merged[key] = values[0] if len(values) == 1 else " / ".join(values)
    results.write_results(out, rows, merged)
    _write_report(out, rows, merged)
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m natrl.bench") -> int:
    """Standalone entry point (``python -m natrl.bench``; ``natrl bench`` registers :func:`add_arguments` instead).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        prog: the program name shown in help and errors, and recorded in the results.

    Returns:
        the exit status: 0 all jobs succeeded, 1 some failed, 2 a usage error, 130 interrupted.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark natrl's agents over envs and seeds, optionally against stable-baselines3 and tianshou.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = f"{prog} {shlex.join(argv)}".strip()
    from natrl.presets import PresetError

    try:
        return run(args)
    except (BenchError, PresetError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk under --out: one line naming the path
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (finished jobs are in the results)", file=sys.stderr)
        return 130
