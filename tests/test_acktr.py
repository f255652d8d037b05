"""ACKTR and TRPO(curvature="kfac"): K-FAC factors against the exact Fisher, KL clip, recovery."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces

from natrl import ACKTR, TRPO
from natrl.curvature import fisher_vp, to_dense
from natrl.params import flatten, functional
from natrl.rl.batch import Batch
from natrl.rl.kfac_policy import kfac_policy_direction, make_actor_kfac
from natrl.rl.natural import PolicyObjective
from natrl.rl.policies import Actor


def _linear_policy_batch(obs: torch.Tensor, n_actions: int, seed: int = 0) -> tuple[Actor, Batch]:
    torch.manual_seed(seed)
    actor = Actor(obs.shape[1], spaces.Discrete(n_actions), hidden_sizes=(), ortho_init=False)
    n = obs.shape[0]
    zeros = torch.zeros(n)
    batch = Batch(obs=obs, actions=torch.zeros(n, dtype=torch.long), log_probs=zeros, values=zeros,
                  advantages=torch.ones(n), returns=zeros)  # fmt: skip
    return actor, batch


def _kfac_block_vs_exact(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G ⊗ A permuted to natrl's flat order, exact Fisher) for a one-layer softmax policy."""
    actor, batch = _linear_policy_batch(obs, n_actions=3)
    kfac = make_actor_kfac(actor, damping=1e-3, factor_decay=0.0, inverse_interval=1)
    g = torch.Generator().manual_seed(0)
    assert kfac_policy_direction(actor, kfac, batch, ent_coef=0.0, generator=g, importance_ratio=False) is not None
    a, gg = kfac.factors()["net.0"]
    kron = torch.kron(gg, a).double()  # row-major vec of [W | b]
    d_out, d_in = actor.net[0].weight.shape
    # natrl's flat order: W row-major, then b; K-FAC's: rows of [W | b]
    perm = [i * (d_in + 1) + j for i in range(d_out) for j in range(d_in)] + [
        i * (d_in + 1) + d_in for i in range(d_out)
    ]
    kron = kron[perm][:, perm]
    theta = flatten(actor.parameters()).detach().double()
    fn = functional(actor.double())
    exact = to_dense(
        fisher_vp(fn, theta, obs.double(), actor.dist_cls), theta.numel(), dtype=torch.float64, device=theta.device
    )
    return kron, exact


def test_kfac_factors_equal_the_exact_fisher_block_when_inputs_are_constant() -> None:
    # K-FAC's only approximation is E[ggᵀ ⊗ aaᵀ] ≈ E[ggᵀ] ⊗ E[aaᵀ]: exact for a constant input
    # (up to the Monte Carlo error of the sampled actions, ~1/√N)
    obs = torch.tensor([[0.5, -1.0, 2.0, 0.3]]).repeat(40_000, 1)
    kron, exact = _kfac_block_vs_exact(obs)
    rel = float((kron - exact).norm() / exact.norm())
    assert rel < 0.03, rel


def test_kfac_factors_differ_from_the_exact_fisher_when_inputs_vary() -> None:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(40_000, 4, generator=g) * torch.tensor([3.0, 0.1, 1.0, 2.0])
    kron, exact = _kfac_block_vs_exact(obs)
    rel = float((kron - exact).norm() / exact.norm())
    assert rel > 0.05, rel  # the Kronecker factorisation is an approximation here
    # ... but it is still a useful one: same scale, positive semi-definite
    assert rel < 1.0
    assert float(torch.linalg.eigvalsh(kron).min()) > -1e-6


def test_acktr_step_respects_the_kl_clip() -> None:
    agent = ACKTR("CartPole-v1", seed=0, n_envs=2, n_steps=128, learning_rate=10.0, kl_clip=0.002, momentum=0.0)
    batch, _ = agent._make_batch()
    stats = agent._update(batch)
    assert stats["kl_scale"] < 1.0  # with η = 10 the clip binds
    assert 0.0 < stats["kl"] <= 0.002  # the measured KL of the step (quadratic model: κ/2)


