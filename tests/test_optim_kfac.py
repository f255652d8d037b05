"""K-FAC factors against dense Fishers, preconditioning against dense solves, and robustness."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import natrl.optim.kfac as kfac_mod
from natrl.optim import KFAC
from natrl.optim.kfac import conv2d_factors, kl_clip_scale, linear_factors

pytestmark = pytest.mark.usefixtures("float64")  # exact comparisons in float64 (tests/conftest.py)


def _per_example_grads(layer: nn.Linear, losses: torch.Tensor) -> torch.Tensor:
    """Row n: the gradient of losses[n] w.r.t. [W | b], flattened row-major (autograd)."""
    rows = []
    for ln in losses:
        gw, gb = torch.autograd.grad(ln, [layer.weight, layer.bias], retain_graph=True)
        rows.append(torch.cat([gw, gb[:, None]], dim=1).reshape(-1))
    return torch.stack(rows)


def _fit_once(layer: nn.Module, x: torch.Tensor, targets_fn, **kw) -> KFAC:  # type: ignore[no-untyped-def]
    opt = KFAC(layer, kl_clip=None, preconditioner_only=True, **kw)
    out = layer(x)
    loss = 0.5 * ((out - targets_fn(out.detach())) ** 2).sum(1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return opt


def test_factors_equal_dense_fisher_where_kfac_is_exact() -> None:
    """Data = all pairs (xᵢ, εⱼ): the output gradients εⱼ are independent of the inputs, so
    the empirical Fisher E[(ggᵀ) ⊗ (āāᵀ)] equals G ⊗ A exactly."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    xs, eps = torch.randn(4, 3), torch.randn(5, 2)
    x = xs.repeat_interleave(5, dim=0)  # x₁ x₁ … x₂ …
    e = eps.repeat(4, 1)  # ε₁ ε₂ … ε₁ …
    opt = _fit_once(layer, x, lambda out: out - e)
    a, g = opt.factors()["<root>"]
    assert a is not None and g is not None
    out = layer(x)
    per_example = _per_example_grads(layer, 0.5 * ((out - (out.detach() - e)) ** 2).sum(1))
    fisher = per_example.T @ per_example / len(x)
    torch.testing.assert_close(torch.kron(g, a), fisher, rtol=1e-12, atol=1e-12)
    # and the factors themselves are the plain second moments
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    torch.testing.assert_close(a, x1.T @ x1 / len(x))
    torch.testing.assert_close(g, eps.T @ eps / 5)


def test_factors_differ_from_dense_fisher_by_the_covariance_term() -> None:
    """Targets 0: the output gradient is the output itself, correlated with the input. Then
    F − G ⊗ A = E[(ggᵀ − G) ⊗ (āāᵀ − A)] ≠ 0, while the bias block (ā's constant 1) is exact."""
    torch.manual_seed(1)
    layer = nn.Linear(3, 2)
    x = torch.randn(40, 3)
    opt = _fit_once(layer, x, torch.zeros_like)
    a, g = opt.factors()["<root>"]
    assert a is not None and g is not None
    out = layer(x)
    per_example = _per_example_grads(layer, 0.5 * (out**2).sum(1))
    fisher = per_example.T @ per_example / len(x)
    kron = torch.kron(g, a)
    assert float((fisher - kron).norm()) > 1e-2 * float(fisher.norm())
    bias = [o * 4 + 3 for o in range(2)]  # row-major [W | b]: the bias is column 3 of each row
    torch.testing.assert_close(kron[bias][:, bias], fisher[bias][:, bias])
    go = out.detach()  # per-example ∂ℓₙ/∂oₙ = oₙ
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    cov = sum(
        torch.kron(torch.outer(gn, gn) - g, torch.outer(an, an) - a) for gn, an in zip(go, x1, strict=True)
    ) / len(x)
    torch.testing.assert_close(fisher - kron, cov)


