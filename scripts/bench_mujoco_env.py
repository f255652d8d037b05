"""Raw env steps/s of gymnasium's MuJoCo tasks: gymnasium's SyncVectorEnv (SAME_STEP, as ``vec_env="sync"`` builds
it) against natrl's lean vector env (``vec_env="mujoco"``), and MuJoCo's own stepping alone.

    OMP_NUM_THREADS=1 python scripts/bench_mujoco_env.py --steps 20000 --repeats 2

Each row steps ``--envs`` copies with uniform random actions (drawn before the clock starts) for ``--steps`` env
steps and reports env steps per second of the process's CPU time (the machine may be shared) and of the wall
clock. "MuJoCo alone" sets ``data.ctrl`` and calls ``mujoco.mj_step(model, data, nstep=frame_skip)`` (and
``mj_rnePostConstraint`` where the task reads contact forces) with no resets: the floor both vector envs share.
The three run alternately in chunks of ``--chunk`` vector steps, so that a change in the machine's load falls on
all of them alike.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from natrl.rl.mujoco_env import MUJOCO_IDS, MujocoSameStep


def _vector_run(venv: gym.vector.VectorEnv) -> Callable[[np.ndarray], None]:
    venv.reset(seed=0)

    def run(actions: np.ndarray) -> None:
        for a in actions:
            venv.step(a)

    return run


def _mujoco_run(env_id: str, n_envs: int) -> Callable[[np.ndarray], None]:
    envs = [gym.make(env_id).unwrapped for _ in range(n_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    rne = env_id in ("Ant-v5", "Humanoid-v5")
    pairs = [(env.model, env.data) for env in envs]  # type: ignore[attr-defined]
    skip = envs[0].frame_skip  # type: ignore[attr-defined]

    def run(actions: np.ndarray) -> None:
        for a in actions:
            for (model, data), row in zip(pairs, a):
                data.ctrl[:] = row
                mujoco.mj_step(model, data, nstep=skip)
                if rne:
                    mujoco.mj_rnePostConstraint(model, data)

    return run


def _make(env_id: str) -> Callable[[], gym.Env]:
    return lambda: gym.make(env_id)


def _interleaved(
    runs: dict[str, Callable[[np.ndarray], None]], actions: np.ndarray, chunk: int
) -> dict[str, list[float]]:
    """(wall, CPU) seconds of each run over all the actions, the runs taking turns chunk by chunk."""
    times = {name: [0.0, 0.0] for name in runs}
    for start in range(0, len(actions), chunk):
        part = actions[start : start + chunk]
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run(part)
            times[name][0] += time.perf_counter() - wall
            times[name][1] += time.process_time() - cpu
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", default=",".join(MUJOCO_IDS), help="comma-separated environment ids")
    parser.add_argument("--envs", type=int, default=2, help="envs per vector env")
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per row (all envs together)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=500, help="vector steps each run takes in turn")
    args = parser.parse_args()
    n = args.envs
    print(
        "| env | repeat | gymnasium sync (steps/s CPU) | natrl mujoco (steps/s CPU) | MuJoCo alone (steps/s CPU) "
        "| mujoco / sync | µs per env step: sync, mujoco, MuJoCo alone | wall steps/s: sync, mujoco |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for repeat in range(args.repeats):
        for env_id in args.ids.split(","):
            space = gym.make(env_id).action_space
            rng = np.random.default_rng(repeat)
            actions = rng.uniform(space.low, space.high, (args.steps // n, n, *space.shape)).astype(np.float32)
            sync = SyncVectorEnv([_make(env_id)] * n, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
            lean = MujocoSameStep(env_id, n)
            runs = {"sync": _vector_run(sync), "mujoco": _vector_run(lean), "alone": _mujoco_run(env_id, n)}
            times = _interleaved(runs, actions, args.chunk)
            sync.close()
            lean.close()
            steps = actions.shape[0] * n
            rate = {k: steps / cpu for k, (_, cpu) in times.items()}
            micro = ", ".join(f"{1e6 / rate[k]:.1f}" for k in ("sync", "mujoco", "alone"))
            walls = ", ".join(f"{steps / times[k][0]:,.0f}" for k in ("sync", "mujoco"))
            print(
                f"| {env_id} | {repeat + 1} | {rate['sync']:,.0f} | {rate['mujoco']:,.0f} | {rate['alone']:,.0f} "
                f"| {rate['mujoco'] / rate['sync']:.2f}x | {micro} | {walls} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
