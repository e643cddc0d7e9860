"""A real-time pitch shifter (numba): synchronised Hann grains read from a delay line, and
:class:`KeyShiftedSeparator`, the separator wrapper that runs it on the engine's worker (the key
shift of live karaoke, `livestems karaoke --key` and `livestems jack --key`).

How it works. Output time is cut into grains of ``G = 2H`` samples that start every ``H``
samples, so two grains overlap everywhere; each is weighted by the periodic Hann window
``w(a) = sin^2(pi a / G)`` (``a``: the grain's age in samples), and ``w(a) + w(a + H) = 1``.
Grain ``k`` with pitch ratio ``r`` reads the input through a delay line at ``r`` input samples
per output sample, with the delay

    d(a) = center_delay - offset_k - (r - 1) * (a - H)

so its read position moves at slope ``r`` (a sine at ``f`` comes out at ``f * r``) and passes
``center_delay - offset_k`` at the grain's centre. ``offset_k`` (an integer in
``[-search, +search]``) is chosen when the grain starts, WSOLA-style: the one whose first
``H / 2`` samples best match (normalised cross-correlation, on the mono sum of every row) what
the previous grain is about to play in the same output samples. Without it, consecutive grains
would meet with random phase and a sine would come out as lines spaced ``rate / H`` apart (for
40 ms grains: every 50 Hz) instead of one line at ``f * r``; with it, periodic content continues
in phase down to ``rate / (2 search)`` Hz (50 Hz for ``search = H / 2``).

Latency: ``center_delay = H + search + 2`` samples, the same for every ratio, so it can be
published once. A transient lands at ``center_delay``, moved by the grain's offset (at most
``search``) and smeared by up to ``H |r - 1|``. With ``r = 1`` and no search the shifter is an
exact delay; with ``r = 1`` and the search the offset stays 0 unless the signal is periodic.

Ratio changes take effect only when a new grain starts (a grain keeps the ratio it started with),
so the read position never jumps inside a grain: the output stays as smooth as the two Hann
fades make it (:func:`max_step_bound`).

Range: ``0.5 <= r <= 2`` (-12..+12 semitones); ``center_delay`` is sized so every read, and the
search itself, only touches samples already written.

Artefacts (the price of a time-domain shifter): some roughness at the grain rate where the
search finds no good match (dense polyphony, noise); transients smeared by up to ``H |r - 1|``
samples, occasionally doubled or dropped; upward shifts alias content above ``rate / (2 r)`` (no
anti-alias filter: for +2 semitones that is above 19.6 kHz at 44.1 kHz).

Arrays: audio is channel-first float32 ``[R, n]`` (rows: stems x channels); the history is
float32 ``[R, L]`` plus a mono ``[L]`` guide, ``L`` a power of two; state lives in small arrays
the caller owns. Nothing allocates.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "KeyShiftedSeparator",
    "DEFAULT_GRAIN_MS",
    "check_semitones",
    "MAX_SEMITONES",
    "semitones_to_ratio",
    "shifter_geometry",
    "hann_grain_window",
    "granular_shift",
    "delay_block",
    "max_step_bound",
]

#: The shifter supports -MAX_SEMITONES..+MAX_SEMITONES (ratio 0.5..2).
MAX_SEMITONES = 12.0


def semitones_to_ratio(semitones: float) -> float:
    """Frequency ratio of an equal-tempered shift: ``2 ** (semitones / 12)``."""
    return 2.0 ** (float(semitones) / 12.0)


def shifter_geometry(grain: int) -> tuple[int, int, int]:
    """``(center_delay, search, history_len)`` in samples for grains of ``grain`` (even) samples.

    ``search = grain / 4`` (= H / 2); ``center_delay = H + search + 2`` (the reads and the
    search only touch written samples for every ratio in 0.5..2); ``history_len``: a power of
    two holding ``center_delay + search + H`` samples plus the interpolator's reach.
    """
    if grain < 8 or grain % 2:
        raise ValueError(f"grain must be an even number of samples >= 8, got {grain}")
    half = grain // 2
    search = half // 2
    center = half + search + 2
    need = center + search + half + 4
    return center, search, 1 << (need - 1).bit_length()


def hann_grain_window(grain: int) -> np.ndarray:
    """Periodic Hann ``sin^2(pi a / grain)``, float64 ``[grain]``; overlapping by half sums to 1."""
    a = np.arange(grain, dtype=np.float64)
    return np.sin(np.pi * a / grain) ** 2


def max_step_bound(amplitude: float, freq_hz: float, max_ratio: float, grain: int,
                   sample_rate: float) -> float:
    """Largest sample-to-sample step of the shifter's output for a sine input.

    ``y = w1 s1 + w2 s2`` with ``w1 + w2 = 1``, so ``|y'| <= |w1'| |s1 - s2| + max |s_g'|``
    ``<= (pi / G) * 2A + 2 pi f r A / rate``: the Hann fades' slope times the widest gap
    between the two grains, plus the steepest slope of a sine at the highest output pitch. It
    holds through ratio changes, because a change only ever starts a new grain.
    """
    return amplitude * (2.0 * math.pi / grain
                        + 2.0 * math.pi * freq_hz * max_ratio / sample_rate)


@numba.njit(cache=True, nogil=True, inline="always")
def _hermite(xm1, x0, x1, x2, f):
    """4-point, 3rd-order Hermite (Catmull-Rom) interpolation at fraction ``f`` of [x0, x1]."""
    c1 = 0.5 * (x1 - xm1)
    c2 = xm1 - 2.5 * x0 + 2.0 * x1 - 0.5 * x2
    c3 = 0.5 * (x2 - xm1) + 1.5 * (x0 - x1)
    return ((c3 * f + c2) * f + c1) * f + x0


@numba.njit(cache=True, nogil=True)
def _best_offset(guide, mask, t, center_delay, half, r_old, off_old, r_new, search, target,
                 index):
    """The new grain's offset in ``[-search, search]`` (see the module docstring).

    Compares, every 2nd sample over the first ``H / 2`` output samples of the overlap, what
    the old grain will read (``target``, filled here) with what the new grain would read at
    each offset; nearest-sample reads of the mono ``guide``. Offsets are tried from 0 outwards
    and only a strictly better score replaces the best, so ties keep the smallest ``|offset|``
    (the latency closest to ``center_delay``). ``index``: int64 scratch like ``target``.
    """
    m = target.shape[0]
    t_energy = 0.0
    for j in range(m):
        a = 2 * j
        p = t - center_delay + r_old * a + off_old
        v = guide[np.int64(math.floor(p + 0.5)) & mask]
        target[j] = v
        t_energy += v * v
    if t_energy < 1e-12:
        return 0
    base = t - center_delay - (r_new - 1.0) * half
    for j in range(m):  # read positions at offset 0, rounded once per grain
        index[j] = np.int64(math.floor(base + r_new * 2 * j + 0.5))
    best = 0
    best_score = -1e300
    for s in range(2 * search + 1):
        off = (s + 1) // 2 if s % 2 == 1 else -(s // 2)
        corr = 0.0
        energy = 0.0
        for j in range(m):
            v = guide[(index[j] + off) & mask]
            corr += v * target[j]
            energy += v * v
        if energy < 1e-12:
            continue
        score = corr / math.sqrt(energy)
        if score > best_score:
            best_score = score
            best = off
    return best


@numba.njit(cache=True, nogil=True)
def granular_shift(x, out, hist, guide, pos, grain_ratio, grain_offset, target_ratio, window,
                   center_delay, search, target, index):
    """Pitch-shift one block: ``out`` = ``x`` at ``target_ratio`` times the pitch, delayed.

    Args:
        x: float32 ``[R, n]`` input block (may be the same array as ``out``).
        out: float32 ``[R, n]``, overwritten.
        hist: float32 ``[R, L]`` delay lines, ``L`` from :func:`shifter_geometry`; zeros at
            reset.
        guide: float32 ``[L]``: the rows' sum, for the offset search; zeros at reset.
        pos: int64 ``[1]``: samples processed so far (0 at reset); advanced by ``n``.
        grain_ratio: float64 ``[2]``, ratio of the two live grains by grain-index parity (both
            set to the initial ratio at reset).
        grain_offset: int64 ``[2]``, their offsets (0 at reset).
        target_ratio: the ratio new grains take, 0.5..2; read at each grain start.
        window: float64 ``[G]`` from :func:`hann_grain_window`, ``G`` even.
        center_delay, search: from :func:`shifter_geometry` (``search = 0``: no search).
        target, index: float64 and int64 ``[G / 8]`` scratch for the search.
    """
    rows, n = x.shape
    mask = hist.shape[1] - 1
    half = window.shape[0] // 2
    t = pos[0]
    for i in range(n):
        u = t % half
        k = t // half  # index of the newest grain
        acc = 0.0
        for c in range(rows):
            v = x[c, i]
            hist[c, t & mask] = v
            acc += v
        guide[t & mask] = acc
        if u == 0:
            off = 0
            if search > 0:
                off = _best_offset(guide, mask, t, center_delay, half, grain_ratio[(k - 1) & 1],
                                   grain_offset[(k - 1) & 1], target_ratio, search, target,
                                   index)
            grain_ratio[k & 1] = target_ratio
            grain_offset[k & 1] = off
        # grain k (age u) and grain k - 1 (age u + half)
        r0 = grain_ratio[k & 1]
        r1 = grain_ratio[(k - 1) & 1]
        p0 = t - center_delay + grain_offset[k & 1] + (r0 - 1.0) * (u - half)
        p1 = t - center_delay + grain_offset[(k - 1) & 1] + (r1 - 1.0) * u
        w0 = window[u]
        w1 = window[u + half]
        i0 = math.floor(p0)
        i1 = math.floor(p1)
        f0 = p0 - i0
        f1 = p1 - i1
        j0 = np.int64(i0)
        j1 = np.int64(i1)
        for c in range(rows):
            a = _hermite(hist[c, (j0 - 1) & mask], hist[c, j0 & mask],
                         hist[c, (j0 + 1) & mask], hist[c, (j0 + 2) & mask], f0)
            b = _hermite(hist[c, (j1 - 1) & mask], hist[c, j1 & mask],
                         hist[c, (j1 + 1) & mask], hist[c, (j1 + 2) & mask], f1)
            out[c, i] = w0 * a + w1 * b
        t += 1
    pos[0] = t


@numba.njit(cache=True, nogil=True)
def delay_block(x, out, hist, pos, delay):
    """``out[:, i] = x[:, i - delay]`` across blocks: a plain delay line, for unshifted stems.

    Args: ``x``, ``out`` float32 ``[R, n]``; ``hist`` float32 ``[R, L]`` (``L`` a power of two
    > ``delay``); ``pos`` int64 ``[1]``; ``delay`` in samples.
    """
    rows, n = x.shape
    mask = hist.shape[1] - 1
    t = pos[0]
    for i in range(n):
        for c in range(rows):
            hist[c, t & mask] = x[c, i]
            out[c, i] = hist[c, (t - delay) & mask]
        t += 1
    pos[0] = t


# --- Key shift for live karaoke: a separator wrapper that pitch-shifts stems on the worker ---
#
# :class:`KeyShiftedSeparator` wraps any separator: after the model's ``step`` it runs the
# granular shifter of this module over the stems chosen to shift (by default every
# stem, so a guide vocal follows the accompaniment into the new key) and delays the others by
# exactly the shifter's latency, so every stem stays aligned. It reports
# ``latency_samples = model latency + shifter delay``, so the :class:`~livestems.stream.core.engine.Engine`
# publishes the total (JACK latency ranges, the karaoke banner) and its dry fallback on a deadline
# miss stays aligned too (the fallback is the unshifted input: a miss plays the original key).
#
# Threads: ``step``/``reset``/``forward`` run on the engine's worker (or the caller);
# :meth:`KeyShiftedSeparator.set_semitones` may be called from any control thread: it writes one
# float that the worker reads at the next grain start (no lock; a torn read is impossible for a
# Python float attribute).

#: Grain length: longer grains keep lower notes in phase (down to 2000 / grain_ms Hz, 50 Hz at
#: 40 ms; see the module docstring) but add latency (3/4 of a grain) and smear transients more.
DEFAULT_GRAIN_MS = 40.0


def check_semitones(semitones) -> float:
    """``semitones`` as a float, or ValueError saying the range."""
    try:
        k = float(semitones)
    except (TypeError, ValueError):
        raise ValueError(f"key shift must be a number of semitones, got {semitones!r}") from None
    if not -MAX_SEMITONES <= k <= MAX_SEMITONES:
        raise ValueError(f"key shift must be -{MAX_SEMITONES:g}..+{MAX_SEMITONES:g} semitones, "
                         f"got {k:+g}; shift by an octave less")
    return k


class KeyShiftedSeparator:
    """A separator whose stems come out ``semitones`` higher (or lower), ``delay_samples`` later.

    Args:
        separator: any :mod:`livestems.model.nets.protocol` separator.
        semitones: initial shift, -12..+12 (fractions allowed: 0.5 = a quarter tone).
        grain_ms: grain length in ms (rounded to an even number of samples at the model's
            rate). The shifter adds ``3 grain / 4 + 2`` samples of latency (30 ms at 40 ms).
        shift_sources: stems to shift (default: all). The others are only delayed.

    Protocol attributes follow the wrapped separator, except ``latency_samples``, which adds
    :attr:`delay_samples`. ``step(x [C, hop]) -> [S, C, hop]`` float32 (a view of an internal
    buffer, valid until the next call).
    """

    def __init__(self, separator, semitones: float = 0.0, *, grain_ms: float = DEFAULT_GRAIN_MS,
                 shift_sources=None):
        self.inner = sep = separator
        self.sample_rate = int(sep.sample_rate)
        self.channels = c = int(sep.channels)
        self.sources = tuple(sep.sources)
        self.hop = hop = int(sep.hop)
        if not 5.0 <= float(grain_ms) <= 200.0:
            raise ValueError(f"grain_ms must be 5..200 ms, got {grain_ms}")
        grain = 2 * max(8, int(round(grain_ms * 1e-3 * self.sample_rate / 2)))
        self.grain_samples = grain
        self.delay_samples, self.search_samples, hist_len = shifter_geometry(grain)
        self.latency_samples = int(sep.latency_samples) + self.delay_samples
        chosen = self.sources if shift_sources is None else tuple(shift_sources)
        for s in chosen:
            if s not in self.sources:
                raise ValueError(f"cannot shift unknown stem {s!r}; this model's stems are "
                                 f"{', '.join(self.sources)}")
        self.shift_sources = chosen
        self._shift_idx = [i for i, s in enumerate(self.sources) if s in chosen]
        self._delay_idx = [i for i, s in enumerate(self.sources) if s not in chosen]
        ns, rs, rd = len(self.sources), len(self._shift_idx) * c, len(self._delay_idx) * c
        self._window = hann_grain_window(grain)
        self._hist = np.zeros((rs, hist_len), np.float32)
        self._guide = np.zeros(hist_len, np.float32)
        self._dhist = np.zeros((rd, hist_len), np.float32)
        self._pos = np.zeros(1, np.int64)
        self._dpos = np.zeros(1, np.int64)
        self._grain_ratio = np.ones(2, np.float64)
        self._grain_offset = np.zeros(2, np.int64)
        self._target = np.zeros(grain // 8, np.float64)
        self._index = np.zeros(grain // 8, np.int64)
        self._out = np.zeros((ns, c, hop), np.float32)
        self._xs = np.zeros((rs, hop), np.float32)
        self._ys = np.zeros((rs, hop), np.float32)
        self._xd = np.zeros((rd, hop), np.float32)
        self._yd = np.zeros((rd, hop), np.float32)
        self.semitones = 0.0
        self.ratio = 1.0
        self.set_semitones(semitones)
        self.reset()

    def set_semitones(self, semitones: float) -> None:
        """Any thread: the new shift; it takes effect at the next grain start (<= grain / 2)."""
        k = check_semitones(semitones)
        self.semitones = k
        self.ratio = semitones_to_ratio(k)

    def reset(self) -> None:
        """Forget the stream (the model's state and the delay lines)."""
        self.inner.reset()
        self._reset_shifter()

    def _reset_shifter(self) -> None:
        for arr in (self._hist, self._guide, self._dhist, self._pos, self._dpos,
                    self._grain_offset):
            arr.fill(0)
        self._grain_ratio.fill(self.ratio)

    def _shift_block(self, y: np.ndarray, out: np.ndarray, xs, ys, xd, yd) -> None:
        """``y`` float32 ``[S, C, n]`` -> ``out`` (same shape): shifted or delayed per stem.

        ``xs``/``ys`` (shifted rows) and ``xd``/``yd`` (delayed rows) are float32 scratch
        ``[rows, n]``; every shifted stem and channel shares one grain grid and one offset
        search, so they stay aligned with each other.
        """
        c = self.channels
        for j, s in enumerate(self._shift_idx):
            xs[j * c:(j + 1) * c] = y[s]
        for j, s in enumerate(self._delay_idx):
            xd[j * c:(j + 1) * c] = y[s]
        if len(self._shift_idx):
            granular_shift(xs, ys, self._hist, self._guide, self._pos, self._grain_ratio,
                           self._grain_offset, self.ratio, self._window, self.delay_samples,
                           self.search_samples, self._target, self._index)
        if len(self._delay_idx):
            delay_block(xd, yd, self._dhist, self._dpos, self.delay_samples)
        for j, s in enumerate(self._shift_idx):
            out[s] = ys[j * c:(j + 1) * c]
        for j, s in enumerate(self._delay_idx):
            out[s] = yd[j * c:(j + 1) * c]

    def step(self, x: np.ndarray) -> np.ndarray:
        y = self.inner.step(x)
        self._shift_block(y, self._out, self._xs, self._ys, self._xd, self._yd)
        return self._out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Offline ``[B, C, T] -> [B, S, C, T]``, aligned with the input, equal to the stream.

        The shifter's grains are laid out from the start of the *stream*, which lags the input
        by the model's latency; so the model's aligned output is delayed by that latency first,
        shifted with the same grain grid, and the whole delay is then removed.
        """
        y = np.asarray(self.inner.forward(x), dtype=np.float32)
        b, ns, c, t = y.shape
        lat0, dly = int(self.inner.latency_samples), self.delay_samples
        total = lat0 + t + dly
        res = np.empty_like(y)
        saved = [a.copy() for a in (self._hist, self._guide, self._dhist, self._pos,
                                    self._dpos, self._grain_ratio, self._grain_offset)]
        try:
            for i in range(b):
                self._reset_shifter()
                z = np.zeros((ns, c, total), np.float32)
                z[:, :, lat0:lat0 + t] = y[i]
                o = np.empty_like(z)
                rs, rd = len(self._shift_idx) * c, len(self._delay_idx) * c
                self._shift_block(z, o, np.zeros((rs, total), np.float32),
                                  np.zeros((rs, total), np.float32),
                                  np.zeros((rd, total), np.float32),
                                  np.zeros((rd, total), np.float32))
                res[i] = o[:, :, lat0 + dly:]
        finally:
            for a, v in zip((self._hist, self._guide, self._dhist, self._pos, self._dpos,
                             self._grain_ratio, self._grain_offset), saved):
                a[...] = v
        return res