def test_sampled_fisher_mode_collects_g_only_from_fisher_passes() -> None:
    torch.manual_seed(2)
    layer = nn.Linear(4, 3)
    opt = KFAC(layer, fisher="sampled", kl_clip=None, preconditioner_only=True)
    x = torch.randn(6, 4)
    out = layer(x)
    y_sampled = torch.multinomial(torch.softmax(out.detach(), 1), 1).squeeze(1)
    opt.fisher_backward(nn.functional.cross_entropy(out, y_sampled))
    assert layer.weight.grad is None  # the Fisher pass leaves .grad alone
    y_true = torch.randint(0, 3, (6,))
    nn.functional.cross_entropy(out, y_true).backward()  # a loss pass: no G contribution
    opt.step()
    _, g = opt.factors()["<root>"]
    resid = torch.softmax(out.detach(), 1) - nn.functional.one_hot(y_sampled, 3)
    torch.testing.assert_close(g, resid.T @ resid / 6)


def test_sampled_fisher_approaches_exact_categorical_fisher_factor() -> None:
    """E_y[ggᵀ] for y ~ softmax(o) is diag(p) − ppᵀ; many samples bring Ĝ close to its mean."""
    torch.manual_seed(3)
    layer = nn.Linear(2, 3)
    xs = torch.randn(5, 2)
    x = xs.repeat(2000, 1)
    opt = KFAC(layer, fisher="sampled", kl_clip=None, preconditioner_only=True)
    out = layer(x)
    opt.sampled_fisher_backward(out, generator=torch.Generator().manual_seed(0))
    nn.functional.cross_entropy(out, torch.zeros(len(x), dtype=torch.long)).backward()
    opt.step()
    _, g = opt.factors()["<root>"]
    p = torch.softmax(layer(xs).detach(), 1)
    exact = sum(torch.diag(pi) - torch.outer(pi, pi) for pi in p) / len(xs)
    assert float((g - exact).norm()) < 0.05 * float(exact.norm())


def _loop_conv_factors(x: torch.Tensor, go: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches cut by hand with explicit loops (zero padding, stride, dilation 1)."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    xp = nn.functional.pad(x, (pw, pw, ph, ph))
    rows_a, rows_g = [], []
    for n in range(x.shape[0]):
        for i in range(go.shape[2]):
            for j in range(go.shape[3]):
                patch = xp[n, :, i * sh : i * sh + kh, j * sw : j * sw + kw].reshape(-1)
                rows_a.append(torch.cat([patch, torch.ones(1)]))
                rows_g.append(go[n, :, i, j])
    a, g = torch.stack(rows_a), torch.stack(rows_g)
    return a.T @ a / len(a), g.T @ g * x.shape[0]


def test_conv2d_factors_match_hand_cut_patches_and_reconstruct_the_gradient() -> None:
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 1))
    x = torch.randn(3, 2, 5, 4)
    out = conv(x)
    loss = (out**2).mean()
    (go,) = torch.autograd.grad(loss, out, retain_graph=True)
    a, g = conv2d_factors(x, go, conv)
    a_ref, g_ref = _loop_conv_factors(x, go, conv)
    torch.testing.assert_close(a, a_ref)
    assert g is not None
    torch.testing.assert_close(g, g_ref)
    # Σ over rows of ĝ āᵀ is [∇W | ∇b]: the patch layout matches weight.view(C_out, −1).
    loss.backward()
    patches = nn.functional.unfold(x, (3, 2), padding=(1, 1), stride=(2, 1)).transpose(1, 2)
    rows_a = torch.cat([patches.reshape(-1, 12), torch.ones(patches.shape[0] * patches.shape[1], 1)], 1)
    rows_g = go.permute(0, 2, 3, 1).reshape(-1, 3)
    grad_mat = rows_g.T @ rows_a
    torch.testing.assert_close(grad_mat[:, :-1], conv.weight.grad.reshape(3, -1))
    torch.testing.assert_close(grad_mat[:, -1], conv.bias.grad)