def test_acktr_momentum_step_is_clipped_too() -> None:
    agent = ACKTR("CartPole-v1", seed=0, n_envs=2, n_steps=128, kl_clip=0.001, momentum=0.9)
    kls = []
    for _ in range(4):
        batch, _ = agent._make_batch()
        kls.append(agent._update(batch)["kl"])
    assert max(kls) <= 0.001, kls


def test_eigendecomposition_failure_is_recovered(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = ACKTR("CartPole-v1", seed=0, n_envs=2, n_steps=64)
    batch, _ = agent._make_batch()
    real_eigh = torch.linalg.eigh
    calls = {"n": 0}

    def flaky_eigh(m: torch.Tensor, *args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] <= 2:  # the first attempts fail, as LAPACK does on ill-conditioned input
            raise torch.linalg.LinAlgError("forced failure")
        return real_eigh(m, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", flaky_eigh)
    before = flatten(agent.actor.parameters()).detach().clone()
    stats = agent._update(batch)
    after = flatten(agent.actor.parameters()).detach()
    assert stats["eigen_fallbacks"] >= 1
    assert bool(torch.isfinite(after).all()) and not torch.equal(before, after)


def test_eigendecomposition_that_always_fails_keeps_plain_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = ACKTR("CartPole-v1", seed=0, n_envs=2, n_steps=64)
    batch, _ = agent._make_batch()

    def broken(*args: object, **kwargs: object):
        raise torch.linalg.LinAlgError("forced failure")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = agent._update(batch)
    assert any("eigendecomposition failed" in str(w.message) for w in caught)
    assert stats["failed_layers"] >= 1
    assert bool(torch.isfinite(flatten(agent.actor.parameters())).all())


def test_trpo_with_kfac_curvature_respects_max_kl() -> None:
    agent = TRPO("Pendulum-v1", seed=0, n_envs=2, n_steps=128, curvature="kfac", damping=0.01, max_kl=0.01)
    batch, _ = agent._make_batch()
    agent._prepare(batch)
    objective = PolicyObjective(agent.actor, batch)
    stats = agent._policy_step(objective)
    assert stats["line_search_failed"] == 0.0
    with torch.no_grad():
        kl = float(objective.old_dist.kl(agent.actor.distribution(batch.obs)).mean())
    assert 0.0 < kl <= 0.01
    assert "cg_iterations" not in stats  # no CG with K-FAC


def test_acktr_save_load_predict_identical(tmp_path) -> None:
    agent = ACKTR("Pendulum-v1", seed=0, n_envs=2, n_steps=64, critic_optimizer="kfac").learn(256)
    loaded = ACKTR.load(agent.save(tmp_path / "a.pt"))
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    # training continues from the restored K-FAC state without error
    loaded.learn(128, reset_num_timesteps=False)
    assert loaded.num_timesteps == 384


def test_non_finite_statistics_skip_the_factor_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    from natrl.optim import kfac as kfac_module

    agent = ACKTR("CartPole-v1", seed=0, n_envs=2, n_steps=64)
    batch, _ = agent._make_batch()
    agent._update(batch)  # factors exist
    factors_before = {k: (a.clone(), g.clone()) for k, (a, g) in agent.kfac.factors().items()}
    real = kfac_module.linear_factors

    def poisoned(*args, **kwargs):
        big_a, big_g = real(*args, **kwargs)
        return big_a * float("nan"), big_g

    monkeypatch.setattr(kfac_module, "linear_factors", poisoned)
    batch, _ = agent._make_batch()
    with pytest.warns(RuntimeWarning, match="non-finite A statistics"):
        agent._update(batch)
    for name, (a, g) in agent.kfac.factors().items():
        torch.testing.assert_close(a, factors_before[name][0])  # previous factors kept
        assert bool(torch.isfinite(g).all())
    assert bool(torch.isfinite(flatten(agent.actor.parameters())).all())


def _conv_kfac_vs_exact(obs: torch.Tensor, conv: torch.nn.Conv2d, n_actions: int) -> float:
    """Relative Frobenius error of K-FAC's (KFC) Conv2d block G ⊗ A against the exact Fisher of a
    one-conv-layer softmax policy (logits = the flattened conv output)."""
    torch.manual_seed(0)
    space = spaces.Box(-10.0, 10.0, tuple(obs.shape[1:]), np.float32)
    net = torch.nn.Sequential(conv, torch.nn.Flatten())
    actor = Actor(space, spaces.Discrete(n_actions), features=torch.nn.Identity(), net=net)
    n = obs.shape[0]
    zeros = torch.zeros(n)
    batch = Batch(obs=obs, actions=torch.zeros(n, dtype=torch.long), log_probs=zeros, values=zeros,
                  advantages=torch.ones(n), returns=zeros)  # fmt: skip
    kfac = make_actor_kfac(actor, damping=1e-3, factor_decay=0.0, inverse_interval=1)
    g = torch.Generator().manual_seed(0)
    assert kfac_policy_direction(actor, kfac, batch, ent_coef=0.0, generator=g, importance_ratio=False) is not None
    a, gg = kfac.factors()["net.0"]
    kron = torch.kron(gg, a).double()
    d_out, d_in = conv.weight.shape[0], conv.weight[0].numel()
    perm = [i * (d_in + 1) + j for i in range(d_out) for j in range(d_in)] + [
        i * (d_in + 1) + d_in for i in range(d_out)
    ]
    kron = kron[perm][:, perm]
    theta = flatten(actor.parameters()).detach().double()
    exact = to_dense(
        fisher_vp(functional(actor.double()), theta, obs.double(), actor.dist_cls), theta.numel(),
        dtype=torch.float64, device=theta.device,
    )  # fmt: skip
    return float((kron - exact).norm() / exact.norm())


def test_kfac_conv2d_factors_equal_the_exact_fisher_block_for_one_location_and_constant_inputs() -> None:
    # a kernel covering the whole 2×3×3 input: one output location, the conv is a Linear on the patch
    obs = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)).repeat(40_000, 1, 1, 1)
    rel = _conv_kfac_vs_exact(obs, torch.nn.Conv2d(2, 3, kernel_size=3), n_actions=3)
    assert rel < 0.03, rel  # Monte Carlo error of the sampled actions only


