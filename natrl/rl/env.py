"""Building Gymnasium environments for agents, with clear errors for bad input.

An agent accepts an environment id (``"Hopper-v5"``), a ``gymnasium.Env``
instance, a factory (a zero-argument callable returning a new env), a Gymnasium
vector env or an SB3 VecEnv. :class:`EnvSource` reads that argument once and is
what the agent asks for envs: the training vector env, built by one of the
:data:`BACKENDS` (``vec_env``: gymnasium's sync or async envs, ALE's or EnvPool's
C++ envs; rollout workers build theirs from the same recipe), a fresh env for
evaluation, and what a checkpoint stores to rebuild it. Training uses a vector
env with autoreset in SAME_STEP mode: when an episode ends the final observation
is in ``info["final_obs"]`` and the returned observation is already the first
one of the next episode, so every step of the rollout is a real transition (no
dummy reset steps as with NEXT_STEP mode; a NEXT_STEP Sync/AsyncVectorEnv, Gymnasium's default, is driven so by
:mod:`natrl.rl.vector_autoreset`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from natrl.rl.atari import check_ale_vector_env, make_ale_vector_env
from natrl.rl.env_checks import NonFiniteError, check_step_types
from natrl.rl.envpool_env import EnvPoolSameStep, check_envpool_env
from natrl.rl.mujoco_env import MujocoSameStep, check_mujoco_env, check_mujoco_kwargs
from natrl.rl.sb3_vec_env import FromSB3VecEnv, SB3VecEnv, is_sb3_vec_env, register_with_sb3
from natrl.rl.spaces import check_spaces
from natrl.rl.trusted import register_namespace
from natrl.rl.vector_autoreset import same_step_vector_env

__all__ = [
    "BACKENDS",
    "SPEC_PREFIX",
    "Backend",
    "EnvLike",
    "EnvSource",
    "NonFiniteError",
    "VectorEnvBuilder",
    "env_factory",
    "env_name",
    "make_vector_env",
    "rebuildable_env",
    "register_env_id",
    "training_env",
]

EnvLike = str | gym.Env | Callable[[], gym.Env]


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
        "List the registered ids with `python -c 'import gymnasium; gymnasium.pprint_registry()'`."
    )


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
            creator: Any = (
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

    A picklable recipe, so that Ray workers build the same backend as the learner would (the backend is looked
    up in :data:`BACKENDS` where the envs are built). The ``"ale"`` and ``"envpool"`` envs are built from
    ``env_id``, not from ``factory``; the observation and action spaces they produce are checked against
    ``observation_space`` and ``action_space`` (those of the agent's env), so a backend that would feed the
    policy other inputs is refused with one line.
    """

    backend: str
    factory: Callable[[], gym.Env] | None
    env_id: str | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    wrapper_kwargs: Mapping[str, Any] = field(default_factory=dict)
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None

    def __call__(self, n_envs: int) -> VectorEnv:
        backend = BACKENDS.get(self.backend)
        if backend is None:
            raise ValueError(f"vec_env must be one of {', '.join(map(repr, BACKENDS))}, got {self.backend!r}")
        return backend.build(self, n_envs)


def _build_gymnasium(recipe: VectorEnvBuilder, n_envs: int) -> VectorEnv:
    if recipe.factory is None:
        raise ValueError(f"vec_env={recipe.backend!r} needs an env factory")
    return make_vector_env(recipe.factory, n_envs, mode=recipe.backend)


def _build_ale(recipe: VectorEnvBuilder, n_envs: int) -> VectorEnv:
    assert recipe.env_id is not None
    venv: VectorEnv = make_ale_vector_env(recipe.env_id, n_envs, recipe.env_kwargs, recipe.wrapper_kwargs)
    if recipe.observation_space is not None and venv.single_observation_space != recipe.observation_space:
        venv.close()
        raise ValueError(
            f"vec_env='ale': ALE's vector env observes {venv.single_observation_space}, the agent's env "
            f"{recipe.observation_space}; use vec_env='sync'"
        )
    return venv


def _build_envpool(recipe: VectorEnvBuilder, n_envs: int) -> VectorEnv:
    assert recipe.env_id is not None
    pool = EnvPoolSameStep(recipe.env_id, n_envs, recipe.env_kwargs)
    shapes = (pool.single_observation_space.shape, pool.single_action_space.shape)
    expected = (
        None if recipe.observation_space is None else recipe.observation_space.shape,
        None if recipe.action_space is None else recipe.action_space.shape,
    )
    if recipe.observation_space is not None and shapes != expected:
        pool.close()
        raise ValueError(
            f"vec_env='envpool': EnvPool's {recipe.env_id} has observation and action shapes {shapes}, "
            f"gymnasium's {expected}; use vec_env='sync'"
        )
    return pool


