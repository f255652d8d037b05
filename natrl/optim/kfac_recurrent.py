"""K-FAC blocks of recurrent layers (``nn.LSTM``, ``nn.GRU``): independence across time.

A recurrent layer applies its input weights W_ih at every step t as a linear map of the step's
input x_t, and its hidden weights W_hh as a linear map of the previous state h_{t−1}, into the
gate pre-activations. The per-sequence gradient of [W_ih | b_ih] is Σ_t g_t ā_tᵀ with
ā_t = [x_t, 1] and g_t = ∂ℓ/∂(W_ih x_t + b_ih) (the same for [W_hh | b_hh] with [h_{t−1}, 1]), so
its Fisher block is Σ_{t,s} E[(g_t g_sᵀ) ⊗ (ā_t ā_sᵀ)]. Martens, Ba & Johnson (2018,
"Kronecker-factored curvature approximations for recurrent neural networks", ICLR, §3.4, the
option of independent time steps) drop the cross-time terms and, as K-FAC does for every layer,
assume ā and g independent; with statistics shared over the T steps,

    F ≈ T · E_t[g gᵀ] ⊗ E_t[ā āᵀ] = G ⊗ A,

which is what :func:`natrl.optim.kfac.linear_factors` computes for a Linear layer applied to
every step of a sequence: A the mean of ā āᵀ over all (sequence, step) rows, G = N Σ_{n,t} ĝ ĝᵀ
(ĝ the gradients of a loss averaged over the N sequences). Each layer ℓ of a stack gets two
blocks, ``ih_l{ℓ}`` ([weight_ih, bias_ih]) and ``hh_l{ℓ}`` ([weight_hh, bias_hh]). In an LSTM
both biases enter the same pre-activation W_ih x_t + b_ih + W_hh h_{t−1} + b_hh, so both blocks
share one G; in a GRU the candidate gate multiplies the hidden part by the reset gate
(n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))), so the hidden block has its own G, the gradient
at W_hh h_{t−1} + b_hh.

The fused kernels expose neither the per-step states nor the gradients at the gate
pre-activations, so a statistics pass runs the cell equations written out here (PyTorch's gate
order: i, f, g, o for the LSTM; r, z, n for the GRU), with the layer's own parameters, equal to the
fused module to float rounding; :func:`unroll` also takes per-step reset multipliers (a policy's
episode starts inside a sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["RECURRENT_TYPES", "LayerTaps", "recurrent_blocks", "recurrent_unsupported", "unroll"]

RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU)
"""The recurrent layers K-FAC gives Kronecker blocks."""


def recurrent_unsupported(module: nn.Module) -> str | None:
    """None when the written-out cells reproduce ``module``, else why not."""
    rnn = module
    assert isinstance(rnn, nn.LSTM | nn.GRU)
    if rnn.bidirectional:
        return "bidirectional"
    if getattr(rnn, "proj_size", 0):
        return "proj_size > 0"
    if rnn.dropout and rnn.num_layers > 1:
        return "dropout between layers"
    return None


def recurrent_blocks(module: nn.Module) -> list[tuple[str, str, str, int, int]]:
    """The Kronecker blocks of a recurrent layer: ``(suffix, weight name, bias name, d_A, d_G)`` per block,
    ``ih_l{ℓ}`` and ``hh_l{ℓ}`` for each layer ℓ (d_A counts the bias coordinate when there is a bias)."""
    rnn = module
    assert isinstance(rnn, nn.LSTM | nn.GRU)
    out = []
    for layer in range(rnn.num_layers):
        for part in ("ih", "hh"):
            w = getattr(rnn, f"weight_{part}_l{layer}")
            d_a = int(w.shape[1]) + int(rnn.bias)
            out.append((f"{part}_l{layer}", f"weight_{part}_l{layer}", f"bias_{part}_l{layer}", d_a, int(w.shape[0])))
    return out


@dataclass
class LayerTaps:
    """What one layer's statistics need from an unrolled pass (batch first, B sequences of T steps).

    Attributes:
        inputs: x_t of every step, (B, T, d_in), detached.
        hidden: h_{t−1} of every step after its reset (what W_hh multiplies), (B, T, H), detached.
        gates_ih: W_ih x_t + b_ih (+ b_hh for an LSTM) for every step, (B, T, gates·H), in the graph:
            its gradient is g of the ``ih`` block (and of the ``hh`` block for an LSTM).
        gates_hh: a GRU's zero tap added to W_hh h_{t−1} + b_hh, (B, T, 3H), a leaf whose gradient is g of
            its ``hh`` block; None for an LSTM.
    """

    inputs: Tensor
    hidden: Tensor
    gates_ih: Tensor
    gates_hh: Tensor | None


def unroll(
    module: nn.Module,
    x: Tensor,
    hx: Tensor | tuple[Tensor, Tensor] | None = None,
    keep: Tensor | None = None,
    *,
    record: bool = False,
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor], list[LayerTaps]]:
    """Run an ``nn.LSTM``/``nn.GRU`` step by step with its own parameters.

    Args:
        module: the layer (unidirectional, no projection; dropout between layers is not applied).
        x: inputs, batch first (B, T, d_in), whatever the module's ``batch_first``.
        hx: the initial state as the module takes it ((h_0, c_0) for an LSTM, h_0 for a GRU, each
            (layers, B, H)), or None for zeros.
        keep: (B, T) multipliers of the state before each step (0 where an episode begins), or None.
        record: also return each layer's :class:`LayerTaps`.

    Returns:
        ``(y, final, taps)``: the last layer's outputs (B, T, H), the final state in the module's form,
        and the taps (empty unless ``record``).
    """
    rnn = module
    assert isinstance(rnn, nn.LSTM | nn.GRU)
    lstm = isinstance(rnn, nn.LSTM)
    B, T = x.shape[0], x.shape[1]
    H, layers = rnn.hidden_size, rnn.num_layers
    if hx is None:
        zeros = x.new_zeros(layers, B, H)
        hx = (zeros, zeros) if lstm else zeros
    h0, c0 = hx if isinstance(hx, tuple) else (hx, None)
    keeps = None if keep is None else keep.to(x.dtype).unsqueeze(-1).unbind(1)
    inp = x
    taps: list[LayerTaps] = []
    finals_h, finals_c = [], []
    for layer in range(layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}", None), getattr(rnn, f"bias_hh_l{layer}", None)
        h = h0[layer]
        prev: list[Tensor] = []
        outs: list[Tensor] = []
        tap: Tensor | None = None
        if lstm:
            assert c0 is not None
            c = c0[layer]
            proj = nn.functional.linear(inp, w_ih, None if b_ih is None or b_hh is None else b_ih + b_hh)
            steps = proj.unbind(1)  # one op: a backward through proj[:, t] would fill a proj-sized zero tensor per step
            for t in range(T):
                if keeps is not None:
                    h, c = h * keeps[t], c * keeps[t]
                prev.append(h)
                i, f, g, o = (steps[t] + nn.functional.linear(h, w_hh)).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            finals_c.append(c)
        else:
            proj = nn.functional.linear(inp, w_ih, b_ih)
            steps = proj.unbind(1)
            if record:
                tap = x.new_zeros(B, T, 3 * H, requires_grad=True)
            tap_steps = tap.unbind(1) if tap is not None else None
            for t in range(T):
                if keeps is not None:
                    h = h * keeps[t]
                prev.append(h)
                gh = nn.functional.linear(h, w_hh, b_hh)
                if tap_steps is not None:
                    gh = gh + tap_steps[t]
                i_r, i_z, i_n = steps[t].chunk(3, dim=-1)
                h_r, h_z, h_n = gh.chunk(3, dim=-1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                h = (1.0 - z) * n + z * h
                outs.append(h)
        finals_h.append(h)
        if record:
            taps.append(LayerTaps(inp.detach(), torch.stack(prev, 1).detach(), proj, tap))
        inp = torch.stack(outs, 1)
    h_n = torch.stack(finals_h)
    final: Tensor | tuple[Tensor, Tensor] = (h_n, torch.stack(finals_c)) if lstm else h_n
    return inp, final, taps
