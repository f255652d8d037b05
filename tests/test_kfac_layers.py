"""K-FAC's Embedding, norm, grouped/1-D convolution and attention blocks, EKFAC, the inverse
method and the schedules, each against a dense Fisher or a dense solve computed by hand."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from natrl.optim import KFAC
from natrl.optim.kfac import conv_factors, ekfac_second_moments, embedding_factors, linear_factors

pytestmark = pytest.mark.usefixtures("float64")  # exact comparisons in float64 (tests/conftest.py)


def _per_example_grads(params: list[torch.Tensor], losses: torch.Tensor) -> torch.Tensor:
    """Row n: the gradient of losses[n] w.r.t. params, flattened and concatenated (autograd)."""
    rows = []
    for ln in losses:
        gs = torch.autograd.grad(ln, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, gs)]))
    return torch.stack(rows)


def _rel(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm())


# ---------------------------------------------------------------------------------------------
# Embedding
# ---------------------------------------------------------------------------------------------


class _EmbedHead(nn.Module):
    def __init__(self, vocab: int, dim: int, classes: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(idx)).sum(1))


def _embedding_fisher(tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A ⊗ G from KFAC, the dense Fisher block of the embedding) at sampled targets."""
    torch.manual_seed(seed)
    net = _EmbedHead(5, 3, 4)
    idx = torch.randint(0, 5, (300, tokens))
    opt = KFAC(net, fisher="sampled", kl_clip=None, preconditioner_only=True)
    out = net(idx)
    y = torch.multinomial(torch.softmax(out.detach(), 1), 1, generator=torch.Generator().manual_seed(seed))[:, 0]
    loss = nn.functional.cross_entropy(out, y)
    opt.fisher_backward(loss)
    loss.backward()
    opt.step()
    a, g = opt.factors()["emb"]
    assert a is not None and g is not None and a.shape == (5,)
    per = _per_example_grads([net.emb.weight], nn.functional.cross_entropy(net(idx), y, reduction="none"))
    return torch.kron(torch.diag(a), g), per.T @ per / len(idx)


def test_embedding_block_is_exact_for_independent_tokens_and_gradients() -> None:
    """Data = all pairs (token k, output gradient εⱼ): ĝ is independent of the token, so the
    Fisher block Σ_k p_k e_k e_kᵀ ⊗ E[ĝĝᵀ | k] equals diag(p) ⊗ G exactly."""
    torch.manual_seed(0)
    emb = nn.Embedding(4, 3)
    toks, eps = torch.tensor([0, 1, 1, 3]), torch.randn(5, 3)
    idx = toks.repeat_interleave(5)
    e = eps.repeat(4, 1)
    opt = KFAC(emb, kl_clip=None, preconditioner_only=True)
    out = emb(idx)
    (0.5 * ((out - (out.detach() - e)) ** 2).sum(1)).mean().backward()
    opt.step()
    a, g = opt.factors()["<root>"]
    assert a is not None and g is not None
    per = _per_example_grads([emb.weight], 0.5 * ((emb(idx) - (emb(idx).detach() - e)) ** 2).sum(1))
    fisher = per.T @ per / len(idx)
    torch.testing.assert_close(torch.kron(torch.diag(a), g), fisher, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, torch.tensor([0.25, 0.5, 0.0, 0.25]))


