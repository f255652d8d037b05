"""The callback protocol (stable-baselines3's hooks plus natrl's ``on_update_end`` and
``on_training_error``), lists of callbacks, plain functions as callbacks, and :class:`EveryNTimesteps`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["BaseCallback", "CallbackList", "EveryNTimesteps", "FunctionCallback", "check_count", "due", "make_callback"]


class BaseCallback:
    """Base class: override the ``_on_*`` hooks you need (``_on_step`` must return a bool).

    Attributes:
        model: the agent (set by ``init_callback``).
        n_calls: how many times ``on_step`` ran (vector-env steps).
        num_timesteps: the agent's transitions so far, including the rollout in progress.
        locals: the last step's (or the update's) variables.
        parent: the callback that owns this one (EvalCallback for its children).
    """

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.model: Any = None  # the agent (natrl.rl.OnPolicyAgent), set by init_callback
        self.n_calls = 0
        self.num_timesteps = 0
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.parent: BaseCallback | None = None

    @property
    def training_env(self) -> Any:
        assert self.model is not None
        return self.model.get_env()

    @property
    def logger(self) -> Any:
        assert self.model is not None
        return self.model.logger

    @property
    def steps_hook(self) -> bool:
        """Whether this callback needs ``on_step`` after every env step (False for update-only callbacks)."""
        return True

    def init_callback(self, model: Any) -> None:
        self.model = model
        self._init_callback()

    def _init_callback(self) -> None:
        pass

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        self.locals, self.globals = locals_, globals_
        assert self.model is not None
        self.num_timesteps = self.model.num_timesteps
        self._on_training_start()

    def _on_training_start(self) -> None:
        pass

    def on_rollout_start(self) -> None:
        self._on_rollout_start()

    def _on_rollout_start(self) -> None:
        pass

    def on_step(self) -> bool:
        self.n_calls += 1
        assert self.model is not None
        self.num_timesteps = self.model.num_timesteps
        return self._on_step()

    def _on_step(self) -> bool:
        return True

    def on_rollout_end(self) -> None:
        self._on_rollout_end()

    def _on_rollout_end(self) -> None:
        pass

    def on_update_end(self, stats: dict[str, float]) -> bool:
        assert self.model is not None
        self.num_timesteps = self.model.num_timesteps
        return self._on_update_end(stats) is not False

    def _on_update_end(self, stats: dict[str, float]) -> bool | None:
        return True

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_end(self) -> None:
        pass

    def on_training_error(self, error: BaseException) -> None:
        """natrl's hook for a ``learn`` that raised (an env's exception, Ctrl-C): release what the callback
        holds (a progress bar, a file) and save nothing. It runs instead of ``on_training_end``, which, as in
        stable-baselines3, only follows training that ended normally, and it may run for a callback whose
        ``on_training_start`` did not (another one's raised). ``learn`` re-raises ``error`` afterwards; an
        exception of this hook is attached to ``error`` as a note (a RuntimeWarning before Python 3.11, which
        has no notes) rather than raised in its place."""
        try:
            self._on_training_error(error)
        except Exception as hook_error:
            note = f"{type(self).__name__}.on_training_error raised too: {hook_error!r}"
            add_note = getattr(error, "add_note", None)
            if add_note is not None:
                add_note(note)
            else:
                warnings.warn(note, RuntimeWarning, stacklevel=2)

    def _on_training_error(self, error: BaseException) -> None:
        pass

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals.update(locals_)
        self.update_child_locals(locals_)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        pass


class FunctionCallback(BaseCallback):
    """natrl's plain ``fn(agent, stats)`` after every update (return False to stop)."""

    def __init__(self, fn: Callable[[Any, dict[str, float]], Any]) -> None:
        super().__init__()
        self.fn = fn

    @property
    def steps_hook(self) -> bool:
        return False

    def _on_update_end(self, stats: dict[str, float]) -> bool | None:
        return self.fn(self.model, stats) is not False


class CallbackList(BaseCallback):
    """Several callbacks, called in order; training stops when one of them says so."""

    def __init__(self, callbacks: Sequence[BaseCallback | Callable[..., Any]]) -> None:
        super().__init__()
        self.callbacks = [make_callback(c) for c in callbacks]

    @property
    def steps_hook(self) -> bool:
        return any(c.steps_hook for c in self.callbacks)

    def _init_callback(self) -> None:
        for c in self.callbacks:
            c.init_callback(self.model)

    def _on_training_start(self) -> None:
        for c in self.callbacks:
            c.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        for c in self.callbacks:
            c.on_rollout_start()

    def _on_step(self) -> bool:
        go = True
        for c in self.callbacks:
            if c.steps_hook:
                go = c.on_step() and go
        return go

    def _on_rollout_end(self) -> None:
        for c in self.callbacks:
            c.on_rollout_end()

    def _on_update_end(self, stats: dict[str, float]) -> bool:
        go = True
        for c in self.callbacks:
            go = c.on_update_end(stats) and go
        return go

    def _on_training_end(self) -> None:
        for c in self.callbacks:
            c.on_training_end()

    def _on_training_error(self, error: BaseException) -> None:
        for c in self.callbacks:
            c.on_training_error(error)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.update_locals(locals_)


def make_callback(callback: Any) -> BaseCallback:
    """A :class:`BaseCallback` from ``None``, a callback, a list of them, or a function ``fn(agent, stats)``."""
    if callback is None:
        return CallbackList([])
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, (list, tuple)):
        return CallbackList(callback)
    if callable(callback):
        return FunctionCallback(callback)
    raise TypeError(
        f"callback must be a natrl.callbacks.BaseCallback, a list of them or a function (agent, stats), "
        f"got {_foreign_callback(callback)}"
    )


