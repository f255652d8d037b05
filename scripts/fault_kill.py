"""Fault run: SIGKILL training runs at random moments, resume each, and check what was left behind.

For each of ``--kills`` runs (TRPO, PPO and ACKTR in turn, CartPole-v1), start
``natrl train ALGO CartPole-v1 --steps N --checkpoint-every C --run-dir DIR``, kill it with SIGKILL
after a random delay, resume it with ``--resume`` to the end, and check:

* every file left behind is whole: each checkpoint and model.pt loads, config.toml parses;
* no parameter is NaN or infinite (checkpoints and the final model);
* progress.csv has every update's step exactly once, in order;
* whether resume is exact: the final parameters against an uninterrupted run of the same seed
  (max |Δθ|; zero only when the kill came after the last checkpoint).

Prints one line per run and a summary; ``--out`` writes the rows as JSON.

    python scripts/fault_kill.py --kills 20 --out docs/bench/fault-kill.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from natrl.logger import read_progress
from natrl.rl import load_agent

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

NATRL = [sys.executable, "-m", "natrl"]
ALGOS = {"trpo": 256, "ppo": 256, "acktr": 256}  # steps per update with the settings below
SETTINGS = {
    "trpo": ["--set", "n_envs=2", "--set", "n_steps=128"],
    "ppo": ["--set", "n_envs=2", "--set", "n_steps=128", "--set", "batch_size=64"],
    "acktr": ["--set", "n_envs=4", "--set", "n_steps=64"],
}


def params(path: Path) -> torch.Tensor:
    agent = load_agent(str(path))
    return torch.cat([p.detach().reshape(-1) for p in [*agent.actor.parameters(), *agent.critic.parameters()]])


def run(algo: str, run_dir: Path, steps: int, every: int, *extra: str) -> list[str]:
    return [*NATRL, "train", algo, "CartPole-v1", "--steps", str(steps), "--checkpoint-every", str(every),
            "--eval-every", "0", "--run-dir", str(run_dir), "--quiet", *SETTINGS[algo], *extra]  # fmt: skip


def check(run_dir: Path, per_update: int, steps: int) -> dict[str, object]:
    corrupt, nonfinite = 0, 0
    for path in [*sorted((run_dir / "checkpoints").glob("step_*.pt")), run_dir / "model.pt"]:
        try:
            theta = params(path)
        except Exception:  # any failure to load is a corrupt file
            corrupt += 1
            continue
        nonfinite += int(not bool(torch.isfinite(theta).all()))
    tomllib.loads((run_dir / "config.toml").read_text())
    t = read_progress(run_dir / "progress.csv")["time/total_timesteps"]
    expected = np.arange(per_update, steps + 1, per_update)
    return {
        "corrupt_files": corrupt,
        "nonfinite_files": nonfinite,
        "csv_steps_exactly_once": bool(len(t) == len(expected) and np.array_equal(t, expected)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=16_384)
    parser.add_argument("--every", type=int, default=2_048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference: dict[str, torch.Tensor] = {}
        for algo in ALGOS:  # uninterrupted runs, for exactness
            ref_dir = Path(tmp) / f"ref-{algo}"
            subprocess.run(run(algo, ref_dir, args.steps, args.every), check=True, env=env, capture_output=True)
            reference[algo] = params(ref_dir / "model.pt")
        for i in range(args.kills):
            algo = list(ALGOS)[i % len(ALGOS)]
            run_dir = Path(tmp) / f"kill-{i}-{algo}"
            proc = subprocess.Popen(run(algo, run_dir, args.steps, args.every), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            delay = rnd.uniform(1.0, 8.0)
            time.sleep(delay)
            finished_first = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            ckpts = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt"))
            resumed = subprocess.run([*run(algo, run_dir, args.steps, args.every), "--resume"], env=env,
                                     capture_output=True, text=True)  # fmt: skip
            row: dict[str, object] = {
                "run": i,
                "algo": algo,
                "kill_after_s": round(delay, 2),
                "finished_before_kill": finished_first,
                "last_checkpoint_at_kill": ckpts[-1] if ckpts else None,
                "resume_rc": resumed.returncode,
                "resume_error": resumed.stderr.strip().splitlines()[-1] if resumed.returncode else None,
            }
            if resumed.returncode == 0:
                row.update(check(run_dir, ALGOS[algo], args.steps))
                delta = float((params(run_dir / "model.pt") - reference[algo]).abs().max())
                row["max_abs_dtheta_vs_uninterrupted"] = delta
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = [r for r in rows if r["resume_rc"] == 0]
    print(
        f"{len(rows)} kills: {len(ok)} resumed to the end; corrupt files {sum(r['corrupt_files'] for r in ok)}; "
        f"non-finite files {sum(r['nonfinite_files'] for r in ok)}; CSV steps exactly once in "
        f"{sum(bool(r['csv_steps_exactly_once']) for r in ok)}/{len(ok)}; exact resume (Δθ = 0) in "
        f"{sum(r['max_abs_dtheta_vs_uninterrupted'] == 0.0 for r in ok)}/{len(ok)}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
