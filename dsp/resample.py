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

import math

import numba
import numpy as np
import soxr

__all__ = ["ResampleStream", "PolyphaseStream", "design_polyphase", "QUALITIES", "LD"]

#: the low-delay recipe's name (:class:`PolyphaseStream`), beside soxr's :data:`QUALITIES`
LD = "LD"

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


# -- low delay: a short linear-phase polyphase FIR of our own -------------------------------

#: The low-delay recipe (:class:`PolyphaseStream`): taps on each side of the output instant, in
#: input samples, and the stopband attenuation its Kaiser window is designed for.
LD_HALF_TAPS = 24
LD_STOPBAND_DB = 70.0


def _kaiser_beta(atten_db: float) -> float:
    """Kaiser's window parameter for a stopband ``atten_db`` below the passband."""
    a = float(atten_db)
    if a > 50.0:
        return 0.1102 * (a - 8.7)
    if a >= 21.0:
        return 0.5842 * (a - 21.0) ** 0.4 + 0.07886 * (a - 21.0)
    return 0.0


def design_polyphase(in_rate: int, out_rate: int, half_taps: int = LD_HALF_TAPS,
                     stopband_db: float = LD_STOPBAND_DB) -> tuple[np.ndarray, float]:
    """The filter bank of :class:`PolyphaseStream`: ``(table [P, 2 * half_taps], cutoff_hz)``.

    ``P = out_rate / gcd``: one row per fractional position ``phi / P`` of an output instant
    between two input samples; row ``phi`` holds the weights of input samples ``i0 - H + 1 ..
    i0 + H`` around it (``H = half_taps``). The prototype is a windowed sinc (Kaiser, designed
    for ``stopband_db``) whose transition band, as wide as ``2 H`` taps allow at the input
    rate, ends at the lower Nyquist frequency, so nothing above it is kept (no aliasing in the
    band the lower rate can hold); each row is scaled to unit DC gain.
    """
    g = math.gcd(int(in_rate), int(out_rate))
    p = int(out_rate) // g
    nyq = 0.5 * min(in_rate, out_rate)
    n = 2 * half_taps
    # Kaiser's estimate of the transition width for n taps at the input rate
    width_hz = (stopband_db - 7.95) / (2.285 * 2.0 * math.pi * (n - 1)) * in_rate
    cutoff_hz = max(0.25 * nyq, nyq - 0.5 * width_hz)  # -6 dB point: middle of the transition
    fc = cutoff_hz / in_rate  # cycles per input sample
    beta = _kaiser_beta(stopband_db)
    k = np.arange(-half_taps + 1, half_taps + 1, dtype=np.float64)  # input offsets from i0
    frac = np.arange(p, dtype=np.float64)[:, None] / p
    t = k[None, :] - frac  # distance of each tap from the output instant, in input samples
    w = np.i0(beta * np.sqrt(np.clip(1.0 - (t / half_taps) ** 2, 0.0, None))) / np.i0(beta)
    table = 2.0 * fc * np.sinc(2.0 * fc * t) * w
    table /= table.sum(axis=1, keepdims=True)
    return np.ascontiguousarray(table, dtype=np.float32), float(cutoff_hz)


@numba.njit(cache=True, nogil=True)
def _polyphase_block(buf, base, table, half_taps, in_r, out_r, dq, j0, m, out):
    """Outputs ``j0 .. j0 + m - 1`` into ``out[:, :m]``. Output ``j`` sits at input position
    ``(j * in_r - dq) / out_r``; ``buf[:, k]`` holds input sample ``base + k``."""
    for t in range(m):
        pn = (j0 + t) * in_r - dq
        i0 = pn // out_r  # floor, also for negative pn
        ph = pn - i0 * out_r
        s = i0 - half_taps + 1 - base
        for c in range(buf.shape[0]):
            acc = np.float32(0.0)
            for k in range(2 * half_taps):
                acc += table[ph, k] * buf[c, s + k]
            out[c, t] = acc


