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

from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, ClipReward, FrameStackObservation

from natrl.rl.trusted import register_namespace

__all__ = ["AtariWrapper", "FireAfterLostLife", "FireReset", "check_ale_vector_env", "make_ale_vector_env"]


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

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
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


class FireAfterLostLife(gym.vector.VectorWrapper):
    """Serve the ball after a lost life in ALE's vector env, as :class:`FireReset` does in one env.

    ALE's vector env presses FIRE only when a game is reset; in a game that waits for FIRE after a lost
    life (Breakout), a policy that seldom chooses FIRE then stalls, steps without reward, until it does.
    Here the next action of an env whose game lost a life and goes on is replaced by FIRE. The rollout
    records the policy's action for that step, whose choice had no effect (as the steps that FireReset
    takes inside one agent step).

    Args:
        env: an ``ale_py.vector_env.AtariVectorEnv`` of a game whose action 1 is FIRE (``info["lives"]``).
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self._lives = np.zeros(self.num_envs, np.int64)
        self._serve = np.zeros(self.num_envs, bool)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._lives = np.asarray(info["lives"], np.int64).copy()
        self._serve[:] = False
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        actions = np.array(actions, copy=True)
        actions[self._serve] = 1
        obs, reward, terminated, truncated, info = self.env.step(actions)
        lives = np.asarray(info["lives"], np.int64)
        # an env that ended was reset within this step (and served by ALE's fire-reset): its lives are the new game's
        self._serve = (lives < self._lives) & ~(np.asarray(terminated) | np.asarray(truncated))
        self._lives = lives.copy()
        return obs, reward, terminated, truncated, info


def check_ale_vector_env(env: Any, wrapper_class: Any) -> None:
    """Refuse, with one line, an agent whose ``vec_env="ale"`` cannot be honoured.

    Raises:
        ValueError: not an ``ALE/...`` id, a wrapper other than :class:`AtariWrapper`, or an ale-py without
            its vector env.
    """
    if not (isinstance(env, str) and env.startswith("ALE/")):
        raise ValueError(f"vec_env='ale' takes an ALE/ environment id (e.g. 'ALE/Breakout-v5'), got {env!r}")
    if wrapper_class is not AtariWrapper:
        raise ValueError(
            "vec_env='ale' preprocesses frames as natrl.rl.atari.AtariWrapper does; pass "
            "wrapper_class=AtariWrapper (the evaluation env uses it)"
        )
    try:
        from ale_py.vector_env import AtariVectorEnv  # noqa: F401
    except ImportError:
        raise ValueError("vec_env='ale' needs ale-py >= 0.10 (its vector env): pip install 'natrl[atari]'") from None


def make_ale_vector_env(
    env_id: str,
    n_envs: int,
    env_kwargs: Mapping[str, Any] | None = None,
    wrapper_kwargs: Mapping[str, Any] | None = None,
    num_threads: int = 0,
) -> gym.vector.VectorEnv:
    """ALE's own vector env (``ale_py.vector_env.AtariVectorEnv``, games stepped by C++ threads) with the
    preprocessing of :class:`AtariWrapper` and SAME_STEP autoreset: a drop-in, faster training env for
    agents built with ``wrapper_class=AtariWrapper`` (``vec_env="ale"``).

    The game, sticky actions (``repeat_action_probability``, 0.25 for v5 ids), action set and frame limit
    come from the id's registration and ``env_kwargs``; no-op starts, frame skip (with the max over the last
    two frames), frame size, stack and reward clipping from ``wrapper_kwargs`` as :class:`AtariWrapper`
    reads them. Observations are (stack, size, size) uint8, as :class:`AtariWrapper` returns them.

    Checked against :class:`AtariWrapper` (tests/test_atari.py): on a game without FIRE, with the same
    actions, frames and rewards are identical bit for bit. Where they differ: games with FIRE start after
    one FIRE frame here, after FIRE and one more agent step in :class:`FireReset`; after a lost life
    :class:`FireReset` serves within the step that lost it, :class:`FireAfterLostLife` (wrapped around
    the vector env of such games) at the next step; the first observation's stack is padded differently.

    Args:
        env_id: an ``ALE/...`` id.
        n_envs: games stepped together.
        env_kwargs: the id's ``gym.make`` keyword arguments (``frameskip`` is the wrapper's business).
        wrapper_kwargs: :class:`AtariWrapper`'s keyword arguments.
        num_threads: C++ threads (0: ALE's default, one per env up to the CPU count).
    """
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    spec = gym.spec(register_namespace(env_id))
    make = {**(spec.kwargs or {}), **dict(env_kwargs or {})}
    wrap = dict(wrapper_kwargs or {})
    venv = AtariVectorEnv(
        make["game"],
        n_envs,
        num_threads=num_threads,
        repeat_action_probability=float(make.get("repeat_action_probability", 0.25)),
        full_action_space=bool(make.get("full_action_space", False)),
        max_num_frames_per_episode=int(make.get("max_num_frames_per_episode", 108_000)),
        autoreset_mode=AutoresetMode.SAME_STEP,
        noop_max=int(wrap.get("noop_max", 30)),
        frameskip=int(wrap.get("frame_skip", 4)),
        img_height=int(wrap.get("screen_size", 84)),
        img_width=int(wrap.get("screen_size", 84)),
        stack_num=int(wrap.get("frame_stack", 4)),
        reward_clipping=bool(wrap.get("clip_reward", True)),
        grayscale=True,
        maxpool=True,
        episodic_life=False,
        use_fire_reset=True,
    )
    actions = venv.ale.get_action_set()
    if len(actions) >= 3 and actions[1].name == "FIRE":  # the condition of FireReset
        return FireAfterLostLife(venv)
    return venv
