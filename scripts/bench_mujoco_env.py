"""Raw env steps/s of gymnasium's MuJoCo tasks: gymnasium's SyncVectorEnv (SAME_STEP, as ``vec_env="sync"`` builds
it) against natrl's lean vector env (``vec_env="mujoco"``), and the share of each spent inside MuJoCo.

    OMP_NUM_THREADS=1 python scripts/bench_mujoco_env.py --steps 20000 --repeats 2

Each row steps ``--envs`` copies with uniform random actions (drawn before the clock starts) for ``--steps`` env
steps and reports env steps per second of the process's CPU time (the machine may be shared) and of the wall
clock. ``mujoco.mj_step``, ``mj_rnePostConstraint``, ``mj_forward`` and ``mj_resetData`` are replaced by wrappers
that add up the CPU time spent inside them, for both backends alike (a wrapper costs well under a microsecond a
call): the time outside them is each backend's Python. The two backends run alternately in chunks of ``--chunk``
vector steps, so that a change in the machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from natrl.rl.mujoco_env import MUJOCO_IDS, MujocoSameStep

INSIDE = [0]  # nanoseconds of CPU time inside MuJoCo's functions


def _timed_function(function: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time_ns()
        out = function(*args, **kwargs)
        INSIDE[0] += time.process_time_ns() - start
        return out

    return timed


for _name in ("mj_step", "mj_rnePostConstraint", "mj_forward", "mj_resetData"):
    setattr(mujoco, _name, _timed_function(getattr(mujoco, _name)))


def _make(env_id: str) -> Callable[[], gym.Env]:
    return lambda: gym.make(env_id)


def _interleaved(venvs: dict[str, gym.vector.VectorEnv], actions: np.ndarray, chunk: int) -> dict[str, list[float]]:
    """(wall, CPU, CPU inside MuJoCo) seconds of each vector env over all the actions, taking turns chunk by chunk."""
    times = {name: [0.0, 0.0, 0.0] for name in venvs}
    for venv in venvs.values():
        venv.reset(seed=0)
    for start in range(0, len(actions), chunk):
        part = actions[start : start + chunk]
        for name, venv in venvs.items():
            inside = INSIDE[0]
            wall, cpu = time.perf_counter(), time.process_time()
            for a in part:
                venv.step(a)
            times[name][0] += time.perf_counter() - wall
            times[name][1] += time.process_time() - cpu
            times[name][2] += (INSIDE[0] - inside) * 1e-9
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", default=",".join(MUJOCO_IDS), help="comma-separated environment ids")
    parser.add_argument("--envs", type=int, default=2, help="envs per vector env")
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per row (all envs together)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=500, help="vector steps each backend takes in turn")
    args = parser.parse_args()
    n = args.envs
    print(
        "| env | repeat | gymnasium sync (steps/s CPU) | natrl mujoco (steps/s CPU) | mujoco / sync "
        "| µs per env step, sync: all (in MuJoCo) | mujoco: all (in MuJoCo) | wall steps/s: sync, mujoco |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for repeat in range(args.repeats):
        for env_id in args.ids.split(","):
            space = gym.make(env_id).action_space
            rng = np.random.default_rng(repeat)
            actions = rng.uniform(space.low, space.high, (args.steps // n, n, *space.shape)).astype(np.float32)
            venvs = {
                "sync": SyncVectorEnv([_make(env_id)] * n, autoreset_mode=AutoresetMode.SAME_STEP, copy=False),
                "mujoco": MujocoSameStep(env_id, n),
            }
            times = _interleaved(venvs, actions, args.chunk)
            for venv in venvs.values():
                venv.close()
            steps = actions.shape[0] * n
            rate = {k: steps / cpu for k, (_, cpu, _) in times.items()}
            micro = {
                k: f"{1e6 * cpu / steps:.1f} ({1e6 * inside / steps:.1f})" for k, (_, cpu, inside) in times.items()
            }
            walls = ", ".join(f"{steps / times[k][0]:,.0f}" for k in venvs)
            print(
                f"| {env_id} | {repeat + 1} | {rate['sync']:,.0f} | {rate['mujoco']:,.0f} "
                f"| {rate['mujoco'] / rate['sync']:.2f}x | {micro['sync']} | {micro['mujoco']} | {walls} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
