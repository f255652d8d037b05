"""A user's Gymnasium vector env trained on in SAME_STEP autoreset mode, whatever mode it was built with.

natrl's rollouts take SAME_STEP autoreset: when an episode ends, the step returns the next episode's first
observation and puts the last one in ``info["final_obs"]``, so every step of a rollout is a real transition.
Gymnasium's vector envs autoreset in NEXT_STEP mode by default (``SyncVectorEnv(fns)``, ``gym.make_vec(id, n,
vectorization_mode="sync")``): the step after an episode's last one resets that env, ignores its action and returns
a reward of 0. :class:`SameStepAutoreset` drives such a ``SyncVectorEnv`` or ``AsyncVectorEnv`` with SAME_STEP's
contract: after a step in which some envs ended, it keeps their last observations and resets those envs alone
(Gymnasium's ``reset(options={"reset_mask": ended})``), inside the same ``step`` call. The envs see the same calls
in the same order as under SAME_STEP (step, then a reset without a seed for the envs that ended; Gymnasium passes
them ``options={}`` where SAME_STEP passes None), so the transitions are the same (tested against a SAME_STEP env
built from the same seeds). The vector env's attribute API (``envs``, ``get_attr``, ``set_attr``, ``call``) is the
wrapped env's.

Other vector envs that do not autoreset in SAME_STEP mode are refused with the fix: a vector wrapper around one
(whose own statistics a partial reset would not reach), a mode without autoreset, and an env's own vector
implementation (``gym.make_vec("CartPole-v1", n)`` builds CartPole's ``CartPoleVectorEnv``, which cannot reset
some of its envs alone: ``vectorization_mode="sync"`` builds Gymnasium's ``SyncVectorEnv``, which natrl adapts).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper
from gymnasium.vector.utils import iterate

__all__ = ["SameStepAutoreset", "same_step_vector_env"]


def _is_mode(mode: Any, expected: AutoresetMode) -> bool:
    return mode == expected or str(mode) == str(expected)


def same_step_vector_env(venv: VectorEnv) -> VectorEnv:
    """``venv`` itself when it autoresets in SAME_STEP mode (or says nothing of its mode), a
    :class:`SameStepAutoreset` around a Sync/AsyncVectorEnv in NEXT_STEP mode.

    Raises:
        ValueError: any other mode or vector env, with the fix (build it with SAME_STEP, or pass the id).
    """
    mode = venv.metadata.get("autoreset_mode")
    if mode is None or _is_mode(mode, AutoresetMode.SAME_STEP):
        return venv
    if _is_mode(mode, AutoresetMode.NEXT_STEP) and isinstance(venv, (SyncVectorEnv, AsyncVectorEnv)):
        return SameStepAutoreset(venv)
    same_step = "autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP"
    gymnasiums = isinstance(venv, (SyncVectorEnv, AsyncVectorEnv))
    if not gymnasiums:
        fix = (
            "build Gymnasium's own vector env, gym.make_vec(id, n, vectorization_mode='sync') (or 'async'), or pass "
            "the id: natrl builds its own vector envs"
        )
    elif getattr(venv, "spec", None) is None:
        fix = f"build it as {type(venv).__name__}(env_fns, {same_step})"
    else:
        fix = "build it with gym.make_vec's default autoreset mode (NEXT_STEP, which natrl adapts), or pass the id"
    where = "" if gymnasiums else f" ({type(venv).__name__})"
    raise ValueError(
        f"the vector env{where} autoresets in {mode} mode; natrl needs SAME_STEP (final observations in the "
        f"step's info) and adapts only a plain Sync/AsyncVectorEnv in NEXT_STEP mode: {fix}"
    )


class SameStepAutoreset(VectorWrapper):
    """A Sync/AsyncVectorEnv in NEXT_STEP autoreset mode stepped with SAME_STEP's contract (module docstring).

    ``step`` returns, for the envs whose episode ended, the next episode's first observation, with the last one in
    ``info["final_obs"]`` and the last step's info in ``info["final_info"]`` (masks ``"_final_obs"`` and
    ``"_final_info"``), as a SAME_STEP ``SyncVectorEnv`` does. The step's top-level info holds the last step's
    info for every env, with the keys of the reset's info it lacks (a SAME_STEP env puts the reset's info there for
    the envs that ended; ``final_info`` is the same in both).

    Args:
        env: a ``SyncVectorEnv`` or ``AsyncVectorEnv`` in NEXT_STEP mode.
    """

    def __init__(self, env: SyncVectorEnv | AsyncVectorEnv) -> None:
        super().__init__(env)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    @property
    def envs(self) -> Any:
        """The sub-envs of a wrapped ``SyncVectorEnv`` (AttributeError for an ``AsyncVectorEnv``, as there)."""
        return self.env.envs  # type: ignore[attr-defined]

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Every sub-env's attribute ``name`` (the wrapped env's ``get_attr``)."""
        return self.env.get_attr(name)  # type: ignore[attr-defined]

    def set_attr(self, name: str, values: Any) -> None:
        """Set every sub-env's attribute ``name`` (the wrapped env's ``set_attr``)."""
        self.env.set_attr(name, values)  # type: ignore[attr-defined]

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call every sub-env's method ``name`` (the wrapped env's ``call``)."""
        return self.env.call(name, *args, **kwargs)  # type: ignore[attr-defined]

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        ended = np.logical_or(terminated, truncated)
        if ended.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i, single in enumerate(iterate(self.env.observation_space, obs)):
                if ended[i]:
                    final_obs[i] = copy.deepcopy(single)  # the reset below may overwrite the env's buffer
            step_info = dict(info)
            obs, reset_info = self.env.reset(options={"reset_mask": ended})
            info = {**step_info, **{k: v for k, v in reset_info.items() if k not in step_info}}
            info["final_obs"], info["_final_obs"] = final_obs, ended.copy()
            info["final_info"], info["_final_info"] = step_info, ended.copy()
        return obs, reward, terminated, truncated, info
