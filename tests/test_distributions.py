"""The distributions of MultiDiscrete, MultiBinary and N-D Box actions against references computed
another way: enumeration of every action (score covariance), autograd Hessians of the KL, and
torch.distributions; then the exact Fisher pulled back through a policy against the dense
Fisher of that policy."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Categorical as TorchCategorical

from natrl.curvature import fisher_vp, to_dense
from natrl.distributions import Bernoulli, DiagGaussian, MultiCategorical
from natrl.params import flatten, functional
from natrl.rl.policies import Actor

pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py


NVEC = (3, 2, 4)


def _all_actions(family: str) -> torch.Tensor:
    if family == "multicategorical":
        return torch.tensor(list(itertools.product(*(range(n) for n in NVEC))))
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)))


def _family(family: str):
    return MultiCategorical.of(NVEC) if family == "multicategorical" else Bernoulli


def _logits(family: str, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, sum(NVEC) if family == "multicategorical" else 3, generator=g)


@pytest.mark.parametrize("family", ["multicategorical", "bernoulli"])
def test_output_fisher_equals_enumerated_score_covariance_and_kl_hessian(family: str) -> None:
    cls = _family(family)
    z = _logits(family, 4)
    actions = _all_actions(family)
    k = z.shape[1]
    for i in range(z.shape[0]):
        zi = z[i : i + 1]

        def log_p(zz: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return cls(zz.expand(a.shape[0], -1)).log_prob(a)

        probs = log_p(zi, actions).exp()
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-12)
        scores = torch.func.jacrev(lambda zz: log_p(zz, actions))(zi).reshape(actions.shape[0], k)
        dense_cov = (probs[:, None, None] * scores[:, :, None] * scores[:, None, :]).sum(0)
        eye = torch.eye(k)
        m = torch.stack([cls.fisher_vp_outputs((zi,), (eye[j : j + 1],))[0][0] for j in range(k)], dim=1)
        assert torch.allclose(m, dense_cov, atol=1e-10), f"{family}: output Fisher != score covariance"
        old = cls(zi)
        hess = torch.func.hessian(lambda zz, old=old: old.kl(cls(zz)).sum())(zi).reshape(k, k)
        assert torch.allclose(m, hess, atol=1e-8), f"{family}: output Fisher != KL Hessian"


def test_multicategorical_matches_torch_per_component() -> None:
    z = _logits("multicategorical", 5)
    w = _logits("multicategorical", 5, seed=1)
    d, e = MultiCategorical.of(NVEC)(z), MultiCategorical.of(NVEC)(w)
    parts = [TorchCategorical(logits=c) for c in z.split(NVEC, dim=-1)]
    others = [TorchCategorical(logits=c) for c in w.split(NVEC, dim=-1)]
    a = torch.stack([p.sample() for p in parts], dim=-1)
    torch.testing.assert_close(d.log_prob(a), sum(p.log_prob(a[:, i]) for i, p in enumerate(parts)))
    torch.testing.assert_close(d.entropy(), sum(p.entropy() for p in parts))
    torch.testing.assert_close(d.kl(e), sum(torch.distributions.kl_divergence(p, q) for p, q in zip(parts, others)))
    torch.testing.assert_close(d.mode(), torch.stack([c.argmax(-1) for c in z.split(NVEC, dim=-1)], dim=-1))


def test_multicategorical_samples_follow_the_probabilities() -> None:
    z = _logits("multicategorical", 1).expand(40_000, -1)
    s = MultiCategorical.of(NVEC)(z).sample(torch.Generator().manual_seed(0))
    assert s.shape == (40_000, 3)
    for i, c in enumerate(z[0].split(NVEC)):
        freq = torch.bincount(s[:, i], minlength=NVEC[i]).double() / s.shape[0]
        torch.testing.assert_close(freq, torch.softmax(c, -1), atol=0.01, rtol=0)


def test_bernoulli_matches_torch() -> None:
    z, w = _logits("bernoulli", 6), _logits("bernoulli", 6, seed=1)
    d, e = Bernoulli(z), Bernoulli(w)
    td, te = TorchBernoulli(logits=z), TorchBernoulli(logits=w)
    a = td.sample()
    torch.testing.assert_close(d.log_prob(a), td.log_prob(a).sum(-1))
    torch.testing.assert_close(d.entropy(), td.entropy().sum(-1))
    torch.testing.assert_close(d.kl(e), torch.distributions.kl_divergence(td, te).sum(-1))
    s = Bernoulli(z[:1].expand(40_000, -1)).sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(s.mean(0), torch.sigmoid(z[0]), atol=0.01, rtol=0)


def test_multicategorical_family_needs_sizes() -> None:
    with pytest.raises(TypeError, match=r"MultiCategorical.of\(nvec\)"):
        MultiCategorical(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="positive component sizes"):
        MultiCategorical.of([3, 0])


def _policy_fisher_reference(actor: Actor, obs: torch.Tensor) -> torch.Tensor:
    """The dense Fisher of the policy as the Hessian of the mean KL(π_θ0 ‖ π_θ) at θ0 (autograd)."""
    theta0 = flatten(actor.parameters()).detach()
    fn = functional(actor)
    old = actor.dist_cls(*(p.detach() for p in fn(theta0, obs)))
    return torch.func.hessian(lambda th: old.kl(actor.dist_cls(*fn(th, obs))).mean())(theta0)


def _enumerated_policy_fisher(actor: Actor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_s Σ_a π(a|s) ∇ log π(a|s) ∇ log π(a|s)ᵀ by enumerating every action."""
    theta0 = flatten(actor.parameters()).detach()
    fn = functional(actor)
    total = torch.zeros(theta0.numel(), theta0.numel())
    for i in range(obs.shape[0]):
        o = obs[i : i + 1].expand(actions.shape[0], *obs.shape[1:])

        def log_p(th: torch.Tensor, o: torch.Tensor = o) -> torch.Tensor:
            return actor.dist_cls(*fn(th, o)).log_prob(actions)

        scores = torch.func.jacrev(log_p)(theta0)
        probs = log_p(theta0).exp().detach()
        total += (probs[:, None] * scores).T @ scores
    return total / obs.shape[0]