def test_conv_with_full_kernel_equals_linear() -> None:
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, kernel_size=3)
    x = torch.randn(4, 2, 3, 3)
    go = torch.randn(4, 3, 1, 1)
    a_c, g_c = conv2d_factors(x, go, conv)
    a_l, g_l = linear_factors(x.reshape(4, -1), go.reshape(4, 3), bias=True)
    torch.testing.assert_close(a_c, a_l)
    torch.testing.assert_close(g_c, g_l)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_preconditioned_gradient_equals_dense_damped_solve(kind: str) -> None:
    torch.manual_seed(6)
    if kind == "linear":
        layer: nn.Module = nn.Linear(4, 3)
        x = torch.randn(10, 4)
    else:
        layer = nn.Conv2d(2, 3, 2)
        x = torch.randn(5, 2, 3, 3)
    lam = 0.05
    opt = KFAC(layer, damping=lam, kl_clip=None, preconditioner_only=True)
    out = layer(x)
    (out.reshape(len(x), -1) ** 2).sum(1).mean().backward()
    w, b = layer.weight, layer.bias
    before = torch.cat([w.grad.reshape(w.shape[0], -1), b.grad[:, None]], 1).reshape(-1).clone()
    w_before = w.detach().clone()
    opt.step()
    a, g = opt.factors()["<root>"]
    expected = torch.linalg.solve(torch.kron(g, a) + lam * torch.eye(before.numel()), before)
    after = torch.cat([w.grad.reshape(w.shape[0], -1), b.grad[:, None]], 1).reshape(-1)
    torch.testing.assert_close(after, expected)
    assert torch.equal(w.detach(), w_before)  # preconditioner only: parameters unchanged


def test_factor_moving_average_and_intervals() -> None:
    torch.manual_seed(7)
    layer = nn.Linear(3, 2)
    opt = KFAC(layer, factor_decay=0.9, factor_interval=2, kl_clip=None, lr=0.0, momentum=0.0)
    batches = [torch.randn(8, 3) for _ in range(3)]
    seen = []
    for xb in batches:
        opt.zero_grad()
        (layer(xb) ** 2).sum(1).mean().backward()
        opt.step()
        seen.append(opt.factors()["<root>"][0].clone())

    def second_moment(xb: torch.Tensor) -> torch.Tensor:
        x1 = torch.cat([xb, torch.ones(8, 1)], 1)
        return x1.T @ x1 / 8

    torch.testing.assert_close(seen[0], second_moment(batches[0]))
    torch.testing.assert_close(seen[1], seen[0])  # step 1: no collection (interval 2)
    torch.testing.assert_close(seen[2], 0.9 * seen[0] + 0.1 * second_moment(batches[2]))


def test_eigh_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """eigh failing on the first tries: jitter, then float64 rescue; always failing: the layer
    keeps its plain gradient and a warning names it."""
    torch.manual_seed(8)
    layer = nn.Linear(3, 2)
    x = torch.randn(10, 3)
    real = torch.linalg.eigh
    calls = {"n": 0}

    def flaky(m: torch.Tensor):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if m.dtype != torch.float64 or calls["n"] <= 4:
            raise torch.linalg.LinAlgError("simulated failure")
        return real(m)

    torch.set_default_dtype(torch.float32)
    layer32 = nn.Linear(3, 2)
    opt = KFAC(layer32, kl_clip=None, preconditioner_only=True)
    (layer32(x.float()) ** 2).sum(1).mean().backward()
    monkeypatch.setattr(kfac_mod.torch.linalg, "eigh", flaky)
    opt.step()
    assert opt.stats is not None and opt.stats.preconditioned_layers == 1
    assert opt.stats.fallbacks == 2  # A and G both rescued in float64
    assert torch.isfinite(layer32.weight.grad).all()
    torch.set_default_dtype(torch.float64)

    def broken(m: torch.Tensor):  # type: ignore[no-untyped-def]
        raise torch.linalg.LinAlgError("simulated failure")

    monkeypatch.setattr(kfac_mod.torch.linalg, "eigh", broken)
    opt2 = KFAC(layer, kl_clip=None, preconditioner_only=True)
    (layer(x) ** 2).sum(1).mean().backward()
    plain = layer.weight.grad.clone()
    with pytest.warns(RuntimeWarning, match="eigendecomposition failed for layer <root>"):
        opt2.step()
    assert torch.equal(layer.weight.grad, plain)
    assert opt2.stats is not None and opt2.stats.failed_layers == ("<root>",)


