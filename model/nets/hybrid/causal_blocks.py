"""Causal, stateful building blocks of the streaming Hybrid Demucs network.

Every block here runs the same code offline and hop by hop: ``forward(x, state)`` reads the
block's carried context from ``state[self.key]`` (a dict of named tensors shared by the whole
network), computes the output for the new frames ``x`` only, and stores the updated context
back under the same name. Offline use passes a freshly initialised state (zeros: the stream is
preceded by silence in every layer's input); streaming passes the state left by the previous
hop. Because each block only ever concatenates its stored context in front of the new frames,
the cost of a call is proportional to the frames it is given, never to the stream's age, and
the state has a fixed size.

Time-axis conventions: "causal" means output frame ``j`` of a stride-``s`` layer depends on
input frames up to ``(j + 1) s - 1``, i.e. up to the end of its own stride block; the network
is run on whole hops, so that never reaches past the hop being processed.

Layouts: ``[B, C, T]`` (waveform branch, bottleneck), ``[B, C, F, T]`` (spectrogram branch).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["freq_conv", "Stateful", "CausalConv1d", "CausalConvTranspose1d", "CausalRewrite2d", "Delay",
           "FrameNorm", "CausalResidual", "RecurrentBottleneck", "CausalLocalAttention"]

State = dict[str, torch.Tensor]


class Stateful(nn.Module):
    """A block that carries context between calls. ``key`` is its name in the state dict,
    assigned by the owning network (its module path); :meth:`initial_state` gives the zero
    context for a batch of ``batch`` streams as ``{suffix: tensor}``."""

    key: str = ""

    def initial_state(self, batch: int, device, dtype) -> State:
        raise NotImplementedError


class CausalConv1d(Stateful):
    """Conv1d with left context only. ``x`` ``[B, chin, T]`` (T a multiple of ``stride``) ->
    ``[B, chout, T // stride]``; output frame ``j`` sees inputs ``< (j + 1) * stride``.

    Carries the last ``(kernel - 1) * dilation + 1 - stride`` input frames.
    """

    def __init__(self, chin: int, chout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 batch_mult: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(chin, chout, kernel, stride, dilation=dilation)
        self.context = (kernel - 1) * dilation + 1 - stride
        if self.context < 0:
            raise ValueError(f"kernel {kernel} shorter than stride {stride}")
        self.chin, self.stride = chin, stride
        self.batch_mult = batch_mult  # per-bin use: the batch is B * bins

    def initial_state(self, batch, device, dtype):
        return {"": torch.zeros(batch * self.batch_mult, self.chin, self.context,
                                device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        if self.context:
            full = torch.cat([state[self.key], x], dim=-1)
            state[self.key] = full[..., full.shape[-1] - self.context:]
        else:
            full = x
        conv = self.conv
        if full.shape[-1] == self.context + self.stride:
            # exactly one output frame (the usual streaming case): one matmul on the taps
            # is several times cheaper per call than the convolution kernel
            taps = full[..., ::conv.dilation[0]].reshape(full.shape[0], -1)
            w = conv.weight.reshape(conv.out_channels, -1)
            return F.linear(taps, w, conv.bias)[..., None]
        return conv(full)


class CausalConvTranspose1d(Stateful):
    """Transposed conv (kernel ``2 * stride``) that only emits what is final.

    ``x`` ``[B, chin, T]`` -> ``[B, chout, T * stride]``: output block ``j`` (samples
    ``[j s, (j + 1) s)``) is the sum of input frames ``j`` and ``j - 1``'s contributions, so
    it is complete once frame ``j`` exists. Carries the last input frame.
    """

    def __init__(self, chin: int, chout: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(chin, chout, 2 * stride, stride)
        self.chin, self.stride = chin, stride

    def initial_state(self, batch, device, dtype):
        return {"": torch.zeros(batch, self.chin, 1, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        full = torch.cat([state[self.key], x], dim=-1)
        state[self.key] = full[..., -1:]
        s = self.stride
        # full output covers blocks of frames -1..T; blocks 0..T-1 are final
        return self.conv(full)[..., s:s + x.shape[-1] * s]


class CausalRewrite2d(Stateful):
    """The decoder's "rewrite" conv on ``[B, C, F, T]``: ``1 + 2 context`` bins wide
    (symmetric over frequency, which is not time) by ``1 + context`` frames (past only)."""

    def __init__(self, chin: int, chout: int, context: int):
        super().__init__()
        self.conv = nn.Conv2d(chin, chout, (1 + 2 * context, 1 + context), 1, (context, 0))
        self.chin, self.context, self.bins = chin, context, None

    def initial_state(self, batch, device, dtype):
        return {"": torch.zeros(batch, self.chin, self.bins, self.context, device=device,
                                dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        if self.context:
            full = torch.cat([state[self.key], x], dim=-1)
            state[self.key] = full[..., full.shape[-1] - self.context:]
        else:
            full = x
        conv = self.conv
        if x.shape[-1] == 1:
            # one frame: the time taps become input channels of a conv over frequency only
            b, c, f, k = full.shape
            w = conv.weight  # [out, in, kf, kt]
            w1 = w.permute(0, 1, 3, 2).reshape(w.shape[0], c * k, w.shape[2])
            y = F.conv1d(full.permute(0, 1, 3, 2).reshape(b, c * k, f), w1, conv.bias,
                         padding=conv.padding[0])
            return y[..., None]
        return conv(full)


def freq_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a ``(k, 1)`` Conv2d / ConvTranspose2d to ``[B, C, F, T]`` as a 1-D op over F.

    Frames are independent under such a kernel, so they fold into the batch; the 1-D kernels
    are much faster than the 2-D ones on small inputs. Same weights, same result.
    """
    b, c, f, t = x.shape
    flat = x[..., 0] if t == 1 else x.permute(0, 3, 1, 2).reshape(b * t, c, f)
    w = conv.weight[..., 0]
    if isinstance(conv, nn.ConvTranspose2d):
        y = F.conv_transpose1d(flat, w, conv.bias, conv.stride[0], conv.padding[0])
    else:
        y = F.conv1d(flat, w, conv.bias, conv.stride[0], conv.padding[0])
    if t == 1:
        return y[..., None]
    return y.view(b, t, y.shape[1], y.shape[2]).permute(0, 2, 3, 1)


class Delay(Stateful):
    """Delay the last axis by ``frames`` (the look-ahead's skip alignment, branch alignment).
    ``shape`` is the tensor shape without batch and time axes."""

    def __init__(self, shape: tuple[int, ...], frames: int):
        super().__init__()
        self.shape, self.frames = tuple(shape), int(frames)

    def initial_state(self, batch, device, dtype):
        return {"": torch.zeros(batch, *self.shape, self.frames, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        if not self.frames:
            return x
        full = torch.cat([state[self.key], x], dim=-1)
        state[self.key] = full[..., full.shape[-1] - self.frames:]
        return full[..., :x.shape[-1]]


class FrameNorm(nn.Module):
    """Group norm computed per time frame (over channels of a group, and bins if any), so it
    never mixes frames: the causal stand-in for the official GroupNorm over the whole segment.
    ``x`` ``[B, C, T]`` or ``[B, C, F, T]`` -> same shape."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 1:  # one frame: group norm over (C/G, F) is exactly per frame
            return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)
        # frames into the batch, normalise, back
        b, t = x.shape[0], x.shape[-1]
        perm = (0, x.dim() - 1) + tuple(range(1, x.dim() - 1))
        flat = x.permute(perm).reshape(b * t, *x.shape[1:-1])
        y = F.group_norm(flat, self.groups, self.weight, self.bias, self.eps)
        inv = (0,) + tuple(range(2, x.dim())) + (1,)
        return y.view(b, t, *x.shape[1:-1]).permute(inv)


class CausalResidual(nn.Module):
    """Compressed residual branch with causal dilated convs (dilation ``2**d``), per-frame
    norms and LayerScale: the causal "DConv". ``x`` ``[N, C, T]`` -> same (N = B or B * F)."""

    def __init__(self, channels: int, compress: float, depth: int, init: float,
                 batch_mult: int = 1):
        super().__init__()
        hidden = max(1, int(channels / compress))
        self.convs_in = nn.ModuleList(
            CausalConv1d(channels, hidden, 3, dilation=2 ** d, batch_mult=batch_mult)
            for d in range(depth))
        self.norms_in = nn.ModuleList(FrameNorm(1, hidden) for _ in range(depth))
        self.convs_out = nn.ModuleList(nn.Conv1d(hidden, 2 * channels, 1) for _ in range(depth))
        self.norms_out = nn.ModuleList(FrameNorm(1, 2 * channels) for _ in range(depth))
        self.gains = nn.ParameterList(
            nn.Parameter(torch.full((channels,), float(init))) for _ in range(depth))

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        for conv_in, norm_in, conv_out, norm_out, gain in zip(
                self.convs_in, self.norms_in, self.convs_out, self.norms_out, self.gains):
            y = F.gelu(norm_in(conv_in(x, state)))
            y = F.glu(norm_out(conv_out(y)), dim=1)
            x = x + gain[:, None] * y
        return x


class CausalLocalAttention(Stateful):
    """Attention of each frame over itself and the ``window - 1`` frames before it, with the
    official model's learnt, query-dependent distance penalty. Carries the last ``window - 1``
    keys and values. ``x`` ``[B, C, T]`` -> ``x + out(attended)``."""

    def __init__(self, channels: int, window: int, heads: int = 4, n_decay: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        if window < 1:
            raise ValueError(f"attention window must be >= 1 frame, got {window}")
        self.channels, self.window, self.heads, self.n_decay = channels, window, heads, n_decay
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.decay_query = nn.Conv1d(channels, heads * n_decay, 1)
        self.out = nn.Conv1d(channels, channels, 1)

    def initial_state(self, batch, device, dtype):
        z = torch.zeros(batch, self.heads, self.channels // self.heads, self.window - 1,
                        device=device, dtype=dtype)
        return {".k": z, ".v": z.clone()}

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        batch, channels, total = x.shape
        h, n = self.heads, self.window - 1
        q, k, v = self.qkv(x).view(batch, 3, h, channels // h, total).unbind(1)
        keys = torch.cat([state[self.key + ".k"], k], dim=-1)  # [B, H, D, n + T]
        vals = torch.cat([state[self.key + ".v"], v], dim=-1)
        state[self.key + ".k"] = keys[..., keys.shape[-1] - n:]
        state[self.key + ".v"] = vals[..., vals.shape[-1] - n:]
        scores = torch.einsum("bhdq,bhdk->bhqk", q, keys) / math.sqrt(channels // h)
        qpos = torch.arange(total, device=x.device)[:, None] + n
        kpos = torch.arange(n + total, device=x.device)[None, :]
        dist = (qpos - kpos).to(x.dtype)  # [q, k], >= 0 for the past
        rates = torch.arange(1, self.n_decay + 1, device=x.device, dtype=x.dtype)
        dq = torch.sigmoid(self.decay_query(x).view(batch, h, self.n_decay, total)) / 2
        scores = scores - torch.einsum("bhfq,f,qk->bhqk", dq, rates,
                                       dist.clamp(min=0)) / math.sqrt(self.n_decay)
        visible = (dist >= 0) & (dist <= n)
        scores = scores.masked_fill(~visible, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        mixed = torch.einsum("bhqk,bhdk->bhdq", weights, vals).reshape(batch, channels, total)
        return x + self.out(mixed)


def _lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step in PyTorch's gate order (input, forget, cell, output)."""
    gates = torch.addmm(b_ih, x, w_ih.t()) + torch.addmm(b_hh, h, w_hh.t())
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class RecurrentBottleneck(Stateful):
    """The bounded-cost bottleneck: a unidirectional LSTM (state carried across hops) with a
    linear projection and skip, optionally followed by :class:`CausalLocalAttention` over the
    last ``attn_window`` frames. ``x`` ``[B, C, T]`` -> same."""

    def __init__(self, channels: int, layers: int, attn_window: int = 0, heads: int = 4):
        super().__init__()
        self.channels, self.layers = channels, layers
        self.rnn = nn.LSTM(channels, channels, num_layers=layers) if layers else None
        self.proj = nn.Linear(channels, channels) if layers else None
        self.attn = CausalLocalAttention(channels, attn_window, heads) if attn_window else None

    def initial_state(self, batch, device, dtype):
        if not self.layers:
            return {}
        z = torch.zeros(self.layers, batch, self.channels, device=device, dtype=dtype)
        return {".h": z, ".c": z.clone()}

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        if self.rnn is not None:
            h0, c0 = state[self.key + ".h"], state[self.key + ".c"]
            if x.shape[-1] <= 4:
                seq, h, c = self._cells(x.permute(2, 0, 1), h0, c0)
            else:
                seq, (h, c) = self.rnn(x.permute(2, 0, 1), (h0, c0))
            state[self.key + ".h"], state[self.key + ".c"] = h, c
            x = x + self.proj(seq).permute(1, 2, 0)
        if self.attn is not None:
            x = self.attn(x, state)
        return x

    def _cells(self, seq, h0, c0):
        """``nn.LSTM`` on a few frames, written out: for one frame per hop, the fused kernel's
        set-up cost (~1 ms) dwarfs the arithmetic. Same weights, same equations."""
        hs, cs = [], []
        for layer in range(self.layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{layer}")
            w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
            b_ih = getattr(self.rnn, f"bias_ih_l{layer}")
            b_hh = getattr(self.rnn, f"bias_hh_l{layer}")
            h, c = h0[layer], c0[layer]
            outs = []
            for t in range(seq.shape[0]):
                h, c = _lstm_cell(seq[t], h, c, w_ih, w_hh, b_ih, b_hh)
                outs.append(h)
            seq = torch.stack(outs)
            hs.append(h)
            cs.append(c)
        return seq, torch.stack(hs), torch.stack(cs)
