"""Training throughput of natrl agents on each device: CPU against CUDA, same preset, same seed.

    python scripts/bench_device.py --algos trpo,ppo --env Hopper-v5 --steps 16384
    python scripts/bench_device.py --algos ppo,acktr --env ALE/Breakout-v5 --steps 8192 --against sb3

Each (algorithm, device) pair trains the preset of agents/<algo>.toml (its hyperparameters,
make-kwargs and env wrapper, e.g. the Atari preprocessing) for a warm-up of ``--steps / 4``
and then ``--steps`` timed steps (``--threads`` torch threads, default one); printed as a
markdown table of steps/s and the ratio of the last device to the first. With
``--against sb3`` the stable-baselines3 peer of each natrl TRPO/PPO preset (the translation
``natrl bench`` uses) is timed the same way on each device, and natrl / SB3 ratios are
added. With the small MLPs of the presets the GPU is launch-bound: it pays off for image
policies, wide networks and large batches.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from typing import Any

import torch

from natrl.presets import Preset, load_preset
from natrl.rl import AGENTS
from natrl.rl.config import build_config


def _wrapper(preset: Preset) -> Any:
    if preset.wrapper is None:
        return None
    module, _, name = preset.wrapper.partition(":")
    return getattr(importlib.import_module(module), name)


def timed(learn: Callable[[int], Any], steps: int, device: str, warmup: int | None = None) -> float:
    """Steps/s of ``learn(steps)`` after ``learn(warmup)`` (default steps / 4), the device synchronised."""
    learn(max(steps // 4, 1) if warmup is None else warmup)  # warm-up: env resets, allocator, kernels, first updates
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    learn(steps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def natrl_rate(preset: Preset, device: str, steps: int, seed: int) -> float:
    cls = AGENTS[preset.algo]
    config = build_config(cls.config_cls, preset.hyperparameters)
    agent = cls(preset.env_id, seed=seed, device=device, config=config, env_kwargs=preset.env_kwargs,
                wrapper_class=_wrapper(preset), policy=preset.policy, policy_kwargs=preset.policy_kwargs)  # fmt: skip
    return timed(lambda n: agent.learn(n), steps, device)


def sb3_rate(preset: Preset, device: str, steps: int, seed: int) -> float | None:
    from natrl.bench.peers import build_model, translate

    cls = AGENTS[preset.algo]
    spec = translate(preset.algo, build_config(cls.config_cls, preset.hyperparameters), preset.policy,
                     preset.policy_kwargs)  # fmt: skip
    if spec is None:
        return None
    model, _ = build_model(spec, preset.env_id, seed, preset.env_kwargs, _wrapper(preset), device=device)
    return timed(lambda n: model.learn(n, reset_num_timesteps=False), steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="trpo,ppo", help="comma-separated natrl algorithms")
    parser.add_argument("--env", default="Hopper-v5", help="Gymnasium environment id")
    parser.add_argument("--steps", type=int, default=16384, help="timed training steps per run")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated devices")
    parser.add_argument("--against", choices=["sb3"], help="also time the stable-baselines3 peers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU side)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.devices.split(",")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        parser.error("CUDA is not available here; pass --devices cpu")
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"{args.env}, {args.steps} timed steps, torch {torch.__version__}, {name}, {args.threads} CPU thread(s)\n")
    head = [f"{d} steps/s" for d in devices] + [f"ratio ({devices[-1]} / {devices[0]})"]
    if args.against:
        head += [f"natrl / SB3 on {d}" for d in devices]
    print("| algo | library | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 2) + "|", flush=True)
    for algo in args.algos.split(","):
        preset = load_preset(algo, args.env, AGENTS[algo].config_cls)
        ours = [natrl_rate(preset, d, args.steps, args.seed) for d in devices]
        theirs = [sb3_rate(preset, d, args.steps, args.seed) for d in devices] if args.against else []
        ratios = [f"{a / b:.2f}" for a, b in zip(ours, theirs) if b] if any(theirs) else ["—"] * len(theirs)
        print(f"| {algo} | natrl | " + " | ".join(f"{r:,.0f}" for r in ours) + f" | {ours[-1] / ours[0]:.2f} | "
              + " | ".join(ratios) + (" |" if ratios else ""), flush=True)  # fmt: skip
        if any(theirs):
            print(f"| {algo} | SB3 | " + " | ".join(f"{r:,.0f}" for r in theirs)  # type: ignore[str-format]
                  + f" | {theirs[-1] / theirs[0]:.2f} |" + " |" * len(theirs), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
