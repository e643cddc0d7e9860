"""CenterCancel: the weightless karaoke baseline (mid/side similarity + spectral masking).

Lead vocals are usually mixed dead centre: identical in both channels. Per STFT bin, the
inter-channel similarity ``2 Re(L conj(R)) / (|L|^2 + |R|^2)`` is 1 for centre-panned content
and falls to 0 (or below) for content panned to one side or decorrelated by stereo reverb. A
mask built from it, restricted to the vocal band, estimates ``vocals``; ``accompaniment`` is the
input minus the vocals, so the two stems always sum back to the (delayed) input exactly.

It is a real separator with no weights: the fallback when no model is available, and the floor
every learned model must beat. Its latency is the synthesis geometry of the asymmetric
low-latency window pair from :mod:`livestems.dsp.windows` (long analysis window for frequency
resolution, short synthesis window for latency).
"""

from __future__ import annotations

import numpy as np

from livestems.dsp.stft import StreamISTFT, StreamSTFT
from livestems.dsp.windows import asymmetric_pair, check_reconstruction, sqrt_hann

from .protocol import check_forward_input, check_step_input

__all__ = ["CenterCancel"]


def _band_weights(n_fft: int, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Per-bin weights in [0, 1]: 1 inside [low_hz, high_hz], raised-cosine half-octave edges."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    w = np.ones_like(freqs)
    with np.errstate(divide="ignore"):
        octs = np.log2(np.maximum(freqs, 1e-9))
    lo, hi = np.log2(low_hz), np.log2(high_hz)
    edge = 0.5  # octaves
    below = octs < lo
    w[below] = 0.5 + 0.5 * np.cos(np.pi * np.clip((lo - octs[below]) / edge, 0, 1))
    above = octs > hi
    w[above] = 0.5 + 0.5 * np.cos(np.pi * np.clip((octs[above] - hi) / edge, 0, 1))
    w[freqs <= 0] = 0.0
    return w.astype(np.float32)


class CenterCancel:
    """Centre-channel extraction separator: sources ``("vocals", "accompaniment")``.

    Args:
        sample_rate: Hz the separator runs at (44100 by default; ``separate`` resamples files).
        n_fft: analysis frame length in samples (frequency resolution).
        hop: samples per :meth:`step`.
        synthesis_len: support of the synthesis window in samples; the latency is
            ``synthesis_len - hop`` (256 samples = 5.8 ms at 44.1 kHz by default). Set it to
            ``n_fft`` for symmetric sqrt-Hann windows (latency ``n_fft - hop``).
        exponent: sharpness of the mask; higher keeps less of the partially-centred content.
        low_hz, high_hz: the band treated as vocal; centre content outside it (kick, bass)
            stays in the accompaniment.
    """

    sources = ("vocals", "accompaniment")
    channels = 2

    def __init__(
        self,
        sample_rate: int = 44100,
        n_fft: int = 2048,
        hop: int = 256,
        synthesis_len: int = 512,
        exponent: float = 2.0,
        low_hz: float = 150.0,
        high_hz: float = 8000.0,
    ):
        if not 8000 <= int(sample_rate) <= 384000:
            raise ValueError(f"sample_rate must be 8000..384000 Hz, got {sample_rate}")
        if hop < 1 or n_fft < 2 * hop:
            raise ValueError(f"need 1 <= hop <= n_fft / 2, got hop={hop}, n_fft={n_fft}")
        if n_fft % hop:
            raise ValueError(f"hop ({hop}) must divide n_fft ({n_fft})")
        if not 0 < low_hz < high_hz <= sample_rate / 2:
            raise ValueError(f"need 0 < low_hz < high_hz <= sample_rate / 2, got "
                             f"{low_hz}, {high_hz} at {sample_rate} Hz")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop = int(hop)
        self.synthesis_len = int(synthesis_len)
        self.exponent = float(exponent)
        self.low_hz, self.high_hz = float(low_hz), float(high_hz)
        if self.synthesis_len == self.n_fft:
            self.analysis_window = sqrt_hann(n_fft)
            self.synthesis_window = sqrt_hann(n_fft)
        else:
            self.analysis_window, self.synthesis_window = asymmetric_pair(
                n_fft, hop, synthesis_len
            )
        # the streaming inverse divides by the overlap-add gain; so does forward()
        self._ola_gain = check_reconstruction(self.analysis_window, self.synthesis_window, hop)
        self.band = _band_weights(n_fft, self.sample_rate, low_hz, high_hz)

        self._stft = StreamSTFT(
            n_fft, hop, 2, self.analysis_window, pad_start=n_fft - hop, max_block=hop
        )
        self._istft = StreamISTFT(
            n_fft, hop, 2, self.analysis_window, self.synthesis_window, max_frames=1
        )
        self.latency_samples = int(self._istft.latency_samples)
        n_bins = n_fft // 2 + 1
        self._vspec = np.zeros((2, 1, n_bins), dtype=np.complex64)
        # the input delayed by the latency, so accompaniment = delayed input - vocals
        self._delay = np.zeros((2, self.latency_samples + hop), dtype=np.float32)
        self._out = np.zeros((2, 2, hop), dtype=np.float32)

    def config(self) -> dict:
        """Constructor arguments, for checkpoints and reports."""
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "synthesis_len": self.synthesis_len,
            "exponent": self.exponent,
            "low_hz": self.low_hz,
            "high_hz": self.high_hz,
        }

    def reset(self) -> None:
        self._stft.reset()
        self._istft.reset()
        self._delay.fill(0.0)

    def _mask(self, spec: np.ndarray) -> np.ndarray:
        """Vocal mask from a stereo spectrum ``[2, ..., bins]`` -> ``[..., bins]`` in [0, 1]."""
        left, right = spec[0], spec[1]
        cross = (left.real * right.real + left.imag * right.imag) * 2.0
        power = left.real**2 + left.imag**2 + right.real**2 + right.imag**2
        sim = cross / (power + 1e-12)
        return (np.clip(sim, 0.0, 1.0) ** self.exponent) * self.band

    def step(self, x: np.ndarray) -> np.ndarray:
        """One hop: ``x`` float32 ``[2, hop]`` -> stems float32 ``[2, 2, hop]`` (view)."""
        check_step_input(self, x)
        spec = self._stft.process(x)  # [2, 1, bins]
        np.multiply(spec, self._mask(spec), out=self._vspec)
        vocals = self._istft.process(self._vspec)  # [2, hop]
        hop, lat = self.hop, self.latency_samples
        self._delay[:, lat:] = x
        self._out[0] = vocals
        np.subtract(self._delay[:, :hop], vocals, out=self._out[1])
        self._delay[:, :lat] = self._delay[:, hop:]
        return self._out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Offline: float ``[B, 2, T]`` -> aligned stems float32 ``[B, 2, 2, T]``.

        Vectorised over all frames (numpy FFT, float64), independent of the streaming code
        path, so the streaming/offline equivalence test compares two implementations.
        """
        x = check_forward_input(self, x).astype(np.float64)
        batch, _, total = x.shape
        n_fft, hop = self.n_fft, self.hop
        pad = n_fft - hop
        n_frames = -(-(total + pad) // hop)
        xp = np.zeros((batch, 2, pad + n_frames * hop + hop), dtype=np.float64)
        xp[:, :, pad : pad + total] = x
        idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
        frames = xp[:, :, idx] * self.analysis_window  # [B, 2, K, n_fft]
        spec = np.fft.rfft(frames, axis=-1)
        mask = self._mask(np.moveaxis(spec, 1, 0))  # [B, K, bins]
        vframes = np.fft.irfft(spec * mask[:, None], n=n_fft, axis=-1) * (
            self.synthesis_window / self._ola_gain)
        ola = np.zeros((batch, 2, (n_frames - 1) * hop + n_fft), dtype=np.float64)
        for k in range(n_frames):  # K adds of [B, 2, n_fft]: cheap next to the FFTs
            ola[:, :, k * hop : k * hop + n_fft] += vframes[:, :, k]
        vocals = ola[:, :, pad : pad + total]
        out = np.empty((batch, 2, 2, total), dtype=np.float32)
        out[:, 0] = vocals
        out[:, 1] = x - vocals
        return out
