"""Parameter hashes after three updates of TRPO / NPG / PPO / ACKTR on CartPole-v1 and Pendulum-v1.

A refactor that changes no numerics leaves every hash unchanged. Each (algo, env) is trained twice
from its preset in ``agents/<algo>.toml``, seed 0, one thread: once through the Python API
(``ALGO("MlpPolicy", env, seed=0, **preset).learn(3 rollouts)``) and once through ``natrl train``
(the final ``model.pt``). The hash is SHA-256 over the policy's state-dict tensors in key order.

    python scripts/param_hashes.py                 # print the table
    python scripts/param_hashes.py --out a.json    # and save it
    python scripts/param_hashes.py --compare a.json  # exit 1 if any hash differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib
import torch

ROOT = Path(__file__).resolve().parent.parent
ALGOS = ("trpo", "npg", "ppo", "acktr")
ENVS = ("CartPole-v1", "Pendulum-v1")
META = {"total_steps", "expected_return", "env_kwargs", "wrapper", "policy", "policy_kwargs"}


def preset(algo: str, env_id: str) -> dict:
    data = tomllib.loads((ROOT / "agents" / f"{algo}.toml").read_text())
    table = dict(data.get("default", {}))
    table.update(data.get(env_id, {}))
    return {k: v for k, v in table.items() if k not in META}


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def flat_state(params: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, sub in params.items():
        if isinstance(sub, dict):
            for k, v in flat_state(sub).items():
                out[f"{name}.{k}"] = v
        elif isinstance(sub, torch.Tensor):
            out[name] = sub
    return out


def api_hash(algo: str, env_id: str) -> str:
    import natrl

    hp = preset(algo, env_id)
    cls = getattr(natrl, algo.upper())
    agent = cls("MlpPolicy", env_id, seed=0, **hp)
    steps = 3 * agent.config.n_envs * agent.config.n_steps
    agent.learn(steps)
    params = flat_state(agent.get_parameters())
    agent.close()
    return digest(params)


def cli_hash(algo: str, env_id: str) -> str:
    hp = preset(algo, env_id)
    steps = 3 * int(hp.get("n_envs", 1)) * int(hp["n_steps"])
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "natrl", "train", algo, env_id, "--steps", str(steps), "--seed", "0"]
        cmd += ["--run-dir", str(run), "-q", "--eval-every", "0"]
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
        params = {k: v for k, v in flat_state(state).items() if "optim" not in k.split(".")[0]}
        keys = sorted(k for k in params if k.startswith(("policy", "actor", "critic", "model")))
        return digest({k: params[k] for k in keys} if keys else params)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--compare")
    args = ap.parse_args()
    torch.set_num_threads(1)
    table = {}
    for algo in ALGOS:
        for env_id in ENVS:
            table[f"{algo} {env_id} api"] = api_hash(algo, env_id)
            table[f"{algo} {env_id} cli"] = cli_hash(algo, env_id)
            print(f"{algo:6s} {env_id:12s} api {table[f'{algo} {env_id} api']}  cli {table[f'{algo} {env_id} cli']}")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2) + "\n")
    if args.compare:
        ref = json.loads(Path(args.compare).read_text())
        diff = [k for k in ref if ref[k] != table.get(k)]
        print("identical" if not diff else f"differ: {', '.join(diff)}")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