def test_embedding_block_against_the_exact_fisher_block() -> None:
    """Sampled-target Fisher of an embedding feeding tanh, a sum and a softmax head (V = 5,
    D = 3, 300 examples, seed 1).

    One lookup per example: the exact block is token-block-diagonal, as diag(a) ⊗ G is; the
    relative Frobenius error ‖diag(a)⊗G − F‖/‖F‖ is 0.47 (K-FAC's E[ĝĝᵀ | token] ≈ G: here
    the output gradient depends strongly on the token). Three lookups per example add
    cross-token blocks that a diagonal A drops: 0.69. For scale: an isotropic block of the
    same trace is off by 0.70 and 0.79, and the Linear head's own K-FAC block by 0.12 and 0.25.
    """
    kron1, fisher1 = _embedding_fisher(1, 1)
    off = fisher1.clone()
    for k in range(5):
        off[3 * k : 3 * k + 3, 3 * k : 3 * k + 3] = 0
    assert float(off.abs().max()) < 1e-12  # one token per example: no cross-token Fisher terms
    kron3, fisher3 = _embedding_fisher(3, 1)
    err1, err3 = _rel(kron1, fisher1), _rel(kron3, fisher3)
    iso1, iso3 = (_rel(torch.eye(15) * torch.trace(f) / 15, f) for f in (fisher1, fisher3))
    assert err1 == pytest.approx(0.473, abs=0.005) and err3 == pytest.approx(0.693, abs=0.005), (err1, err3)
    assert err1 < iso1 and err3 < iso3


def test_embedding_preconditioning_equals_the_dense_damped_solve() -> None:
    torch.manual_seed(2)
    net = _EmbedHead(6, 3, 4)
    idx = torch.randint(0, 6, (20, 2))
    lam = 0.03
    for method in ("eigen", "inverse"):
        opt = KFAC(net, damping=lam, kl_clip=None, preconditioner_only=True, method=method)
        opt.zero_grad()
        nn.functional.cross_entropy(net(idx), torch.randint(0, 4, (20,))).backward()
        before = net.emb.weight.grad.reshape(-1).clone()
        opt.step()
        opt.remove_hooks()
        a, g = opt.factors()["emb"]
        if method == "eigen":
            mat = torch.kron(torch.diag(a), g) + lam * torch.eye(18)
        else:  # factored Tikhonov damping
            pi = math.sqrt(float(a.mean()) / float(g.diagonal().mean()))
            r = math.sqrt(lam)
            mat = torch.kron(torch.diag(a + pi * r), g + r / pi * torch.eye(3))
        torch.testing.assert_close(net.emb.weight.grad.reshape(-1), torch.linalg.solve(mat, before))
    # the pure function: A = token frequencies over the 40 lookups; batch_mean G = per_example G / (N R)
    go = torch.randn(20, 2, 3)
    a_pe, g_pe = embedding_factors(idx, go, 6)
    _, g_bm = embedding_factors(idx, go, 6, scale="batch_mean")
    torch.testing.assert_close(a_pe, torch.stack([(idx == k).sum() for k in range(6)]).double() / 40)
    assert g_pe is not None and g_bm is not None
    torch.testing.assert_close(g_pe, go.reshape(-1, 3).T @ go.reshape(-1, 3) * 20)
    torch.testing.assert_close(g_bm, g_pe / (20 * 40))


# ---------------------------------------------------------------------------------------------
# Affine norms
# ---------------------------------------------------------------------------------------------


