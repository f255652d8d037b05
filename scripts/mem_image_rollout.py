"""Memory of one rollout of Atari-sized image observations (84×84×4 uint8 frames).

Builds PPO with the CnnPolicy on an env whose observations have the shape and dtype of
preprocessed, frame-stacked Atari (Box(0, 255, (84, 84, 4), uint8)), collects one rollout of
``--steps`` steps and reports the bytes of the stored observations and the process's peak
resident memory before and after (Linux ``ru_maxrss``). Observations are stored as uint8 and
converted to float per batch inside the networks, so the stored rollout is steps × 28,224 bytes.

    python scripts/mem_image_rollout.py --steps 2048
    python scripts/mem_image_rollout.py --envs 8 --steps 128
"""

from __future__ import annotations

import argparse
import resource

import gymnasium as gym
import numpy as np
import torch

from natrl import PPO


class AtariShaped(gym.Env):
    """Random 84×84×4 uint8 frames, 6 actions, 128-step episodes."""

    observation_space = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    action_space = gym.spaces.Discrete(6)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (84, 84, 4), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        frame = self.np_random.integers(0, 256, (84, 84, 4), dtype=np.uint8)
        return frame, float(action == 0), False, self.t >= 128, {}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2048, help="steps per env")
    parser.add_argument("--envs", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    agent = PPO(AtariShaped, policy="CnnPolicy", n_envs=args.envs, n_steps=args.steps, torch_threads=None)
    _ = agent.collector  # the vector env exists before the measurement, as in training
    with torch.no_grad():  # load the convolution kernels (code and caches, not rollout memory) first
        agent.actor.features_of(torch.zeros((18, *agent.actor.obs_codec.shape), dtype=torch.uint8))
    before = peak_mb()
    batch, _ = agent._make_batch()
    after = peak_mb()
    print(f"stored observations: {tuple(batch.obs.shape)} {batch.obs.dtype}, {batch.obs.nbytes / 2**20:.1f} MiB")
    print(f"as float32 they would be {batch.obs.numel() * 4 / 2**20:.1f} MiB")
    print(f"peak RSS: {before:.0f} MiB after construction, {after:.0f} MiB after one rollout (+{after - before:.0f})")


if __name__ == "__main__":
    main()
