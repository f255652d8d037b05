"""MinAtar (Young & Tian, 2019) as image observations: the CPU-sized image task of natrl's tests and benchmarks.

MinAtar's games (``MinAtar/Breakout-v1``, ``Freeway-v1``, ``SpaceInvaders-v1``, ``Asterix-v1``,
``Seaquest-v1``; ``pip install 'natrl[minatar]'``) observe a 10×10 grid with one boolean channel per
object kind. :class:`MinAtarImage` presents it as an image, uint8 (C, 10, 10) in {0, 255}, so that
``CnnPolicy`` takes it: scaled by 1/255 in the network, the channels are MinAtar's 0/1 again, and the
default extractor for images this small is :class:`natrl.rl.policies.MinAtarCNN` (the MinAtar paper's
network). Use it as ``PPO("MinAtar/Breakout-v1", wrapper_class=MinAtarImage, policy="CnnPolicy")``
or through the presets (``agents/ppo.toml [MinAtar/Breakout-v1]``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["MinAtarImage"]


class MinAtarImage(gym.ObservationWrapper):
    """Boolean (H, W, C) grids → uint8 (C, H, W) images with values 0 and 255 (channels first, so that the
    channel count, up to 10 in Seaquest, is never mistaken for a side)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.bool_ and len(space.shape) == 3):
            raise ValueError(f"MinAtarImage needs boolean (H, W, C) observations, got {space}")
        h, w, c = space.shape
        self.observation_space = gym.spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(np.asarray(observation, np.uint8) * np.uint8(255), -1, 0))
