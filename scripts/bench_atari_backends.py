"""Atari training throughput by env backend: natrl PPO/ACKTR and SB3 PPO on the Breakout presets.

    python scripts/bench_atari_backends.py --device cuda --steps 16384 --threads 4

Each row trains the preset of agents/<algo>.toml for ``ALE/Breakout-v5`` (8 or 16 envs, NatureCNN,
the AtariWrapper preprocessing) for a warm-up of 2,048 steps and then ``--steps`` timed steps, with
natrl's env backends (``vec_env``: "ale", ALE's C++ vector env; "async", one subprocess per env;
"sync", one process) and SB3 PPO with the same hyperparameters (the ``natrl bench`` translation) on
``SubprocVecEnv`` and ``DummyVecEnv``. Printed as a markdown table of steps/s.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from bench_device import timed  # scripts/ is on sys.path when this file runs

from natrl.bench.peers import translate
from natrl.presets import load_preset
from natrl.rl import AGENTS
from natrl.rl.atari import AtariWrapper
from natrl.rl.config import build_config

ENV_ID = "ALE/Breakout-v5"


def _make_breakout(**kwargs: Any) -> Any:  # importable in SB3's subprocesses
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return gym.make(ENV_ID, **kwargs)


def natrl_rate(algo: str, vec_env: str, device: str, steps: int) -> float:
    cls = AGENTS[algo]
    preset = load_preset(algo, ENV_ID, cls.config_cls)
    config = build_config(cls.config_cls, {**preset.hyperparameters, "vec_env": vec_env})
    agent = cls(ENV_ID, seed=0, device=device, config=config, env_kwargs=preset.env_kwargs, wrapper_class=AtariWrapper)
    try:
        return timed(lambda n: agent.learn(n), steps, device, warmup=2048)
    finally:
        agent.close()


def sb3_rate(vec_env_cls: Any, device: str, steps: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import LinearSchedule

    preset = load_preset("ppo", ENV_ID, AGENTS["ppo"].config_cls)
    spec = translate("ppo", build_config(AGENTS["ppo"].config_cls, preset.hyperparameters))
    assert spec is not None
    kwargs = copy.deepcopy(spec.kwargs)
    kwargs["policy_kwargs"]["activation_fn"] = getattr(torch.nn, kwargs["policy_kwargs"]["activation_fn"])
    for key in ("learning_rate", "clip_range"):
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = LinearSchedule(float(kwargs[key]["linear"]), 0.0, 1.0)
    venv = make_vec_env(_make_breakout, n_envs=spec.n_envs, seed=0, vec_env_cls=vec_env_cls,
                        env_kwargs=preset.env_kwargs, wrapper_class=AtariWrapper)  # fmt: skip
    try:
        model = PPO("CnnPolicy", venv, seed=0, device=device, verbose=0, **kwargs)
        return timed(lambda n: model.learn(n, reset_num_timesteps=False), steps, device, warmup=2048)
    finally:
        venv.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=16384, help="timed training steps per row")
    parser.add_argument("--threads", type=int, default=4, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    print(f"{ENV_ID}, {args.steps:,} timed steps on {args.device}, {args.threads} torch threads\n")
    print("| library, algo | env backend | steps/s |\n|---|---|---|", flush=True)
    for algo, backends in (("ppo", ("ale", "async", "sync")), ("acktr", ("ale",))):
        for backend in backends:
            print(
                f"| natrl {algo} | {backend} | {natrl_rate(algo, backend, args.device, args.steps):,.0f} |", flush=True
            )
    for name, vec_cls in (("SubprocVecEnv", SubprocVecEnv), ("DummyVecEnv", DummyVecEnv)):
        print(f"| SB3 ppo | {name} | {sb3_rate(vec_cls, args.device, args.steps):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