@pytest.mark.parametrize(
    "action_space",
    [spaces.MultiDiscrete(list(NVEC)), spaces.MultiBinary(3), spaces.Box(-1, 1, (2, 2))],
    ids=["multidiscrete", "multibinary", "box2d"],
)
def test_exact_policy_fisher_equals_the_dense_reference(action_space: spaces.Space) -> None:
    torch.manual_seed(0)
    actor = Actor(spaces.Box(-1, 1, (2, 3)), action_space, (5,), log_std_init=-0.3)
    obs = torch.randn(6, 2, 3)
    theta = flatten(actor.parameters()).detach()
    got = to_dense(
        fisher_vp(functional(actor), theta, obs, actor.dist_cls), theta.numel(), dtype=theta.dtype, device=theta.device
    )
    ref = _policy_fisher_reference(actor, obs)
    assert float((got - ref).abs().max()) < 1e-6
    if not isinstance(action_space, spaces.Box):
        all_actions = _all_actions(
            "multicategorical" if isinstance(action_space, spaces.MultiDiscrete) else "bernoulli"
        )
        enum = _enumerated_policy_fisher(actor, obs, all_actions)
        assert float((got - enum).abs().max()) < 1e-6
    else:
        assert actor.dist_cls is DiagGaussian and actor.act_dim == 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_box_actions_are_elements_of_the_space_as_sb3_sends_them(dtype: Any) -> None:
    # the env receives actions in the space's dtype (gymnasium's contract, and what SB3's clip in the space's
    # dtype gives): a float32 sample clipped to float32 bounds is the same number in either precision
    space = spaces.Box(np.array([-1.5, 0.0]), np.array([1.5, 4.0]), dtype=dtype)
    raw = np.array([[-3.25, 0.75], [0.1, 9.0], [1.4, -2.0]], np.float32)
    out = Actor(3, space, (4,)).to_env_action(raw)
    assert out.dtype == space.dtype and all(space.contains(a) for a in out)
    if dtype is np.int64:
        np.testing.assert_array_equal(out, [[-1, 1], [0, 4], [1, 0]])
    else:
        expected = np.clip(raw, space.low, space.high)  # SB3's clip (BasePolicy.predict, OnPolicyAlgorithm)
        np.testing.assert_array_equal(out, expected.astype(dtype))
        np.testing.assert_array_equal(out.astype(np.float64), np.clip(raw.astype(np.float64), [-1.5, 0.0], [1.5, 4.0]))


def test_a_half_bounded_box_clips_to_its_finite_bounds() -> None:
    space = spaces.Box(np.array([0.0, -np.inf], np.float32), np.array([np.inf, 1.0], np.float32))
    raw = np.array([[-0.5, -7.0], [2.0, 3.0]], np.float32)
    out = Actor(3, space, (4,)).to_env_action(raw)
    np.testing.assert_array_equal(out, [[0.0, -7.0], [2.0, 1.0]])
    assert all(space.contains(a) for a in out)


def test_box_actions_of_any_shape_reach_the_env_reshaped_and_clipped() -> None:
    space = spaces.Box(np.array([[-1, -2], [0, 0]], np.float32), np.array([[1, 2], [1, 5]], np.float32))
    actor = Actor(3, space, (4,))
    raw = np.array([[3.0, -3.0, 0.5, 9.0], [0.0, 0.0, -1.0, 1.0]])
    out = actor.to_env_action(raw)
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[0], [[1.0, -2.0], [0.5, 5.0]])
    np.testing.assert_array_equal(out[1], [[0.0, 0.0], [0.0, 1.0]])
    multi = Actor(3, spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 0], [0, -2]]), (4,))
    np.testing.assert_array_equal(multi.to_env_action(np.array([[1, 2, 3, 4]])), [[[2, 2], [3, 2]]])
