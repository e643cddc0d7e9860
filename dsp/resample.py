"""Streaming sample-rate conversion over soxr with a fixed, declared latency and steady output.

Devices run at 48 kHz and the model at 44.1 kHz, so the worker resamples one hop at a time in
both directions. ``soxr.ResampleStream`` is phase-aligned (it trims its own filter delay: an
impulse at input sample ``d`` comes out at output sample ``d * out_rate / in_rate``) but bursty:
it processes in internal chunks, so after ``n`` input samples it has delivered anywhere between
~100 and ~1000 samples fewer than ``n * out_rate / in_rate`` (HQ, 48 <-> 44.1 kHz). A real-time
stream cannot follow that. :class:`ResampleStream` therefore puts ``latency_samples`` zeros in
front of soxr's output and hands out exactly the ideal number of samples per call,

    m = floor((N + n) * out_rate / in_rate) - floor(N * out_rate / in_rate)

for a block of ``n`` samples after ``N`` earlier ones, so output sample ``i`` is soxr's sample
``i - latency_samples``. ``latency_samples`` is measured at construction by driving a probe
resampler of the same configuration with small blocks and taking the largest shortfall, plus a
margin for the probe's block granularity; its output-sample count never runs dry in practice,
and if it ever did the gap is filled with zeros and counted in ``underruns``.

Cost: soxr allocates its output array on every call (it has no ``out=``), so unlike the numba
kernels this wrapper is not allocation-free; the allocation is bounded by the block size and
freed within the call.
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["ResampleStream", "QUALITIES"]

#: soxr quality recipes, lowest to highest; 'QQ' is a cubic interpolator (not for music).
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")

_PROBE_BLOCK = 16  # input samples per probe call; the margin below covers this granularity
_PROBE_SAMPLES = 16384  # covers several of soxr's internal chunk periods for every recipe


def _measure_shortfall(in_rate: int, out_rate: int, quality: str) -> int:
    """Largest ``ideal - delivered`` output count seen while streaming zeros in small blocks."""
    probe = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
    block = np.zeros(_PROBE_BLOCK, dtype=np.float32)
    fed = delivered = 0
    worst = 0
    for _ in range(_PROBE_SAMPLES // _PROBE_BLOCK):
        delivered += probe.resample_chunk(block).shape[0]
        fed += _PROBE_BLOCK
        worst = max(worst, (fed * out_rate) // in_rate - delivered)
    # Within a probe block the shortfall can grow by up to the block's worth of output before
    # soxr catches up; +2 absorbs rounding of the ideal count.
    return int(worst + -(-_PROBE_BLOCK * out_rate // in_rate) + 2)


class ResampleStream:
    """Block-by-block resampler with a constant delay and a deterministic output count.

    Args:
        in_rate: input sample rate in Hz (int).
        out_rate: output sample rate in Hz (int).
        channels: number of channels ``C``.
        quality: soxr recipe, one of :data:`QUALITIES` ('HQ' default: ~-100 dB aliasing).
        max_block: largest input block ``process`` accepts, in samples.

    Attributes:
        latency_samples: delay in output samples: an impulse at input sample ``d`` peaks at output
            sample ``round(d * out_rate / in_rate) + latency_samples``. 0 when the rates are equal
            (pass-through).
        underruns: output samples that soxr had not produced in time and were filled with zeros
            (expected to stay 0; the latency is sized so that it does).

    Not thread-safe; one instance per worker. Equal rates bypass soxr entirely (bit-exact copy).
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int, quality: str = "HQ", max_block: int = 8192):
        for name, v in (("in_rate", in_rate), ("out_rate", out_rate), ("channels", channels), ("max_block", max_block)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.channels, self.quality, self.max_block = int(channels), quality, int(max_block)
        self.passthrough = self.in_rate == self.out_rate
        self.latency_samples = 0 if self.passthrough else _measure_shortfall(self.in_rate, self.out_rate, quality)
        self.max_out = -(-self.max_block * self.out_rate // self.in_rate) + 1
        c = self.channels
        # FIFO between soxr and the caller: latency zeros + soxr's bursts + one block of output.
        self._capacity = self.latency_samples + 2 * self.max_out + 4096
        self._fifo = np.zeros((c, self._capacity), dtype=np.float32)
        self._out = np.zeros((c, self.max_out), dtype=np.float32)
        self._tin = np.zeros((self.max_block, c), dtype=np.float32)  # soxr wants [n, C] C-order
        self._soxr = None
        self.reset()

    def reset(self) -> None:
        """Forget all input: back to the freshly constructed state."""
        if not self.passthrough:
            self._soxr = soxr.ResampleStream(
                self.in_rate, self.out_rate, self.channels, dtype="float32", quality=self.quality
            )
        self._fifo.fill(0.0)
        self._read = 0
        self._count = self.latency_samples  # the leading zeros are already "in" the FIFO
        self._fed = 0
        self._emitted = 0
        self.underruns = 0

    def output_count(self, n: int) -> int:
        """Samples the next ``process`` call returns for a block of ``n`` input samples."""
        return ((self._fed + n) * self.out_rate) // self.in_rate - (self._fed * self.out_rate) // self.in_rate

    def _check_block(self, x) -> None:
        if not isinstance(x, np.ndarray):
            raise ValueError(f"expected a numpy float32 array [channels={self.channels}, n], got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ValueError(f"expected dtype float32, got {x.dtype}; convert with x.astype(np.float32)")
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected shape [channels={self.channels}, n], got {x.shape}")
        if x.shape[1] > self.max_block:
            raise ValueError(f"block of {x.shape[1]} samples exceeds max_block={self.max_block}")

    def _push(self, y: np.ndarray) -> None:
        """Append soxr output y[m, C] to the FIFO."""
        m = y.shape[0]
        if self._count + m > self._capacity:
            raise RuntimeError(
                f"resampler FIFO overflow ({self._count + m} > {self._capacity}); soxr delivered "
                f"more than expected"
            )
        w = (self._read + self._count) % self._capacity
        first = min(m, self._capacity - w)
        self._fifo[:, w : w + first] = y[:first].T
        if first < m:
            self._fifo[:, : m - first] = y[first:].T
        self._count += m

    def _pop(self, m: int) -> np.ndarray:
        take = min(m, self._count)
        r = self._read
        first = min(take, self._capacity - r)
        out = self._out[:, :m]
        out[:, :first] = self._fifo[:, r : r + first]
        if first < take:
            out[:, first:take] = self._fifo[:, : take - first]
        if take < m:
            out[:, take:] = 0.0
            self.underruns += m - take
        self._read = (r + take) % self._capacity
        self._count -= take
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample one block.

        Args:
            x: float32 [channels, n], 0 <= n <= max_block, at ``in_rate``.

        Returns:
            float32 [channels, m] at ``out_rate`` with ``m = output_count(n)``: a view into an
            internal buffer, overwritten by the next call.
        """
        self._check_block(x)
        n = x.shape[1]
        m = self.output_count(n)
        self._fed += n
        self._emitted += m
        if self.passthrough:
            out = self._out[:, :n]
            out[...] = x
            return out
        if n:
            tin = self._tin[:n]
            tin[...] = x.T
            self._push(self._soxr.resample_chunk(tin))
        return self._pop(m)

    def flush(self) -> np.ndarray:
        """End of stream: return everything still buffered, float32 [channels, m] (a new array).

        After ``flush`` the total output is ``latency_samples`` plus soxr's full output for the
        stream (about ``n_in * out_rate / in_rate``). Call :meth:`reset` before reusing.
        """
        if not self.passthrough:
            self._push(self._soxr.resample_chunk(np.zeros((0, self.channels), np.float32), last=True))
        rest = np.empty((self.channels, self._count), dtype=np.float32)
        r, m = self._read, self._count
        first = min(m, self._capacity - r)
        rest[:, :first] = self._fifo[:, r : r + first]
        rest[:, first:] = self._fifo[:, : m - first]
        self._read = (r + m) % self._capacity
        self._count = 0
        return rest
