"""Benchmark natrl's TRPO/NPG/PPO, optionally against stable-baselines3 (``natrl bench``).

A thin wrapper around :mod:`natrl.bench`; see ``python scripts/benchmark.py --help``.

Example::

    python scripts/benchmark.py --algos trpo,ppo --envs CartPole-v1 --seeds 0 --steps 20k --against sb3
"""

import sys

from natrl.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="scripts/benchmark.py"))