def test_unsupported_layers_are_named_and_keep_plain_gradients() -> None:
    torch.manual_seed(9)
    net = nn.Sequential(nn.Linear(3, 4), nn.PReLU(4), nn.Linear(4, 2))
    net[1].weight.data.uniform_(0.5, 1.5)
    with pytest.warns(UserWarning, match=r"1 \(PReLU"):
        opt = KFAC(net, kl_clip=None, preconditioner_only=True)
    assert opt.layers == ["0", "2"]
    (net(torch.randn(8, 3)) ** 2).sum(1).mean().backward()
    bn_grad = net[1].weight.grad.clone()
    lin_grad = net[0].weight.grad.clone()
    opt.step()
    assert torch.equal(net[1].weight.grad, bn_grad)
    assert not torch.allclose(net[0].weight.grad, lin_grad)


def test_kl_clip_scales_the_preconditioned_gradient() -> None:
    torch.manual_seed(10)
    x = torch.randn(16, 3)
    results = {}
    for clip in (None, 1e-6):
        layer = nn.Linear(3, 2)
        layer.load_state_dict({"weight": torch.ones(2, 3), "bias": torch.zeros(2)})
        opt = KFAC(layer, lr=0.5, kl_clip=clip, preconditioner_only=True)
        (layer(x) ** 2).sum(1).mean().backward()
        raw = torch.cat([layer.weight.grad.reshape(-1), layer.bias.grad]).clone()
        opt.step()
        results[clip] = (raw, torch.cat([layer.weight.grad.reshape(-1), layer.bias.grad]), opt.stats)
    raw, pre, _ = results[None]
    nu = math.sqrt(1e-6 / (0.25 * float(raw @ pre)))  # √(κ / (η² ∇̃ᵀ∇))
    assert nu < 1
    _, clipped, stats = results[1e-6]
    assert stats is not None and stats.kl_scale == pytest.approx(nu, rel=1e-12)
    torch.testing.assert_close(clipped, nu * pre)
    assert kl_clip_scale(1e-12, 0.1, 1.0) == 1.0


def test_preconditioner_before_sgd_equals_optimizer_mode() -> None:
    torch.manual_seed(11)
    x, y = torch.randn(32, 5), torch.randn(32, 2)

    def make() -> nn.Module:
        torch.manual_seed(12)
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))

    m1, m2 = make(), make()
    full = KFAC(m1, lr=0.1, momentum=0.9, damping=1e-2)
    pre = KFAC(m2, lr=0.1, damping=1e-2, preconditioner_only=True)
    sgd = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        for m, steps in ((m1, [full]), (m2, [pre, sgd])):
            for o in steps:
                o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            for o in steps:
                o.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p1, p2)


def test_adaptive_damping_and_training_progress() -> None:
    torch.manual_seed(13)
    x = torch.randn(64, 4)
    y = torch.sin(x @ torch.randn(4, 2))
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = KFAC(net, lr=0.2, momentum=0.0, damping=1.0, adaptive_damping=True, damping_interval=1,
               kl_clip=None)  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        return loss

    first = float(closure().detach())
    rhos = []
    for _ in range(20):
        opt.step(closure)
        assert opt.stats is not None
        rhos.append(opt.stats.rho)
    assert all(math.isfinite(r) for r in rhos)
    assert opt.damping < 1.0  # good model predictions (ρ > 3/4) shrink λ
    assert float(closure().detach()) < 0.5 * first


