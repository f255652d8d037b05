"""The recurrent core of a policy with memory: an LSTM or GRU between the features extractor and the network.

A recurrent :class:`~natrl.rl.policies.Actor` or :class:`~natrl.rl.policies.Critic` maps a batch of S
sequences of L stored observations, the flags of the steps that begin an episode and the state before
the first step to outputs for every step:

    features (S, L, F) → core → (S, L, H) → network → head,

with the state set to zero before every step that begins an episode (terminated or truncated before
it), so that no memory crosses an episode boundary, inside a sequence as well as between rollouts.

The layers are ``torch.nn.LSTM`` / ``torch.nn.GRU`` modules (their parameters, initialisation and
``state_dict`` keys), but the recurrence is written out with their cell equations (PyTorch's gate
order: i, f, g, o for the LSTM; r, z, n for the GRU, tested equal to the modules' own forward) so that
the reset between steps can be applied and every product the algorithms need — gradients,
Fisher-vector products (a jvp and a vjp through the unrolled sequence), double backward — exists on
every device; cuDNN's fused RNN kernels have no double backward.

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
    """

    def __init__(self, input_size: int, hidden_size: int = 256, num_layers: int = 1, kind: str = "lstm") -> None:
        super().__init__()
        if kind not in RNN_KINDS:
            raise ValueError(f"unknown recurrent layer {kind!r}; choose 'lstm' or 'gru'")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"the recurrent layer's {name} must be a positive integer, got {value!r}")
        rnn_cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn_cls(int(input_size), int(hidden_size), int(num_layers), batch_first=True)
        self.kind = kind
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.state_shape = (2 if kind == "lstm" else 1, self.num_layers, self.hidden_size)

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
        L = starts.shape[1]
        keep = (~starts).to(x.dtype).unsqueeze(-1)  # (S, L, 1)
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
                proj = torch.nn.functional.linear(inp, w_ih, b_ih + b_hh)  # every step's input term at once
                for t in range(L):
                    if return_states:
                        kept.append(torch.stack((h, c), 1))
                    h, c = h * keep[:, t], c * keep[:, t]
                    i, f, g, o = (proj[:, t] + h @ w_hh.T).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    outs.append(h)
                kept.append(torch.stack((h, c), 1))
            else:
                proj = torch.nn.functional.linear(inp, w_ih, b_ih)
                for t in range(L):
                    if return_states:
                        kept.append(h.unsqueeze(1))
                    h = h * keep[:, t]
                    i_r, i_z, i_n = proj[:, t].chunk(3, dim=-1)
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
