"""Building blocks of the offline (official) Hybrid Demucs network.

Written from the Hybrid Demucs paper (Défossez, MDX 2021) and from reading the ``demucs``
package: the compressed residual branch (dilated convs projected to ``channels / compress``,
optionally a chunked BiLSTM and a decaying local attention, scaled by a learnt per-channel
LayerScale), the encoder/decoder layers used by both branches, and the frequency embedding.
Tensor layouts: waveform-branch tensors are ``[B, C, T]`` (T in samples or frames);
spectrogram-branch tensors are ``[B, C, F, T]`` (F frequency bins, T STFT frames).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LayerScale", "ChunkedBiLSTM", "DecayAttention", "ResidualBranch", "FreqEmbedding",
           "EncoderLayer", "DecoderLayer"]


class LayerScale(nn.Module):
    """Per-channel gain on a residual output, initialised small (Touvron et al. 2021).

    ``x`` ``[B, C, T]`` -> ``gain[C] * x``.
    """

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.gain = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain[:, None] * x


class ChunkedBiLSTM(nn.Module):
    """Two-layer BiLSTM over time with a linear back to ``dim`` and a skip connection.

    Sequences longer than ``max_steps`` frames are cut into windows of ``max_steps`` with 50 %
    overlap, each run independently (bounded context, as the official model does), and the
    central half of each window kept (the first window also keeps its head, the last its tail).
    ``x`` ``[B, dim, T]`` -> ``[B, dim, T]``.
    """

    def __init__(self, dim: int, layers: int = 2, max_steps: int = 200):
        super().__init__()
        if max_steps % 4:
            raise ValueError(f"max_steps must be a multiple of 4, got {max_steps}")
        self.max_steps = max_steps
        self.rnn = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers,
                           bidirectional=True)
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, total = x.shape
        width = self.max_steps
        if total <= width:
            seqs = x.permute(2, 0, 1)  # [T, B, C], the LSTM's native layout
            return x + self.proj(self.rnn(seqs)[0]).permute(1, 2, 0)
        step = width // 2
        n_win = -(-total // step)
        padded = F.pad(x, (0, (n_win - 1) * step + width - total))
        wins = padded.unfold(-1, width, step)  # [B, C, n_win, width]
        seqs = wins.permute(3, 0, 2, 1).reshape(width, batch * n_win, dim)
        y = self.proj(self.rnn(seqs)[0])  # [width, B * n_win, C]
        y = y.reshape(width, batch, n_win, dim).permute(1, 2, 3, 0)  # [B, n_win, C, width]
        keep = step // 2
        parts = [y[:, 0, :, :width - keep]]
        parts += [y[:, k, :, keep:width - keep] for k in range(1, n_win - 1)]
        parts.append(y[:, n_win - 1, :, keep:])
        return x + torch.cat(parts, dim=-1)[..., :total]


class DecayAttention(nn.Module):
    """Content-based attention over time with a learnt, query-dependent distance penalty.

    Each head's score for key ``t`` and query ``s`` is ``k_t . q_s / sqrt(d)`` minus
    ``sum_f sigmoid(w_f(x_s)) / 2 * f * |t - s| / sqrt(n_decay)`` (f = 1..n_decay), so the
    network chooses per query how local to look; a frame never attends to itself.
    ``x`` ``[B, C, T]`` -> ``[B, C, T]`` (residual: ``x + out(attended)``).
    """

    def __init__(self, channels: int, heads: int = 4, n_decay: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.n_decay = heads, n_decay
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        self.decay_query = nn.Conv1d(channels, heads * n_decay, 1)
        self.out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, total = x.shape
        h = self.heads
        pos = torch.arange(total, device=x.device, dtype=x.dtype)
        dist = (pos[:, None] - pos[None, :]).abs()  # [t (key), s (query)]
        q = self.query(x).view(batch, h, -1, total)
        k = self.key(x).view(batch, h, -1, total)
        scores = torch.einsum("bhct,bhcs->bhts", k, q) / math.sqrt(k.shape[2])
        rates = torch.arange(1, self.n_decay + 1, device=x.device, dtype=x.dtype)
        penalty = -rates[:, None, None] * dist / math.sqrt(self.n_decay)  # [f, t, s]
        dq = torch.sigmoid(self.decay_query(x).view(batch, h, -1, total)) / 2
        scores = scores + torch.einsum("fts,bhfs->bhts", penalty, dq)
        scores = scores.masked_fill(torch.eye(total, device=x.device, dtype=torch.bool), -100)
        weights = torch.softmax(scores, dim=2)
        v = self.content(x).view(batch, h, -1, total)
        mixed = torch.einsum("bhts,bhct->bhcs", weights, v).reshape(batch, channels, total)
        return x + self.out(mixed)


class ResidualLayer(nn.Module):
    """One layer of :class:`ResidualBranch`: ``x + scale * glu(conv1x1(act(conv_dilated(x))))``."""

    def __init__(self, channels: int, hidden: int, dilation: int, init: float, norm: bool,
                 lstm: bool, attn: bool, gelu: bool, kernel: int = 3):
        super().__init__()
        self.conv_in = nn.Conv1d(channels, hidden, kernel, dilation=dilation,
                                 padding=dilation * (kernel // 2))
        self.norm_in = nn.GroupNorm(1, hidden) if norm else nn.Identity()
        self.act = nn.GELU() if gelu else nn.ReLU()
        self.lstm = ChunkedBiLSTM(hidden) if lstm else None
        self.attn = DecayAttention(hidden) if attn else None
        self.conv_out = nn.Conv1d(hidden, 2 * channels, 1)
        self.norm_out = nn.GroupNorm(1, 2 * channels) if norm else nn.Identity()
        self.scale = LayerScale(channels, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm_in(self.conv_in(x)))
        if self.lstm is not None:
            y = self.lstm(y)
        if self.attn is not None:
            y = self.attn(y)
        y = F.glu(self.norm_out(self.conv_out(y)), dim=1)
        return x + self.scale(y)


class ResidualBranch(nn.Module):
    """Compressed residual branch ("DConv"): ``depth`` residual layers, dilation ``2**d``.

    Each layer projects ``channels`` down to ``channels / compress`` with a dilated conv, so the
    receptive field grows cheaply. ``x`` ``[B, channels, T]`` -> same shape.
    """

    def __init__(self, channels: int, compress: float = 4, depth: int = 2, init: float = 1e-4,
                 norm: bool = True, attn: bool = False, lstm: bool = False, gelu: bool = True,
                 kernel: int = 3):
        super().__init__()
        dilate = depth > 0
        hidden = int(channels / compress)
        self.layers = nn.ModuleList(
            ResidualLayer(channels, hidden, 2 ** d if dilate else 1, init, norm, lstm, attn,
                          gelu, kernel)
            for d in range(abs(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class FreqEmbedding(nn.Module):
    """Learnt per-frequency-bin vector added after the first spectrogram layer.

    Convolutions over frequency are translation-equivariant; music is not, so each bin gets
    its own offset. The table is stored divided by ``scale`` and multiplied back on use
    (equivalent to a ``scale`` times larger learning rate). ``smooth`` initialises it as a
    normalised cumulative sum, so neighbouring bins start similar.
    """

    def __init__(self, n_bins: int, dim: int, scale: float = 10.0, smooth: bool = True):
        super().__init__()
        weight = torch.empty(n_bins, dim)
        if weight.device.type != "meta":  # (the checkpoint loader's shape-only shell: random
            # values and a cumsum there go through torch's reference ops, whose first use
            # imports torch._dynamo: 1.2 s of every model load, for values never read)
            weight.normal_()  # the same draws as torch.randn
            if smooth:
                weight = weight.cumsum(0) / torch.arange(1, n_bins + 1).float().sqrt()[:, None]
            weight = weight / scale
        self.weight = nn.Parameter(weight)
        self.scale = float(scale)

    def forward(self, n_bins: int) -> torch.Tensor:
        """``[dim, n_bins, 1]``, ready to broadcast onto ``[B, dim, n_bins, T]``."""
        return (self.weight[:n_bins] * self.scale).t()[:, :, None]


def _norm(groups: int, channels: int, on: bool) -> nn.Module:
    return nn.GroupNorm(groups, channels) if on else nn.Identity()


class EncoderLayer(nn.Module):
    """Strided conv + norm + GELU, residual branch, then a 1x1 (or ``1 + 2 context``) "rewrite"
    conv with GLU. ``freq=True``: ``[B, C, F, T]`` strided over F; else ``[B, C, T]`` strided
    over T (right-padded to a multiple of the stride). ``bare=True`` keeps only the strided
    conv (the waveform layer at the merge depth)."""

    def __init__(self, chin: int, chout: int, kernel: int, stride: int, *, freq: bool,
                 pad: bool, norm: bool, norm_groups: int, rewrite: bool, context: int,
                 residual: dict | None, bare: bool = False):
        super().__init__()
        self.freq, self.stride, self.bare = freq, stride, bare
        p = kernel // 4 if pad else 0
        if freq:
            self.conv = nn.Conv2d(chin, chout, (kernel, 1), (stride, 1), (p, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel, stride, p)
        if bare:
            return
        self.norm_conv = _norm(norm_groups, chout, norm)
        self.rewrite = None
        if rewrite:
            conv = nn.Conv2d if freq else nn.Conv1d
            self.rewrite = conv(chout, 2 * chout, 1 + 2 * context, 1, context)
            self.norm_rewrite = _norm(norm_groups, 2 * chout, norm)
        self.residual = ResidualBranch(chout, **residual) if residual is not None else None

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        if not self.freq:
            if x.dim() == 4:  # merged branch: a single frequency bin left
                x = x.flatten(1, 2)
            rest = x.shape[-1] % self.stride
            if rest:
                x = F.pad(x, (0, self.stride - rest))
        y = self.conv(x)
        if self.bare:
            return y
        if inject is not None:
            y = y + (inject[:, :, None] if inject.dim() == 3 and y.dim() == 4 else inject)
        y = F.gelu(self.norm_conv(y))
        if self.residual is not None:
            y = _over_time(self.residual, y) if self.freq else self.residual(y)
        if self.rewrite is not None:
            y = F.glu(self.norm_rewrite(self.rewrite(y)), dim=1)
        return y


def _over_time(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Apply a ``[N, C, T]`` module to ``[B, C, F, T]`` independently per frequency bin."""
    batch, channels, bins, frames = y.shape
    flat = y.permute(0, 2, 1, 3).reshape(batch * bins, channels, frames)
    return module(flat).view(batch, bins, channels, frames).permute(0, 2, 1, 3)


