"""The stem mixer: per-stem gain (dB), mute and solo, smoothed per sample into a stereo bus.

Control threads (CLI, MIDI, a UI) set the plain attributes of :class:`StemMixer`; a store of a
Python float or bool is atomic, so no lock is needed. The worker thread calls :meth:`mix` once
per hop: it derives the target linear gains (solo wins over mute; mute wins over gain) and the
numba kernel ramps each gain towards its target sample by sample, so a fader jump or a mute
never clicks.
"""

from __future__ import annotations

import numpy as np

from livestems.dsp.kernels import db_to_gain, mix_stems, smoothing_coeff

__all__ = ["StemMixer", "MIN_GAIN_DB", "MAX_GAIN_DB"]

MIN_GAIN_DB = -120.0  # at or below this a stem is silent
MAX_GAIN_DB = 12.0


class StemMixer:
    """Mixes ``S`` stems ``[S, C, n]`` into ``[C, n]`` with smoothed gains.

    Args:
        sources: stem names, in the separator's order.
        sample_rate: Hz, for the smoothing time constant.
        smoothing_ms: one-pole time constant of every gain change (63% of a step in this time).
    """

    def __init__(self, sources, sample_rate: int, smoothing_ms: float = 10.0):
        self.sources = tuple(sources)
        self._index = {name: i for i, name in enumerate(self.sources)}
        n = len(self.sources)
        self.gain_db = [0.0] * n
        self.mute = [False] * n
        self.solo = [False] * n
        self.coeff = float(smoothing_coeff(float(smoothing_ms), float(sample_rate)))
        self._target = np.ones(n, dtype=np.float64)
        self._now = np.ones(n, dtype=np.float64)

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
        self.gain_db[self.index(stem)] = min(MAX_GAIN_DB, max(MIN_GAIN_DB, db))

    def set_mute(self, stem: str, on: bool = True) -> None:
        self.mute[self.index(stem)] = bool(on)

    def set_solo(self, stem: str, on: bool = True) -> None:
        self.solo[self.index(stem)] = bool(on)

    def target_gains(self) -> np.ndarray:
        """Linear gain per stem that the mix is ramping towards (a copy)."""
        self._update_target()
        return self._target.copy()

    def snap(self) -> None:
        """Jump to the targets without ramping (at start-up, before audio runs)."""
        self._update_target()
        self._now[:] = self._target

    # -- worker side -----------------------------------------------------------------------
    def _update_target(self) -> None:
        any_solo = any(self.solo)
        for i in range(len(self.sources)):
            if (any_solo and not self.solo[i]) or self.mute[i]:
                self._target[i] = 0.0
            else:
                self._target[i] = db_to_gain(self.gain_db[i])

    def mix(self, stems: np.ndarray, out: np.ndarray) -> None:
        """Worker thread: ``stems`` float32 ``[S, C, n]`` -> ``out`` float32 ``[C, n]``."""
        self._update_target()
        mix_stems(stems, self._now, self._target, self.coeff, out)
