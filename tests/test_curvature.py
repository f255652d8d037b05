"""Curvature operators against dense matrices computed another way (float64, tiny networks).

References used here, each built without the operator under test:

* Fisher: J from ``torch.func.jacrev`` and the output Fisher Mᵢ written out as a dense
  matrix; and the score form E_a[∇log π ∇log πᵀ], exact by enumerating the actions
  (Categorical) or by Gauss-Hermite quadrature, exact for the polynomial scores of a
  diagonal Gaussian (Gaussian).
* KL-Hessian, Hessian: ``torch.func.hessian``.
* GGN: J from ``jacrev`` with Hᵢ dense; for a linear model, the Hessian of the loss.
* Empirical Fisher: per-sample gradients from a Python loop of ``torch.autograd.grad``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from natrl.curvature import (
    Matvec,
    empirical_fisher_vp,
    fisher_quadratic,
    fisher_vp,
    ggn_vp,
    hvp,
    kl_hvp,
    to_dense,
)
from natrl.distributions import Categorical, DiagGaussian
from natrl.params import flatten, functional, write_back

# torch's own forward-AD decompositions call the deprecated torch.jit.script on first use.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

DT = torch.float64
N_OBS, N_ACT, N_BATCH = 3, 2, 7
HEADS = ["categorical", "gauss_fixed_std", "gauss_state_std"]
ModelFn = Callable[[Tensor, Tensor], tuple[Tensor, ...]]


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_policy(head: str, bias: bool, seed: int = 0) -> tuple[ModelFn, Tensor, Tensor, type]:
    """A tanh MLP policy (3 -> 5 -> 4 -> head) as a function of one flat θ, and a batch."""
    n_out = 2 * N_ACT if head == "gauss_state_std" else N_ACT
    net = nn.Sequential(
        nn.Linear(N_OBS, 5, bias=bias),
        nn.Tanh(),
        nn.Linear(5, 4, bias=bias),
        nn.Tanh(),
        nn.Linear(4, n_out, bias=bias),
    ).to(DT)
    g = gen(seed)
    n_net = sum(p.numel() for p in net.parameters())
    write_back(net.parameters(), 0.8 * torch.randn(n_net, generator=g, dtype=DT))
    f = functional(net)
    x = torch.randn(N_BATCH, N_OBS, generator=g, dtype=DT)
    if head == "categorical":

        def model_fn(theta: Tensor, obs: Tensor) -> tuple[Tensor, ...]:
            return (f(theta, obs),)  # type: ignore[return-value]

        return model_fn, flatten(net.parameters()).detach(), x, Categorical
    if head == "gauss_fixed_std":  # θ = (network, log_std), log_std broadcast to (N, D)

        def model_fn(theta: Tensor, obs: Tensor) -> tuple[Tensor, ...]:
            mean = f(theta[:n_net], obs)
            assert isinstance(mean, Tensor)
            return mean, theta[n_net:].expand_as(mean)

        log_std = 0.3 * torch.randn(N_ACT, generator=g, dtype=DT)
        theta = torch.cat([flatten(net.parameters()).detach(), log_std])
        return model_fn, theta, x, DiagGaussian

    def model_fn(theta: Tensor, obs: Tensor) -> tuple[Tensor, ...]:
        out = f(theta, obs)
        assert isinstance(out, Tensor)
        mean, log_std = out.split(N_ACT, dim=-1)
        return mean, log_std

    return model_fn, flatten(net.parameters()).detach(), x, DiagGaussian


def output_jacobian(model_fn: ModelFn, theta: Tensor, x: Tensor) -> Tensor:
    """J of the concatenated outputs, shape (N, K_total, P), by jacrev."""
    jac = torch.func.jacrev(lambda th: model_fn(th, x))(theta)
    return torch.cat([j.reshape(x.shape[0], -1, theta.numel()) for j in jac], dim=1)


def dense_output_fisher(outs: tuple[Tensor, ...], head: str) -> Tensor:
    """Mᵢ written out, shape (N, K_total, K_total)."""
    if head == "categorical":
        p = torch.softmax(outs[0], dim=-1)
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    _, log_std = outs
    return torch.diag_embed(torch.cat([torch.exp(-2.0 * log_std), 2.0 * torch.ones_like(log_std)], -1))


def dense_fisher(model_fn: ModelFn, theta: Tensor, x: Tensor, head: str) -> Tensor:
    j = output_jacobian(model_fn, theta, x)
    m = dense_output_fisher(model_fn(theta, x), head)
    return torch.einsum("nkp,nkl,nlq->pq", j, m, j) / x.shape[0]


def score_fisher(model_fn: ModelFn, theta: Tensor, x: Tensor, head: str) -> Tensor:
    """(1/N) Σᵢ E_a[sᵢ(a) sᵢ(a)ᵀ], s = ∇_θ log π(a|xᵢ), the expectation computed exactly."""
    n, p_dim = x.shape[0], theta.numel()
    fisher = torch.zeros(p_dim, p_dim, dtype=DT)
    if head == "categorical":
        scores = torch.func.jacrev(lambda th: F.log_softmax(model_fn(th, x)[0], -1))(theta)
        probs = torch.softmax(model_fn(theta, x)[0], -1)  # (N, K)
        return torch.einsum("na,nap,naq->pq", probs, scores, scores) / n
    # Gauss-Hermite, 3 nodes per dimension: exact for the degree-4 polynomials s sᵀ.
    nodes, weights = (torch.as_tensor(a, dtype=DT) for a in np.polynomial.hermite.hermgauss(3))
    mean, log_std = (o.detach() for o in model_fn(theta, x))
    for idx in itertools.product(range(3), repeat=N_ACT):
        z = nodes[list(idx)]
        w = float(torch.prod(weights[list(idx)])) / math.pi ** (N_ACT / 2)
        actions = mean + torch.exp(log_std) * math.sqrt(2.0) * z
        s = torch.func.jacrev(lambda th, a=actions: DiagGaussian(*model_fn(th, x)).log_prob(a))(theta)  # (N, P)
        fisher += w * s.T @ s / n
    return fisher


def mean_kl_fn(model_fn: ModelFn, theta0: Tensor, x: Tensor, dist: type) -> Callable[[Tensor], Tensor]:
    old = dist(*(o.detach() for o in model_fn(theta0, x)))
    return lambda th: old.kl(dist(*model_fn(th, x))).mean()


def dense(mv: Matvec, p: int) -> Tensor:
    return to_dense(mv, p, dtype=DT, device="cpu")


# ------------------------------------------------------------------------------ Fisher


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("head", HEADS)
def test_fisher_vp_matches_dense_jacobian_fisher_and_score_fisher(head: str, bias: bool) -> None:
    model_fn, theta, x, dist = make_policy(head, bias)
    got = dense(fisher_vp(model_fn, theta, x, dist), theta.numel())
    ref = dense_fisher(model_fn, theta, x, head)
    assert rel_err(got, ref) < 1e-6
    assert rel_err(got, score_fisher(model_fn, theta, x, head)) < 1e-6
    assert float(torch.linalg.eigvalsh(got).min()) >= -1e-10  # PSD


@pytest.mark.parametrize("head", HEADS)
def test_fisher_vp_equals_kl_hessian_at_old_params(head: str) -> None:
    model_fn, theta, x, dist = make_policy(head, True, seed=1)
    fisher = dense(fisher_vp(model_fn, theta, x, dist), theta.numel())
    kl_h = dense(kl_hvp(model_fn, theta, x, dist), theta.numel())
    assert rel_err(fisher, kl_h) < 1e-6


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("head", HEADS)
def test_kl_hvp_matches_torch_func_hessian(head: str, bias: bool) -> None:
    model_fn, theta, x, dist = make_policy(head, bias, seed=2)
    got = dense(kl_hvp(model_fn, theta, x, dist), theta.numel())
    ref = torch.func.hessian(mean_kl_fn(model_fn, theta, x, dist))(theta)
    assert rel_err(got, ref) < 1e-6


def test_fisher_vp_accepts_any_object_with_fisher_vp_outputs() -> None:
    model_fn, theta, x, _ = make_policy("gauss_state_std", True)

    class Scaled:  # M = 3 I on the outputs
        @staticmethod
        def fisher_vp_outputs(params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return tuple(3.0 * t for t in tangents)

    got = dense(fisher_vp(model_fn, theta, x, Scaled()), theta.numel())
    j = output_jacobian(model_fn, theta, x)
    ref = 3.0 * torch.einsum("nkp,nkq->pq", j, j) / N_BATCH
    assert rel_err(got, ref) < 1e-6


def test_fisher_vp_with_outputs_partly_independent_of_theta() -> None:
    """A log-std that is not part of θ contributes nothing (its tangent is zero)."""
    model_fn, theta, x, _ = make_policy("gauss_fixed_std", True)
    n_net = theta.numel() - N_ACT
    log_std = theta[n_net:].clone()

    def net_only(th: Tensor, obs: Tensor) -> tuple[Tensor, ...]:
        return model_fn(torch.cat([th, log_std]), obs)

    got = dense(fisher_vp(net_only, theta[:n_net], x, DiagGaussian), n_net)
    ref = dense_fisher(model_fn, theta, x, "gauss_fixed_std")[:n_net, :n_net]
    assert rel_err(got, ref) < 1e-6


@pytest.mark.parametrize("head", HEADS)
def test_fisher_quadratic_equals_vt_of_dense_fisher_times_v(head: str) -> None:
    model_fn, theta, x, dist = make_policy(head, True, seed=3)
    ref_f = dense_fisher(model_fn, theta, x, head)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(theta.numel(), dtype=DT, generator=gen)
        got = fisher_quadratic(model_fn, theta, x, dist, v)
        assert got.dim() == 0 and got.dtype == DT
        ref = v @ ref_f @ v
        assert abs(float(got) - float(ref)) <= 1e-10 * abs(float(ref))


def test_fisher_quadratic_refuses_a_vector_of_the_wrong_size() -> None:
    model_fn, theta, x, dist = make_policy("categorical", True)
    with pytest.raises(ValueError, match="fisher_quadratic: shape mismatch"):
        fisher_quadratic(model_fn, theta, x, dist, torch.zeros(theta.numel() + 1, dtype=DT))


class OnceTanh(torch.autograd.Function):
    """tanh whose backward cannot be differentiated again, with a forward-mode rule."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        (y,) = ctx.saved_tensors
        return grad * (1.0 - y * y)

    @staticmethod
    def jvp(ctx, tangent):  # type: ignore[no-untyped-def, override]
        (y,) = ctx.saved_tensors
        return tangent * (1.0 - y * y)