class DecoderLayer(nn.Module):
    """Mirror of :class:`EncoderLayer`: add the skip, rewrite conv + GLU, residual branch,
    then a transposed strided conv + norm (+ GELU except at depth 0). Returns the output and
    the pre-upsampling activation (which, at the merge depth, feeds the waveform branch).
    ``bare=True``: only the transposed conv (+ norm), no skip."""

    def __init__(self, chin: int, chout: int, kernel: int, stride: int, *, freq: bool,
                 pad: bool, norm: bool, norm_groups: int, rewrite: bool, context: int,
                 residual: dict | None, last: bool, bare: bool = False):
        super().__init__()
        self.freq, self.chin, self.last, self.bare = freq, chin, last, bare
        self.pad = kernel // 4 if pad else 0
        if freq:
            self.upconv = nn.ConvTranspose2d(chin, chout, (kernel, 1), (stride, 1))
        else:
            self.upconv = nn.ConvTranspose1d(chin, chout, kernel, stride)
        self.norm_out = _norm(norm_groups, chout, norm)
        if bare:
            return
        self.rewrite = None
        if rewrite:
            conv = nn.Conv2d if freq else nn.Conv1d
            self.rewrite = conv(chin, 2 * chin, 1 + 2 * context, 1, context)
            self.norm_rewrite = _norm(norm_groups, 2 * chin, norm)
        self.residual = ResidualBranch(chin, **residual) if residual is not None else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, length: int):
        if self.freq and x.dim() == 3:
            x = x.view(x.shape[0], self.chin, -1, x.shape[-1])
        y = x
        if not self.bare:
            y = x + skip
            if self.rewrite is not None:
                y = F.glu(self.norm_rewrite(self.rewrite(y)), dim=1)
            if self.residual is not None:
                y = _over_time(self.residual, y) if self.freq else self.residual(y)
        z = self.norm_out(self.upconv(y))
        if self.freq:
            if self.pad:
                z = z[:, :, self.pad:-self.pad]
        else:
            z = z[..., self.pad:self.pad + length]
        if not self.last:
            z = F.gelu(z)
        return z, y
