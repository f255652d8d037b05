"""SIGKILL ``natrl train`` at random moments, ``--resume`` it, and compare the end with the uninterrupted run.

For every (algorithm, env): one uninterrupted run, then the same run killed with SIGKILL at a random moment
after it wrote a checkpoint, resumed, killed again, … until it finishes. The final ``model.pt`` of both must hold
the same parameters bit for bit (max |Δθ| = 0).

    python scripts/kill_resume.py --algos trpo,npg,ppo,acktr --envs CartPole-v1,Pendulum-v1,Hopper-v5 \\
        --steps 16384 --kills 2 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _train(run_dir: Path, algo: str, env: str, steps: int, extra: list[str], resume: bool) -> subprocess.Popen:
    every = str(max(steps // 8, 1))
    cmd = [sys.executable, "-m", "natrl", "train", algo, env, "--run-dir", str(run_dir), "--steps", str(steps),
           "--checkpoint-every", every, "--keep", "2", "--eval-every", "0", "--quiet", *extra]  # fmt: skip
    if resume:
        cmd.append("--resume")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _checkpoints(run_dir: Path) -> int:
    """The step of the newest checkpoint (0 when there is none)."""
    steps = [int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt")]
    return max(steps, default=0)


def _max_diff(a: Path, b: Path) -> float:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return max(float((x[p][k] - y[p][k]).abs().max()) for p in ("actor", "critic") for k in x[p])


def run_pair(algo: str, env: str, steps: int, kills: int, rng: random.Random, root: Path, extra: list[str]) -> dict:
    full, cut = root / f"{algo}-{env}-full", root / f"{algo}-{env}-cut"
    start = time.perf_counter()
    proc = _train(full, algo, env, steps, extra, resume=False)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"uninterrupted {algo} {env} failed: {err.strip()}")
    duration = time.perf_counter() - start
    killed, restarts, resumes = 0, 0, 0
    resume = False
    while True:
        proc = _train(cut, algo, env, steps, extra, resume=resume)
        if killed < kills:
            # kill at a random moment after the run has written one more checkpoint than it started with
            before = _checkpoints(cut)
            while proc.poll() is None and _checkpoints(cut) <= before:
                time.sleep(0.05)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.1) * duration)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                if (cut / "checkpoints").is_dir() and any((cut / "checkpoints").glob("step_*.pt")):
                    resume, resumes = True, resumes + 1
                else:  # killed before the first checkpoint: start again
                    shutil.rmtree(cut, ignore_errors=True)
                    resume, restarts = False, restarts + 1
                continue
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{algo} {env} after {killed} kills failed: {err.strip()}")
        break
    return {
        "algo": algo,
        "env": env,
        "steps": steps,
        "kills": killed,
        "resumes": resumes,
        "restarts_from_scratch": restarts,
        "max_abs_dtheta": _max_diff(full / "model.pt", cut / "model.pt"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default="trpo,npg,ppo,acktr")
    parser.add_argument("--envs", default="CartPole-v1,Pendulum-v1,Hopper-v5")
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per (algorithm, env)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--set", action="append", default=[], help="passed to natrl train as --set")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    extra = [x for kv in args.set for x in ("--set", kv)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for algo in args.algos.split(","):
            for env in args.envs.split(","):
                row = run_pair(algo, env, args.steps, args.kills, rng, Path(tmp), extra)
                rows.append(row)
                print(json.dumps(row), flush=True)
    total = sum(r["kills"] for r in rows)
    worst = max(r["max_abs_dtheta"] for r in rows)
    print(f"{total} kills over {len(rows)} runs; max |dtheta| against the uninterrupted runs: {worst}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "kills": total, "max_abs_dtheta": worst}, indent=1))
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
