"""EnvPool (``pip install 'natrl[envpool]'``) as a training vector env: MuJoCo and the other ids it
implements in C++, stepped by its own threads (``vec_env="envpool"``).

EnvPool's gymnasium vector env autoresets in NEXT_STEP mode (the step after an episode's last one
resets that env and returns a reward of 0); natrl's rollouts take SAME_STEP mode (the final
observation in ``info["final_obs"]``, the next episode's first observation returned at once), so
:class:`EnvPoolSameStep` resets the envs that just ended with one extra EnvPool step of those envs
only, inside the same ``step`` call.

EnvPool reimplements the environments. Checked against gymnasium's from the same initial state
(``reset_noise_scale=0``) with the same random actions (tests/test_envpool.py): Hopper-v5,
Walker2d-v5 and Swimmer-v5 observations agree to 1e-6 over whole episodes (rewards to 1e-7:
EnvPool returns them in float32); HalfCheetah-v5 agrees for 59 steps, after which float rounding is
amplified by the dynamics; Ant-v5 and Humanoid-v5 differ at 1e-6 from the first steps (contact and
inertia terms) and the gap grows with the contacts: the same tasks, not the same trajectories.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

__all__ = ["EnvPoolSameStep", "check_envpool_env", "envpool_ids"]


def envpool_ids() -> list[str]:
    """The environment ids EnvPool implements (empty when it is not installed)."""
    try:
        import envpool
    except ImportError:
        return []
    return list(envpool.list_all_envs())


def check_envpool_env(env: Any, wrapper_class: Any) -> None:
    """Refuse, with one line, an agent whose ``vec_env="envpool"`` cannot be honoured.

    Raises:
        ValueError: EnvPool missing, an id it does not implement, or a wrapper.
    """
    ids = envpool_ids()
    if not ids:
        raise ValueError("vec_env='envpool' needs EnvPool, which is not installed: pip install 'natrl[envpool]'")
    if not (isinstance(env, str) and env in ids):
        raise ValueError(f"vec_env='envpool' takes an id EnvPool implements (e.g. 'Walker2d-v5'), got {env!r}")
    if wrapper_class is not None:
        raise ValueError("vec_env='envpool' builds EnvPool's own envs, which take no gymnasium wrapper")


class EnvPoolSameStep(VectorEnv):
    """An EnvPool vector env of ``num_envs`` copies of ``env_id`` with SAME_STEP autoreset.

    Args:
        env_id: an id EnvPool implements.
        num_envs: environments stepped together.
        env_kwargs: EnvPool config keys (e.g. ``reset_noise_scale``); gymnasium's make-kwargs of the same
            name mean the same for MuJoCo.
        num_threads: EnvPool's threads (0: one per env, up to the CPU count).
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(
        self, env_id: str, num_envs: int, env_kwargs: Mapping[str, Any] | None = None, num_threads: int = 0
    ) -> None:
        import envpool

        self.env_id = env_id
        self.num_envs = int(num_envs)
        self._kwargs = {**dict(env_kwargs or {}), "num_threads": int(num_threads)}
        self._pool = envpool.make_gymnasium(env_id, num_envs=self.num_envs, seed=0, **self._kwargs)
        self.single_observation_space = self._pool.single_observation_space
        self.single_action_space = self._pool.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if isinstance(seed, int):  # EnvPool seeds its envs seed, seed + 1, ... when it is built
            import envpool

            self._pool.close()
            self._pool = envpool.make_gymnasium(self.env_id, num_envs=self.num_envs, seed=seed, **self._kwargs)
        obs, info = self._pool.reset()
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._pool.step(np.asarray(actions))
        ended = np.flatnonzero(np.logical_or(terminated, truncated))
        if ended.size:
            info = dict(info)
            info["final_obs"] = obs.copy()  # rows of the envs that ended: their last observation
            info["_final_obs"] = np.logical_or(terminated, truncated)
            # EnvPool resets an ended env on its next step, whatever the action: step those envs alone
            shape: tuple[int, ...] = self.single_action_space.shape or ()
            idle = np.zeros((ended.size, *shape), self.single_action_space.dtype)
            first, *_ = self._pool.step(idle, ended)
            obs = obs.copy()
            obs[ended] = first
        return obs, reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self._pool.close()
