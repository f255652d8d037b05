"""Atari preprocessing from gymnasium's own wrappers, as the DQN / A2C / PPO / ACKTR papers use it.

:class:`AtariWrapper` composes, on an ``ALE/...-v5`` env made with ``frameskip=1``:

* :class:`gymnasium.wrappers.AtariPreprocessing`: up to 30 no-op starts, 4-frame skip with a max over
  the last two frames, 84×84 grayscale uint8 frames;
* :class:`FireReset` for games that wait for FIRE after a reset (Breakout, …; gymnasium has no such
  wrapper);
* :class:`gymnasium.wrappers.ClipReward` to [−1, 1] (Atari rewards are integers: their sign);
* :class:`gymnasium.wrappers.FrameStackObservation`: the last 4 frames, shape (4, 84, 84) uint8, which
  natrl stores as uint8 and feeds to NatureCNN scaled by 1/255.

Episodes are whole games (no end-of-life termination), so training and evaluation returns are game
scores. Use it from Python as ``PPO("ALE/Breakout-v5", env_kwargs={"frameskip": 1},
wrapper_class=AtariWrapper)`` or from the presets (``agents/ppo.toml [ALE/Breakout-v5]``); Atari ids
need ``pip install 'natrl[atari]'`` (ale-py, which ships the ROMs, and OpenCV for the resizing).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, ClipReward, FrameStackObservation

__all__ = ["AtariWrapper", "FireReset"]


class FireReset(gym.Wrapper):
    """Press FIRE (and then the next action, as the DQN code does) after every reset, and FIRE after every
    lost life, for games that otherwise wait (a policy that never fires would stall until truncation);
    a game that ends during those steps is reset again."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
        if len(meanings) < 3 or meanings[1] != "FIRE":
            raise ValueError(f"FireReset needs a game whose action 1 is FIRE, got {meanings}")

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives", 0)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = info.get("lives", 0)
        if lives < self.lives and not (terminated or truncated):
            obs, more, terminated, truncated, info = self.env.step(1)  # serve the next ball
            reward = float(reward) + float(more)
        self.lives = info.get("lives", lives)
        return obs, reward, terminated, truncated, info


class AtariWrapper(gym.Wrapper):
    """The standard Atari preprocessing (module docstring) as one wrapper.

    Args:
        env: an ALE env made with ``frameskip=1`` (AtariPreprocessing skips frames itself).
        noop_max: most no-op actions at the start of a game.
        frame_skip: frames per agent step.
        screen_size: side of the square grayscale frame.
        frame_stack: frames stacked into one observation.
        clip_reward: clip rewards to [−1, 1].
    """

    def __init__(
        self,
        env: gym.Env,
        noop_max: int = 30,
        frame_skip: int = 4,
        screen_size: int = 84,
        frame_stack: int = 4,
        clip_reward: bool = True,
    ) -> None:
        inner: gym.Env = AtariPreprocessing(
            env, noop_max=noop_max, frame_skip=frame_skip, screen_size=screen_size, grayscale_obs=True,
            scale_obs=False, terminal_on_life_loss=False,
        )  # fmt: skip
        meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
        if len(meanings) >= 3 and meanings[1] == "FIRE":
            inner = FireReset(inner)
        if clip_reward:
            inner = ClipReward(inner, -1.0, 1.0)
        super().__init__(FrameStackObservation(inner, frame_stack))