def _norm_case(kind: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    if kind == "LayerNorm":
        norm: nn.Module = nn.LayerNorm(4)
        net: nn.Module = nn.Sequential(nn.Linear(3, 4), norm, nn.Tanh(), nn.Flatten(), nn.Linear(8, 3))
        x = torch.randn(12, 2, 3)
    elif kind == "RMSNorm":
        norm = nn.RMSNorm(4)
        net = nn.Sequential(nn.Linear(3, 4), norm, nn.Tanh(), nn.Linear(4, 3))
        x = torch.randn(12, 3)
    elif kind == "GroupNorm":
        norm = nn.GroupNorm(2, 4)
        net = nn.Sequential(nn.Conv2d(1, 4, 2), norm, nn.Tanh(), nn.Flatten(), nn.Linear(16, 3))
        x = torch.randn(12, 1, 3, 3)
    else:
        norm = nn.BatchNorm1d(4)
        net = nn.Sequential(nn.Linear(3, 4), norm, nn.Tanh(), nn.Linear(4, 3))
        x = torch.randn(12, 3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        if getattr(norm, "bias", None) is not None:
            norm.bias.uniform_(-0.5, 0.5)
    return net, norm, x


@pytest.mark.parametrize("kind", ["LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d"])
def test_norm_block_is_the_exact_diagonal_of_the_fisher_block(kind: str) -> None:
    """The diagonal block equals the dense block's diagonal to rounding. Against the whole dense
    block of [weight, bias] (12 examples, seed 3) the diagonal's relative Frobenius error, its
    off-diagonal mass, is 0.84 (LayerNorm on (12, 2, 4)), 0.22 (RMSNorm), 0.61 (GroupNorm(2, 4)
    after a conv) and 0.50 (BatchNorm1d)."""
    torch.manual_seed(3)
    net, norm, x = _norm_case(kind)
    opt = KFAC(net, kl_clip=None, preconditioner_only=True)
    out = net(x)
    y = torch.randint(0, 3, (len(x),))
    nn.functional.cross_entropy(out, y).backward()
    grads = [p.grad.clone() for p in norm.parameters()]
    opt.step()
    name = next(n for n, m in net.named_modules() if m is norm)
    _, diag = opt.factors()[name]
    assert diag is not None
    params = list(norm.parameters())
    # BatchNorm: ℓₙ depends on the other examples only through x̂, which does not involve w, b
    losses = nn.functional.cross_entropy(net(x), y, reduction="none")
    per = _per_example_grads(params, losses)
    fisher = per.T @ per / len(x)
    torch.testing.assert_close(diag, fisher.diagonal(), rtol=1e-10, atol=1e-12)
    stated = {"LayerNorm": 0.842, "RMSNorm": 0.220, "GroupNorm": 0.612, "BatchNorm1d": 0.497}
    assert _rel(torch.diag(diag), fisher) == pytest.approx(stated[kind], abs=0.005)
    # preconditioned: ∇ / (diag + λ)
    lam = opt.damping
    flat = torch.cat([g.reshape(-1) for g in grads])
    got = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(got, flat / (diag + lam))


# ---------------------------------------------------------------------------------------------
# Grouped and 1-D convolutions
# ---------------------------------------------------------------------------------------------


def test_grouped_conv_blocks_equal_separate_convs_and_the_dense_solve() -> None:
    """A Conv2d with groups = 2 is two independent convs on the channel halves: its two blocks'
    factors equal theirs, and the preconditioned gradient is the block-diagonal dense solve."""
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    halves = [nn.Conv2d(2, 3, 3, padding=1) for _ in range(2)]
    with torch.no_grad():
        for j, h in enumerate(halves):
            h.weight.copy_(conv.weight[3 * j : 3 * j + 3])
            h.bias.copy_(conv.bias[3 * j : 3 * j + 3])
    x = torch.randn(5, 4, 4, 4)
    lam = 0.02
    opt = KFAC(conv, damping=lam, kl_clip=None, preconditioner_only=True)
    assert opt.layers == ["<root>[0]", "<root>[1]"]
    out = conv(x)
    (out**2).mean().backward()
    before = torch.cat([conv.weight.grad.reshape(6, -1), conv.bias.grad[:, None]], 1).clone()
    opt.step()
    after = torch.cat([conv.weight.grad.reshape(6, -1), conv.bias.grad[:, None]], 1)
    outs = [h(x[:, 2 * j : 2 * j + 2]) for j, h in enumerate(halves)]
    torch.testing.assert_close(torch.cat(outs, 1), out)
    go = 2 * out.detach() / out.numel()
    for j, h in enumerate(halves):
        a, g = opt.factors()[f"<root>[{j}]"]
        a_ref, g_ref = conv_factors(x[:, 2 * j : 2 * j + 2], go[:, 3 * j : 3 * j + 3], h)
        torch.testing.assert_close(a, a_ref)
        torch.testing.assert_close(g, g_ref)
        assert a is not None and g is not None
        rows = slice(3 * j, 3 * j + 3)
        expected = torch.linalg.solve(torch.kron(g, a) + lam * torch.eye(a.shape[0] * 3), before[rows].reshape(-1))
        torch.testing.assert_close(after[rows].reshape(-1), expected)


def test_conv1d_equals_conv2d_of_height_one_and_linear_with_full_kernel() -> None:
    torch.manual_seed(5)
    c1 = nn.Conv1d(2, 3, 3, stride=2, padding=1, dilation=1)
    c2 = nn.Conv2d(2, 3, (1, 3), stride=(1, 2), padding=(0, 1))
    with torch.no_grad():
        c2.weight.copy_(c1.weight[:, :, None])
        c2.bias.copy_(c1.bias)
    x = torch.randn(4, 2, 7)
    go = torch.randn(4, 3, 4)
    a1, g1 = conv_factors(x, go, c1)
    a2, g2 = conv_factors(x[:, :, None], go[:, :, None], c2)
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(g1, g2)
    full = nn.Conv1d(2, 3, 5)
    xf, gof = torch.randn(6, 2, 5), torch.randn(6, 3, 1)
    af, gf = conv_factors(xf, gof, full)
    al, gl = linear_factors(xf.reshape(6, -1), gof.reshape(6, 3), bias=True)
    torch.testing.assert_close(af, al)
    torch.testing.assert_close(gf, gl)
    # 'same' padding (odd kernel) is symmetric and supported; the optimizer tracks the layer
    same = nn.Sequential(nn.Conv1d(2, 3, 3, padding="same"), nn.Flatten(), nn.Linear(21, 2))
    opt = KFAC(same, kl_clip=None, preconditioner_only=True)
    assert opt.layers == ["0", "2"]
    (same(torch.randn(4, 2, 7)) ** 2).mean().backward()
    opt.step()
    assert opt.stats is not None and opt.stats.preconditioned_layers == 2


# ---------------------------------------------------------------------------------------------
# Linear inside attention
# ---------------------------------------------------------------------------------------------


class _Attention(nn.Module):
    """One pre-norm transformer block with a hand-written single-head attention."""

    def __init__(self, vocab: int, dim: int, length: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.1 * torch.randn(length, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx) + self.pos
        z = self.norm1(h)
        att = torch.softmax(self.q(z) @ self.k(z).transpose(1, 2) / math.sqrt(z.shape[-1]), -1)
        h = h + self.o(att @ self.v(z))
        h = h + self.ff(self.norm2(h))
        return self.out(h)


def _sort_batch(gen: torch.Generator, n: int = 32, length: int = 5, vocab: int = 6) -> tuple[torch.Tensor, ...]:
    x = torch.randint(0, vocab, (n, length), generator=gen)
    return x, torch.sort(x, dim=1).values


def test_smoke_linear_inside_attention_is_preconditioned_and_trains() -> None:
    """Smoke test: every Linear of a hand-written attention block (q, k, v, o projections on
    (N, T, D) activations), the FFN, the embedding and both LayerNorms are K-FAC blocks (only
    the positional table keeps its plain gradient), and 40 steps on sorting 5 tokens lower
    the loss more than 40 steps of the same learning rate would with plain gradients."""
    final = {}
    for precondition in (True, False):
        torch.manual_seed(6)
        net = _Attention(6, 16, 5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kfac = KFAC(net, lr=0.05, damping=0.03, kl_clip=1e-2, inverse_interval=5, preconditioner_only=True)
        assert kfac.layers == ["emb", "norm1", "norm2", "q", "k", "v", "o", "ff.0", "ff.2", "out"]
        sgd = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(40):
            x, y = _sort_batch(gen)
            loss = nn.functional.cross_entropy(net(x).reshape(-1, 6), y.reshape(-1))
            sgd.zero_grad()
            loss.backward()
            if precondition:
                kfac.step()
            sgd.step()
            losses.append(float(loss.detach()))
        assert all(math.isfinite(v) for v in losses)
        final[precondition] = sum(losses[-5:]) / 5
        if precondition:
            assert kfac.stats is not None and kfac.stats.preconditioned_layers == 10
    assert final[True] < final[False] < math.log(6), final


def test_transformer_encoder_layer_registers_its_called_linears_and_norms() -> None:
    """nn.TransformerEncoderLayer: linear1/linear2/norm1/norm2 are blocks; MultiheadAttention
    uses its projection weights functionally (no module call, no hook), so it is named in the
    warning and keeps plain gradients."""
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    with pytest.warns(UserWarning, match=r"self_attn \(MultiheadAttention"):
        opt = KFAC(layer, kl_clip=None, lr=0.01)
    assert opt.layers == ["linear1", "linear2", "norm1", "norm2"]
    x = torch.randn(4, 3, 8)
    loss0 = float((layer(x) ** 2).mean().detach())
    for _ in range(3):
        opt.zero_grad()
        (layer(x) ** 2).mean().backward()
        opt.step()
    assert opt.stats is not None and opt.stats.preconditioned_layers == 4
    assert float((layer(x) ** 2).mean().detach()) < loss0


# ---------------------------------------------------------------------------------------------
# EKFAC, the inverse method
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 3])
def test_ekfac_diagonal_equals_dense_second_moments_in_the_eigenbasis(rows: int) -> None:
    """On one Linear layer (rows = 3: a sequence of 3 positions per example) EKFAC's diagonal is
    diag((Q_G ⊗ Q_A)ᵀ F (Q_G ⊗ Q_A)) of the dense per-example Fisher F, and the step solves
    (Q diag(S + λ) Qᵀ) x = ∇ densely."""
    torch.manual_seed(8)
    layer = nn.Linear(3, 2)
    x = torch.randn(9, rows, 3).squeeze(1)
    targets = torch.randn(9, rows, 2).squeeze(1)
    lam = 0.01
    opt = KFAC(layer, method="ekfac", factor_decay=0.0, damping=lam, kl_clip=None, preconditioner_only=True)
    out = layer(x)
    (0.5 * ((out - targets) ** 2).reshape(9, -1).sum(1)).mean().backward()
    before = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).reshape(-1).clone()
    opt.step()
    a, g = opt.factors()["<root>"]
    qa, qg = torch.linalg.eigh(a)[1], torch.linalg.eigh(g)[1]
    q = torch.kron(qg, qa)
    losses = 0.5 * ((layer(x) - targets) ** 2).reshape(9, -1).sum(1)
    per = _per_example_grads([layer.weight, layer.bias], losses)
    per = torch.cat([per[:, :6].reshape(9, 2, 3), per[:, 6:].reshape(9, 2, 1)], 2).reshape(9, -1)
    fisher = per.T @ per / 9
    exact = (q.T @ fisher @ q).diagonal()
    got = opt.ekfac_scales()["<root>"]
    assert got is not None
    # eigenvectors are defined up to sign: the squared projections are not
    torch.testing.assert_close(got.reshape(-1), exact)
    expected = q @ ((q.T @ before) / (exact + lam))
    after = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).reshape(-1)
    torch.testing.assert_close(after, expected)


