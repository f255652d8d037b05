"""GAE, distributions, policies and normalisation against hand calculations and torch.distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal

from natrl.distributions import Categorical, DiagGaussian
from natrl.rl.accel import critic_mlp, mlp_value_grads
from natrl.rl.critic import adam, fit_critic, value_grads
from natrl.rl.fastmlp import mlp_backward, mlp_forward
from natrl.rl.gae import gae
from natrl.rl.normalization import ObsNormalizer, RewardScaler, RunningMeanStd
from natrl.rl.policies import Actor, Critic

pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py


# ----------------------------------------------------------------------------- GAE
def test_gae_hand_computation_with_termination_and_truncation() -> None:
    # one env, 4 steps: step 1 terminates, step 3 is truncated (bootstraps from V(final obs) = 10).
    g, lam = 0.9, 0.5
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    v = torch.tensor([[0.5], [1.0], [2.0], [3.0]])
    nv = torch.tensor([[1.0], [7.0], [3.0], [10.0]])  # V(s'_t); row 1: final obs of a terminated episode
    term = torch.tensor([[False], [True], [False], [False]])
    end = torch.tensor([[False], [True], [False], [True]])
    adv, ret = gae(r, v, nv, term, end, gamma=g, lam=lam)
    d3 = 4.0 + g * 10.0 - 3.0  # truncation: bootstrap
    a3 = d3
    d2 = 3.0 + g * 3.0 - 2.0
    a2 = d2 + g * lam * a3
    d1 = 2.0 - 1.0  # terminated: no bootstrap (V=7 ignored)
    a1 = d1  # and the recursion is cut
    d0 = 1.0 + g * 1.0 - 0.5
    a0 = d0 + g * lam * a1
    expected = torch.tensor([[a0], [a1], [a2], [a3]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + v)


def test_gae_lambda_one_equals_discounted_return_minus_value() -> None:
    torch.manual_seed(0)
    T = 6
    r = torch.randn(T, 2)
    v = torch.randn(T, 2)
    last_v = torch.randn(2)
    nv = torch.cat([v[1:], last_v[None]])
    zeros = torch.zeros(T, 2, dtype=torch.bool)
    adv, ret = gae(r, v, nv, zeros, zeros, gamma=0.97, lam=1.0)
    # Monte Carlo return with bootstrap at the rollout end
    mc = torch.empty(T, 2)
    acc = last_v.clone()
    for t in reversed(range(T)):
        acc = r[t] + 0.97 * acc
        mc[t] = acc
    torch.testing.assert_close(ret, mc)
    torch.testing.assert_close(adv, mc - v)


def test_gae_rejects_bad_shapes_and_ranges() -> None:
    x = torch.zeros(3, 2)
    b = torch.zeros(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="values"):
        gae(x, torch.zeros(3, 1), x, b, b, gamma=0.9, lam=0.9)
    with pytest.raises(ValueError, match="gamma"):
        gae(x, x, x, b, b, gamma=1.5, lam=0.9)


# ----------------------------------------------------------------------------- distributions
def test_categorical_matches_torch_distributions() -> None:
    torch.manual_seed(1)
    logits, logits2 = torch.randn(5, 4), torch.randn(5, 4)
    a = torch.randint(0, 4, (5,))
    ours, ref = Categorical(logits), TorchCategorical(logits=logits)
    ref2 = TorchCategorical(logits=logits2)
    torch.testing.assert_close(ours.log_prob(a), ref.log_prob(a))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    torch.testing.assert_close(ours.kl(Categorical(logits2)), torch.distributions.kl_divergence(ref, ref2))


def test_gaussian_matches_torch_distributions() -> None:
    torch.manual_seed(2)
    m, s, m2, s2 = (torch.randn(5, 3) for _ in range(4))
    a = torch.randn(5, 3)
    ours, ref = DiagGaussian(m, s), Normal(m, s.exp())
    ref2 = Normal(m2, s2.exp())
    torch.testing.assert_close(ours.log_prob(a), ref.log_prob(a).sum(-1))
    torch.testing.assert_close(ours.entropy(), ref.entropy().sum(-1))
    torch.testing.assert_close(ours.kl(DiagGaussian(m2, s2)), torch.distributions.kl_divergence(ref, ref2).sum(-1))


@pytest.mark.parametrize("family", ["categorical", "gaussian"])
def test_output_fisher_equals_kl_hessian_and_score_covariance(family: str) -> None:
    """M from fisher_vp_outputs == Hessian of KL(old‖new) at new=old == E[score scoreᵀ] (enumerated/MC)."""
    torch.manual_seed(3)
    if family == "categorical":
        params = (torch.randn(1, 4),)
        cls = Categorical
    else:
        params = (torch.randn(1, 3), 0.3 * torch.randn(1, 3))
        cls = DiagGaussian
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])

    def split(flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(c.reshape(1, -1) for c in flat.split(sizes))

    old = cls(*params)
    hess = torch.func.hessian(lambda f: old.kl(cls(*split(f))).sum())(flat0)
    n = flat0.numel()
    dense = torch.stack(
        [torch.cat([t.reshape(-1) for t in cls.fisher_vp_outputs(params, split(e))]) for e in torch.eye(n)], 1
    )
    torch.testing.assert_close(dense, hess, atol=1e-10, rtol=1e-8)
    # Fisher as the covariance of the score, E[∇log p ∇log pᵀ]
    if family == "categorical":
        p = old.probs[0]
        scores = torch.stack(
            [torch.func.grad(lambda f, k=k: cls(*split(f)).log_prob(torch.tensor([k])).sum())(flat0) for k in range(4)]
        )
        cov = (p[:, None, None] * scores[:, :, None] * scores[:, None, :]).sum(0)
        torch.testing.assert_close(cov, dense, atol=1e-10, rtol=1e-8)
    else:
        g = torch.Generator().manual_seed(0)
        samples = old.sample(g).repeat(1, 1)
        samples = torch.cat([old.sample(g) for _ in range(20000)])
        score = torch.func.vmap(lambda a: torch.func.grad(lambda f: cls(*split(f)).log_prob(a[None]).sum())(flat0))(
            samples
        )
        cov = score.T @ score / samples.shape[0]
        torch.testing.assert_close(cov, dense, atol=0.1, rtol=0.1)


# ----------------------------------------------------------------------------- policies
def test_actor_declares_log_std_and_bounds_actions() -> None:
    space = spaces.Box(low=-2.0, high=np.array([1.0, 3.0]), dtype=np.float32)
    actor = Actor(5, space, (8,), log_std_init=-0.5)
    names = [n for n, _ in actor.named_parameters()]
    assert "log_std" in names and len(list(actor.parameters())) == len(names)
    raw = np.array([[-5.0, 5.0], [0.5, 0.0]])
    np.testing.assert_array_equal(actor.to_env_action(raw), [[-2.0, 3.0], [0.5, 0.0]])
    squash = Actor(5, space, (8,), action_bound="squash")
    out = squash.to_env_action(np.array([[0.0, 100.0]]))
    np.testing.assert_allclose(out, [[-0.5, 3.0]])


def test_squashed_log_prob_is_change_of_variables() -> None:
    space = spaces.Box(low=-1.0, high=3.0, shape=(1,), dtype=np.float32)
    actor = Actor(2, space, (4,), action_bound="squash")
    obs = torch.randn(1, 2)
    u = torch.tensor([[0.3]])
    dist = actor.distribution(obs)
    a = -1.0 + (math.tanh(0.3) + 1.0) * 2.0  # env action
    da_du = 2.0 * (1 - math.tanh(0.3) ** 2)
    expected = dist.log_prob(u) - math.log(da_du)
    torch.testing.assert_close(actor.log_prob_env(obs, u), expected)
    np.testing.assert_allclose(actor.to_env_action(u.numpy()), [[a]], rtol=1e-6)  # the squash the env receives


def test_state_dependent_std_is_an_output() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    actor = Actor(3, space, (8,), state_dependent_std=True, log_std_init=-1.0)
    mean, log_std = actor(torch.zeros(4, 3))
    assert mean.shape == log_std.shape == (4, 2)
    torch.testing.assert_close(log_std, torch.full((4, 2), -1.0))
    assert not any(n == "log_std" for n, _ in actor.named_parameters())


# ----------------------------------------------------------------------------- normalisation
def test_running_mean_std_matches_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 3))
    rms = RunningMeanStd((3,), epsilon=0.0)
    rms.count = 0.0
    for chunk in np.array_split(data, 7):
        if rms.count == 0.0:
            rms.mean, rms.var, rms.count = chunk.mean(0), chunk.var(0), chunk.shape[0]
        else:
            rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-10)


@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (16,), (130,), (2, 17), (300, 3, 4)])
def test_running_mean_std_moments_are_numpys_mean_and_var_bit_for_bit(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        batch = rng.normal(rng.uniform(-1e3, 1e3), rng.uniform(1e-2, 1e3), size=shape)
        mean, var, n = RunningMeanStd.moments(batch)
        assert n == shape[0]
        assert np.array_equal(mean, batch.mean(0)) and np.array_equal(var, batch.var(0))


def test_normalisers_clip_as_np_clip_does_nan_and_infinities_included() -> None:
    x = np.array([-np.inf, -11.0, -10.0, -0.5, 0.0, 3.0, 10.0, 12.5, np.inf, np.nan])
    norm = ObsNormalizer(x.shape, clip=10.0, epsilon=0.0)  # mean 0, variance 1: only the clip acts
    np.testing.assert_array_equal(norm(x), np.clip(x, -10.0, 10.0).astype(np.float32))
    r = x[1:-2]  # finite rewards (an infinite one would make the running variance infinite)
    scaler = RewardScaler(r.size, gamma=0.9, clip=10.0, epsilon=0.0)
    scaler.rms.count = 1e300  # the variance stays 1
    np.testing.assert_array_equal(scaler(r, np.ones(r.size, bool)), np.clip(r, -10.0, 10.0))


def test_reward_scaler_uses_discounted_return_and_resets_at_episode_end() -> None:
    sc = RewardScaler(1, gamma=0.5, clip=1e9, epsilon=0.0)
    sc.rms.count = 0.0
    sc.rms.var[...] = 0.0
    sc(np.array([1.0]), np.array([False]))
    assert sc.ret[0] == 1.0
    sc(np.array([2.0]), np.array([True]))  # R = 0.5 + 2 = 2.5, then reset
    assert sc.ret[0] == 0.0
    np.testing.assert_allclose(sc.rms.mean, (1.0 + 2.5) / 2)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_hand_written_forward_in_float32_equals_the_modules(activation: str) -> None:
    """mlp_forward's activations (NumPy's tanh on the CPU) against the module's (torch's): within a few float32 ulps."""
    torch.manual_seed(0)
    critic = Critic(17, (64, 64), activation).float()
    x = torch.randn(2048, 17, dtype=torch.float32)
    layers = critic_mlp(critic)
    assert layers is not None
    out, acts = mlp_forward(layers, x)
    with torch.no_grad():
        torch.testing.assert_close(out.squeeze(-1), critic(x), rtol=1e-5, atol=1e-6)
        h = x
        for (w, b), a in zip(layers.layers[:-1], acts[1:]):
            z = h @ w.t() + b
            h = torch.tanh(z) if activation == "tanh" else torch.relu(z)
            torch.testing.assert_close(a, h, rtol=0, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("hidden", [(), (16,), (32, 16)])
def test_hand_written_critic_gradient_equals_autograd(activation: str, hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    critic = Critic(5, hidden, activation).double()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    loss_ref = 0.5 * (critic(x) - y).pow(2).mean()
    ref = torch.autograd.grad(loss_ref, list(critic.parameters()))
    layers = critic_mlp(critic)
    assert layers is not None
    loss = mlp_value_grads(layers, x, y)
    assert float(loss) == pytest.approx(float(loss_ref), rel=1e-12)
    for (name, p), r in zip(critic.named_parameters(), ref):
        torch.testing.assert_close(p.grad, r, rtol=1e-10, atol=1e-12, msg=name)


def test_hand_written_backward_in_float32_is_torchs_arithmetic_bit_for_bit() -> None:
    """mlp_backward (tanh' applied through NumPy) against the same products written as torch ops: equal bits."""
    torch.manual_seed(0)
    critic = Critic(17, (64, 64), "tanh").float()
    x, grad_out = torch.randn(128, 17, dtype=torch.float32), torch.randn(128, 1, dtype=torch.float32)
    layers = critic_mlp(critic)
    assert layers is not None
    _, acts = mlp_forward(layers, x)
    mlp_backward(layers, acts, grad_out)
    with torch.no_grad():
        delta = grad_out
        for k in (2, 1, 0):
            w, b = layers.layers[k]
            assert torch.equal(w.grad, delta.t() @ acts[k]) and torch.equal(b.grad, delta.sum(0))
            if k:
                delta = delta @ w
                delta = delta - delta * acts[k] * acts[k]


def test_hand_written_forward_follows_parameters_loaded_in_place() -> None:
    torch.manual_seed(0)
    critic, other = Critic(5, (16,), "tanh").float(), Critic(5, (16,), "tanh").float()
    layers = critic_mlp(critic)
    assert layers is not None
    critic.load_state_dict(other.state_dict())
    reference = critic_mlp(other)
    assert reference is not None
    x = torch.randn(8, 5, dtype=torch.float32)
    assert torch.equal(mlp_forward(layers, x)[0], mlp_forward(reference, x)[0])


def test_fit_critic_hand_written_path_follows_the_autograd_path() -> None:
    def run(fast: bool) -> tuple[float, torch.Tensor]:
        torch.manual_seed(1)
        critic = Critic(4, (32, 32), "tanh").double()
        opt = adam(list(critic.parameters()), 1e-3)
        gen = torch.Generator().manual_seed(2)
        data = torch.Generator().manual_seed(3)
        obs = torch.randn(300, 4, generator=data, dtype=torch.float64)
        ret = torch.randn(300, generator=data, dtype=torch.float64)
        spec = critic_mlp(critic)
        assert spec is not None
        grads = (lambda x, y: mlp_value_grads(spec, x, y)) if fast else value_grads(critic)
        mse = fit_critic(grads, opt, obs, ret, epochs=3, batch_size=64, generator=gen)
        return mse, torch.cat([p.detach().reshape(-1) for p in critic.parameters()])

    fast = run(True)
    slow = run(False)
    assert fast[0] == pytest.approx(slow[0], rel=1e-9)
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-9, atol=1e-12)