def test_kfac_bad_input() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"):
        KFAC([torch.zeros(2, requires_grad=True)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: 'empirical', 'sampled'"):
        KFAC(nn.Linear(2, 2), fisher="exact")
    with pytest.raises(ValueError, match="preconditioner_only"):
        KFAC(nn.Linear(2, 2), adaptive_damping=True, preconditioner_only=True)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        KFAC(frozen)
    opt = KFAC(nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="backward"):
        opt.step()


def test_state_dict_round_trip() -> None:
    torch.manual_seed(14)
    x, y = torch.randn(16, 3), torch.randn(16, 2)

    def make() -> nn.Module:
        torch.manual_seed(15)
        return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))

    def one_step(m: nn.Module, o: KFAC) -> None:
        o.zero_grad()
        nn.functional.mse_loss(m(x), y).backward()
        o.step()

    m1 = make()
    o1 = KFAC(m1, lr=0.1, inverse_interval=1, adaptive_damping=False)
    for _ in range(3):
        one_step(m1, o1)
    m2 = make()
    m2.load_state_dict(m1.state_dict())
    o2 = KFAC(m2, lr=0.1, inverse_interval=1)
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))  # torch's state_dict aliases buffers
    for name, (a, g) in o1.factors().items():
        torch.testing.assert_close(o2.factors()[name][0], a)
        torch.testing.assert_close(o2.factors()[name][1], g)
    one_step(m1, o1)
    one_step(m2, o2)
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p1, p2)


def test_kfac_hooks_ignore_torch_func_transforms_of_the_same_model() -> None:
    from natrl.optim import KFAC as NatrlKFAC
    from natrl.params import flatten, functional

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    f, theta = functional(model), flatten(model.parameters()).detach()

    def loss(th: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(f(th, x), y)

    expected = torch.func.grad(loss)(theta)  # before K-FAC's hooks exist
    kfac = NatrlKFAC(model)
    got = torch.func.grad(loss)(theta)  # the model runs inside a transform: not a data pass
    torch.testing.assert_close(got, expected)
    assert all(layer.a_sum is None for layer in kfac._layers.values())
    assert all(not layer.outputs for layer in kfac._layers.values())


def test_kfac_skips_a_step_with_non_finite_gradients_and_keeps_parameters() -> None:
    import warnings

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = KFAC(model, lr=0.1, momentum=0.9, inverse_interval=1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    for _ in range(2):  # momentum buffers and factors exist
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    bad = x.clone()
    bad[0, 0] = float("inf")
    opt.zero_grad()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.nn.functional.mse_loss(model(bad), y).backward()
        opt.step()
    assert opt.stats is not None and opt.stats.skipped
    assert any("step is skipped" in str(w.message) for w in caught)
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p.detach())
    for b, p in zip(buffers, model.parameters()):
        assert torch.equal(b, opt.state[p]["momentum_buffer"])


# -- scale conventions, mixed precision, compilation ----------------------------------------------


def test_batch_mean_g_is_per_example_g_over_n_squared() -> None:
    """per_example: G = (1/N) Σₙ gₙgₙᵀ with gₙ = ∂ℓₙ/∂s (dense, by hand); batch_mean: the gradients
    ĝ = gₙ/N of the mean loss, G = (1/N) Σₙ ĝₙĝₙᵀ = per_example G / N² (kfac-pytorch's Linear G)."""
    torch.manual_seed(5)
    n = 12
    layer = nn.Linear(4, 3)
    x, targets = torch.randn(n, 4), torch.randn(n, 3)
    per_ex = (layer(x) - targets).detach()  # ∂(½‖s − t‖²)/∂s for each example
    expected = per_ex.T @ per_ex / n
    got = {}
    for scale in ("per_example", "batch_mean"):
        opt = KFAC(layer, kl_clip=None, preconditioner_only=True, scale=scale)
        loss = 0.5 * ((layer(x) - targets) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.remove_hooks()
        got[scale] = opt.factors()["<root>"][1]
    torch.testing.assert_close(got["per_example"], expected)
    torch.testing.assert_close(got["batch_mean"], expected / n**2)
    # the pure functions agree, and a conv's batch_mean G divides by N·(N L) (rows R = N L)
    conv = nn.Conv2d(2, 3, 2)
    xc = torch.randn(5, 2, 4, 4)
    go = torch.randn(5, 3, 3, 3)
    _, g_pe = kfac_mod.conv2d_factors(xc, go, conv)
    _, g_bm = kfac_mod.conv2d_factors(xc, go, conv, scale="batch_mean")
    assert g_pe is not None and g_bm is not None
    torch.testing.assert_close(g_bm, g_pe / (5 * 5 * 9))
    with pytest.raises(ValueError, match="scale"):
        KFAC(layer, scale="mean")


def test_identity_factor_init_starts_the_moving_average_at_i() -> None:
    torch.manual_seed(6)
    layer = nn.Linear(3, 2)
    x = torch.randn(10, 3)
    first = _fit_once(copy.deepcopy(layer), x, torch.zeros_like, factor_decay=0.9).factors()["<root>"]
    ident = _fit_once(copy.deepcopy(layer), x, torch.zeros_like, factor_decay=0.9, factor_init="identity")
    a, g = ident.factors()["<root>"]
    assert first[0] is not None and first[1] is not None and a is not None and g is not None
    torch.testing.assert_close(a, 0.9 * torch.eye(4) + 0.1 * first[0])
    torch.testing.assert_close(g, 0.9 * torch.eye(2) + 0.1 * first[1])


def _digits_like(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=g, dtype=torch.float32)
    w = torch.randn(10, 4, generator=g, dtype=torch.float32)
    return x, (x @ w).argmax(1)


def _mlp32() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4)).float()


