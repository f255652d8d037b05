"""Agent-level unit tests: TRPO/NPG/PPO updates, persistence, reproducibility and bad input.

Short budgets only; learning thresholds live in tests/test_learning.py (-m slow).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from natrl import NPG, PPO, TRPO
from natrl.params import flatten
from natrl.rl import CheckpointError, NonFiniteError, UnsupportedSpaceError, load_agent
from natrl.rl.accel import fast_paths
from natrl.rl.natural import PolicyObjective

SMALL = {"n_envs": 2, "n_steps": 64, "critic_epochs": 2}


def _batch(agent):
    batch, _ = agent._make_batch()
    agent._prepare(batch)
    return batch


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_trpo_accepted_step_respects_max_kl_and_changes_every_actor_parameter(env_id: str) -> None:
    agent = TRPO(env_id, seed=0, max_kl=0.01, **SMALL)
    before = [p.detach().clone() for p in agent.actor.parameters()]
    batch = _batch(agent)
    objective = PolicyObjective(agent.actor, batch)
    stats = agent._policy_step(objective)
    assert stats["line_search_failed"] == 0.0
    # measure the KL independently of the line search's own number
    with torch.no_grad():
        new = agent.actor.distribution(batch.obs)
        kl = float(objective.old_dist.kl(new).mean())
    assert 0.0 < kl <= 0.01
    assert kl == pytest.approx(stats["kl"], rel=1e-4)
    names = [n for n, _ in agent.actor.named_parameters()]
    for name, b, a in zip(names, before, agent.actor.parameters()):
        assert not torch.equal(b, a), f"actor parameter {name} did not change"
    if env_id == "Pendulum-v1":
        assert "log_std" in names


def test_trpo_failed_line_search_leaves_policy_bit_identical() -> None:
    agent = TRPO("CartPole-v1", seed=1, **SMALL)
    batch = _batch(agent)
    # a KL bound no step can meet: every trial fails
    agent.config = type(agent.config)(**{**agent.config.to_dict(), "max_kl": 1e-30, "line_search_max_backtracks": 3})
    before = flatten(agent.actor.parameters()).detach().clone()
    stats = agent._policy_step(PolicyObjective(agent.actor, batch))
    assert stats["line_search_failed"] == 1.0
    assert torch.equal(flatten(agent.actor.parameters()).detach(), before)


def test_npg_step_has_the_requested_quadratic_kl() -> None:
    agent = NPG("CartPole-v1", seed=0, step_size=0.005, **SMALL)
    batch = _batch(agent)
    stats = agent._policy_step(PolicyObjective(agent.actor, batch))
    # the true KL of a small natural step is close to its quadratic model δ
    assert stats["kl"] == pytest.approx(0.005, rel=0.3)


def test_ppo_update_changes_actor_and_critic() -> None:
    agent = PPO("CartPole-v1", seed=0, n_envs=2, n_steps=64, batch_size=32, n_epochs=2)
    before = [p.detach().clone() for p in agent.params]
    stats = agent._update(_batch_ppo(agent))
    assert all(not torch.equal(b, a) for b, a in zip(before, agent.params))
    assert 0.0 <= stats["clip_fraction"] <= 1.0


def _batch_ppo(agent):
    batch, _ = agent._make_batch()
    return batch


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("CartPole-v1", {}),
        ("Pendulum-v1", {"ent_coef": 0.01, "clip_range_vf": 0.2}),
        ("Pendulum-v1", {"state_dependent_std": True, "activation": "relu", "hidden_sizes": (32,)}),
    ],
)
def test_ppo_hand_written_backward_matches_autograd(env_id, kwargs) -> None:
    """PPO's minibatch gradients through natrl.rl.fastmlp equal loss.backward()'s (same update, same batch)."""
    batch = _batch_ppo(PPO(env_id, seed=0, n_envs=2, n_steps=64, **kwargs))

    def update(fast: bool) -> torch.Tensor:
        agent = PPO(env_id, seed=0, n_envs=2, n_steps=64, batch_size=32, n_epochs=2, fast_paths=fast, **kwargs)
        assert (agent.fast.ppo_grads is not None) == fast
        agent._update(batch)
        return torch.cat([p.detach().reshape(-1) for p in agent.params])

    fast, ref = update(True), update(False)
    moved = (fast - ref).abs().max() / (ref.abs().max())
    assert float(moved) < 1e-5


@pytest.mark.parametrize("cls", [TRPO, NPG, PPO])
def test_same_seed_same_results(cls) -> None:
    kwargs = {"n_envs": 2, "n_steps": 32}
    a = cls("Pendulum-v1", seed=3, **kwargs).learn(128)
    b = cls("Pendulum-v1", seed=3, **kwargs).learn(128)
    c = cls("Pendulum-v1", seed=4, **kwargs).learn(128)
    pa, pb, pc = (flatten(x.actor.parameters()) for x in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


@pytest.mark.parametrize("cls", [TRPO, PPO])
def test_save_load_predict_identical(cls, tmp_path) -> None:
    agent = cls("Pendulum-v1", seed=0, n_envs=2, n_steps=32, normalize_obs=True).learn(128)
    path = agent.save(tmp_path / "m.pt")
    loaded = cls.load(path)
    again = load_agent(str(path))
    obs = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0])
    assert loaded.num_timesteps == agent.num_timesteps == 128
    assert loaded.config == agent.config
    assert not list(tmp_path.glob("*.tmp")), "atomic save left a temporary file"


def test_corrupt_or_wrong_checkpoint_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        TRPO.load(bad)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        TRPO.load(tmp_path / "missing.pt")
    good = PPO("CartPole-v1", seed=0, n_envs=1, n_steps=16).save(tmp_path / "ppo.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        PPO.load(truncated)
    with pytest.raises(CheckpointError, match="ppo agent, not trpo"):
        TRPO.load(good)


def test_unknown_env_id_suggests_and_says_how_to_list() -> None:
    with pytest.raises(ValueError, match=r"unknown environment id 'CartPol-v1'.*CartPole.*pprint_registry\(\)"):
        TRPO("CartPol-v1")


class _SpaceEnv(gym.Env):
    def __init__(self, observation_space, action_space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_unsupported_spaces_are_named() -> None:
    box = gym.spaces.Box(-1, 1, (2,), np.float32)
    with pytest.raises(UnsupportedSpaceError, match=r"unsupported observation space Text"):
        TRPO(lambda: _SpaceEnv(gym.spaces.Text(5), gym.spaces.Discrete(2)))
    with pytest.raises(UnsupportedSpaceError, match=r"unsupported action space Text.*Discrete, MultiDiscrete"):
        PPO(lambda: _SpaceEnv(box, gym.spaces.Text(5)))
    nested = gym.spaces.Dict({"a": box, "b": gym.spaces.Sequence(box)})
    with pytest.raises(UnsupportedSpaceError, match="Sequence"):
        NPG(lambda: _SpaceEnv(nested, gym.spaces.Discrete(2)))


class _NaNEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.t == 5 else 1.0
        return np.zeros(2, np.float32), reward, False, False, {}


def test_non_finite_reward_names_env_and_step_and_leaves_policy_untouched() -> None:
    agent = TRPO(_NaNEnv, seed=0, n_envs=1, n_steps=16)
    before = flatten(agent.actor.parameters()).detach().clone()
    with pytest.raises(NonFiniteError, match=r"environment 0 returned a non-finite reward at step 4"):
        agent.learn(16)
    assert torch.equal(flatten(agent.actor.parameters()).detach(), before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_kl": -1.0}, "max_kl"),
        ({"gamma": 1.5}, "gamma"),
        ({"n_envs": 0}, "n_envs"),
        ({"hidden_sizes": [64, -1]}, "hidden_sizes"),
        ({"max_kll": 0.01}, "unknown hyperparameter max_kll"),
        ({"max_kl": float("inf")}, r"max_kl=inf: must be a finite number"),
        ({"critic_lr": float("nan")}, r"critic_lr=nan: must be a finite number"),
        ({"gamma": "0.9"}, r"gamma='0.9': must be a finite number"),
        ({"max_kl": "0.02"}, r"max_kl='0.02': must be a finite number"),
        ({"log_std_init": 1000.0}, r"log_std_init=1000.0: must lie in \[-20, 5\]"),
        ({"log_std_init": float("nan")}, r"log_std_init=nan: must be a finite number"),
        ({"n_steps": 64.0}, r"n_steps=64.0: must be an integer"),
        ({"normalize_obs": 1}, r"normalize_obs=1: must be true or false"),
    ],
)
def test_invalid_hyperparameters_are_named(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        TRPO("CartPole-v1", **kwargs)


def test_evaluate_and_predict_shapes() -> None:
    agent = PPO("Pendulum-v1", seed=0, n_envs=1, n_steps=16)
    res = agent.evaluate(episodes=2)
    assert len(res.returns) == 2 and res.lengths == [200, 200]
    # the same episodes played by hand: seeds 10_000 + seed + i, deterministic actions
    env = gym.make("Pendulum-v1")
    by_hand = []
    for i in range(2):
        obs, _ = env.reset(seed=10_000 + i)
        total, done = 0.0, False
        while not done:
            obs, r, terminated, truncated, _ = env.step(agent.predict(obs, deterministic=True)[0])
            total, done = total + float(r), terminated or truncated
        by_hand.append(total)
    assert res.returns == by_hand and res.mean == pytest.approx(np.mean(by_hand))
    a = agent.predict(np.zeros(3, np.float32), deterministic=True)[0]
    assert a.shape == (1,) and -2.0 <= a[0] <= 2.0
    with pytest.raises(ValueError, match="observation shape"):
        agent.predict(np.zeros(5), deterministic=True)[0]


@pytest.mark.parametrize("head", ["categorical", "gaussian", "gaussian_state_dependent"])
@pytest.mark.parametrize(("ent_coef", "clip_range_vf"), [(0.0, None), (0.03, 0.1)])
def test_ppo_closed_form_loss_gradients_equal_autograd(head, ent_coef, clip_range_vf) -> None:
    """clipped_loss_grads against autograd of the same loss, float64, with ratios on both
    sides of the clip range, advantages of both signs and active value clipping."""
    from natrl.distributions import Categorical, DiagGaussian
    from natrl.rl.accel import clipped_loss_grads

    g = torch.Generator().manual_seed(7)
    n, k = 256, 3
    discrete = head == "categorical"
    width = 2 * k if head == "gaussian_state_dependent" else (5 if discrete else k)
    out_a = torch.randn(n, width, generator=g, dtype=torch.float64, requires_grad=True)
    out_v = torch.randn(n, 1, generator=g, dtype=torch.float64, requires_grad=True)
    log_std = (0.3 * torch.randn(k, generator=g, dtype=torch.float64)).requires_grad_() if head == "gaussian" else None
    if discrete:
        dist = Categorical(out_a)
        actions = torch.randint(0, 5, (n,), generator=g)
    else:
        mean, ls = (out_a[:, :k], out_a[:, k:]) if log_std is None else (out_a, log_std.expand_as(out_a))
        dist = DiagGaussian(mean, ls)
        actions = torch.randn(n, k, generator=g, dtype=torch.float64)
    logp = dist.log_prob(actions)
    # old log-probs put the ratios anywhere in about [0.5, 2]: clipped above and below
    old_logp = (logp + 0.35 * torch.randn(n, generator=g, dtype=torch.float64)).detach()
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    returns = torch.randn(n, generator=g, dtype=torch.float64)
    old_v = (out_v.squeeze(-1) + 0.2 * torch.randn(n, generator=g, dtype=torch.float64)).detach()

    ratio = (logp - old_logp).exp()
    assert ((ratio > 1.2) & (adv > 0)).any() and ((ratio < 0.8) & (adv < 0)).any()
    pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    values = out_v.squeeze(-1)
    if clip_range_vf is not None:
        values = old_v + (values - old_v).clamp(-clip_range_vf, clip_range_vf)
    vl = (values - returns).pow(2).mean()
    loss = pg + 0.5 * vl - ent_coef * dist.entropy().mean()
    leaves = [out_a, out_v] + ([log_std] if log_std is not None else [])
    ref = torch.autograd.grad(loss, leaves)

    h = clipped_loss_grads(
        out_a.detach(),
        out_v.detach(),
        None if log_std is None else log_std.detach(),
        actions,
        old_logp,
        adv,
        returns,
        old_v,
        discrete=discrete,
        clip_range=0.2,
        clip_range_vf=clip_range_vf,
        ent_coef=ent_coef,
        vf_coef=0.5,
    )
    torch.testing.assert_close(h.actor_out, ref[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(h.critic_out, ref[1], rtol=1e-12, atol=1e-14)
    if log_std is not None:
        torch.testing.assert_close(h.log_std, ref[2], rtol=1e-12, atol=1e-14)
    assert float(h.pg_loss) == pytest.approx(float(pg.detach()), rel=1e-12)
    assert float(h.v_loss) == pytest.approx(float(vl.detach()), rel=1e-12)
    assert float(h.entropy) == pytest.approx(float(dist.entropy().mean().detach()), rel=1e-12)
    assert 0.0 < float(h.clip_fraction) < 1.0


def test_ppo_fast_path_only_for_natrls_own_networks() -> None:
    agent = PPO("Pendulum-v1", seed=0, n_envs=1, n_steps=64, batch_size=32)
    assert fast_paths(agent.actor, agent.critic, agent.rng).ppo_grads is not None
    agent.actor.extra = torch.nn.Parameter(torch.zeros(2))  # a parameter the closed form does not know
    assert fast_paths(agent.actor, agent.critic, agent.rng).ppo_grads is None


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_update_leaves_no_autograd_history(env_id) -> None:
    """Gradients and Adam's state stay plain tensors: a graph hanging off them would grow
    with every minibatch (a closed-form head once recorded the log-std's graph into
    log_std.grad, and the fused Adam kernel then chained it into exp_avg: +16 MB per update)."""
    agent = PPO(env_id, seed=0, n_envs=2, n_steps=64, batch_size=32, n_epochs=2)
    assert agent.fast.ppo_grads is not None
    for _ in range(2):
        agent._update(_batch_ppo(agent))
    for p in agent.params:
        assert p.grad is not None and p.grad.grad_fn is None and not p.grad.requires_grad
        for value in agent.optimizer.state[p].values():
            assert value.grad_fn is None and not value.requires_grad


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (PPO, {"learning_rate": float("inf")}, r"learning_rate=inf: must be a finite number"),
        (PPO, {"ent_coef": float("inf")}, r"ent_coef=inf: must be a finite number"),
        (NPG, {"step_size": float("inf")}, r"step_size=inf: must be a finite number"),
    ],
)
def test_infinite_step_sizes_are_refused(cls, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        cls("CartPole-v1", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": float("nan")}, "lr must be a finite number >= 0, got nan"),
        ({"lr": float("inf")}, "lr must be a finite number >= 0, got inf"),
        ({"lr": -1.0}, "lr must be a finite number >= 0, got -1.0"),
        ({"momentum": float("nan")}, r"momentum must be a finite number in \[0, 1\), got nan"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
    ],
)
def test_kfac_refuses_non_finite_hyperparameters(kwargs, match) -> None:
    from natrl.optim import KFAC

    with pytest.raises(ValueError, match=match):
        KFAC(torch.nn.Linear(2, 2), **kwargs)


def _shipped_presets() -> list[tuple[str, str, str]]:
    """(folder, algo, table) for every table of every agents/**/<algo>.toml."""
    from pathlib import Path

    from natrl.presets import read_spec
    from natrl.rl import AGENTS

    root = Path(__file__).resolve().parent.parent / "agents"
    found = []
    for path in sorted(root.rglob("*.toml")):
        if path.stem in AGENTS:
            for table in read_spec(path.stem, path.parent)[0]:
                found.append((str(path.parent), path.stem, table))
    return found


@pytest.mark.parametrize(("folder", "algo", "table"), _shipped_presets())
def test_every_shipped_preset_validates_and_builds_its_config(folder: str, algo: str, table: str) -> None:
    """A typo in a preset (an unknown key, a value the config refuses) fails here, not in a user's run."""
    from natrl.presets import load_preset
    from natrl.rl import AGENTS
    from natrl.rl.config import build_config

    cls = AGENTS[algo]
    preset = load_preset(algo, table, cls.config_cls, directory=folder)
    assert preset.table == table
    build_config(cls.config_cls, preset.hyperparameters)
