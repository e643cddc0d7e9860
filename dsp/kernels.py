"""Per-sample numba kernels for the engine: sanitising, gain ramps, stem mixing, meters, interleave.

All kernels are ``numba.njit(cache=True, nogil=True)``: callable from Python, from other numba
code, and from a worker thread without holding the GIL for the loop. None allocates; outputs go
into arrays the caller preallocated. Audio arrays are channel-first float32 ``[C, n]`` (stems
``[S, C, n]``); gains are linear float64 (convert dB with :func:`db_to_gain`); times are in ms.

Smoothing. Every gain change goes through a per-sample one-pole, ``g += coeff * (target - g)``,
applied before the sample is used, with ``coeff = smoothing_coeff(time_ms, sample_rate)``. A
step of size ``D`` in the target therefore moves the gain by at most ``coeff * |D|`` per sample,
so the extra sample-to-sample jump it adds to a signal of peak amplitude ``A`` is at most
``coeff * |D| * A`` (``coeff`` = 0.00227 for 10 ms at 44.1 kHz: a full 0 -> 1 step on a
full-scale signal adds at most 0.0023, -53 dBFS, instead of a click of 1.0). Tests check this
bound on exact values.

Meters use attack/release ballistics: a one-pole that follows the input with the attack
coefficient while the level rises and with the release coefficient while it falls.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "MIN_DB",
    "sanitize_inplace",
    "db_to_gain",
    "gain_to_db",
    "smoothing_coeff",
    "ramp_gain_inplace",
    "mix_stems",
    "peak_meter",
    "rms_meter",
    "interleave",
    "deinterleave",
]

#: Gains at or below this many dB are treated as silence (gain 0.0); also the floor of gain_to_db.
MIN_DB = -120.0


@numba.njit(cache=True, nogil=True)
def sanitize_inplace(x):
    """Replace NaN and +/-Inf in ``x`` by 0.0, in place; return how many were replaced.

    Args:
        x: float32 (or float64) array of any shape and strides.

    Returns:
        int: number of non-finite values replaced.
    """
    count = 0
    for v in np.nditer(x):
        if not np.isfinite(v.item()):
            v[()] = 0.0
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def db_to_gain(db):
    """Linear gain for ``db`` decibels: ``10 ** (db / 20)``; 0.0 at or below MIN_DB (-120 dB) or -inf."""
    if not db > MIN_DB:  # also catches -inf and NaN
        return 0.0
    return 10.0 ** (db / 20.0)


@numba.njit(cache=True, nogil=True)
def gain_to_db(gain):
    """Decibels for a linear gain or level, floored at MIN_DB (-120 dB); for meters and displays."""
    if not gain > 1e-6:  # 1e-6 == -120 dB
        return MIN_DB
    return 20.0 * math.log10(gain)


@numba.njit(cache=True, nogil=True)
def smoothing_coeff(time_ms, sample_rate):
    """One-pole coefficient so a step reaches 1 - 1/e (~63%) of its size in ``time_ms``.

    Args:
        time_ms: time constant in milliseconds; <= 0 means no smoothing.
        sample_rate: in Hz.

    Returns:
        float in (0, 1]: ``1 - exp(-1 / (time_ms * 1e-3 * sample_rate))``, or 1.0 when
        ``time_ms <= 0``.
    """
    samples = time_ms * 1e-3 * sample_rate
    if not samples > 0.0:
        return 1.0
    return 1.0 - math.exp(-1.0 / samples)


@numba.njit(cache=True, nogil=True)
def ramp_gain_inplace(x, gain_now, gain_target, coeff):
    """Apply a smoothed gain to ``x`` in place; return the gain reached at the last sample.

    Args:
        x: float32 [C, n], modified in place.
        gain_now: linear gain before the first sample (the value returned by the previous call).
        gain_target: linear gain to move towards.
        coeff: one-pole coefficient from :func:`smoothing_coeff` (1.0 = jump immediately).

    Returns:
        float: the gain used on the last sample; pass it as ``gain_now`` next time.

    Per sample, ``g += coeff * (gain_target - g)`` then every channel is scaled by ``g``, so the
    gain changes by at most ``coeff * |gain_target - gain_now|`` between samples.
    """
    channels, n = x.shape
    g = gain_now
    for t in range(n):
        g += coeff * (gain_target - g)
        for c in range(channels):
            x[c, t] = x[c, t] * g
    return g


@numba.njit(cache=True, nogil=True)
def mix_stems(stems, gains_now, gains_target, coeff, out):
    """Mix stems into a bus with per-stem smoothed gains: ``out[c, t] = sum_s g_s(t) stems[s, c, t]``.

    Args:
        stems: float32 [S, C, n].
        gains_now: float64 [S], current linear gain per stem; updated in place to the gain used
            on the last sample.
        gains_target: float64 [S], linear gain each stem moves towards.
        coeff: one-pole coefficient from :func:`smoothing_coeff`.
        out: float32 [C, n], overwritten.

    Per sample and stem, ``g_s += coeff * (target_s - g_s)`` before the sample is used, so a
    target step ``D_s`` adds at most ``coeff * |D_s| * max|stems[s]|`` to the jump between two
    consecutive output samples.
    """
    n_stems, channels, n = stems.shape
    if out.shape[0] != channels or out.shape[1] != n:
        raise ValueError("mix_stems: out must have shape [C, n] matching stems [S, C, n]")
    if gains_now.shape[0] != n_stems or gains_target.shape[0] != n_stems:
        raise ValueError("mix_stems: gains_now and gains_target must have shape [S]")
    for c in range(channels):
        for t in range(n):
            out[c, t] = 0.0
    # Stem-outer keeps each stem's gain trajectory in a register and streams its samples once.
    for s in range(n_stems):
        g = gains_now[s]
        target = gains_target[s]
        for t in range(n):
            g += coeff * (target - g)
            for c in range(channels):
                out[c, t] += g * stems[s, c, t]
        gains_now[s] = g


@numba.njit(cache=True, nogil=True)
def peak_meter(x, level, attack_coeff, release_coeff):
    """Peak meter with ballistics, per channel; updates ``level`` in place.

    Args:
        x: float32 [C, n].
        level: float64 [C], linear peak level per channel (start at 0.0); updated in place.
        attack_coeff: one-pole coefficient while ``|x|`` is above the level (1.0 = instant).
        release_coeff: one-pole coefficient while ``|x|`` is below the level.

    Read ``level`` after the call (convert with :func:`gain_to_db`). Typical PPM-like settings:
    attack 1.0 (instant) or ~1 ms, release ~300 ms via :func:`smoothing_coeff`.
    """
    channels, n = x.shape
    for c in range(channels):
        env = level[c]
        for t in range(n):
            a = abs(x[c, t])
            if a > env:
                env += attack_coeff * (a - env)
            else:
                env += release_coeff * (a - env)
        level[c] = env


@numba.njit(cache=True, nogil=True)
def rms_meter(x, mean_square, attack_coeff, release_coeff):
    """RMS meter with ballistics, per channel; updates ``mean_square`` in place.

    Args:
        x: float32 [C, n].
        mean_square: float64 [C], smoothed mean of ``x**2`` per channel; updated in place. The
            RMS level is ``sqrt(mean_square)``.
        attack_coeff: one-pole coefficient while ``x**2`` is above the smoothed value.
        release_coeff: one-pole coefficient while it is below.

    Equal coefficients give a plain exponential RMS (e.g. 300 ms, as in VU-style meters).
    """
    channels, n = x.shape
    for c in range(channels):
        ms = mean_square[c]
        for t in range(n):
            v = np.float64(x[c, t])
            p = v * v
            if p > ms:
                ms += attack_coeff * (p - ms)
            else:
                ms += release_coeff * (p - ms)
        mean_square[c] = ms


@numba.njit(cache=True, nogil=True)
def deinterleave(src, dst):
    """Host buffer to channel-first: ``dst[c, t] = src[t * C + c]``.

    Args:
        src: float32 [n * C], interleaved frames (L R L R ... for stereo), as hosts deliver.
        dst: float32 [C, n], overwritten.
    """
    channels, n = dst.shape
    if src.shape[0] != n * channels:
        raise ValueError("deinterleave: src must have n * C samples for dst of shape [C, n]")
    for t in range(n):
        base = t * channels
        for c in range(channels):
            dst[c, t] = src[base + c]


@numba.njit(cache=True, nogil=True)
def interleave(src, dst):
    """Channel-first to host buffer: ``dst[t * C + c] = src[c, t]``.

    Args:
        src: float32 [C, n].
        dst: float32 [n * C], overwritten with interleaved frames.
    """
    channels, n = src.shape
    if dst.shape[0] != n * channels:
        raise ValueError("interleave: dst must have n * C samples for src of shape [C, n]")
    for t in range(n):
        base = t * channels
        for c in range(channels):
            dst[base + c] = src[c, t]