def _train_mlp(
    model: nn.Module,
    opt: KFAC,
    steps: int,
    *,
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    forward: nn.Module | None = None,
) -> list[float]:
    """Full-batch cross-entropy steps (``forward``: the module to call, e.g. a compiled one)."""
    x, y = _digits_like()
    net = forward if forward is not None else model
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            loss = nn.functional.cross_entropy(net(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        losses.append(float(loss.detach()))
    return losses


def test_bf16_autocast_trains_like_float32() -> None:
    """Under bf16 autocast the factors stay float32 (activations and output gradients are cast
    before the products), gradients keep the parameters' float32, and the loss follows float32."""
    kw = {"lr": 0.1, "damping": 1e-2, "kl_clip": 1e-2, "inverse_interval": 2}
    ref_model, amp_model = _mlp32(), _mlp32()
    ref = _train_mlp(ref_model, KFAC(ref_model, **kw), 15)
    opt = KFAC(amp_model, **kw)
    amp = _train_mlp(amp_model, opt, 15, autocast=torch.bfloat16)
    assert amp[-1] < 0.01 * amp[0]
    assert amp[:8] == pytest.approx(ref[:8], rel=0.05, abs=5e-3)  # bf16 rounding, not a different path
    assert abs(amp[-1] - ref[-1]) < 5e-3 * ref[0]
    for a, g in opt.factors().values():
        assert a is not None and g is not None and a.dtype == g.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in amp_model.parameters())
    assert opt.nonfinite_steps == 0


def test_bf16_weights_get_float32_factors_and_bf16_steps() -> None:
    model = _mlp32().to(torch.bfloat16)
    opt = KFAC(model, lr=0.1, damping=1e-2, kl_clip=1e-2, inverse_interval=2)
    x, y = _digits_like()
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x.bfloat16()), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(a is not None and a.dtype == torch.float32 for a, _ in opt.factors().values())
    opt64 = KFAC(model, factor_dtype=torch.float64, preconditioner_only=True)
    assert all(layer.dtype == torch.float64 for layer in opt64._layers.values())
    with pytest.raises(TypeError, match="factor_dtype"):
        KFAC(model, factor_dtype=torch.int32)