def _build_mujoco(recipe: VectorEnvBuilder, n_envs: int) -> VectorEnv:
    assert recipe.env_id is not None
    return MujocoSameStep(recipe.env_id, n_envs, recipe.env_kwargs)


@dataclass(frozen=True)
class Backend:
    """One ``vec_env`` backend.

    Attributes:
        check: ``check(env, wrapper_class)`` refuses, with one line, an env argument the backend cannot build
            (None: any env natrl can make).
        build: ``build(recipe, n_envs)``, the vector env.
        check_kwargs: ``check_kwargs(env, env_kwargs)`` refuses, with one line, make-kwargs the backend does not
            honour (None: any).
    """

    check: Callable[[Any, Any], None] | None
    build: Callable[[VectorEnvBuilder, int], VectorEnv]
    check_kwargs: Callable[[Any, Mapping[str, Any]], None] | None = None


BACKENDS: dict[str, Backend] = {
    "sync": Backend(None, _build_gymnasium),  # gymnasium's SyncVectorEnv over the factory
    "async": Backend(None, _build_gymnasium),  # gymnasium's AsyncVectorEnv: one subprocess per env
    "ale": Backend(check_ale_vector_env, _build_ale),  # ALE's C++ vector env, AtariWrapper's preprocessing
    "envpool": Backend(check_envpool_env, _build_envpool),  # EnvPool's C++ envs
    "mujoco": Backend(check_mujoco_env, _build_mujoco, check_mujoco_kwargs),  # gymnasium's MuJoCo tasks, lean step
}
"""The ``vec_env`` backends by name. Rollout workers (``workers > 0``) build any of them in each worker from
:meth:`EnvSource.builder`'s recipe; an SB3 VecEnv or a ready Gymnasium vector env is trained on as given."""


def training_env(env: Any, n_envs: Any) -> Any:
    """What the agent trains on, from what SB3 users pass too: an SB3 ``VecEnv`` becomes a Gymnasium vector env
    (:class:`~natrl.rl.sb3_vec_env.FromSB3VecEnv`), natrl's SB3 view gives back its vector env, and one
    ``gymnasium.Env`` instance without a registered spec is trained on as the only env (as SB3 wraps it in a
    ``DummyVecEnv``); registered instances, ids and factories are built by natrl as before."""
    if isinstance(env, SB3VecEnv):
        return env.venv
    if is_sb3_vec_env(env):
        return FromSB3VecEnv(env)
    if isinstance(env, gym.Env) and env.spec is None:
        if n_envs not in (None, 1):
            raise ValueError(
                f"one env instance without a registered spec is one env, but n_envs={n_envs}; pass a factory "
                "(lambda: MyEnv()) for several copies, or n_envs=1"
            )
        return SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP)
    return env


def _sub_env_spec(venv: VectorEnv) -> Any:
    """The registered spec that every sub-env of a hand-built Sync/AsyncVectorEnv has, else None."""
    if not isinstance(venv, (SyncVectorEnv, AsyncVectorEnv)):
        return None
    specs = venv.get_attr("spec")
    first = specs[0] if len(specs) else None
    if first is None or first.id not in gym.registry or any(spec != first for spec in specs):
        return None
    return first


SPEC_PREFIX = "spec:"
"""How a checkpoint's ``env`` entry marks a Gymnasium spec (as JSON) rather than an id."""


def rebuildable_env(env: Any) -> str | None:
    """What a checkpoint stores to rebuild the env: an id, or an Env's spec as JSON (kwargs and the
    wrappers gymnasium records, e.g. ``gym.make("CartPole-v1", max_episode_steps=50)``); None for factories."""
    if isinstance(env, str):
        return env
    spec = getattr(env, "spec", None)
    if isinstance(env, gym.Env) and spec is not None:
        try:
            return SPEC_PREFIX + spec.to_json()
        except (ValueError, TypeError):  # kwargs gymnasium cannot write as JSON
            return None
    return None


