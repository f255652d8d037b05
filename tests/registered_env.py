"""A small env registered on import, for ``module:Env-v0`` ids and ``--gym-packages`` (tests only)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """Walk right along a corridor of ``length`` cells: +1 at the end (terminated), −0.01 per step."""

    action_space = spaces.Discrete(2)

    def __init__(self, length: int = 5) -> None:
        self.length = length
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos >= self.length
        return np.array([self.pos / self.length], np.float32), (1.0 if done else -0.01), done, False, {}


gym.register(id="NatrlCorridor-v0", entry_point=Corridor, max_episode_steps=50)
