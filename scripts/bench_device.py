"""Training throughput of natrl agents on each device: CPU against CUDA, same preset, same seed.

    python scripts/bench_device.py --algos trpo,ppo --env Hopper-v5 --steps 16384

Each (algorithm, device) pair trains the preset of agents/<algo>.toml for a warm-up of
``--steps / 4`` and then ``--steps`` timed steps (one torch thread on the CPU side);
printed as a markdown table of steps/s and the CUDA / CPU ratio. With the small MLPs of
the presets the GPU is launch-bound: it pays off for wide networks and large batches.
"""

from __future__ import annotations

import argparse
import time

import torch

from natrl.presets import load_preset
from natrl.rl import AGENTS


def steps_per_second(algo: str, env_id: str, device: str, steps: int, seed: int) -> float:
    cls = AGENTS[algo]
    preset = load_preset(algo, env_id, cls.config_cls)
    agent = cls(env_id, seed=seed, device=device, **preset.hyperparameters)
    agent.learn(max(steps // 4, 1), progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    agent.learn(steps, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="trpo,ppo", help="comma-separated natrl algorithms")
    parser.add_argument("--env", default="Hopper-v5", help="Gymnasium environment id")
    parser.add_argument("--steps", type=int, default=16384, help="timed training steps per run")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated devices")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = args.devices.split(",")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        parser.error("CUDA is not available here; pass --devices cpu")
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"{args.env}, {args.steps} timed steps, torch {torch.__version__}, {name}\n")
    print("| algo | " + " | ".join(f"{d} steps/s" for d in devices) + " | ratio (last / first) |")
    print("|---" * (len(devices) + 2) + "|")
    for algo in args.algos.split(","):
        rates = [steps_per_second(algo, args.env, d, args.steps, args.seed) for d in devices]
        cells = " | ".join(f"{r:,.0f}" for r in rates)
        print(f"| {algo} | {cells} | {rates[-1] / rates[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
