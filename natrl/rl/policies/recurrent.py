"""The recurrent core of a policy with memory: an LSTM or GRU between the features extractor and the network.

A recurrent :class:`~natrl.rl.policies.Actor` or :class:`~natrl.rl.policies.Critic` maps a batch of S
sequences of L stored observations, the flags of the steps that begin an episode and the state before
the first step to outputs for every step:

    features (S, L, F) → core → (S, L, H) → network → head,

with the state set to zero before every step that begins an episode (terminated or truncated before
it), so that no memory crosses an episode boundary, inside a sequence as well as between rollouts.

The layers are ``torch.nn.LSTM`` / ``torch.nn.GRU`` modules (their parameters, initialisation and
``state_dict`` keys). Two ways run them, equal to float rounding (tested):

* the cell equations written out step by step (PyTorch's gate order: i, f, g, o for the LSTM; r, z, n
  for the GRU), the reset applied between steps: every product the algorithms need — gradients,
  Fisher-vector products (a jvp and a vjp through the unrolled sequence), double backward, forward-mode
  jvp — exists on every device; it gives the state before every step (the rollout's recorded states);
* on the CPU, torch's fused module itself, one call over a batch of segments: each sequence is split at
  its episode starts, the segments padded at their ends into one (K, L_max) batch (padding after a
  segment's last step cannot change its outputs) and run from their initial states (the recorded state,
  or zero after a start), the outputs gathered back to (S, L). Its backward, and the double backward of
  the exact Fisher through time, are torch's (oneDNN's fused layer on float32: 4-7x faster than the
  written-out cells for a 256-unit LSTM, with a double backward but no forward-mode jvp). cuDNN's fused
  kernels have no double backward, so other devices use the cells.

A state is one tensor, batch first: (B, 2, layers, H) for an LSTM (h and c), (B, 1, layers, H) for a GRU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["RNN_KINDS", "RecurrentCore"]

RNN_KINDS = ("lstm", "gru")


class RecurrentCore(nn.Module):
    """An LSTM or GRU over sequences with resets at episode starts.

    Args:
        input_size: the features extractor's output width F.
        hidden_size: H, the width of the hidden state (sb3-contrib's ``lstm_hidden_size``).
        num_layers: stacked recurrent layers (sb3-contrib's ``n_lstm_layers``).
        kind: "lstm" or "gru".
        forget_bias: added to every LSTM layer's forget-gate bias after torch's initialisation (0: torch's,
            as sb3-contrib's policies; 1 is the usual choice, Gers et al. 2000, Jozefowicz et al. 2015, Keras's
            ``unit_forget_bias``: the cell state starts out mostly kept from step to step, sigmoid(1) ≈ 0.73,
            instead of about halved, so an early input's trace, and its gradient, survive the steps to where it
            matters).
    """

    def __init__(
        self, input_size: int, hidden_size: int = 256, num_layers: int = 1, kind: str = "lstm", forget_bias: float = 0.0
    ) -> None:
        super().__init__()
        if kind not in RNN_KINDS:
            raise ValueError(f"unknown recurrent layer {kind!r}; choose 'lstm' or 'gru'")
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)) or not np.isfinite(forget_bias):
            raise ValueError(f"the LSTM forget-gate bias must be a finite number, got {forget_bias!r}")
        if forget_bias and kind != "lstm":
            raise ValueError("a forget-gate bias applies to an LSTM; a GRU has no forget gate (drop lstm_forget_bias)")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"the recurrent layer's {name} must be a positive integer, got {value!r}")
        rnn_cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn_cls(int(input_size), int(hidden_size), int(num_layers), batch_first=True)
        if forget_bias:
            with torch.no_grad():
                for layer in range(int(num_layers)):  # gate order i, f, g, o: the second quarter is f
                    self.rnn.get_parameter(f"bias_hh_l{layer}")[hidden_size : 2 * hidden_size] += float(forget_bias)
        self.kind = kind
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.state_shape = (2 if kind == "lstm" else 1, self.num_layers, self.hidden_size)
        # run torch's fused module on the CPU where it applies (module docstring); False: the cells everywhere
        self.fused = True

    def initial_state(self, batch: int, *, device: torch.device | None = None) -> Tensor:
        """The zero state of ``batch`` sequences, (batch, *state_shape), in the parameters' dtype."""
        w = self.rnn.get_parameter("weight_hh_l0")
        return torch.zeros((batch, *self.state_shape), dtype=w.dtype, device=device or w.device)

    def forward(
        self, x: Tensor, starts: Tensor, state: Tensor, *, return_states: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Run S sequences of L steps.

        Args:
            x: (S, L, F) inputs.
            starts: (S, L) bool, the step begins an episode (the state is zeroed before it).
            state: (S, *state_shape), the state before the first step.
            return_states: also return the state before every step (before its reset) and after the last.

        Returns:
            ``(y, states)``: the outputs (S, L, H) and the state after the last step (S, *state_shape),
            or with ``return_states`` every state, (S, L + 1, *state_shape).
        """
        if not return_states and self._fusable(x) and not bool(starts[:, 1:].any()):
            # no episode begins after a sequence's first step: one fused call gives outputs and final state
            h0 = state * (~starts[:, :1]).to(state.dtype).view(-1, *([1] * (state.dim() - 1)))
            y, final = self.rnn(x, self._torch_state(h0))
            return y, self._natrl_state(final)
        return self._cells(x, starts, state, return_states)

    def outputs(self, x: Tensor, starts: Tensor, state: Tensor) -> Tensor:
        """The outputs (S, L, H) of :meth:`forward` alone (no final state): on the CPU fused calls over
        the segments between episode starts (module docstring), elsewhere the written-out cells."""
        if not self._fusable(x):
            return self._cells(x, starts, state, False)[0]
        S, L = starts.shape
        if not bool(starts[:, 1:].any()):
            return self.forward(x, starts, state)[0]
        first = starts.clone()
        first[:, 0] = True  # every segment's first step
        first = first.flatten()
        seg = first.cumsum(0) - 1  # the segment of every step, (S·L,)
        heads = first.nonzero().squeeze(1)  # the flat index of every segment's first step, (K,)
        pos = torch.arange(S * L, device=x.device) - heads[seg]  # the step's place in its segment
        lengths = torch.diff(heads, append=heads.new_tensor([S * L])).tolist()
        # a segment at a sequence's head that is not an episode start continues from the recorded state
        carry = (heads % L == 0) & ~starts.flatten()[heads]
        h0 = state[heads // L] * carry.to(state.dtype).view(-1, *([1] * (state.dim() - 1)))
        flat = x.flatten(0, 1)
        # segments longest first, in groups of similar length, one fused call per group (padding bounded)
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
        groups = _length_groups([lengths[k] for k in order])
        if len(groups) == 1:
            padded = x.new_zeros(len(lengths), max(lengths), x.shape[-1]).index_put((seg, pos), flat)
            y, _ = self.rnn(padded, self._torch_state(h0))
            return y[seg, pos].unflatten(0, (S, L))
        group_of = torch.empty(len(lengths), dtype=torch.long)
        row_of = torch.empty(len(lengths), dtype=torch.long)
        begin = 0
        for g, count in enumerate(groups):
            members = torch.tensor(order[begin : begin + count])
            group_of[members], row_of[members] = g, torch.arange(count)
            begin += count
        step_group, step_row = group_of.to(x.device)[seg], row_of.to(x.device)[seg]
        outs, taken, begin = [], [], 0
        for g, count in enumerate(groups):
            steps = (step_group == g).nonzero().squeeze(1)
            rows, at = step_row[steps], pos[steps]
            padded = x.new_zeros(count, lengths[order[begin]], x.shape[-1]).index_put((rows, at), flat[steps])
            members = torch.tensor(order[begin : begin + count], device=x.device)
            y, _ = self.rnn(padded, self._torch_state(h0[members]))
            outs.append(y[rows, at])
            taken.append(steps)
            begin += count
        perm = torch.cat(taken)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.shape[0], device=perm.device)
        return torch.cat(outs)[inverse].unflatten(0, (S, L))

    def _fusable(self, x: Tensor) -> bool:
        return self.fused and x.device.type == "cpu" and x.shape[1] > 1

    def _torch_state(self, state: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """A natrl state (B, k, layers, H) as torch's module takes it: (h, c) or h, each (layers, B, H)."""
        h = state[:, 0].transpose(0, 1).contiguous()
        return (h, state[:, 1].transpose(0, 1).contiguous()) if self.kind == "lstm" else h

    def _natrl_state(self, state: Tensor | tuple[Tensor, ...]) -> Tensor:
        """torch's final state ((h, c) or h, each (layers, B, H)) as a natrl state (B, k, layers, H)."""
        parts = state if isinstance(state, tuple) else (state,)
        return torch.stack([p.transpose(0, 1) for p in parts], 1)

    def _cells(self, x: Tensor, starts: Tensor, state: Tensor, return_states: bool) -> tuple[Tensor, Tensor]:
        """:meth:`forward` with the cell equations written out step by step."""
        L = starts.shape[1]
        keep = (~starts).to(x.dtype).unsqueeze(-1).unbind(1)  # L × (S, 1)
        inp = x
        layer_states = []  # per layer: (S, L + 1, k, H)
        for layer in range(self.num_layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{layer}")
            w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
            b_ih = getattr(self.rnn, f"bias_ih_l{layer}")
            b_hh = getattr(self.rnn, f"bias_hh_l{layer}")
            h = state[:, 0, layer]
            outs: list[Tensor] = []
            kept: list[Tensor] = []
            if self.kind == "lstm":
                c = state[:, 1, layer]
                # every step's input term at once, unbound in one op: a backward through proj[:, t] would write
                # each step's gradient into a zero tensor of proj's full size (S·L² memory with create_graph)
                proj = torch.nn.functional.linear(inp, w_ih, b_ih + b_hh).unbind(1)
                for t in range(L):
                    if return_states:
                        kept.append(torch.stack((h, c), 1))
                    h, c = h * keep[t], c * keep[t]
                    i, f, g, o = (proj[t] + h @ w_hh.T).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    outs.append(h)
                kept.append(torch.stack((h, c), 1))
            else:
                proj = torch.nn.functional.linear(inp, w_ih, b_ih).unbind(1)
                for t in range(L):
                    if return_states:
                        kept.append(h.unsqueeze(1))
                    h = h * keep[t]
                    i_r, i_z, i_n = proj[t].chunk(3, dim=-1)
                    h_r, h_z, h_n = torch.nn.functional.linear(h, w_hh, b_hh).chunk(3, dim=-1)
                    r = torch.sigmoid(i_r + h_r)
                    z = torch.sigmoid(i_z + h_z)
                    n = torch.tanh(i_n + r * h_n)
                    h = (1.0 - z) * n + z * h
                    outs.append(h)
                kept.append(h.unsqueeze(1))
            inp = torch.stack(outs, 1)
            layer_states.append(torch.stack(kept, 1) if return_states else kept[-1])
        # (S, [L + 1,] k, H) per layer → (S, [L + 1,] k, layers, H)
        states = torch.stack(layer_states, -2)
        return inp, states

    def step(self, x: Tensor, state: Tensor, starts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step for a batch: x (B, F), state (B, *state_shape), starts (B,) bool → (y (B, H), new state)."""
        if starts is None:
            starts = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        y, new = self(x.unsqueeze(1), starts.unsqueeze(1), state)
        return y[:, 0], new

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


# the cost of a fused call over K padded segments of L_max steps, in row-steps: L_max · (K + _STEP_COST) +
# _CALL_COST (per padded step a fixed cost about 4 rows' worth, per call about 16 row-steps; CPU, H 64-256)
_STEP_COST, _CALL_COST = 4, 16


def _length_groups(lengths: list[int]) -> list[int]:
    """Split segment lengths sorted longest first into consecutive groups (their sizes) whose fused calls,
    each padded to its longest segment, cost least: power-of-two length classes, merged while that is cheaper."""

    def cost(first: int, count: int) -> int:
        return lengths[first] * (count + _STEP_COST) + _CALL_COST

    sizes: list[int] = []
    for i, n in enumerate(lengths):
        if sizes and lengths[i - sizes[-1]] < 2 * n:  # same class as the group's longest (within a factor 2)
            sizes[-1] += 1
        else:
            sizes.append(1)
    merged = True
    while merged and len(sizes) > 1:
        merged = False
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for i in range(len(sizes) - 1):
            a, b = sizes[i], sizes[i + 1]
            if cost(starts[i], a + b) <= cost(starts[i], a) + cost(starts[i + 1], b):
                sizes[i : i + 2] = [a + b]
                merged = True
                break
    return sizes
