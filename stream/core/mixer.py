"""The stem mixer: per-stem gain (dB), mute and solo, and the separation's dry/wet, ramped per
sample into a stereo bus.

The mixer's settings are typed parameters (:mod:`livestems.stream.core.params`): control threads
(CLI, MIDI, a UI, the plugin bridge) write them into one float64 array with
:meth:`ParamSet.set`; the worker thread reads that array lock-free once per hop in
:meth:`StemMixer.mix`, derives a target linear gain per stem, and a numba kernel ramps each
gain to its target linearly over exactly ``ramp_samples`` samples (``smoothing_ms``), so a
fader jump or a mute never clicks and a change is complete a known time after it is seen.

Target per stem ``s``: ``base_s`` is 0 when the stem is muted, or when another stem is soloed
and this one is not (mute also silences a soloed stem), else ``10**(gain_db/20)`` (0 at
-120 dB); then ``target_s = wet * base_s + (1 - wet)`` with ``wet = separation.wet / 100``: at
0% every stem plays at unity, which is the unseparated input for a model whose stems sum to it.
"""

from __future__ import annotations

import numba
import numpy as np

from livestems.dsp.kernels import db_to_gain

from .params import MAX_GAIN_DB, MIN_GAIN_DB, ParamError, ParamSet, stem_params

__all__ = ["StemMixer", "MIN_GAIN_DB", "MAX_GAIN_DB"]


@numba.njit(cache=True, nogil=True)
def _targets(values, gain_i, mute_i, solo_i, wet_i, target):
    """Worker: parameter values -> target linear gain per stem (see the module docstring)."""
    n = gain_i.shape[0]
    any_solo = False
    for s in range(n):
        if values[solo_i[s]] >= 0.5:
            any_solo = True
    wet = min(1.0, max(0.0, values[wet_i] / 100.0))
    for s in range(n):
        if values[mute_i[s]] >= 0.5 or (any_solo and values[solo_i[s]] < 0.5):
            g = 0.0
        else:
            g = db_to_gain(values[gain_i[s]])
        target[s] = wet * g + (1.0 - wet)


@numba.njit(cache=True, nogil=True)
def _ramp_mix(stems, target, now, aim, step, left, ramp_n, out):
    """Worker: ``out[c, t] = sum_s g_s(t) stems[s, c, t]`` with linear gain ramps.

    stems float32 [S, C, n]; out float32 [C, n] (overwritten); target float64 [S]. State per
    stem (updated in place): ``now`` the gain of the last sample, ``aim`` the target being
    ramped to, ``step`` the per-sample increment, ``left`` the samples left in the ramp. A new
    target restarts a ramp of ``ramp_n`` samples from wherever the gain is, so the gain is
    continuous and moves at most ``|change| / ramp_n`` per sample.
    """
    n_stems, channels, n = stems.shape
    for c in range(channels):
        for t in range(n):
            out[c, t] = 0.0
    for s in range(n_stems):
        if target[s] != aim[s]:
            aim[s] = target[s]
            if ramp_n > 1:
                step[s] = (aim[s] - now[s]) / ramp_n
                left[s] = ramp_n
            else:
                now[s] = aim[s]
                left[s] = 0
        g = now[s]
        k = left[s]
        d = step[s]
        for t in range(n):
            if k > 0:
                k -= 1
                g = aim[s] if k == 0 else g + d
            for c in range(channels):
                out[c, t] += g * stems[s, c, t]
        now[s] = g
        left[s] = k


class StemMixer:
    """Mixes ``S`` stems ``[S, C, n]`` into ``[C, n]`` with per-sample gain ramps.

    Args:
        sources: stem names, in the separator's order.
        sample_rate: Hz, for the ramp length.
        smoothing_ms: ramp time: every change reaches its target exactly this long after the
            worker sees it (linear in gain; 0 jumps).
        params: the :class:`ParamSet` to read (default: a new one with :func:`stem_params`).
    """

    def __init__(self, sources, sample_rate: int, smoothing_ms: float = 10.0,
                 params: ParamSet | None = None):
        self.sources = tuple(sources)
        self._index = {name: i for i, name in enumerate(self.sources)}
        n = len(self.sources)
        self.sample_rate = int(sample_rate)
        self.ramp_samples = max(1, int(round(float(smoothing_ms) * 1e-3 * sample_rate)))
        self._target = np.ones(n, dtype=np.float64)
        self._now = np.ones(n, dtype=np.float64)
        self._aim = np.ones(n, dtype=np.float64)
        self._step = np.zeros(n, dtype=np.float64)
        self._left = np.zeros(n, dtype=np.int64)
        self.attach(params if params is not None else ParamSet(stem_params(self.sources)))

    def attach(self, params: ParamSet) -> None:
        """Read ``params`` from now on (a JACK host keeps one set across engine rebuilds).

        Configuration time only (not while the worker runs). ``params`` must hold
        ``<stem>.gain/mute/solo`` for every stem and ``separation.wet``."""
        try:
            self._gain_i = np.array([params.index(f"{s}.gain") for s in self.sources], np.int64)
            self._mute_i = np.array([params.index(f"{s}.mute") for s in self.sources], np.int64)
            self._solo_i = np.array([params.index(f"{s}.solo") for s in self.sources], np.int64)
            self._wet_i = params.index("separation.wet")
        except ParamError as exc:
            raise ValueError(f"these parameters do not fit the mixer: {exc}") from None
        self.params = params

    def index(self, stem: str) -> int:
        try:
            return self._index[stem]
        except KeyError:
            raise ValueError(
                f"unknown stem {stem!r}; this model's stems are {', '.join(self.sources)}"
            ) from None

    # -- control side (any thread) ---------------------------------------------------------
    def set_gain_db(self, stem: str, db: float) -> None:
        """Set a stem's gain in dB, clamped to [MIN_GAIN_DB, MAX_GAIN_DB]."""
        db = float(db)
        if db != db:
            raise ValueError("gain must be a number of dB, got NaN")
        self.params.set(f"{self.sources[self.index(stem)]}.gain", db)

    def set_mute(self, stem: str, on: bool = True) -> None:
        self.params.set(f"{self.sources[self.index(stem)]}.mute", bool(on))

    def set_solo(self, stem: str, on: bool = True) -> None:
        self.params.set(f"{self.sources[self.index(stem)]}.solo", bool(on))

    def target_gains(self) -> np.ndarray:
        """Linear gain per stem that the mix is ramping towards (a copy)."""
        self._update_target()
        return self._target.copy()

    def snap(self) -> None:
        """Jump to the targets without ramping (at start-up, before audio runs)."""
        self._update_target()
        self._now[:] = self._target
        self._aim[:] = self._target
        self._left[:] = 0

    # -- worker side -----------------------------------------------------------------------
    def _update_target(self) -> None:
        _targets(self.params.values, self._gain_i, self._mute_i, self._solo_i, self._wet_i,
                 self._target)

    def mix(self, stems: np.ndarray, out: np.ndarray) -> None:
        """Worker thread: ``stems`` float32 ``[S, C, n]`` -> ``out`` float32 ``[C, n]``."""
        self._update_target()
        _ramp_mix(stems, self._target, self._now, self._aim, self._step, self._left,
                  self.ramp_samples, out)
