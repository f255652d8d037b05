"""stable-baselines3's hyperparameter attributes on natrl's agents (natrl.rl.sb3_attributes).

Reading ``model.n_epochs``, ``model.clip_range``, … gives what SB3's (and sb3-contrib TRPO's) model gives for the
same hyperparameters; assigning one (an SB3 callback annealing ``ent_coef``) trains exactly as an agent built with
that value, or raises one line; A2C's ``learn`` logs every 100 updates by default, as SB3's A2C.
"""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from natrl import A2C, ACKTR, NPG, PPO, TRPO
from natrl.callbacks import BaseCallback
from natrl.logger import Logger
from natrl.rl.agent import OnPolicyAgent
from natrl.rl.sb3_attributes import ConfigSchedule, SB3Attributes, SB3Hyperparameter
from natrl.rl.sb3_names import SB3_ATTRIBUTES

PROGRESS = (1.0, 0.5, 0.0)


class _Box2(gym.Env):
    """A Box(2,) action space (k = 2 for sb3-contrib's per-dimension KL) with a short episode."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self) -> None:
        self.t = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return self.observation_space.sample(), float(np.sum(action)), False, self.t >= 10, {}


def _same(ours: Any, theirs: Any, name: str) -> None:
    """Equal values of the same kind; schedules equal where SB3 evaluates them."""
    if callable(theirs):
        assert callable(ours), name
        for p in PROGRESS:
            assert ours(p) == pytest.approx(theirs(p)), (name, p)
    else:
        assert ours == theirs, (name, ours, theirs)
        assert type(ours) is type(theirs) or {type(ours), type(theirs)} <= {int, float}, (name, ours, theirs)


def test_every_sb3_attribute_has_its_descriptor() -> None:
    for name in SB3_ATTRIBUTES:
        assert isinstance(inspect.getattr_static(SB3Attributes, name), SB3Hyperparameter), name


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"n_epochs": 3, "gae_lambda": 0.9, "ent_coef": 0.01, "vf_coef": 0.7, "max_grad_norm": 0.3,
         "clip_range": 0.15, "clip_range_vf": 0.25, "target_kl": 0.02, "normalize_advantage": False},
        {"clip_range": lambda p: 0.3 * p},
    ],
)  # fmt: skip
def test_ppo_attributes_read_as_stable_baselines3s(given: dict[str, Any]) -> None:
    """Every SB3 attribute name a natrl PPO reads equals SB3's PPO's for the same hyperparameters; the names SB3's
    PPO lacks (sb3-contrib TRPO's) are missing on natrl's PPO too."""
    sb3 = pytest.importorskip("stable_baselines3")
    kwargs = {"n_steps": 32, "batch_size": 16, **given}
    ours, theirs = PPO("MlpPolicy", "CartPole-v1", **kwargs), sb3.PPO("MlpPolicy", "CartPole-v1", **kwargs)
    for name in (*SB3_ATTRIBUTES, "gamma", "learning_rate", "n_steps", "batch_size"):
        assert hasattr(ours, name) == hasattr(theirs, name), name
        if hasattr(theirs, name):
            _same(getattr(ours, name), getattr(theirs, name), name)


def test_a2c_attributes_read_as_stable_baselines3s() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    for kwargs in ({}, {"gae_lambda": 0.9, "ent_coef": 0.02, "vf_coef": 0.3, "max_grad_norm": 2.0,
                        "normalize_advantage": True, "n_steps": 7, "gamma": 0.9, "learning_rate": 1e-3}):  # fmt: skip
        ours, theirs = A2C("MlpPolicy", "CartPole-v1", **kwargs), sb3.A2C("MlpPolicy", "CartPole-v1", **kwargs)
        for name in (*SB3_ATTRIBUTES, "gamma", "learning_rate", "n_steps", "batch_size"):
            assert hasattr(ours, name) == hasattr(theirs, name), name
            if hasattr(theirs, name):
                _same(getattr(ours, name), getattr(theirs, name), name)


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"target_kl": 0.03, "cg_damping": 0.05, "cg_max_steps": 7, "n_critic_updates": 3,
         "line_search_shrinking_factor": 0.7, "line_search_max_iter": 5, "gae_lambda": 0.9,
         "normalize_advantage": False, "learning_rate": 3e-3, "batch_size": 32},
    ],
)  # fmt: skip
def test_trpo_attributes_read_as_sb3_contribs(given: dict[str, Any]) -> None:
    """sb3-contrib TRPO's names read natrl's fields back in sb3-contrib's units on a 2-dimensional Box action
    space (target_kl = max_kl / 2, cg_damping = damping / 2, line_search_max_iter = backtracks + 1); natrl's TRPO
    built from sb3-contrib's hyperparameters reads them as sb3-contrib's does."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    kwargs = {"n_steps": 128, **given}
    theirs = sb3_contrib.TRPO("MlpPolicy", _Box2(), **kwargs)
    ours = TRPO("MlpPolicy", _Box2, **kwargs)
    names = ("target_kl", "cg_damping", "cg_max_steps", "n_critic_updates", "line_search_shrinking_factor",
             "line_search_max_iter", "gae_lambda", "normalize_advantage", "learning_rate", "batch_size", "gamma",
             "n_steps")  # fmt: skip
    if given:
        for name in names:
            _same(getattr(ours, name), getattr(theirs, name), name)
        assert ours.config.max_kl == pytest.approx(0.06) and ours.config.damping == pytest.approx(0.1)
        assert ours.config.line_search_max_backtracks == 4
    else:  # natrl's own defaults, read in sb3-contrib's units
        assert ours.target_kl == pytest.approx(ours.config.max_kl / 2)
        assert ours.cg_damping == pytest.approx(ours.config.damping / 2)
        assert ours.line_search_max_iter == ours.config.line_search_max_backtracks + 1
    for name in ("n_epochs", "clip_range", "ent_coef"):  # PPO's, not TRPO's
        assert not hasattr(ours, name)


class _SetAttribute(BaseCallback):
    """SB3's pattern: a callback that sets a model attribute once, at the end of the first rollout (before the
    update), or at its start for what the rollout's advantages use (``gae_lambda``, computed before
    ``on_rollout_end`` in SB3 as in natrl)."""

    def __init__(self, name: str, value: Any) -> None:
        super().__init__()
        self.name, self.value = name, value

    def _on_step(self) -> bool:
        return True

    def _set(self) -> None:
        setattr(self.model, self.name, self.value)

    def _on_rollout_start(self) -> None:
        if self.name == "gae_lambda":
            self._set()

    def _on_rollout_end(self) -> None:
        self._set()


# (class, SB3 attribute, value assigned, the same setting at construction in natrl's names, base hyperparameters)
_PPO = {"n_steps": 32, "batch_size": 16, "n_epochs": 2}
_A2C = {"n_steps": 8}
_PPO_FAST = {**_PPO, "learning_rate": 1e-2}  # steps large enough for the clip and the KL stop to bite
_TRPO = {"n_steps": 64, "max_kl": 2.0}  # a trust region the line search has to backtrack in
_ASSIGNED = [
    (PPO, "n_epochs", 5, {"n_epochs": 5}, _PPO),
    (PPO, "ent_coef", 0.5, {"ent_coef": 0.5}, _PPO),
    (PPO, "vf_coef", 0.9, {"vf_coef": 0.9}, _PPO),
    (PPO, "max_grad_norm", 0.05, {"max_grad_norm": 0.05}, _PPO),
    (PPO, "clip_range", 0.01, {"clip_range": 0.01}, _PPO_FAST),
    (PPO, "clip_range", "lin_0.02", {"clip_range": "lin_0.02"}, _PPO_FAST),
    (PPO, "clip_range_vf", 0.01, {"clip_range_vf": 0.01}, _PPO),
    (PPO, "target_kl", 1e-4, {"target_kl": 1e-4}, _PPO_FAST),
    (PPO, "normalize_advantage", False, {"normalize_advantage": False}, _PPO),
    (PPO, "gae_lambda", 0.5, {"gae_lambda": 0.5}, _PPO),
    (PPO, "learning_rate", 1e-2, {"learning_rate": 1e-2}, _PPO),
    (PPO, "batch_size", 8, {"batch_size": 8}, _PPO),
    (A2C, "learning_rate", 1e-2, {"learning_rate": 1e-2}, _A2C),
    (A2C, "ent_coef", 0.5, {"ent_coef": 0.5}, _A2C),
    (A2C, "vf_coef", 0.9, {"vf_coef": 0.9}, _A2C),
    (A2C, "max_grad_norm", 0.01, {"max_grad_norm": 0.01}, _A2C),
    (A2C, "normalize_advantage", True, {"normalize_advantage": True}, _A2C),
    (A2C, "gae_lambda", 0.5, {"gae_lambda": 0.5}, _A2C),
    (TRPO, "target_kl", 0.05, {"max_kl": 0.05}, _TRPO),
    (TRPO, "learning_rate", 1e-2, {"critic_lr": 1e-2}, _TRPO),
    (TRPO, "batch_size", 16, {"critic_batch_size": 16}, _TRPO),
    (TRPO, "n_critic_updates", 2, {"critic_epochs": 2}, _TRPO),
    (TRPO, "cg_max_steps", 2, {"cg_iters": 2}, _TRPO),
    (TRPO, "line_search_shrinking_factor", 0.3, {"line_search_shrink": 0.3}, _TRPO),
    (TRPO, "line_search_max_iter", 1, {"line_search_max_backtracks": 0}, _TRPO),
    (TRPO, "gae_lambda", 0.5, {"gae_lambda": 0.5}, _TRPO),
    (TRPO, "normalize_advantage", False, {"normalize_advantage": False}, _TRPO),
    (NPG, "cg_max_steps", 2, {"cg_iters": 2}, {"n_steps": 64}),
    (ACKTR, "ent_coef", 0.5, {"ent_coef": 0.5}, {"n_envs": 1, "n_steps": 32}),
    (ACKTR, "learning_rate", 0.05, {"learning_rate": 0.05}, {"n_envs": 1, "n_steps": 32}),
]


def _params(agent: OnPolicyAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.policy.parameters()]


@pytest.mark.parametrize(
    ("cls", "name", "value", "natrl", "base"), _ASSIGNED, ids=[f"{c.__name__}-{n}={v}" for c, n, v, _, _ in _ASSIGNED]
)
def test_an_assignment_trains_as_the_agent_built_with_that_value(
    cls: type[OnPolicyAgent], name: str, value: Any, natrl: dict[str, Any], base: dict[str, Any]
) -> None:
    """A model whose attribute a callback sets before its first update (SB3's annealing pattern) has the config,
    and after two updates the weights, of a model built with that value, bit for bit; and they differ from an
    untouched model's, so the assignment reached the update."""
    steps = 2 * base.get("n_envs", 1) * base["n_steps"]
    assigned = cls("MlpPolicy", "CartPole-v1", seed=3, **base)
    assigned.learn(steps, callback=_SetAttribute(name, value))
    built = cls("MlpPolicy", "CartPole-v1", seed=3, **{**base, **natrl}).learn(steps)
    untouched = cls("MlpPolicy", "CartPole-v1", seed=3, **base).learn(steps)
    assert assigned.config == built.config
    for a, b in zip(_params(assigned), _params(built), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, c) for a, c in zip(_params(assigned), _params(untouched), strict=True))


