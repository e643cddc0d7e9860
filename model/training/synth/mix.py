"""Mixing tools, the way records are mixed: EQ, compression, panning, width, echoes, reverb.

Every function takes and returns float64 ``[channels, n]`` arrays at ``sr`` Hz (mono as
``[1, n]`` where noted) and is deterministic. Filters are RBJ-cookbook biquads run with
``scipy.signal.sosfilt`` (causal, like a console EQ); the compressor's attack/release
smoother is a small numba loop (it cannot be vectorised: the time constant depends on the
direction of the gain change).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.signal import sosfilt

__all__ = ["biquad", "eq", "compress", "gain_curve", "pan", "width", "echo", "db_to_gain",
           "place"]


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def biquad(kind: str, freq_hz: float, sr: int, q: float = 0.707, gain_db: float = 0.0) -> np.ndarray:
    """One RBJ biquad as an ``sos`` row ``[1, 6]``: kind is ``highpass``, ``lowpass``,
    ``peak``, ``lowshelf`` or ``highshelf``; ``freq_hz`` is clamped below Nyquist."""
    f = min(freq_hz, 0.45 * sr)
    w0 = 2 * math.pi * f / sr
    cw, sw = math.cos(w0), math.sin(w0)
    alpha = sw / (2 * q)
    a = 10 ** (gain_db / 40.0)
    if kind == "highpass":
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        den = [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "lowpass":
        b = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2]
        den = [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "peak":
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    elif kind in ("lowshelf", "highshelf"):
        sa = 2 * math.sqrt(a) * alpha
        s = 1 if kind == "lowshelf" else -1
        b = [a * ((a + 1) - s * (a - 1) * cw + sa), s * 2 * a * ((a - 1) - s * (a + 1) * cw),
             a * ((a + 1) - s * (a - 1) * cw - sa)]
        den = [(a + 1) + s * (a - 1) * cw + sa, -s * 2 * ((a - 1) + s * (a + 1) * cw),
               (a + 1) + s * (a - 1) * cw - sa]
    else:
        raise ValueError(f"unknown biquad kind {kind!r}")
    b = np.array(b) / den[0]
    den = np.array(den) / den[0]
    return np.concatenate([b, den])[None]


def eq(x: np.ndarray, sr: int, bands: list[tuple]) -> np.ndarray:
    """Apply biquads ``[(kind, freq_hz, q, gain_db), ...]`` in series to ``x`` ``[C, n]``."""
    if not bands:
        return x
    sos = np.concatenate([biquad(k, f, sr, q, g) for k, f, q, g in bands])
    return sosfilt(sos, x, axis=-1)


@numba.njit(cache=True)
def _smooth_gain(target_db: np.ndarray, att: float, rel: float) -> np.ndarray:
    out = np.empty_like(target_db)
    g = 0.0
    for i in range(target_db.size):
        t = target_db[i]
        # gain reduction grows (more negative) with the attack constant, recovers with release
        c = att if t < g else rel
        g = t + c * (g - t)
        out[i] = g
    return out


def gain_curve(detector: np.ndarray, sr: int, threshold_db: float, ratio: float,
               attack_ms: float, release_ms: float, knee_db: float = 6.0) -> np.ndarray:
    """Compressor gain (linear, ``[n]``) for a detector signal ``[C, n]`` (peak over channels).

    Soft-knee static curve on the instantaneous level, smoothed with attack/release time
    constants in the dB domain (a "log-domain" feed-forward compressor).
    """
    # the detector runs on 16-sample blocks (peak per block), the gain is interpolated back:
    # 16x less work, and 0.36 ms at 44.1 kHz is finer than any attack used here
    block = 16
    n = detector.shape[-1]
    nb = -(-n // block)
    pad = np.zeros((detector.shape[0], nb * block))
    pad[:, :n] = np.abs(detector)
    level = pad.reshape(detector.shape[0], nb, block).max(axis=(0, 2))
    level_db = 20.0 * np.log10(np.maximum(level, 1e-9))
    over = level_db - threshold_db
    slope = 1.0 - 1.0 / ratio
    gr = np.where(over <= -knee_db / 2, 0.0,
                  np.where(over >= knee_db / 2, -slope * over,
                           -slope * (over + knee_db / 2) ** 2 / (2 * knee_db)))
    att = math.exp(-block / (attack_ms * 1e-3 * sr))
    rel = math.exp(-block / (release_ms * 1e-3 * sr))
    g_db = _smooth_gain(gr, att, rel)
    # block k's gain applies from its centre; linear in between
    g_db = np.interp(np.arange(n), np.arange(nb) * block + block / 2, g_db)
    return 10.0 ** (g_db / 20.0)


def compress(x: np.ndarray, sr: int, threshold_db: float, ratio: float, attack_ms: float,
             release_ms: float, makeup_db: float = 0.0) -> np.ndarray:
    """Feed-forward compressor on ``x`` ``[C, n]``; ``threshold_db`` relative to full scale."""
    g = gain_curve(x, sr, threshold_db, ratio, attack_ms, release_ms)
    return x * (g * db_to_gain(makeup_db))[None]


def pan(x: np.ndarray, position: float) -> np.ndarray:
    """Constant-power placement of ``x`` ``[C, n]`` at ``position`` in [-1 left, 1 right]:
    mono is panned, stereo is balanced (its width kept, its centre moved)."""
    theta = (float(np.clip(position, -1, 1)) + 1.0) * math.pi / 4.0
    g = np.array([math.cos(theta), math.sin(theta)])[:, None] * math.sqrt(2.0)
    if x.shape[0] == 1:
        return x * g
    return x * g


def width(x: np.ndarray, amount: float) -> np.ndarray:
    """Scale the side signal of a stereo ``[2, n]`` by ``amount`` (0 mono, 1 unchanged)."""
    mid = 0.5 * (x[0] + x[1])
    side = 0.5 * (x[0] - x[1]) * amount
    return np.stack([mid + side, mid - side])


def echo(x: np.ndarray, sr: int, delay_s: float, feedback: float, repeats: int,
         ping_pong: bool, tone_hz: float = 5000.0) -> np.ndarray:
    """The wet signal of a tape-style echo of mono-or-stereo ``x``: ``repeats`` taps
    ``delay_s`` apart, each ``feedback`` quieter and darker; ping-pong alternates L/R.
    Returns ``[2, n]`` (tails past ``n`` dropped)."""
    src = x.mean(axis=0) if x.shape[0] > 1 else x[0]
    n = src.size
    out = np.zeros((2, n))
    d = int(round(delay_s * sr))
    tap = src
    sos = biquad("lowpass", tone_hz, sr, 0.6)
    for k in range(1, repeats + 1):
        if k * d >= n:
            break
        tap = sosfilt(sos, tap)
        g = feedback ** (k - 1)
        side = (k % 2) if ping_pong else None
        if side is None:
            out[:, k * d:] += g * tap[: n - k * d]
        else:
            out[side, k * d:] += g * tap[: n - k * d] * 1.2
            out[1 - side, k * d:] += g * tap[: n - k * d] * 0.35
    return out


def place(buf: np.ndarray, start: int, x: np.ndarray) -> None:
    """``buf[start:start+len(x)] += x``, clipped to the buffer on both sides."""
    off = max(0, -start)
    s0 = start + off
    m = min(x.size - off, buf.size - s0)
    if m > 0:
        buf[s0:s0 + m] += x[off:off + m]