def test_ekfac_diagonal_of_a_grouped_conv_equals_dense_second_moments() -> None:
    """The same for each group's block of a Conv2d (groups = 2, 4 output locations): the
    per-example gradient sums ĝ āᵀ over the locations before it is squared."""
    torch.manual_seed(14)
    conv = nn.Conv2d(4, 4, 2, groups=2)
    x = torch.randn(6, 4, 3, 3)
    opt = KFAC(conv, method="ekfac", factor_decay=0.0, kl_clip=None, preconditioner_only=True)
    (conv(x) ** 2).mean().backward()
    opt.step()
    losses = (conv(x) ** 2).reshape(6, -1).mean(1)  # ℓₙ with mean(ℓₙ) the loss above
    per = _per_example_grads([conv.weight, conv.bias], losses)
    w_rows, b_rows = per[:, :32].reshape(6, 4, 8), per[:, 32:].reshape(6, 4, 1)
    mats = torch.cat([w_rows, b_rows], 2)  # (N, C_out, C_in/groups · k² + 1)
    for j in range(2):
        a, g = opt.factors()[f"<root>[{j}]"]
        qa, qg = torch.linalg.eigh(a)[1], torch.linalg.eigh(g)[1]
        proj = qg.T @ mats[:, 2 * j : 2 * j + 2] @ qa
        got = opt.ekfac_scales()[f"<root>[{j}]"]
        assert got is not None
        torch.testing.assert_close(got, (proj**2).mean(0))