def test_fisher_vp_falls_back_to_forward_mode_without_double_backward() -> None:
    g = gen(3)
    w1 = torch.randn(4, N_OBS, generator=g, dtype=DT)
    x = torch.randn(N_BATCH, N_OBS, generator=g, dtype=DT)

    def model(act: Callable[[Tensor], Tensor]) -> ModelFn:
        def model_fn(theta: Tensor, obs: Tensor) -> tuple[Tensor, ...]:
            w2 = theta.view(N_ACT, 4)
            return (act(obs @ (w1 * theta.sum()).T) @ w2.T,)

        return model_fn

    theta = torch.randn(N_ACT * 4, generator=g, dtype=DT)
    once = fisher_vp(model(OnceTanh.apply), theta, x, Categorical)
    got = dense(once, theta.numel())
    ref = dense_fisher(model(torch.tanh), theta, x, "categorical")
    assert rel_err(got, ref) < 1e-6
    assert rel_err(dense(once, theta.numel()), ref) < 1e-6  # the remembered path too


# ------------------------------------------------------------------------------ Hessian


_REG_X = torch.randn(6, 3, generator=gen(4), dtype=DT)
_REG_Y = torch.randn(6, generator=gen(41), dtype=DT)


def regression_loss(theta: Tensor) -> Tensor:
    """A small nonlinear least-squares loss with a non-PSD Hessian."""
    w1, w2 = theta[:12].view(4, 3), theta[12:]
    return ((torch.tanh(_REG_X @ w1.T) @ w2 - _REG_Y) ** 2).mean() + 0.1 * torch.sin(theta).sum()


