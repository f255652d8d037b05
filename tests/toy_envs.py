"""Small tasks, one per observation or action space, for the space tests.

Each is a contextual bandit played for 8 steps per episode: a fresh random context every
step, a reward in [0, 1] (or a negative squared error) for the action's fit to it. The
optimal return and a uniformly random policy's expected return are in ``OPTIMAL`` and
``RANDOM``, so a learning threshold between them shows that the agent learned.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from torch import nn

EPISODE = 8


class _Bandit(gym.Env):
    observation_space: spaces.Space
    action_space: spaces.Space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._new_context(), {}

    def _new_context(self):
        raise NotImplementedError

    def _reward(self, action) -> float:
        raise NotImplementedError

    def step(self, action):
        reward = self._reward(action)
        self.t += 1
        return self._new_context(), reward, False, self.t >= EPISODE, {}


class MultiDiscreteActions(_Bandit):
    """Observe two digits in {0, 1, 2} (one-hot, a flat Box); answer both (MultiDiscrete([3, 3]))."""

    observation_space = spaces.Box(0, 1, (6,), np.float32)
    action_space = spaces.MultiDiscrete([3, 3])

    def _new_context(self):
        self.digits = self.np_random.integers(0, 3, size=2)
        obs = np.zeros(6, np.float32)
        obs[self.digits[0]] = obs[3 + self.digits[1]] = 1.0
        return obs

    def _reward(self, action) -> float:
        return float(np.mean(np.asarray(action) == self.digits))


class MultiBinaryActions(_Bandit):
    """Observe four signs; answer with the bits (MultiBinary(4)): reward = fraction of bits right."""

    observation_space = spaces.Box(-1, 1, (4,), np.float32)
    action_space = spaces.MultiBinary(4)

    def _new_context(self):
        self.signs = self.np_random.choice([-1.0, 1.0], size=4).astype(np.float32)
        return self.signs

    def _reward(self, action) -> float:
        return float(np.mean(np.asarray(action) == (self.signs > 0)))


class Box2DActions(_Bandit):
    """Observe a point in [−1, 1]⁴; answer it as a 2×2 Box action: reward = −mean squared error."""

    observation_space = spaces.Box(-1, 1, (4,), np.float32)
    action_space = spaces.Box(-2, 2, (2, 2), np.float32)

    def _new_context(self):
        self.target = self.np_random.uniform(-1, 1, size=4).astype(np.float32)
        return self.target

    def _reward(self, action) -> float:
        return -float(np.mean((np.asarray(action).reshape(-1) - self.target) ** 2))


class DictObservations(_Bandit):
    """Observe {"goal": Discrete(4), "shift": Box(−1, 1, (2,))}; answer (goal + [shift₀ > 0]) mod 4."""

    observation_space = spaces.Dict({"goal": spaces.Discrete(4), "shift": spaces.Box(-1, 1, (2,), np.float32)})
    action_space = spaces.Discrete(4)

    def _new_context(self):
        goal = int(self.np_random.integers(4))
        shift = self.np_random.uniform(-1, 1, size=2).astype(np.float32)
        self.answer = (goal + int(shift[0] > 0)) % 4
        return {"goal": goal, "shift": shift}

    def _reward(self, action) -> float:
        return float(int(action) == self.answer)


class DiscreteObservations(_Bandit):
    """Observe a state in Discrete(5); answer (state + 2) mod 5 in Discrete(5)."""

    observation_space = spaces.Discrete(5)
    action_space = spaces.Discrete(5)

    def _new_context(self):
        self.state = int(self.np_random.integers(5))
        return self.state

    def _reward(self, action) -> float:
        return float(int(action) == (self.state + 2) % 5)


class MatrixObservations(_Bandit):
    """Observe a 2×3 matrix; answer the row with the larger sum (Discrete(2))."""

    observation_space = spaces.Box(-1, 1, (2, 3), np.float32)
    action_space = spaces.Discrete(2)

    def _new_context(self):
        self.m = self.np_random.uniform(-1, 1, size=(2, 3)).astype(np.float32)
        return self.m

    def _reward(self, action) -> float:
        return float(int(action) == int(self.m.sum(1).argmax()))


class ImageObservations(_Bandit):
    """Observe a 36×36 uint8 image (channels last) that is bright in the left or right half; answer which."""

    observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = spaces.Discrete(2)

    def _new_context(self):
        self.side = int(self.np_random.integers(2))
        img = self.np_random.integers(0, 60, size=(36, 36, 1), dtype=np.uint8)
        img[:, self.side * 18 : (self.side + 1) * 18] += 150
        return img

    def _reward(self, action) -> float:
        return float(int(action) == self.side)


OPTIMAL = {
    MultiDiscreteActions: 8.0,
    MultiBinaryActions: 8.0,
    Box2DActions: 0.0,
    DictObservations: 8.0,
    DiscreteObservations: 8.0,
    MatrixObservations: 8.0,
    ImageObservations: 8.0,
}
RANDOM = {
    MultiDiscreteActions: 8 / 3,
    MultiBinaryActions: 4.0,
    Box2DActions: -8 * (1.0 + 1 / 3),  # unit-variance Gaussian around 0, target uniform in [−1, 1]
    DictObservations: 2.0,
    DiscreteObservations: 1.6,
    MatrixObservations: 4.0,
    ImageObservations: 4.0,
}


class LayerNormSiLUActorCritic(nn.Module):
    """A user's own network: a LayerNorm + SiLU trunk shared by a policy head and a value head."""

    def __init__(self, obs_dim: int, n_outputs: int, hidden: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.pi = nn.Linear(hidden, n_outputs)
        self.v = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.pi.weight, gain=0.01)
        nn.init.zeros_(self.pi.bias)

    def forward(self, obs):
        h = self.trunk(obs)
        return self.pi(h), self.v(h)