def test_ekfac_equals_kfac_where_the_kronecker_factorisation_is_exact() -> None:
    """All pairs (xᵢ, εⱼ): F = G ⊗ A, so the second moments in the eigenbasis are g aᵀ."""
    torch.manual_seed(9)
    xs, eps = torch.randn(4, 3), torch.randn(5, 2)
    x, e = xs.repeat_interleave(5, 0), eps.repeat(4, 1)
    ra = torch.cat([x, torch.ones(20, 1)], 1)[:, None]
    a, g = ra[:, 0].T @ ra[:, 0] / 20, e.T @ e / 20  # per-example gradient of the mean loss: ĝ = e / N
    ea, eg = torch.linalg.eigh(a), torch.linalg.eigh(g)
    from natrl.optim.kfac import Eigen

    s = ekfac_second_moments(ra, (e / 20)[:, None], Eigen(*ea), Eigen(*eg))
    torch.testing.assert_close(s, torch.outer(eg[0], ea[0]))


def test_inverse_method_equals_dense_factored_tikhonov_solve() -> None:
    torch.manual_seed(10)
    layer = nn.Linear(4, 3)
    x = torch.randn(10, 4)
    lam = 0.05
    opt = KFAC(layer, method="inverse", damping=lam, kl_clip=None, preconditioner_only=True)
    (layer(x) ** 2).sum(1).mean().backward()
    before = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).reshape(-1).clone()
    opt.step()
    a, g = opt.factors()["<root>"]
    pi = math.sqrt(float(a.diagonal().mean()) / float(g.diagonal().mean()))
    r = math.sqrt(lam)
    mat = torch.kron(g + r / pi * torch.eye(3), a + pi * r * torch.eye(5))
    after = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).reshape(-1)
    torch.testing.assert_close(after, torch.linalg.solve(mat, before))


