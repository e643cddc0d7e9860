"""WindowedHybrid: an offline model (official Hybrid Demucs weights) run over a sliding window.

The offline network needs context on both sides and normalises over its whole input, so it
cannot step hop by hop. Instead, every hop it is run on a window of ``context`` past samples,
the hop itself, and ``lookahead`` future samples; the window's estimate of a ``2 * hop``
region ending ``lookahead`` samples before the window's end is weighted by a sin² (Hann)
cross-fade whose copies at hop spacing sum to one, and overlap-added. A sample is final once
the two windows covering it have run, so

    latency_samples = lookahead + hop

Cost per hop is one offline forward on ``context + 2 * hop + lookahead`` samples, constant
forever. With official weights (84 M parameters) this wants a GPU; quality approaches the
offline model's as ``context`` and ``lookahead`` grow.

Threading: one instance belongs to one thread; ``step`` returns a view of a preallocated
buffer, valid until the next call.
"""

from __future__ import annotations

import numpy as np
import torch

from ..protocol import check_forward_input, check_step_input

__all__ = ["WindowedHybrid"]


class WindowedHybrid:
    """Separator protocol over an offline network ``net`` (e.g. :class:`HDemucsNet`).

    Args:
        net: ``forward([B, C, W]) -> [B, S, C, W]`` torch module with ``sources``,
            ``audio_channels`` and ``samplerate`` attributes.
        hop: samples per :meth:`step`.
        context: past samples in each window, before the cross-faded region.
        lookahead: future samples after it; latency is ``lookahead + hop``.
        device: torch device for the network.
        batch_windows: windows per network call in :meth:`forward` (memory vs speed).
    """

    def __init__(self, net, hop: int = 4096, context: int = 3 * 44100,
                 lookahead: int = 22050, device: str = "cpu", batch_windows: int = 8):
        for name, v in (("hop", hop), ("context", context), ("lookahead", lookahead)):
            if int(v) != v or v < (1 if name == "hop" else 0):
                raise ValueError(f"{name} must be a {'positive' if name == 'hop' else 'non-negative'}"
                                 f" integer number of samples, got {v!r}")
        self.module = net.eval()
        self.device = torch.device(device)
        self.module.to(self.device)
        self.sample_rate = int(net.samplerate)
        self.channels = int(net.audio_channels)
        self.sources = tuple(net.sources)
        self.hop, self.context, self.lookahead = int(hop), int(context), int(lookahead)
        self.latency_samples = self.lookahead + self.hop
        self.window = self.context + 2 * self.hop + self.lookahead
        self.batch_windows = int(batch_windows)
        # sin^2 over 2 hops: copies shifted by one hop sum to exactly one
        n = np.arange(2 * self.hop)
        self.fade = np.sin(np.pi * (n + 0.5) / (2 * self.hop)) ** 2
        self.fade = (self.fade / (self.fade[: self.hop] + self.fade[self.hop:]).repeat(2)
                     ).astype(np.float32)
        n_src = len(self.sources)
        self._buf = np.zeros((self.channels, self.window), dtype=np.float32)
        self._acc = np.zeros((n_src, self.channels, 2 * self.hop), dtype=np.float32)
        self._out = np.zeros((n_src, self.channels, self.hop), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the window is refilled with silence)."""
        self._buf.fill(0.0)
        self._acc.fill(0.0)

    def _region(self, windows: np.ndarray) -> np.ndarray:
        """``[N, C, window]`` -> faded estimates of each window's region ``[N, S, C, 2 hop]``."""
        with torch.inference_mode():
            y = self.module(torch.from_numpy(windows).to(self.device)).float().cpu().numpy()
        end = self.window - self.lookahead
        return y[..., end - 2 * self.hop:end] * self.fade

    def step(self, x: np.ndarray) -> np.ndarray:
        """One hop: float32 ``[channels, hop]`` -> stems float32 ``[S, channels, hop]`` (view),
        ``lookahead + hop`` samples behind the input."""
        check_step_input(self, x)
        h = self.hop
        self._buf[:, :-h] = self._buf[:, h:]
        self._buf[:, -h:] = x
        region = self._region(self._buf[None])[0]
        self._acc[..., :h] += region[..., :h]
        self._out[:] = self._acc[..., :h]
        self._acc[..., :h] = region[..., h:]
        return self._out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Offline equivalent of streaming: float ``[B, C, T]`` -> aligned ``[B, S, C, T]``.

        Runs the same windows ``step`` would (the stream preceded by silence), batched.
        """
        x = check_forward_input(self, x)
        batch, channels, total = x.shape
        h, lat = self.hop, self.latency_samples
        n_hops = -(-(total + lat) // h)
        pad = self.window - h  # silence the buffer starts with
        xp = np.zeros((batch, channels, pad + n_hops * h), dtype=np.float32)
        xp[:, :, pad:pad + total] = x
        out = np.zeros((batch, len(self.sources), channels, (n_hops + 1) * h), dtype=np.float32)
        for b in range(batch):
            for k0 in range(0, n_hops, self.batch_windows):
                ks = range(k0, min(n_hops, k0 + self.batch_windows))
                wins = np.stack([xp[b, :, k * h:k * h + self.window] for k in ks])
                for k, reg in zip(ks, self._region(wins)):
                    # step k emits [k h, (k+1) h): its region's first half plus the previous
                    # region's second half, so region k covers stream [k h, (k+2) h)
                    out[b, ..., k * h:(k + 2) * h] += reg
        return out[..., lat:lat + total]