def test_grad_scaler_unscales_g_and_skips_inf_steps() -> None:
    """A GradScaler's loss scale S (a power of two) leaves G and the steps as without it; a step
    with inf gradients is skipped by ``scaler.step`` (parameters untouched, S halved)."""
    kw = {"lr": 0.1, "damping": 1e-2, "kl_clip": 1e-2, "inverse_interval": 2}
    plain_model, scaled_model = _mlp32(), _mlp32()
    plain = KFAC(plain_model, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled = KFAC(scaled_model, grad_scaler=scaler, **kw)
    _train_mlp(plain_model, plain, 5)
    _train_mlp(scaled_model, scaled, 5, scaler=scaler)
    for p, q in zip(plain_model.parameters(), scaled_model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    for (a1, g1), (a2, g2) in zip(plain.factors().values(), scaled.factors().values(), strict=True):
        torch.testing.assert_close(a2, a1)
        torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-9)
    before = [p.detach().clone() for p in scaled_model.parameters()]
    scale = scaler.get_scale()
    x, y = _digits_like()
    scaled.zero_grad()
    loss = nn.functional.cross_entropy(scaled_model(x), y)
    scaler.scale(loss * float("inf")).backward()
    scaler.step(scaled)  # finds the inf gradients: KFAC.step is not called
    scaler.update()
    assert scaler.get_scale() == scale / 2
    assert all(torch.equal(b, p) for b, p in zip(before, scaled_model.parameters(), strict=True))
    with pytest.raises(TypeError, match="grad_scaler"):
        KFAC(scaled_model, grad_scaler=2.0)


def _compile_works() -> bool:
    try:
        torch.compile(lambda t: t.sin() + 1)(torch.zeros(2, dtype=torch.float32))
    except Exception:  # no C compiler, unsupported platform
        return False
    return True


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
def test_kfac_with_a_compiled_model_matches_eager() -> None:
    """The hooks run eagerly under dynamo (they used to be traced: each layer's G hook landed on
    another layer's statistics, a shape mismatch in backward). KFAC on the original module with
    the compiled module in the loop, or KFAC on the compiled module, equals eager K-FAC."""
    if not _compile_works():
        pytest.skip("torch.compile does not work here (no C compiler?)")
    torch._dynamo.reset()
    kw = {"lr": 0.1, "damping": 1e-2, "kl_clip": 1e-2, "inverse_interval": 2}
    eager_model, model, model2 = _mlp32(), _mlp32(), _mlp32()
    eager_losses = _train_mlp(eager_model, KFAC(eager_model, **kw), 4)
    losses = _train_mlp(model, KFAC(model, **kw), 4, forward=torch.compile(model))
    compiled2 = torch.compile(model2)
    opt2 = KFAC(compiled2, **kw)
    assert opt2.layers == ["_orig_mod.0", "_orig_mod.2", "_orig_mod.4"]
    _train_mlp(model2, opt2, 4, forward=compiled2)
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    for p, q, r in zip(eager_model.parameters(), model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r, p, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- in a user's training loop


def _mlp(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8, bias=bias), nn.Tanh(), nn.Linear(8, 3, bias=bias))


def _train(model: nn.Module, opt: KFAC, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("method", ["eigen", "ekfac", "inverse"])
def test_a_resumed_optimizer_continues_exactly_between_decompositions(method: str, tmp_path) -> None:
    # inverse_interval 3 (the default is 10): the state saved at step 4 holds decompositions made at step 3 from
    # older factors; recomputing them at load would change every later step
    a = _mlp()
    opt_a = KFAC(a, lr=0.1, inverse_interval=3, method=method)
    _train(a, opt_a, 4, seed=1)
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, tmp_path / "ck.pt")
    _train(a, opt_a, 3, seed=2)
    b = _mlp()
    opt_b = KFAC(b, lr=0.1, inverse_interval=3, method=method)
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    _train(b, opt_b, 3, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_load_state_dict_is_strict_about_blocks_and_sizes() -> None:
    src = _mlp()
    opt = KFAC(src, lr=0.1)
    _train(src, opt, 1, seed=0)
    other = KFAC(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), lr=0.1)
    with pytest.raises(
        ValueError, match=r"^KFAC\.load_state_dict: block '0' has factor G of shape \(8, 8\), this model's has 5"
    ):
        other.load_state_dict(opt.state_dict())
    renamed = KFAC(nn.Sequential(nn.Sequential(*_mlp())), lr=0.1)
    with pytest.raises(
        ValueError, match=r"the state's blocks \['0', '2'\] are not this optimizer's \['0\.0', '0\.2'\]"
    ):
        renamed.load_state_dict(opt.state_dict())
    assert renamed.state_dict()["kfac"]["step"] == 0  # nothing changed


def test_a_deep_copy_of_the_model_runs_and_leaves_the_optimizer_alone() -> None:
    model = _mlp()
    opt = KFAC(model, lr=0.1)
    snapshot = copy.deepcopy(model)  # an EMA or best-model copy, as training loops keep
    nn.functional.cross_entropy(snapshot(torch.randn(5, 4)), torch.tensor([0, 1, 2, 0, 1])).backward()
    assert all(layer.a_sum is None for layer in opt._layers.values())
    _train(model, opt, 2, seed=0)
    assert opt.stats is not None and opt.stats.preconditioned_layers == 2


def test_a_frozen_bias_is_outside_the_block_as_if_the_layer_had_none() -> None:
    frozen, plain = _mlp(), _mlp(bias=False)
    with torch.no_grad():
        for f, p in zip(frozen[::2], plain[::2], strict=True):
            p.weight.copy_(f.weight)
            f.bias.zero_()
            f.bias.requires_grad_(False)
    opt_f, opt_p = KFAC(frozen, lr=0.1, kl_clip=None), KFAC(plain, lr=0.1, kl_clip=None)
    _train(frozen, opt_f, 3, seed=0)
    _train(plain, opt_p, 3, seed=0)
    assert all(f.bias.grad is None for f in frozen[::2])  # torch leaves frozen parameters' .grad alone
    for f, p in zip(frozen[::2], plain[::2], strict=True):
        torch.testing.assert_close(f.weight, p.weight)


def test_tied_weights_are_refused_in_one_line() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(10, 8), nn.Linear(8, 10, bias=False)
            self.out.weight = self.emb.weight

    with pytest.raises(ValueError, match=r"^KFAC: layers 'emb' and 'out' share a parameter \(tied weights\)"):
        KFAC(Tied())


def test_each_parameter_gets_its_own_groups_weight_decay() -> None:
    model = _mlp()
    extra = nn.Parameter(torch.ones(3))
    opt = KFAC(model, lr=0.1, momentum=0.0, weight_decay=0.5, kl_clip=None)
    opt.add_param_group({"params": [extra], "weight_decay": 0.0})
    reference = torch.optim.SGD([{"params": [extra2 := nn.Parameter(torch.ones(3))], "weight_decay": 0.0}], lr=0.1)
    extra.grad, extra2.grad = torch.zeros(3), torch.zeros(3)
    nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
    opt.step()
    reference.step()
    torch.testing.assert_close(extra, extra2, rtol=0, atol=0)


def test_inputs_its_hooks_cannot_read_and_eval_mode_are_said_in_one_line() -> None:
    model = _mlp()
    opt = KFAC(model, lr=0.1)
    with pytest.raises(TypeError, match=r"^KFAC: layer '0' was called with its input as a keyword argument"):
        model[0](input=torch.randn(2, 4))
    with pytest.raises(TypeError, match=r"^KFAC: layer '0' got an unbatched input of shape \(4,\)"):
        model(torch.randn(4))
    model.eval()
    nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
    with pytest.warns(UserWarning, match=r"^KFAC: layers 0, 2 are in eval mode"):
        opt.step()


@pytest.mark.parametrize("scale", ["per_example", "batch_mean"])
def test_gradient_accumulation_gives_the_factors_of_the_whole_batch(scale: str) -> None:
    # two micro-batches of 32 whose losses are halved (the usual accumulation) against one batch of 64
    x, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(3)), torch.arange(64) % 3
    whole, parts = _mlp(), _mlp()
    opt_whole = KFAC(whole, lr=0.1, scale=scale, factor_decay=0.0)
    opt_parts = KFAC(parts, lr=0.1, scale=scale, factor_decay=0.0, accumulation_steps=2)
    nn.functional.cross_entropy(whole(x), y).backward()
    for half in (slice(0, 32), slice(32, 64)):
        (nn.functional.cross_entropy(parts(x[half]), y[half]) / 2).backward()
    for p_whole, p_parts in zip(whole.parameters(), parts.parameters(), strict=True):
        torch.testing.assert_close(p_parts.grad, p_whole.grad)
    opt_whole.step()
    opt_parts.step()
    for name, (a, g) in opt_whole.factors().items():
        a_parts, g_parts = opt_parts.factors()[name]
        torch.testing.assert_close(a_parts, a)
        torch.testing.assert_close(g_parts, g)
    with pytest.raises(ValueError, match="accumulation_steps must be an int >= 1, got 0"):
        KFAC(_mlp(), accumulation_steps=0)