# ---------------------------------------------------------------------------------------------
# Schedules and per-layer damping
# ---------------------------------------------------------------------------------------------


def test_schedules_set_each_steps_damping_decay_and_kl_clip() -> None:
    torch.manual_seed(11)
    layer = nn.Linear(3, 2)
    seen: dict[str, list[int]] = {"decay": [], "kl": []}

    def decay(k: int) -> float:
        seen["decay"].append(k)
        return 0.0 if k == 0 else 0.5

    def kl(k: int) -> float:
        seen["kl"].append(k)
        return 1e-3 * (k + 1)

    opt = KFAC(layer, lr=0.1, damping=lambda k: 0.1 / (k + 1), factor_decay=decay, kl_clip=kl, momentum=0.0)
    batches = [torch.randn(8, 3) for _ in range(3)]
    a_ref = None
    for k, xb in enumerate(batches):
        opt.zero_grad()
        (layer(xb) ** 2).sum(1).mean().backward()
        opt.step()
        assert opt.stats is not None
        assert opt.stats.damping == pytest.approx(0.1 / (k + 1))
        assert opt.kl_clip == pytest.approx(1e-3 * (k + 1))
        x1 = torch.cat([xb, torch.ones(8, 1)], 1)
        a_b = x1.T @ x1 / 8
        a_ref = a_b if a_ref is None else 0.5 * a_ref + 0.5 * a_b
        torch.testing.assert_close(opt.factors()["<root>"][0], a_ref)
    assert seen["decay"][-3:] == [0, 1, 2] and seen["kl"][-3:] == [0, 1, 2]