class PolyphaseStream:
    """Low-delay block-by-block resampler: a short linear-phase polyphase FIR (numba).

    Same interface as :class:`ResampleStream` (``process``, ``output_count``, ``reset``,
    ``max_out``, ``underruns``), with a delay of about ``half_taps`` input samples instead of
    soxr's hundreds, and a delay that may be fractional: output sample ``j`` is the
    band-limited input at input position ``(j * in_r - delay_q) / out_r`` (``in_r``, ``out_r``:
    the rates divided by their gcd), so an impulse at input ``d`` comes out at output
    ``d * out_rate / in_rate + delay_q / in_r``. The engine picks ``delay_q`` so that its total
    latency is a whole number of samples (stream/core/engine.py).

    Args:
        in_rate, out_rate: Hz (ints).
        channels: ``C``.
        max_block: largest input block ``process`` accepts.
        delay_q: the delay in units of ``1 / out_r`` input samples; at least
            :meth:`min_delay_q` (the default), which makes every output computable from the
            input received so far.
        half_taps: filter taps each side of an output instant (``H``; delay ~ ``H`` input
            samples).

    ``process`` allocates nothing: the history is a small linear buffer whose last
    ``~2 H`` samples move to its front before each block (a copy of ~50 samples per channel).
    """

    quality = "LD"

    def __init__(self, in_rate: int, out_rate: int, channels: int, max_block: int = 8192,
                 delay_q: int | None = None, half_taps: int = LD_HALF_TAPS):
        for name, v in (("in_rate", in_rate), ("out_rate", out_rate), ("channels", channels),
                        ("max_block", max_block), ("half_taps", half_taps)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        g = math.gcd(self.in_rate, self.out_rate)
        self.in_r, self.out_r = self.in_rate // g, self.out_rate // g
        self.channels, self.max_block, self.half_taps = int(channels), int(max_block), int(half_taps)
        lo = self.min_delay_q(self.in_rate, self.out_rate, self.half_taps)
        self.delay_q = lo if delay_q is None else int(delay_q)
        if self.delay_q < lo:
            raise ValueError(f"delay_q must be >= {lo} (half_taps {half_taps}), got {delay_q}")
        self.passthrough = False
        self.table, self.cutoff_hz = design_polyphase(self.in_rate, self.out_rate, self.half_taps)
        self.max_out = -(-self.max_block * self.out_rate // self.in_rate) + 1
        # input samples kept before each block: the oldest a new output can reach back to
        self._keep = -(-(self.in_r + self.delay_q) // self.out_r) + self.half_taps + 2
        self._buf = np.zeros((self.channels, self._keep + self.max_block), dtype=np.float32)
        self._out = np.zeros((self.channels, self.max_out), dtype=np.float32)
        self.reset()

    @staticmethod
    def min_delay_q(in_rate: int, out_rate: int, half_taps: int = LD_HALF_TAPS) -> int:
        """Smallest ``delay_q``: output ``j``, due once ``floor(N out / in) > j`` inputs are
        in, needs inputs up to ``i0 + H``; ``delay_q >= H * out_r`` keeps that ``< N``."""
        g = math.gcd(int(in_rate), int(out_rate))
        return int(half_taps) * (int(out_rate) // g)

    @property
    def delay_out_samples(self) -> float:
        """The delay in output samples (``delay_q / in_r``; may be fractional)."""
        return self.delay_q / self.in_r

    @property
    def latency_samples(self) -> int:
        """The delay rounded up to whole output samples (for reports; the engine uses the
        exact :attr:`delay_q`)."""
        return -(-self.delay_q // self.in_r)

    def reset(self) -> None:
        """Forget all input: back to the freshly constructed state (silence before)."""
        self._buf.fill(0.0)
        self._base = -self._keep  # buf[:, k] holds input sample base + k
        self._fed = 0
        self._emitted = 0
        self.underruns = 0  # never: every output is computable when due (min_delay_q)

    def output_count(self, n: int) -> int:
        """Samples the next ``process`` call returns for a block of ``n`` input samples."""
        return ((self._fed + n) * self.out_r) // self.in_r - (self._fed * self.out_r) // self.in_r

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample one block: float32 ``[channels, n]`` (``n <= max_block``) at ``in_rate``
        -> float32 ``[channels, output_count(n)]`` at ``out_rate``, a view of an internal
        buffer overwritten by the next call."""
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 \
                or x.shape[0] != self.channels or x.shape[1] > self.max_block:
            raise ValueError(f"expected float32 [channels={self.channels}, n <= "
                             f"{self.max_block}], got {getattr(x, 'dtype', type(x).__name__)} "
                             f"{list(getattr(x, 'shape', []))}")
        n = x.shape[1]
        m = self.output_count(n)
        buf, keep = self._buf, self._keep
        filled = self._fed - self._base  # samples in buf
        if filled > keep:  # move the last `keep` samples to the front
            buf[:, :keep] = buf[:, filled - keep:filled]
            self._base += filled - keep
            filled = keep
        buf[:, filled:filled + n] = x
        self._fed += n
        out = self._out[:, :m]
        if m:
            _polyphase_block(buf, self._base, self.table, self.half_taps, self.in_r,
                             self.out_r, self.delay_q, self._emitted, m, out)
        self._emitted += m
        return out


def measure_response(in_rate: int, out_rate: int, quality: str = LD, step_hz: float = 250.0,
                     seconds: float = 0.5) -> dict:
    """Measured response of a streaming resampler (``quality``: ``LD`` or a soxr recipe).

    A full-scale sine at each frequency ``f`` (every ``step_hz`` up to the input's Nyquist)
    goes through the stream in 256-sample blocks; on the output's steady part we fit the sine
    at ``f`` (its level: the gain) and, in what is left (Blackman-Harris window), read the
    strongest other component (aliases, images, distortion), both in dB of the input sine. Returns ``{"freq_hz",
    "gain_db", "spur_db"}`` (arrays; the gain is NaN where ``f`` is above the output's
    Nyquist, where everything left is an alias) and the summary: ``passband_ripple_db``
    (max - min gain up to 18 kHz), ``minus3db_hz`` (first frequency whose gain is under
    -3 dB), ``stopband_db`` (the strongest output of an input above the output's Nyquist;
    -inf when there is none), ``worst_spur_db`` (the strongest spur of an input inside the
    band the output can hold) and ``delay_out_samples``.
    """
    n_in = int(seconds * in_rate)
    freqs = np.arange(step_hz, 0.5 * in_rate, step_hz)
    gain = np.full(freqs.size, np.nan)
    spur = np.full(freqs.size, np.nan)
    t = np.arange(n_in) / in_rate
    delay = None
    for i, f in enumerate(freqs):
        rs = (PolyphaseStream(in_rate, out_rate, 1, max_block=256) if quality == LD
              else ResampleStream(in_rate, out_rate, 1, quality=quality, max_block=256))
        delay = rs.delay_out_samples if quality == LD else float(rs.latency_samples)
        x = np.sin(2 * np.pi * f * t).astype(np.float32)[None]
        y = np.concatenate([rs.process(x[:, a:a + 256]).copy() for a in range(0, n_in, 256)],
                           axis=1)[0]
        a0 = y.size // 4
        seg = y[a0: a0 + y.size // 2].astype(np.float64)
        if f < 0.5 * out_rate:  # the sine's level: a least-squares fit (no scalloping)
            ph = 2 * np.pi * f * (a0 + np.arange(seg.size)) / out_rate
            basis = np.stack([np.sin(ph), np.cos(ph)], axis=1)
            coef = np.linalg.lstsq(basis, seg, rcond=None)[0]
            gain[i] = 20 * np.log10(max(np.hypot(*coef), 1e-20))
            seg = seg - basis @ coef  # what is left: aliases, images, distortion
        u = 2 * np.pi * np.arange(seg.size) / (seg.size - 1)  # 4-term Blackman-Harris
        w = 0.35875 - 0.48829 * np.cos(u) + 0.14128 * np.cos(2 * u) - 0.01168 * np.cos(3 * u)
        spec = np.abs(np.fft.rfft(seg * w)) / (0.5 * w.sum())  # a full-scale sine: 1.0
        spur[i] = 20 * np.log10(max(spec.max(), 1e-20))
    band = freqs < 0.5 * out_rate
    edge = (freqs <= 18000.0) & band
    above = ~band
    low = np.nonzero(band & (gain < -3.0))[0]
    return {
        "in_rate": in_rate, "out_rate": out_rate, "quality": quality,
        "freq_hz": freqs, "gain_db": gain, "spur_db": spur,
        "passband_ripple_db": float(np.nanmax(gain[edge]) - np.nanmin(gain[edge])),
        "minus3db_hz": float(freqs[low[0]]) if low.size else float("nan"),
        "stopband_db": float(spur[above].max()) if above.any() else float("-inf"),
        "worst_spur_db": float(spur[band].max()),
        "delay_out_samples": float(delay),
    }
