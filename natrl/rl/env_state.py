"""The complete state of a vector env as plain data, so that a resumed run continues its episodes exactly.

Gymnasium has no ``get_state``/``set_state``; for the envs whose whole state is known this module reads it
and writes it back:

* classic control (``gymnasium.envs.classic_control``): the env's plain attributes (``state``,
  ``steps_beyond_terminated``, ``last_u``, …) and its random generator;
* MuJoCo (``gymnasium.envs.mujoco``): MuJoCo's full integration state (``mj_getState`` with
  ``mjSTATE_INTEGRATION``: time, qpos, qvel, act, warm start, controls, applied forces, mocap), the env's
  plain attributes and its random generator;
* the wrappers ``gym.make`` adds (``TimeLimit``'s step count, ``OrderEnforcing``, ``PassiveEnvChecker``)
  and natrl's stateless observation wrappers;

in a :class:`gymnasium.vector.SyncVectorEnv` (the vector env of ``vec_env="sync"``) or in natrl's
:class:`~natrl.rl.mujoco_env.MujocoSameStep` (``vec_env="mujoco"``, whose state is that of the same envs: either
backend resumes the other's checkpoint). For any other env or vector env :func:`vector_env_state` returns None
and a resumed run starts fresh episodes, as before.
The state holds tensors (NumPy arrays and scalars converted losslessly), numbers and dicts only: a weights-only
checkpoint stores it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv, VectorEnv

from natrl.rl.mujoco_env import MujocoSameStep
from natrl.rl.vector_autoreset import SameStepAutoreset

__all__ = ["from_storable", "restore_vector_env_state", "to_storable", "vector_env_state"]

_ENV_MODULES = ("gymnasium.envs.classic_control.", "gymnasium.envs.mujoco.")
_WRAPPERS = ("TimeLimit", "OrderEnforcing", "PassiveEnvChecker")
_STATELESS_WRAPPER_MODULES = ("natrl.rl.pomdp",)
_PLAIN = (bool, int, float, np.ndarray, np.generic, type(None))


def _layers(env: gym.Env) -> list[gym.Env] | None:
    """The wrapper chain down to the base env, or None when a layer's state is not known."""
    layers: list[gym.Env] = []
    layer: Any = env
    while isinstance(layer, gym.Wrapper):
        cls = type(layer)
        known = (cls.__module__.startswith("gymnasium.wrappers") and cls.__name__ in _WRAPPERS) or (
            cls.__module__ in _STATELESS_WRAPPER_MODULES
        )
        if not known:
            return None
        layers.append(layer)
        layer = layer.env
    if not type(layer).__module__.startswith(_ENV_MODULES):
        return None
    layers.append(layer)
    return layers


def _plain_attributes(obj: Any) -> dict[str, Any]:
    return {
        k: (v.copy() if isinstance(v, np.ndarray) else v)
        for k, v in vars(obj).items()
        if isinstance(v, _PLAIN) and not k.startswith("__")
    }


def _mujoco_state(env: Any) -> dict[str, Any] | None:
    model, data = getattr(env, "model", None), getattr(env, "data", None)
    if model is None or data is None:
        return None
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec), np.float64)
    mujoco.mj_getState(model, data, state, spec)
    # what the env's Python reads between steps is more than the integration state: e.g. the body positions
    # of the last forward pass (Ant's reward uses xpos as it was before the step); the arrays sized by the
    # model are kept as they are, those sized by the step's constraints (efc_*) the next step recomputes
    derived = {}
    for name in dir(data):
        if name.startswith(("_", "efc_")):
            continue
        value = getattr(data, name, None)
        if isinstance(value, np.ndarray) and value.size and value.dtype.kind in "fiub":
            derived[name] = value.copy()
    return {"integration": state, "arrays": derived}


def _set_mujoco_state(env: Any, saved: dict[str, Any]) -> None:
    import mujoco

    model, data = env.model, env.data
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.asarray(saved["integration"], np.float64)
    mujoco.mj_setState(model, data, state, spec)
    mujoco.mj_forward(model, data)  # contacts and constraint sizes consistent with the state
    for name, value in saved["arrays"].items():
        current = getattr(data, name, None)
        if isinstance(current, np.ndarray) and current.shape == value.shape:
            current[...] = value
    mujoco.mj_setState(model, data, state, spec)


def _env_state(env: gym.Env) -> list[dict[str, Any]] | None:
    layers = _layers(env)
    if layers is None:
        return None
    states = []
    for layer in layers:
        state: dict[str, Any] = {"attributes": _plain_attributes(layer)}
        generator = vars(layer).get("_np_random")
        if isinstance(generator, np.random.Generator):
            state["np_random"] = generator.bit_generator.state
        if layer is layers[-1]:
            physics = _mujoco_state(layer)
            if physics is not None:
                state["mujoco"] = physics
        states.append(state)
    return states


def _restore_env_state(env: gym.Env, states: list[dict[str, Any]]) -> None:
    layers = _layers(env)
    if layers is None or len(layers) != len(states):
        raise ValueError("the saved env state does not match this env's wrappers")
    for layer, state in zip(layers, states):
        for key, value in state["attributes"].items():
            setattr(layer, key, value.copy() if isinstance(value, np.ndarray) else value)
        if "np_random" in state:
            generator = vars(layer).get("_np_random")
            if not isinstance(generator, np.random.Generator):
                layer._np_random = generator = np.random.default_rng()
            generator.bit_generator.state = state["np_random"]
        if "mujoco" in state:
            _set_mujoco_state(layer, state["mujoco"])


def to_storable(obj: Any) -> Any:
    """NumPy arrays and scalars in nested dicts/lists as tensors (weights-only checkpoints hold no NumPy)."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, dict):
        return {k: to_storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_storable(v) for v in obj]
    return obj


def from_storable(obj: Any) -> Any:
    """Inverse of :func:`to_storable`: tensors back to NumPy arrays (0-d ones to NumPy scalars, same dtype)."""
    if isinstance(obj, torch.Tensor):
        arr = obj.numpy().copy()
        return arr[()] if arr.ndim == 0 else arr
    if isinstance(obj, dict):
        return {k: from_storable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_storable(v) for v in obj]
    return obj


def vector_env_state(venv: VectorEnv) -> list[list[dict[str, Any]]] | None:
    """Every sub-env's state (wrappers, physics, random generator) in :func:`to_storable`'s form, or None when
    it cannot be captured."""
    if isinstance(venv, SameStepAutoreset):  # a user's NEXT_STEP SyncVectorEnv: its sub-envs hold the state
        venv = venv.env
    if isinstance(venv, MujocoSameStep):
        venv.record_episode_steps()
    elif not isinstance(venv, SyncVectorEnv):
        return None
    states = [_env_state(env) for env in venv.envs]
    if any(s is None for s in states):
        return None
    return to_storable(states)


def restore_vector_env_state(venv: VectorEnv, states: list[list[dict[str, Any]]]) -> None:
    """Write :func:`vector_env_state`'s result back into a vector env built the same way.

    Raises:
        ValueError: the vector env is not a SyncVectorEnv (or MujocoSameStep) of the same envs and wrappers.
    """
    if isinstance(venv, SameStepAutoreset):
        venv = venv.env
    if not isinstance(venv, (SyncVectorEnv, MujocoSameStep)) or len(venv.envs) != len(states):
        raise ValueError("the saved env states do not match this vector env")
    for env, state in zip(venv.envs, from_storable(states)):
        _restore_env_state(env, state)
    if isinstance(venv, MujocoSameStep):
        venv.resume_from_envs()