def test_per_layer_damping_is_used_for_that_layer_only() -> None:
    torch.manual_seed(12)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    lams = {"0": 0.5, "2": 0.01}
    opt = KFAC(net, damping=0.01, layer_damping={"0": lambda k: 0.5}, kl_clip=None, preconditioner_only=True)
    (net(torch.randn(10, 3)) ** 2).sum(1).mean().backward()
    before = {n: torch.cat([net[int(n)].weight.grad, net[int(n)].bias.grad[:, None]], 1).reshape(-1).clone()
              for n in lams}  # fmt: skip
    opt.step()
    for n, lam in lams.items():
        a, g = opt.factors()[n]
        after = torch.cat([net[int(n)].weight.grad, net[int(n)].bias.grad[:, None]], 1).reshape(-1)
        expected = torch.linalg.solve(torch.kron(g, a) + lam * torch.eye(after.numel()), before[n])
        torch.testing.assert_close(after, expected)


def test_schedule_and_layer_options_are_checked_at_construction() -> None:
    layer = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"damping \(schedule at step 0\)"):
        KFAC(layer, damping=lambda k: -1.0)
    with pytest.raises(ValueError, match=r"factor_decay \(schedule at step 0\)"):
        KFAC(layer, factor_decay=lambda k: 1.5)
    with pytest.raises(ValueError, match="not a preconditioned layer; valid: '0'"):
        KFAC(layer, layer_damping={"1": 0.1})
    with pytest.raises(ValueError, match=r"layer_damping\['0'\]"):
        KFAC(layer, layer_damping={"0": 0.0})
    with pytest.raises(ValueError, match="adaptive_damping"):
        KFAC(layer, damping=lambda k: 0.1, adaptive_damping=True)
    with pytest.raises(ValueError, match="method"):
        KFAC(layer, method="shampoo")
    opt = KFAC(layer, damping=lambda k: 0.1 if k < 1 else math.nan, kl_clip=None)
    for k in range(2):
        opt.zero_grad()
        (layer(torch.randn(4, 3)) ** 2).mean().backward()
        if k == 0:
            opt.step()
        else:
            with pytest.raises(ValueError, match=r"damping \(schedule at step 1\)"):
                opt.step()


@pytest.mark.parametrize("method", ["eigen", "inverse", "ekfac"])
def test_every_method_trains_a_model_with_every_block_kind(method: str) -> None:
    """Embedding, Conv1d (grouped), GroupNorm, LayerNorm and Linear blocks in one model: the
    adaptive-damping step (the quadratic model uses every block) keeps parameters finite and
    lowers the loss; the state dict round-trips."""
    torch.manual_seed(13)
    net = nn.Sequential(
        nn.Embedding(7, 4),  # (N, T, 4)
        nn.LayerNorm(4),
        _Transpose(),
        nn.Conv1d(4, 6, 3, padding=1, groups=2),
        nn.GroupNorm(3, 6),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(30, 3),
    )
    opt = KFAC(net, lr=0.1, damping=0.1, method=method, adaptive_damping=True, damping_interval=1,
               inverse_interval=2, kl_clip=1e-2)  # fmt: skip
    assert opt.layers == ["0", "1", "3[0]", "3[1]", "4", "7"]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 7, (24, 5), generator=gen), torch.randint(0, 3, (24,), generator=gen)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    first = float(closure().detach())
    for _ in range(8):
        opt.step(closure)
        assert opt.stats is not None and opt.stats.preconditioned_layers == 6
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())
    assert float(closure().detach()) < first
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    opt.step(closure)


class _Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)