@pytest.mark.parametrize("mode", ["auto", "forward-over-reverse", "reverse-over-reverse"])
def test_hvp_matches_torch_func_hessian(mode: str) -> None:
    theta = torch.randn(16, generator=gen(5), dtype=DT)
    got = dense(hvp(regression_loss, theta, mode=mode), 16)  # type: ignore[arg-type]
    ref = torch.func.hessian(regression_loss)(theta)
    assert rel_err(got, ref) < 1e-6
    assert float(torch.linalg.eigvalsh(ref).min()) < 0  # the test covers an indefinite H


class OldStyleCube(torch.autograd.Function):
    """x³ as an old-style autograd.Function: torch.func forward mode refuses it."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        return grad * 3.0 * x * x  # differentiable: double backprop works


def test_hvp_falls_back_to_reverse_over_reverse_once() -> None:
    calls = {"n": 0}

    def loss(theta: Tensor) -> Tensor:
        calls["n"] += 1
        return OldStyleCube.apply(theta).sum() * theta.sum()

    def loss_plain(theta: Tensor) -> Tensor:
        return (theta**3).sum() * theta.sum()

    theta = torch.randn(5, generator=gen(6), dtype=DT)
    mv = hvp(loss, theta, mode="forward-over-reverse")
    ref = torch.func.hessian(loss_plain)(theta)
    got = dense(mv, 5)
    assert rel_err(got, ref) < 1e-6
    calls_after_first_columns = calls["n"]
    assert calls_after_first_columns == 2  # one failed forward-mode try, one graph build
    dense(mv, 5)
    assert calls["n"] == calls_after_first_columns  # remembered: graph reused, no retry
    explicit = dense(hvp(loss, theta, mode="reverse-over-reverse"), 5)
    assert rel_err(explicit, ref) < 1e-6


# ---------------------------------------------------------------------------------- GGN


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_ggn_matches_dense_jt_h_j(loss: str, bias: bool) -> None:
    model_fn, theta, x, _ = make_policy("categorical", bias, seed=7)

    def f(th: Tensor, obs: Tensor) -> Tensor:
        return model_fn(th, obs)[0]

    g = gen(8)
    if loss == "mse":
        y = torch.randn(N_BATCH, N_ACT, generator=g, dtype=DT)
        h = torch.eye(N_ACT, dtype=DT).expand(N_BATCH, N_ACT, N_ACT)
    else:
        y = torch.randint(0, N_ACT, (N_BATCH,), generator=g)
        p = torch.softmax(f(theta, x), -1)
        h = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    j = output_jacobian(model_fn, theta, x)
    ref = torch.einsum("nkp,nkl,nlq->pq", j, h, j) / N_BATCH
    got = dense(ggn_vp(f, theta, x, y, loss=loss), theta.numel())  # type: ignore[arg-type]
    assert rel_err(got, ref) < 1e-6
    assert float(torch.linalg.eigvalsh(got).min()) >= -1e-10  # PSD


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_ggn_equals_hessian_for_a_linear_model(loss: str) -> None:
    """The documented convention: mean over samples of ½‖f − y‖² (or CE), linear f."""
    g = gen(9)
    k = 3
    x = torch.randn(10, 4, generator=g, dtype=DT)

    def f(theta: Tensor, obs: Tensor) -> Tensor:
        return obs @ theta.view(k, 4).T

    if loss == "mse":
        y = torch.randn(10, k, generator=g, dtype=DT)

        def total(theta: Tensor) -> Tensor:
            return 0.5 * ((f(theta, x) - y) ** 2).sum(-1).mean()

    else:
        y = torch.randint(0, k, (10,), generator=g)

        def total(theta: Tensor) -> Tensor:
            return F.cross_entropy(f(theta, x), y)

    theta = torch.randn(4 * k, generator=g, dtype=DT)
    got = dense(ggn_vp(f, theta, x, y, loss=loss), 4 * k)  # type: ignore[arg-type]
    assert rel_err(got, torch.func.hessian(total)(theta)) < 1e-6


def test_cross_entropy_ggn_equals_categorical_fisher() -> None:
    model_fn, theta, x, _ = make_policy("categorical", True, seed=10)
    y = torch.zeros(N_BATCH, dtype=torch.long)
    ggn = dense(ggn_vp(lambda th, o: model_fn(th, o)[0], theta, x, y, loss="cross_entropy"), theta.numel())
    fisher = dense(fisher_vp(model_fn, theta, x, Categorical), theta.numel())
    assert rel_err(ggn, fisher) < 1e-6
    soft = torch.full((N_BATCH, N_ACT), 1.0 / N_ACT, dtype=DT)  # probability targets
    f = lambda th, o: model_fn(th, o)[0]  # noqa: E731
    ggn_soft = dense(ggn_vp(f, theta, x, soft, loss="cross_entropy"), theta.numel())
    assert rel_err(ggn_soft, fisher) < 1e-6


def test_inputs_as_a_tuple_of_tensors() -> None:
    model_fn, theta, x, dist = make_policy("gauss_state_std", True, seed=17)

    def split_fn(th: Tensor, obs: tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
        return model_fn(th, torch.cat(obs, dim=1))

    parts = (x[:, :1], x[:, 1:])
    got = fisher_vp(split_fn, theta, parts, dist, subsample=4, generator=gen(18))
    rows = torch.randperm(N_BATCH, generator=gen(18))[:4]
    ref = dense_fisher(model_fn, theta, x[rows], "gauss_state_std")
    assert rel_err(dense(got, theta.numel()), ref) < 1e-6


# --------------------------------------------------------------------- empirical Fisher


def per_sample_loss(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    w1, w2 = theta[:12].view(4, 3), theta[12:]
    return (torch.tanh(w1 @ x) @ w2 - y) ** 2


@pytest.mark.parametrize("with_targets", [True, False])
def test_empirical_fisher_matches_loop_of_per_sample_grads(with_targets: bool) -> None:
    g = gen(11)
    theta = torch.randn(16, generator=g, dtype=DT)
    x = torch.randn(N_BATCH, 3, generator=g, dtype=DT)
    y = torch.randn(N_BATCH, generator=g, dtype=DT)
    rows = []
    for i in range(N_BATCH):
        th = theta.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(per_sample_loss(th, x[i], y[i]), th)
        rows.append(gi)
    grads = torch.stack(rows)
    ref = grads.T @ grads / N_BATCH
    if with_targets:
        mv = empirical_fisher_vp(per_sample_loss, theta, x, y)
    else:
        xy = torch.cat([x, y[:, None]], dim=1)
        mv = empirical_fisher_vp(lambda th, r: per_sample_loss(th, r[:3], r[3]), theta, xy)
    got = dense(mv, 16)
    assert rel_err(got, ref) < 1e-6
    assert float(torch.linalg.eigvalsh(got).min()) >= -1e-10


# ----------------------------------------------------------------- shared properties


def build_all(damping: float = 0.0) -> dict[str, tuple[Matvec, int]]:
    """Every operator on a small problem; name -> (matvec, P)."""
    model_fn, theta, x, dist = make_policy("gauss_fixed_std", True, seed=12)
    y = torch.randn(N_BATCH, N_ACT, generator=gen(13), dtype=DT)
    f = lambda th, o: model_fn(th, o)[0]  # noqa: E731
    theta_e = torch.randn(16, generator=gen(14), dtype=DT)
    x_e = torch.randn(N_BATCH, 3, generator=gen(15), dtype=DT)
    y_e = torch.randn(N_BATCH, generator=gen(16), dtype=DT)
    p, p_e = theta.numel(), 16
    ops = {
        "fisher_vp": (fisher_vp(model_fn, theta, x, dist, damping=damping), p),
        "kl_hvp": (kl_hvp(model_fn, theta, x, dist, damping=damping), p),
        "ggn_vp": (ggn_vp(f, theta, x, y, loss="mse", damping=damping), p),
        "empirical_fisher_vp": (
            empirical_fisher_vp(per_sample_loss, theta_e, x_e, y_e, damping=damping),
            p_e,
        ),
        "hvp": (hvp(regression_loss, theta_e, damping=damping), p_e),
        "hvp_rr": (
            hvp(regression_loss, theta_e, damping=damping, mode="reverse-over-reverse"),
            p_e,
        ),
    }
    return ops


def test_symmetry_of_every_operator() -> None:
    for name, (mv, p) in build_all().items():
        u = torch.randn(p, generator=gen(20), dtype=DT)
        v = torch.randn(p, generator=gen(21), dtype=DT)
        a, b = float(u @ mv(v)), float(v @ mv(u))
        assert abs(a - b) <= 1e-10 * max(abs(a), abs(b), 1e-12), name


def test_damping_adds_exactly_lambda_v() -> None:
    lam = 0.37
    plain, damped = build_all(), build_all(damping=lam)
    for name, (mv, p) in plain.items():
        v = torch.randn(p, generator=gen(22), dtype=DT)
        diff = damped[name][0](v) - mv(v)
        torch.testing.assert_close(diff, lam * v, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("subsample", [3, 0.5])
def test_subsample_equals_operator_of_the_sub_batch(subsample: float) -> None:
    seed = 30
    k = subsample if isinstance(subsample, int) else max(1, int(subsample * N_BATCH))
    rows = torch.randperm(N_BATCH, generator=gen(seed))[:k]  # the documented draw
    model_fn, theta, x, dist = make_policy("categorical", True, seed=31)
    sub = fisher_vp(model_fn, theta, x, dist, subsample=subsample, generator=gen(seed))
    ref = dense_fisher(model_fn, theta, x[rows], "categorical")
    assert rel_err(dense(sub, theta.numel()), ref) < 1e-6
    assert rel_err(ref, dense_fisher(model_fn, theta, x, "categorical")) > 1e-3  # a real subset
    y = torch.randn(N_BATCH, N_ACT, generator=gen(32), dtype=DT)
    f = lambda th, o: model_fn(th, o)[0]  # noqa: E731
    ggn_sub = ggn_vp(f, theta, x, y, subsample=subsample, generator=gen(seed))
    assert rel_err(dense(ggn_sub, theta.numel()), dense(ggn_vp(f, theta, x[rows], y[rows]), theta.numel())) < 1e-6
    kl_sub = kl_hvp(model_fn, theta, x, dist, subsample=subsample, generator=gen(seed))
    assert rel_err(dense(kl_sub, theta.numel()), ref) < 1e-6
    theta_e = torch.randn(16, generator=gen(33), dtype=DT)
    x_e = torch.randn(N_BATCH, 3, generator=gen(34), dtype=DT)
    y_e = torch.randn(N_BATCH, generator=gen(35), dtype=DT)
    e_sub = empirical_fisher_vp(per_sample_loss, theta_e, x_e, y_e, subsample=subsample, generator=gen(seed))
    e_ref = empirical_fisher_vp(per_sample_loss, theta_e, x_e[rows], y_e[rows])
    assert rel_err(dense(e_sub, 16), dense(e_ref, 16)) < 1e-6


def test_operator_is_taken_at_a_copy_of_params() -> None:
    model_fn, theta, x, dist = make_policy("categorical", True)
    mv = fisher_vp(model_fn, theta, x, dist)
    before = dense(mv, theta.numel())
    theta.add_(1.0)  # the caller moves on (e.g. a line search writes trial parameters)
    assert torch.equal(dense(mv, theta.numel()), before)


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (lambda p: torch.zeros(p + 1, dtype=DT), "shape"),
        (lambda p: torch.zeros(1, p, dtype=DT), "shape"),
        (lambda p: torch.zeros(p, dtype=torch.float32), "dtype"),
        (lambda p: torch.zeros(p, dtype=DT, device="meta"), "device"),
        (lambda p: torch.full((p,), math.nan, dtype=DT), "non-finite vector"),
        (lambda p: torch.full((p,), math.inf, dtype=DT), "non-finite vector"),
    ],
)
def test_every_matvec_rejects_bad_vectors(vector: Callable[[int], Tensor], message: str) -> None:
    for name, (mv, p) in build_all().items():
        with pytest.raises(ValueError, match=message):
            mv(vector(p))
        assert torch.isfinite(mv(torch.ones(p, dtype=DT))).all(), name


def test_construction_rejects_bad_input() -> None:
    model_fn, theta, x, dist = make_policy("categorical", True)
    with pytest.raises(ValueError, match="empty batch"):
        fisher_vp(model_fn, theta, x[:0], dist)
    with pytest.raises(ValueError, match="empty batch"):
        kl_hvp(model_fn, theta, x[:0], dist)
    with pytest.raises(ValueError, match="empty batch"):
        ggn_vp(lambda th, o: model_fn(th, o)[0], theta, x[:0], x[:0, :N_ACT])
    with pytest.raises(ValueError, match="empty batch"):
        empirical_fisher_vp(per_sample_loss, theta, x[:0])
    with pytest.raises(ValueError, match="flat vector"):
        fisher_vp(model_fn, theta.view(1, -1), x, dist)
    with pytest.raises(ValueError, match="non-finite params"):
        fisher_vp(model_fn, theta * math.nan, x, dist)
    with pytest.raises(ValueError, match="damping"):
        fisher_vp(model_fn, theta, x, dist, damping=-1.0)
    with pytest.raises(ValueError, match="subsample count"):
        fisher_vp(model_fn, theta, x, dist, subsample=N_BATCH + 1)
    with pytest.raises(ValueError, match="subsample fraction"):
        fisher_vp(model_fn, theta, x, dist, subsample=0.0)
    with pytest.raises(ValueError, match="subsample"):
        fisher_vp(model_fn, theta, x, dist, subsample=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fisher_vp_outputs"):
        fisher_vp(model_fn, theta, x, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch-first"):
        fisher_vp(lambda th, o: (model_fn(th, o)[0][:2],), theta, x, dist)
    with pytest.raises(ValueError, match="device mismatch"):
        fisher_vp(model_fn, theta, x.to("meta"), dist)
    f = lambda th, o: model_fn(th, o)[0]  # noqa: E731
    with pytest.raises(ValueError, match="targets have"):
        ggn_vp(f, theta, x, torch.zeros(N_BATCH + 1, N_ACT, dtype=DT))
    with pytest.raises(ValueError, match="output shape"):
        ggn_vp(f, theta, x, torch.zeros(N_BATCH, N_ACT + 1, dtype=DT))
    with pytest.raises(ValueError, match="loss must be"):
        ggn_vp(f, theta, x, torch.zeros(N_BATCH, N_ACT, dtype=DT), loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        hvp(regression_loss, theta, mode="forward")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="real scalar"):
        hvp(lambda th: th * 2.0, theta, mode="reverse-over-reverse")
    with pytest.raises(ValueError, match="real scalar"):  # forward mode: at the first matvec
        hvp(lambda th: th * 2.0, theta, mode="forward-over-reverse")(torch.ones_like(theta))
    with pytest.raises(ValueError, match="real scalar"):  # the default builds the graph here
        hvp(lambda th: th * 2.0, theta)
    with pytest.raises(ValueError, match="real scalar"):
        empirical_fisher_vp(lambda th, o: th * o.sum(), theta, x)
    with pytest.raises(ValueError, match="positive int"):
        to_dense(lambda v: v, 0, dtype=DT, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fisher_vp_on_cuda_matches_cpu(dtype: torch.dtype) -> None:
    model_fn, theta, x, dist = make_policy("gauss_fixed_std", True)
    ref = dense(fisher_vp(model_fn, theta, x, dist, subsample=4, generator=gen(0)), theta.numel())
    cuda = torch.device("cuda")
    mv = fisher_vp(model_fn, theta.to(cuda, dtype), x.to(cuda, dtype), dist, subsample=4, generator=gen(0))
    got = to_dense(mv, theta.numel(), dtype=dtype, device=cuda).cpu().double()
    assert rel_err(got, ref) < (1e-4 if dtype == torch.float32 else 1e-10)
    with pytest.raises(ValueError, match="device mismatch"):
        mv(torch.zeros(theta.numel(), dtype=dtype))


def test_functional_takes_the_trainable_parameters_and_says_so_when_given_all() -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    net[0].requires_grad_(False)
    f, x = functional(net), torch.randn(5, 4)
    trainable = [p for p in net.parameters() if p.requires_grad]
    torch.testing.assert_close(f(flatten(trainable), x), net(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^functional: .* \(8 elements, the trainable ones\), got shape \(23,\); .*"):
        f(flatten(net.parameters()), x)
    with pytest.raises(ValueError, match="in that order"):
        functional(net, ["2.weight"])(flatten(trainable), x)


def test_fisher_vp_of_a_train_mode_batchnorm_leaves_its_running_statistics_and_equals_the_dense_fisher() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).to(DT).train()
    x = torch.randn(6, 3, generator=gen(1), dtype=DT)
    theta = flatten(net.parameters()).detach()
    before = {n: b.clone() for n, b in net.named_buffers()}
    f = functional(net)
    v = torch.randn(theta.numel(), generator=gen(2), dtype=DT)
    fv = fisher_vp(lambda th, obs: (f(th, obs),), theta, x, Categorical)(v)
    for name, buffer in net.named_buffers():  # the module's forward would have moved them
        torch.testing.assert_close(buffer, before[name], rtol=0, atol=0)
    # dense reference: the batch's statistics are part of the function being linearised
    jac = torch.autograd.functional.jacobian(lambda th: f(th, x), theta)  # (N, C, P)
    probs = torch.softmax(f(theta, x), dim=-1)
    dense = (
        sum(jac[i].T @ (torch.diag(probs[i]) - torch.outer(probs[i], probs[i])) @ jac[i] for i in range(x.shape[0]))
        / x.shape[0]
    )
    torch.testing.assert_close(fv, dense @ v, rtol=1e-10, atol=1e-12)
    assert int(net[1].num_batches_tracked) == 0