class EnvSource:
    """What an agent trains on, and how to build more of it: the env argument as the user gave it (an id, a
    factory, a ``gymnasium.Env``, a Gymnasium vector env or an SB3 VecEnv, see :func:`training_env`), read once.

    Args:
        env: the env argument, after :func:`training_env`.
        backend: ``config.vec_env``, a key of :data:`BACKENDS`.
        env_kwargs: ``gym.make``'s keyword arguments (ids only).
        wrapper_class: a wrapper applied to every env natrl builds.
        wrapper_kwargs: its keyword arguments.

    Attributes:
        env_id: a short name (the id, the spec's id, or the factory's name).
        factory: builds one fresh env (evaluation, sync/async vector envs); None for a vector env without a
            registered spec.
        stored: what a checkpoint stores to rebuild the env (:func:`rebuildable_env`), None for factories.
        given: the ready vector env the agent was given (the caller's to close), else None.
        observation_space: one env's observation space.
        action_space: one env's action space.
    """

    def __init__(
        self,
        env: Any,
        *,
        backend: str = "sync",
        env_kwargs: Mapping[str, Any] | None = None,
        wrapper_class: Callable[..., gym.Env] | None = None,
        wrapper_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.env_kwargs = dict(env_kwargs or {})
        self.wrapper_class, self.wrapper_kwargs = wrapper_class, dict(wrapper_kwargs or {})
        self.given: VectorEnv | None = None
        self._sb3_view: SB3VecEnv | None = None
        if isinstance(env, VectorEnv):  # a ready vector env: natrl trains on it as given (SAME_STEP autoreset)
            given = same_step_vector_env(env)
            if wrapper_class is not None:
                raise ValueError(
                    "wrapper_class wraps the envs natrl builds (from an id or a factory), not a ready vector env or "
                    "an env instance without a registered spec: wrap the env yourself, or pass a factory"
                )
            self.given = given
            spec = getattr(env, "spec", None)  # gym.make_vec records the single env's id and make-kwargs
            self.env_id = spec.id if spec is not None else type(env).__name__
            self.factory: Callable[[], gym.Env] | None = None
            self.stored: str | None = None
            if spec is not None and spec.id in gym.registry:
                vector_keys = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")
                self.env_kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k not in vector_keys}
                self.factory = env_factory(spec.id, self.env_kwargs)  # for evaluation and checkpoints
                self.stored = spec.id
            elif spec is None and (single := _sub_env_spec(env)) is not None:
                self.env_id = single.id
                self.factory = lambda: gym.make(single)  # evaluation copies: the sub-envs' id, kwargs and wrappers
            self.observation_space, self.action_space = env.single_observation_space, env.single_action_space
        else:
            self._check_backend(env)
            self.env_id = env_name(env)
            self.factory = env_factory(env, self.env_kwargs, wrapper_class, self.wrapper_kwargs)
            self.stored = rebuildable_env(env)
            probe = _build_first_env(self.factory, self.env_id, self.env_kwargs, wrapper_class)
            self.observation_space, self.action_space = probe.observation_space, probe.action_space
            probe.close()
        check_spaces(self.observation_space, self.action_space)

    @property
    def num_envs(self) -> int | None:
        """The given vector env's number of envs, None when natrl builds the envs."""
        return None if self.given is None else int(self.given.num_envs)

    def _check_backend(self, env: Any) -> None:
        backend = BACKENDS.get(self.backend)
        if backend is not None and backend.check is not None:
            backend.check(env, self.wrapper_class)
        if backend is not None and backend.check_kwargs is not None:
            backend.check_kwargs(env, self.env_kwargs)

    def builder(self) -> VectorEnvBuilder:
        """The recipe of the training vector env for ``backend`` (what each rollout worker builds)."""
        return VectorEnvBuilder(
            self.backend,
            self.factory,
            self.env_id,
            dict(self.env_kwargs),
            dict(self.wrapper_kwargs),
            self.observation_space,
            self.action_space,
        )

    def vector_env(self, n_envs: int) -> VectorEnv:
        """The training vector env: the given one, else ``n_envs`` new envs of ``backend``."""
        return self.given if self.given is not None else self.builder()(n_envs)

    @contextmanager
    def evaluation_env(self, env: EnvLike | None = None) -> Iterator[gym.Env]:
        """The env to evaluate on, with the training env's spaces: a fresh copy of the training env, ``env`` itself
        when it is a ``gymnasium.Env`` instance (evaluated as given and left open, as SB3's ``evaluate_policy``
        does), or a fresh one of an id or factory. Copies are closed on exit."""
        if env is None:
            if self.factory is None:
                raise ValueError(
                    "evaluate: the agent trains on envs without a registered spec, which natrl cannot copy; "
                    "pass env=... (an env instance or a factory to evaluate on)"
                )
            built = self.factory()
        else:
            built = env if isinstance(env, gym.Env) else env_factory(env)()
        try:
            if (built.observation_space, built.action_space) != (self.observation_space, self.action_space):
                raise ValueError(
                    f"evaluate: the env's spaces ({built.observation_space}, {built.action_space}) differ from "
                    f"the agent's ({self.observation_space}, {self.action_space})"
                )
            yield built
        finally:
            if built is not env:
                built.close()

    def owns(self, venv: VectorEnv) -> bool:
        """``venv`` was built here (and is closed here), not given by the caller."""
        return venv is not self.given

    def replace(self, env: Any, n_envs: int) -> None:
        """Train on ``env`` from now on (:meth:`natrl.rl.OnPolicyAgent.set_env`), with the same spaces: a ready vector
        env (Gymnasium's, or an SB3 VecEnv as :func:`training_env` converts it) of ``n_envs`` envs is trained on as
        given; an id, a factory or a registered ``gymnasium.Env`` builds envs with the same kwargs, wrapper and
        backend."""
        env = training_env(env, None)
        if isinstance(env, VectorEnv):
            env = same_step_vector_env(env)
            given = (env.single_observation_space, env.single_action_space)
            if given != (self.observation_space, self.action_space):
                raise ValueError(
                    f"set_env: the vector env's spaces {given} differ from the agent's "
                    f"({self.observation_space}, {self.action_space})"
                )
            if env.num_envs != n_envs:
                raise ValueError(
                    f"set_env: the vector env has {env.num_envs} envs and the agent n_envs={n_envs} (its rollout "
                    f"size); pass {n_envs} envs, or build a new agent on this env"
                )
            self.given = env
            return
        factory = env_factory(env, self.env_kwargs, self.wrapper_class, self.wrapper_kwargs)
        self._check_backend(env)
        probe = factory()
        spaces_ = (probe.observation_space, probe.action_space)
        probe.close()
        if spaces_ != (self.observation_space, self.action_space):
            raise ValueError(
                f"set_env: the env's spaces {spaces_} differ from the agent's "
                f"({self.observation_space}, {self.action_space})"
            )
        self.factory, self.env_id, self.stored = factory, env_name(env), rebuildable_env(env)
        self.given = None  # natrl builds the envs from now on

    def sb3_env(self, venv: VectorEnv) -> Any:
        """``venv`` in stable-baselines3's VecEnv API: the SB3 VecEnv the agent was given, else a (cached)
        :class:`~natrl.rl.sb3_vec_env.SB3VecEnv` view."""
        if isinstance(venv, FromSB3VecEnv):
            return venv.sb3_venv
        if self._sb3_view is None or self._sb3_view.venv is not venv:
            self._sb3_view = SB3VecEnv(venv)
        register_with_sb3()  # an SB3 VecEnv for isinstance once SB3 is imported (evaluate_policy, callbacks)
        return self._sb3_view

    def vec_normalize(self) -> Any:
        """The SB3 ``VecNormalize`` in the chain of the SB3 VecEnv the agent was given, or None."""
        venv = self.given.sb3_venv if isinstance(self.given, FromSB3VecEnv) else None
        while venv is not None:
            if type(venv).__name__ == "VecNormalize" and hasattr(venv, "obs_rms"):
                return venv
            venv = getattr(venv, "venv", None)
        return None


def _build_first_env(
    factory: Callable[[], gym.Env], name: str, env_kwargs: dict[str, Any], wrapper_class: Any
) -> gym.Env:
    """One env from ``factory``, at construction: a keyword the env does not take, or a wrapper that does not fit
    its spaces, is reported here in one line instead of at the first rollout."""
    try:
        env = factory()
    except (TypeError, AssertionError, gym.error.Error) as exc:
        given = []
        if env_kwargs:
            given.append(f"env_kwargs {sorted(env_kwargs)}")
        if wrapper_class is not None:
            given.append(f"wrapper_class {getattr(wrapper_class, '__name__', wrapper_class)}")
        cause = f" with {' and '.join(given)}" if given else ""
        raise ValueError(f"building the environment {name}{cause} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(env, gym.Env):
        raise TypeError(f"the environment factory for {name} returned a {type(env).__name__}, not a gymnasium.Env")
    check_step_types(env, name)
    return env