# stable-baselines3's callback classes that natrl.callbacks has under the same name and constructor
SB3_NAMESAKES = frozenset({
    "CallbackList", "CheckpointCallback", "EvalCallback", "EveryNTimesteps", "ProgressBarCallback",
    "StopTrainingOnMaxEpisodes", "StopTrainingOnNoModelImprovement", "StopTrainingOnRewardThreshold",
})  # fmt: skip


def _foreign_callback(callback: Any) -> str:
    """What ``callback`` is, and for a stable-baselines3 callback what to use instead: natrl's namesake, or
    natrl's ``BaseCallback`` as the base class of one of the user's own."""
    cls = type(callback)
    name = cls.__name__
    if not any(c.__name__ == "BaseCallback" and c.__module__.startswith("stable_baselines3.") for c in cls.__mro__):
        return name
    if cls.__module__.startswith("stable_baselines3.") and name in SB3_NAMESAKES:
        return f"stable-baselines3's {name}; import {name} from natrl.callbacks instead (same constructor)"
    return f"{name}, a stable-baselines3 callback; subclass natrl.callbacks.BaseCallback instead (same hooks)"


class EveryNTimesteps(BaseCallback):
    """Calls ``callback.on_step()`` each time another ``n_steps`` transitions have passed.

    As stable-baselines3's ``EventCallback``, it passes ``on_training_start`` and the step's variables
    (``update_locals``) on to ``callback``; it also passes ``on_training_end`` and natrl's
    ``on_training_error``, so that a callback started here is also finished here (a progress bar closed)."""

    def __init__(self, n_steps: int, callback: BaseCallback) -> None:
        super().__init__()
        self.n_steps = int(n_steps)
        self.callback = callback
        self.last_trigger = 0

    def _init_callback(self) -> None:
        self.callback.init_callback(self.model)
        self.callback.parent = self

    def _on_training_start(self) -> None:
        self.callback.on_training_start(self.locals, self.globals)

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last_trigger >= self.n_steps:
            self.last_trigger = self.num_timesteps
            return self.callback.on_step()
        return True

    def _on_training_end(self) -> None:
        self.callback.on_training_end()

    def _on_training_error(self, error: BaseException) -> None:
        self.callback.on_training_error(error)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        self.callback.update_locals(locals_)


def check_count(owner: str, name: str, value: Any, low: int) -> int:
    """``value`` as an int, or a ValueError naming ``owner``'s argument ``name`` unless it is an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def due(step: int, last: int, every: int | None, final: int | None) -> bool:
    """Whether an action repeated every ``every`` steps (and once at step ``final``) is due after an update
    that moved the step count from ``last`` to ``step``: a multiple of ``every`` lies in (last, step], or
    ``final`` was reached."""
    periodic = every is not None and every > 0 and step // every > last // every
    return periodic or (final is not None and step >= final > last)