def test_an_assignment_between_learn_calls_reaches_the_next_update() -> None:
    """``ent_coef`` raised between two ``learn`` calls changes the second update's entropy term: the update equals
    the one of a copy whose config was built with the new value at that point."""
    model = PPO("CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0).learn(32)
    twin = PPO("CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0).learn(32)
    model.ent_coef = 0.8
    assert model.config.ent_coef == 0.8 and model.ent_coef == 0.8
    twin.config = type(twin.config)(**{**twin.config.to_dict(), "ent_coef": 0.8})
    model.learn(32, reset_num_timesteps=False), twin.learn(32, reset_num_timesteps=False)
    for a, b in zip(_params(model), _params(twin), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_values_read_at_construction_only_raise_one_line_naming_the_way() -> None:
    ppo, trpo, a2c = PPO("CartPole-v1", n_steps=32), TRPO("CartPole-v1", n_steps=32), A2C("CartPole-v1")
    before = ppo.config
    for agent, name, field in ((ppo, "gamma", "gamma"), (ppo, "n_steps", "n_steps"), (trpo, "cg_damping", "damping")):
        cls = type(agent).__name__
        with pytest.raises(AttributeError, match=rf"^{cls}\.{name} is fixed when the agent is built .*"
                           rf"custom_objects=\{{'{name}': \.\.\.\}}\)$") as info:  # fmt: skip
            setattr(agent, name, 0.5)
        assert "\n" not in str(info.value)
        if field != name:
            assert field in str(info.value)
    assert ppo.config is before
    with pytest.raises(AttributeError, match=r"^A2C has no n_epochs \(no A2CConfig field for it\)$"):
        a2c.n_epochs = 5  # SB3's A2C would silently grow an attribute it never reads
    with pytest.raises(AttributeError, match="TRPO has no ent_coef"):
        trpo.ent_coef = 0.1
    assert not hasattr(a2c, "n_epochs")


def test_refused_values_leave_the_config_as_it_was() -> None:
    model = PPO("CartPole-v1", n_steps=32)
    before = model.config
    for name, value, message in (
        ("ent_coef", -1.0, r"PPO\.ent_coef = -1\.0: invalid hyperparameter ent_coef=-1\.0: must be >= 0"),
        ("n_epochs", 0, "n_epochs=0: an integer >= 1"),
        ("n_epochs", 2.5, "n_epochs=2.5: must be an integer"),
        ("clip_range", "bogus", "clip_range='bogus': must be a finite number"),
        ("clip_range_vf", lambda p: 0.1, "clip_range_vf=<function"),
        ("max_grad_norm", float("nan"), "max_grad_norm=nan: must be a finite number"),
    ):
        with pytest.raises(ValueError, match=message):
            setattr(model, name, value)
        assert model.config is before
    trpo = TRPO("MlpPolicy", _Box2, n_steps=32)
    with pytest.raises(ValueError, match=r"TRPO\.target_kl = -1 \(natrl's max_kl\): .*max_kl=-2\.0: must be > 0"):
        trpo.target_kl = -1
    with pytest.raises(ValueError, match="line_search_max_iter must be an integer >= 1, got 0"):
        trpo.line_search_max_iter = 0


def test_assigned_values_keep_natrls_types_and_a_frozen_models_zero_step(tmp_path) -> None:
    """A NumPy scalar is stored as a Python number; a schedule read back (``ConfigSchedule``) and assigned again
    stores its value; an agent loaded with a 0 learning rate (SB3's frozen model) keeps it through another
    assignment, while a new 0 is refused as at construction."""
    model = PPO("CartPole-v1", n_steps=32)
    model.ent_coef = np.float32(0.25)
    assert type(model.config.ent_coef) is float and model.config.ent_coef == 0.25
    model.n_epochs = np.int64(4)
    assert type(model.config.n_epochs) is int
    assert isinstance(model.clip_range, ConfigSchedule)
    model.clip_range = model.clip_range
    assert model.config.clip_range == 0.2
    model.clip_range = "lin_0.3"
    assert model.clip_range(0.5) == pytest.approx(0.15) and model.config.clip_range == "lin_0.3"
    path = model.save(tmp_path / "m")
    frozen = PPO.load(path, custom_objects={"learning_rate": 0.0})
    frozen.ent_coef = 0.1
    assert frozen.config.learning_rate == 0.0 and frozen.config.ent_coef == 0.1
    with pytest.raises(ValueError, match=r"learning_rate=0\.0: must be > 0"):
        model.learning_rate = 0.0


def test_read_each_update_names_only_config_fields() -> None:
    for cls in (PPO, A2C, TRPO, NPG, ACKTR):
        fields = set(cls.config_cls().to_dict())
        assert cls.fields_read_each_update <= fields, cls.algo


class _Dumps(Logger):
    def __init__(self) -> None:
        super().__init__(None, [])
        self.dumped: list[int] = []

    def dump(self, step: int = 0) -> None:
        self.dumped.append(step)
        super().dump(step)


def test_a2c_logs_every_100_updates_by_default_as_stable_baselines3s() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    for ours, theirs in ((A2C, sb3.A2C), (PPO, sb3.PPO), (TRPO, pytest.importorskip("sb3_contrib").TRPO)):
        default = inspect.signature(ours.learn).parameters["log_interval"].default
        assert default == inspect.signature(theirs.learn).parameters["log_interval"].default, ours.__name__
    assert inspect.signature(A2C.learn).parameters["log_interval"].default == 100
    model = A2C("CartPole-v1", n_steps=5)
    logger = _Dumps()
    model.set_logger(logger)
    model.learn(5 * 250)
    assert logger.dumped == [500, 1000]  # updates 100 and 200
    model.learn(5 * 20, log_interval=10)
    assert logger.dumped[2:] == [50, 100]


def test_schedules_read_back_as_given_except_where_sb3_holds_a_number() -> None:
    """``learning_rate`` (sb3-contrib TRPO: ``critic_lr``) reads back as given, a schedule included, as SB3's;
    TRPO's ``target_kl`` of a scheduled ``max_kl`` is the number the next update uses, in sb3-contrib's units."""

    def schedule(p: float) -> float:
        return 1e-3 * p

    trpo = TRPO("MlpPolicy", _Box2, n_steps=32, critic_lr=schedule, max_kl="lin_0.04")
    assert trpo.learning_rate is schedule
    trpo.progress_remaining = 0.5
    assert trpo.target_kl == pytest.approx(0.04 * 0.5 / 2)
    ppo = PPO("CartPole-v1", n_steps=32, learning_rate="lin_0.001", clip_range=schedule)
    assert ppo.learning_rate == "lin_0.001" and ppo.clip_range is schedule
