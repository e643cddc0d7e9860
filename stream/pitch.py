"""Key shift for live karaoke: a separator wrapper that pitch-shifts stems on the worker thread.

:class:`KeyShiftedSeparator` wraps any separator: after the model's ``step`` it runs the
granular shifter of :mod:`livestems.dsp.pitch` over the stems chosen to shift (by default every
stem, so a guide vocal follows the accompaniment into the new key) and delays the others by
exactly the shifter's latency, so every stem stays aligned. It reports
``latency_samples = model latency + shifter delay``, so the :class:`~livestems.stream.engine.Engine`
publishes the total (JACK latency ranges, the karaoke banner) and its dry fallback on a deadline
miss stays aligned too (the fallback is the unshifted input: a miss plays the original key).

Threads: ``step``/``reset``/``forward`` run on the engine's worker (or the caller);
:meth:`KeyShiftedSeparator.set_semitones` may be called from any control thread: it writes one
float that the worker reads at the next grain start (no lock; a torn read is impossible for a
Python float attribute).
"""

from __future__ import annotations

import numpy as np

from livestems.dsp.pitch import (MAX_SEMITONES, delay_block, granular_shift, hann_grain_window,
                                 semitones_to_ratio, shifter_geometry)

__all__ = ["KeyShiftedSeparator", "DEFAULT_GRAIN_MS", "check_semitones"]

#: Grain length: longer grains keep lower notes in phase (down to 2000 / grain_ms Hz, 50 Hz at
#: 40 ms; see dsp.pitch) but add latency (3/4 of a grain) and smear transients more.
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
        separator: any :mod:`livestems.model.protocol` separator.
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
