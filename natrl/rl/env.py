"""Building Gymnasium environments for agents, with clear errors for bad input.

An agent accepts an environment id (``"Hopper-v5"``), a ``gymnasium.Env``
instance, or a factory (a zero-argument callable returning a new env). Training
uses a vector env with autoreset in SAME_STEP mode: when an episode ends the
final observation is in ``info["final_obs"]`` and the returned observation is
already the first one of the next episode, so every step of the rollout is a real
transition (no dummy reset steps as with NEXT_STEP mode).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from natrl.rl.spaces import UnsupportedSpaceError, check_spaces

__all__ = [
    "EnvLike",
    "NonFiniteError",
    "UnsupportedSpaceError",
    "VectorEnvBuilder",
    "check_spaces",
    "env_factory",
    "env_name",
    "make_vector_env",
    "register_env_id",
    "register_namespace",
]

EnvLike = str | gym.Env | Callable[[], gym.Env]


class NonFiniteError(FloatingPointError):
    """An environment returned a NaN or infinite observation or reward."""


def _unknown_env_message(env_id: str) -> str:
    ids = list(gym.registry.keys())
    close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    mujoco = (
        " MuJoCo environments need the extra: pip install 'natrl[mujoco]'."
        if any(
            k in env_id for k in ("Hopper", "Walker", "Cheetah", "Ant", "Humanoid", "Swimmer", "Reacher", "Inverted")
        )
        else ""
    )
    return (
        f"unknown environment id {env_id!r}.{hint}{mujoco} "
        "List the registered ids with `natrl list` or `gymnasium.pprint_registry()`."
    )


# namespaces whose ids a package registers: (module, how to register, what the id needs, natrl's extra)
_NAMESPACES: dict[str, tuple[str, Callable[[Any], None], str, str]] = {
    "ALE": ("ale_py", gym.register_envs, "an Atari game, which needs ale-py", "atari"),
    "MinAtar": ("minatar.gym", lambda module: module.register_envs(), "a MinAtar game, which needs MinAtar", "minatar"),
}


def register_env_id(env_id: str) -> str:
    """Register what an id needs: ``module:Env-v0`` imports ``module`` (as ``gym.make`` does), ``ALE/…`` ids
    register ale-py's environments, ``MinAtar/…`` ids MinAtar's. Returns the id without the module part."""
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"environment id {module}:{env_id}: cannot import {module!r} ({exc})") from None
    return register_namespace(env_id)


def register_namespace(env_id: str) -> str:
    """Register the package behind an ``ALE/…`` or ``MinAtar/…`` id (natrl's list, never the caller's module)
    when the id is not registered yet; returns ``env_id``."""
    namespace = env_id.partition("/")[0] if "/" in env_id else None
    if env_id not in gym.registry and namespace in _NAMESPACES:
        module, register, what, extra = _NAMESPACES[namespace]
        try:
            package = importlib.import_module(module)
        except ImportError:
            raise ValueError(f"environment id {env_id!r} is {what}: pip install 'natrl[{extra}]'") from None
        register(package)
    return env_id


def env_factory(
    env: EnvLike,
    env_kwargs: Mapping[str, Any] | None = None,
    wrapper_class: Callable[..., gym.Env] | None = None,
    wrapper_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[], gym.Env]:
    """A zero-argument factory that builds a fresh instance of ``env``.

    Args:
        env: an id (``"Hopper-v5"``, ``"module:Env-v0"``, ``"ALE/Pong-v5"``), a ``gymnasium.Env``
            (rebuilt from its spec: its make-kwargs and the wrappers gymnasium records) or a factory.
        env_kwargs: keyword arguments of ``gym.make`` (ids only).
        wrapper_class: a wrapper applied to every copy, ``wrapper_class(env, **wrapper_kwargs)``.
        wrapper_kwargs: its keyword arguments.

    Raises:
        ValueError: unknown environment id (with close matches and how to list ids), an id whose
            module cannot be imported, an Env without a spec, env_kwargs for a non-id.
        TypeError: ``env`` is neither an id, an Env, nor a callable.
    """
    kwargs = dict(env_kwargs or {})
    steps = kwargs.get("max_episode_steps")
    if (
        "max_episode_steps" in kwargs
        and steps is not None
        and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1)
    ):
        raise ValueError(f"env_kwargs max_episode_steps must be a positive integer (or None), got {steps!r}")
    if wrapper_class is not None and not callable(wrapper_class):
        raise TypeError(f"wrapper_class must be a gymnasium.Wrapper class or a callable, got {wrapper_class!r}")
    if isinstance(env, str) and kwargs:
        _check_bool_kwargs(env, kwargs)
    if kwargs and not isinstance(env, str):
        raise ValueError("env_kwargs apply to environment ids (gym.make); give a factory the arguments itself")
    if isinstance(env, str):
        env_id = register_env_id(env)
        if env_id not in gym.registry:
            raise ValueError(_unknown_env_message(env_id))

        def base() -> gym.Env:
            return gym.make(env_id, **kwargs)

    elif isinstance(env, gym.Env):
        spec = env.spec
        if spec is None:
            raise ValueError(
                "got a gymnasium.Env instance without a registered spec, so natrl cannot build the "
                "extra copies it needs (vector envs, evaluation env); pass a factory instead, e.g. "
                "TRPO(lambda: MyEnv(), ...)"
            )

        def base() -> gym.Env:
            return gym.make(spec)

    elif callable(env):
        base = env
    else:
        raise TypeError(
            f"env must be an environment id, a gymnasium.Env or a factory returning one, got {type(env).__name__}"
        )
    if wrapper_class is None:
        return base
    wkw = dict(wrapper_kwargs or {})
    return lambda: wrapper_class(base(), **wkw)


def _check_bool_kwargs(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """A keyword whose default is a bool (``gym.make``'s ``disable_env_checker``, CartPole's
    ``sutton_barto_reward``, …) must be given a bool: a string such as ``"maybe"`` would be read as True."""
    import inspect

    defaults = {"disable_env_checker": False, "order_enforce": True, "autoreset": False}
    spec = gym.registry.get(env_id.partition(":")[2] if ":" in env_id else env_id)
    if spec is not None:
        try:
            creator = (
                gym.envs.registration.load_env_creator(spec.entry_point)
                if isinstance(spec.entry_point, str)
                else spec.entry_point
            )
            parameters = inspect.signature(creator).parameters.values()
            defaults.update({p.name: p.default for p in parameters if isinstance(p.default, bool)})
        except (ImportError, AttributeError, TypeError, ValueError):  # the env's own error comes at make
            pass
    for key, value in kwargs.items():
        if key in defaults and isinstance(defaults[key], bool) and not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"env_kwargs {key} must be true or false, got {value!r}")


def env_name(env: EnvLike) -> str:
    """A short name for logs and run directories."""
    if isinstance(env, str):
        return env
    if isinstance(env, gym.Env) and env.spec is not None:
        return env.spec.id
    return getattr(env, "__name__", type(env).__name__)


def make_vector_env(factory: Callable[[], gym.Env], n_envs: int, *, mode: str = "sync") -> VectorEnv:
    """A vector env of ``n_envs`` copies with SAME_STEP autoreset.

    Args:
        factory: builds one env.
        n_envs: number of copies.
        mode: ``"sync"`` (one process) or ``"async"`` (one subprocess per env).
    """
    if mode not in ("sync", "async"):
        raise ValueError(f"vec_env must be 'sync' or 'async', got {mode!r}")
    fns = [factory for _ in range(n_envs)]
    kwargs: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}
    # copy=False: the rollout copies each observation into its own buffer before the next step
    venv: VectorEnv = (
        SyncVectorEnv(fns, copy=False, **kwargs) if mode == "sync" else AsyncVectorEnv(fns, copy=False, **kwargs)
    )
    check_spaces(venv.single_observation_space, venv.single_action_space)
    return venv


@dataclass(frozen=True)
class VectorEnvBuilder:
    """How one process (the learner, or each rollout worker) builds its training vector env: ``builder(n_envs)``.

    A picklable recipe, so that Ray workers build the same backend as the learner would:

    * ``"sync"`` / ``"async"``: gymnasium's vector envs over ``factory`` (``make_vector_env``);
    * ``"ale"``: ALE's C++ vector env with :class:`~natrl.rl.atari.AtariWrapper`'s preprocessing
      (:func:`natrl.rl.atari.make_ale_vector_env`);
    * ``"envpool"``: EnvPool's envs (:class:`natrl.rl.envpool_env.EnvPoolSameStep`).

    The ``"ale"`` and ``"envpool"`` envs are built from ``env_id``, not from ``factory``; the observation and
    action spaces they produce are checked against ``observation_space`` and ``action_space`` (those of the
    agent's env), so a backend that would feed the policy other inputs is refused with one line.
    """

    backend: str
    factory: Callable[[], gym.Env] | None
    env_id: str | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    wrapper_kwargs: Mapping[str, Any] = field(default_factory=dict)
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None

    def __call__(self, n_envs: int) -> VectorEnv:
        if self.backend in ("sync", "async"):
            if self.factory is None:
                raise ValueError(f"vec_env={self.backend!r} needs an env factory")
            return make_vector_env(self.factory, n_envs, mode=self.backend)
        if self.backend == "ale":
            from natrl.rl.atari import make_ale_vector_env

            assert self.env_id is not None
            venv: VectorEnv = make_ale_vector_env(self.env_id, n_envs, self.env_kwargs, self.wrapper_kwargs)
            if self.observation_space is not None and venv.single_observation_space != self.observation_space:
                venv.close()
                raise ValueError(
                    f"vec_env='ale': ALE's vector env observes {venv.single_observation_space}, the agent's env "
                    f"{self.observation_space}; use vec_env='sync'"
                )
            return venv
        if self.backend == "envpool":
            from natrl.rl.envpool_env import EnvPoolSameStep

            assert self.env_id is not None
            pool = EnvPoolSameStep(self.env_id, n_envs, self.env_kwargs)
            shapes = (pool.single_observation_space.shape, pool.single_action_space.shape)
            expected = (
                None if self.observation_space is None else self.observation_space.shape,
                None if self.action_space is None else self.action_space.shape,
            )
            if self.observation_space is not None and shapes != expected:
                pool.close()
                raise ValueError(
                    f"vec_env='envpool': EnvPool's {self.env_id} has observation and action shapes {shapes}, "
                    f"gymnasium's {expected}; use vec_env='sync'"
                )
            return pool
        raise ValueError(f"vec_env must be 'sync', 'async', 'ale' or 'envpool', got {self.backend!r}")


def check_finite(obs: np.ndarray, rewards: np.ndarray, step: int) -> None:
    """Raise :class:`NonFiniteError` naming the env index and step on NaN/inf."""
    if np.isfinite(obs).all() and np.isfinite(rewards).all():
        return
    bad_obs = ~np.isfinite(obs.reshape(obs.shape[0], -1)).all(axis=1)
    bad_rew = ~np.isfinite(rewards)
    idx = int(np.flatnonzero(bad_obs | bad_rew)[0])
    what = "observation" if bad_obs[idx] else "reward"
    raise NonFiniteError(
        f"environment {idx} returned a non-finite {what} at step {step}; the update was not "
        "applied and the policy is unchanged. Check the environment or wrap it to clip/sanitise."
    )


def check_float32_rewards(stored: np.ndarray, first_step: int) -> None:
    """Raise :class:`NonFiniteError` when rewards that were finite overflowed float32 (T, E) storage."""
    if np.isfinite(stored).all():
        return
    t, e = (int(i[0]) for i in np.nonzero(~np.isfinite(stored)))
    raise NonFiniteError(
        f"environment {e} returned a reward beyond float32's range (±3.4e38) at step "
        f"{first_step + t * stored.shape[1]}, and rollouts store rewards in float32; the update was not "
        "applied. Scale the rewards with a wrapper (gymnasium.wrappers.TransformReward) or normalize_reward=True."
    )