def test_kfac_conv2d_factors_approximate_the_exact_fisher_over_several_locations() -> None:
    # 2×2 kernel on 3×3 inputs: 4 locations, varying inputs; KFC assumes spatially uncorrelated
    # derivatives and independent activations/derivatives, so the block is an approximation
    obs = torch.randn(40_000, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    rel = _conv_kfac_vs_exact(obs, torch.nn.Conv2d(1, 1, kernel_size=2), n_actions=4)
    print(f"K-FAC Conv2d block vs exact Fisher, 4 locations, varying inputs: relative error {rel:.3f}")
    assert 0.05 < rel < 1.0, rel


def test_a_learning_rate_schedule_that_reaches_zero_takes_no_last_step() -> None:
    # "lin_0.25" is 0 at the last update of a budget of whole rollouts: the KL clip's ν = √(κ / (η² uᵀFu)) must
    # not divide by η = 0 there (it raised ZeroDivisionError); that update leaves the actor as it was
    agent = ACKTR("Pendulum-v1", seed=0, n_envs=1, n_steps=64, learning_rate="lin_0.25")
    snapshots: list[list[torch.Tensor]] = []

    def record(a: ACKTR, stats: dict) -> bool:
        snapshots.append([p.detach().clone() for p in a.actor.parameters()])
        return True

    agent.learn(128, callback=record)
    assert len(snapshots) == 2
    for first, last in zip(*snapshots, strict=True):
        assert torch.isfinite(last).all()
        torch.testing.assert_close(last, first, rtol=0, atol=0)