def test_critics_the_hand_written_pass_does_not_cover_use_autograd() -> None:
    assert critic_mlp(Critic(3, (8,), "elu")) is None
    assert critic_mlp(Critic(3, (8,), "gelu")) is None
    frozen = Critic(3, (8,), "tanh")
    frozen.net[0].weight.requires_grad_(False)
    assert critic_mlp(frozen) is None


def test_adam_step_is_optimizer_step_bit_for_bit() -> None:
    """natrl's adam_step (torch's functional Adam on the optimizer's state) against Optimizer.step(): the same
    parameters and state, bit for bit, over steps with a changing learning rate (the first step, which creates
    the state, goes through Optimizer.step itself)."""
    from natrl.rl.critic import adam, adam_step

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [adam(list(n.parameters()), lr=3e-3) for n in nets]
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    for step in range(6):
        for net, opt, fn in zip(nets, opts, (lambda o: o.step(), adam_step), strict=True):
            opt.param_groups[0]["lr"] = 3e-3 * (1.0 - step / 10)
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            fn(opt)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
        sa, sb = opts[0].state[a], opts[1].state[b]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_clip_grad_norm_is_torchs_bit_for_bit(scale: float) -> None:
    """natrl's clip_grad_norm against torch.nn.utils.clip_grad_norm_ on the CPU: the same total norm and the same
    scaled gradients, bit for bit, below the threshold (no scaling) and above it; a parameter without a gradient
    is skipped."""
    from natrl.rl.critic import clip_grad_norm

    torch.manual_seed(1)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)) for _ in range(2)]
    grads = [scale * torch.randn_like(p) for p in nets[0].parameters()]
    for net in nets:
        for p, g in zip(net.parameters(), grads, strict=True):
            p.grad = g.clone()
        net[2].bias.grad = None
    ref = torch.nn.utils.clip_grad_norm_(list(nets[0].parameters()), 0.5, foreach=True)
    total = clip_grad_norm(list(nets[1].parameters()), 0.5)
    assert torch.equal(ref, total)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)
