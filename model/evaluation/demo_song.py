"""A synthetic demo song with known stems: license-clean, download-free, deterministic.

``livestems demo`` needs music to separate on a machine with no data and no network. This
module composes and synthesises a short song from a seed alone (numpy only, no samples, no
files) and returns its four stems (vocals, drums, bass, other) and their exact sum, so the
demo can play the mixture through the real-time engine, write a karaoke mix and stems, and
compare them with the ground truth.

The song is built to look like a real mix to a separator, including the properties the
classic karaoke trick relies on:

- a minor-key chord progression (e.g. i-VI-III-VII) shared by every part, 90-128 bpm;
- drums: pitch-swept sine kick with a click, noise+tone snare, high-passed noise hats with
  stereo spread, toms and a crash for fills at phrase ends;
- bass: a filter-enveloped sawtooth following the chord roots, near centre;
- other: a detuned-saw pad spread wide and a Karplus-Strong plucked arpeggio panned to one
  side with a ping-pong echo, so this stem is clearly *not* centred;
- vocals: a sung lead on chord tones, synthesised additively from a glottal-like harmonic
  source with pitch glides, scoops and delayed-onset vibrato, shaped by five vowel formants
  (a, e, i, o, u changing per note), with soft consonant noise at syllable onsets and rests
  between phrases. The dry voice is dead centre (L == R to the bit); only its reverb is
  decorrelated between the channels, as on a typical record;
- a one- or two-bar intro without vocals, then verse (and chorus for longer songs).

Everything is vectorised (additive synthesis via the Chebyshev recurrence, FFT filtering and
convolution), so 12 s at 44.1 kHz takes a fraction of a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DemoSong", "make_demo_song", "SOURCES"]

SOURCES = ("vocals", "drums", "bass", "other")

_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
_NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)

# Progressions as (semitones above the tonic, chord quality, roman numeral). All chords are
# diatonic to the natural minor scale, so melody neighbour tones from that scale never clash.
_PROGRESSIONS = (
    ((0, "min", "i"), (8, "maj", "VI"), (3, "maj", "III"), (10, "maj", "VII")),
    ((0, "min", "i"), (10, "maj", "VII"), (8, "maj", "VI"), (10, "maj", "VII")),
    ((0, "min", "i"), (5, "min", "iv"), (8, "maj", "VI"), (10, "maj", "VII")),
    ((0, "min", "i"), (8, "maj", "VI"), (5, "min", "iv"), (10, "maj", "VII")),
)
_TRIADS = {"min": (0, 3, 7), "maj": (0, 4, 7)}

# Vowel formants of a mid-range (alto-like) singing voice: centre frequency (Hz), level (dB)
# and bandwidth (Hz) of five formants, after the classic formant tables used for FOF/formant
# synthesis. Levels of F3-F5 are raised a little (the "singer's formant") so the lead cuts
# through the band as trained voices do.
_VOWELS = {
    "a": ((800, 1150, 2800, 3500, 4950), (0, -4, -14, -24, -40), (80, 90, 120, 130, 140)),
    "e": ((400, 1600, 2700, 3300, 4950), (0, -18, -20, -24, -40), (60, 80, 120, 150, 200)),
    "i": ((350, 1700, 2700, 3700, 4950), (0, -14, -18, -24, -40), (50, 100, 120, 150, 200)),
    "o": ((450, 800, 2830, 3500, 4950), (0, -9, -14, -22, -40), (70, 80, 100, 130, 135)),
    "u": ((325, 700, 2530, 3500, 4950), (0, -12, -22, -30, -44), (50, 60, 170, 180, 200)),
}
_VOWEL_ORDER = "aeiou"

# Consonant noise: (band low Hz, band high Hz, duration s, level re the vowel, before onset?).
# Fricatives end where the vowel starts; plosive bursts start at the onset and delay the vowel.
_CONSONANTS = {
    "s": (4500.0, 11000.0, 0.070, 0.16, True),
    "sh": (2000.0, 6500.0, 0.080, 0.14, True),
    "h": (700.0, 4000.0, 0.060, 0.07, True),
    "t": (3000.0, 9000.0, 0.014, 0.30, False),
    "k": (1400.0, 4500.0, 0.018, 0.26, False),
}

# Relative loudness of the stems (dB, on the RMS of the parts where each one plays): the lead
# sits on top of the band, as in the songs people sing along to.
_STEM_LEVEL_DB = {"vocals": 0.0, "drums": -3.0, "bass": -5.0, "other": -6.5}
_PEAK_DBFS = -1.0


@dataclass
class DemoSong:
    """A synthetic song and its ground-truth stems.

    Attributes:
        stems: ``{"vocals", "drums", "bass", "other"}`` -> float32 C-contiguous ``[2, T]``
            (stereo, linear full scale, ``T = round(seconds * sample_rate)`` samples).
        mixture: float32 ``[2, T]``, the sum of the four stems (to float32 rounding).
        sample_rate: Hz.
        tempo_bpm: quarter notes per minute.
        key: e.g. ``"A minor"``.
        description: one paragraph on what was generated (chords, structure, panning).
    """

    stems: dict[str, np.ndarray]
    mixture: np.ndarray
    sample_rate: int
    tempo_bpm: float
    key: str
    description: str


# --------------------------------------------------------------------------------------------
# small DSP helpers


def _midi_hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n: pocketfft is fast on those, and they sit far closer to
    n than the next power of two (a 12 s song would otherwise double its FFT size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35
            while p235 < n:
                p235 *= 2
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


def _band_gain(freqs: np.ndarray, lo: float | None, hi: float | None, order: int) -> np.ndarray:
    """Butterworth-like magnitude response of a high-pass at ``lo`` and low-pass at ``hi``."""
    g = np.ones_like(freqs)
    if lo is not None:
        with np.errstate(divide="ignore"):
            g /= np.sqrt(1.0 + (lo / np.maximum(freqs, 1e-9)) ** (2 * order))
    if hi is not None:
        g /= np.sqrt(1.0 + (freqs / hi) ** (2 * order))
    return g


def _noise(rng: np.random.Generator, shape, sr: int, lo=None, hi=None, order=2) -> np.ndarray:
    """Band-limited Gaussian noise of unit RMS, ``shape[-1]`` samples, filtered zero-phase in
    the frequency domain. Circular filtering is harmless for stationary noise; callers apply
    envelopes afterwards, so nothing leaks before an onset."""
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    n = shape[-1]
    size = _fast_len(max(n, 16))
    white = rng.standard_normal(shape[:-1] + (size,))
    nyq = 0.5 * sr
    lo = None if lo is None else min(lo, 0.8 * nyq)
    hi = None if hi is None or hi >= 0.95 * nyq else hi
    spec = np.fft.rfft(white, axis=-1) * _band_gain(np.fft.rfftfreq(size, 1.0 / sr), lo, hi, order)
    y = np.fft.irfft(spec, size, axis=-1)[..., :n]
    return y / max(float(np.sqrt(np.mean(y * y))), 1e-12)


def _lowpass(x: np.ndarray, sr: float, hi: float, order: int = 2, lo: float | None = None,
             up: int = 1, n_out: int | None = None) -> np.ndarray:
    """Static zero-phase band filter of a whole signal ``[..., n]`` at ``sr`` Hz (zero-padded,
    so no wrap-around), optionally upsampled by ``up`` in the same FFT (spectrum zero-padded):
    a part that is low-passed anyway can be synthesised at a fraction of the rate for free.
    Returns ``[..., n_out]`` (default ``n * up``) at ``sr * up``."""
    n = x.shape[-1]
    n_out = n * up if n_out is None else n_out
    size = _fast_len(n + int(0.05 * sr))
    hi = None if hi >= 0.45 * sr else hi
    gain = _band_gain(np.fft.rfftfreq(size, 1.0 / sr), lo, hi, order)
    spec = np.fft.rfft(x, size, axis=-1) * gain
    return np.fft.irfft(spec * up, size * up, axis=-1)[..., :n_out]


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan: ``pan`` in [-1 (left), 1 (right)] -> ``[2, n]``."""
    theta = (pan + 1.0) * math.pi / 4.0
    return np.stack([math.cos(theta) * mono, math.sin(theta) * mono]) * math.sqrt(2.0)


def _balance(stereo: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power balance of a stereo ``[2, n]`` signal: keeps its width, moves its centre."""
    theta = (pan + 1.0) * math.pi / 4.0
    return stereo * (np.array([math.cos(theta), math.sin(theta)])[:, None] * math.sqrt(2.0))


def _add(buf: np.ndarray, start: int, x: np.ndarray) -> None:
    """``buf[..., start:start+len(x)] += x``, clipped to the buffer on both sides."""
    n = buf.shape[-1]
    off = max(0, -start)
    s0 = start + off
    m = min(x.shape[-1] - off, n - s0)
    if m > 0:
        buf[..., s0 : s0 + m] += x[..., off : off + m]


def _hann_smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Smooth a control-rate curve with a normalised Hann kernel of ``width`` frames (edges
    held, so a curve does not sag towards zero at its ends)."""
    if width < 3:
        return x
    k = np.hanning(width + 2)[1:-1]
    k /= k.sum()
    pad = width // 2 + 1
    xp = np.concatenate([np.full(pad, x[0]), x, np.full(pad, x[-1])])
    return np.convolve(xp, k, mode="same")[pad:-pad]


def _harmonics(phase: np.ndarray, amps: np.ndarray, hop: int) -> np.ndarray:
    """Additive synthesis: ``sum_h a_h(t) * sin(h * phase(t))`` for ``h = 1..H``.

    Args:
        phase: ``[n]`` instantaneous phase of the fundamental, radians.
        amps: ``[H, F]`` amplitudes at control rate: frame ``j`` is sample ``j * hop``,
            linearly interpolated in between; ``F >= ceil(n / hop) + 1``.
        hop: samples per control frame.

    The Chebyshev recurrence ``sin((h+1)p) = 2 cos(p) sin(hp) - sin((h-1)p)`` costs one
    multiply-add per harmonic instead of a ``sin`` call (float64 error stays far below
    audibility for H < 100), and the interpolated amplitude ``a0 + r * da`` is split into two
    accumulators so no per-harmonic amplitude signal is ever materialised.
    """
    n = phase.size
    nb = -(-n // hop)
    ph = np.zeros(nb * hop)
    ph[:n] = phase
    ph = ph.reshape(nb, hop)
    a0 = amps[:, :nb]
    da = amps[:, 1 : nb + 1] - a0
    s_prev = np.zeros_like(ph)
    s_cur = np.sin(ph)
    c2 = 2.0 * np.cos(ph)
    acc0 = np.zeros_like(ph)
    acc1 = np.zeros_like(ph)
    tmp = np.empty_like(ph)
    for h in range(amps.shape[0]):
        np.multiply(s_cur, a0[h][:, None], out=tmp)
        acc0 += tmp
        np.multiply(s_cur, da[h][:, None], out=tmp)
        acc1 += tmp
        np.multiply(c2, s_cur, out=tmp)
        tmp -= s_prev
        s_prev, s_cur, tmp = s_cur, tmp, s_prev
    acc1 *= np.arange(hop) / hop
    acc0 += acc1
    return acc0.reshape(-1)[:n]


def _reverb_ir(rng: np.random.Generator, sr: int, rt60: float, predelay: float, bright: float):
    """Stereo reverb impulse response ``[2, L]``: independent exponentially decaying noise per
    channel (so the wet signal is decorrelated between L and R), highs decaying faster than
    lows as in real rooms. Each channel has unit mean power gain over 0.1-4 kHz; callers set
    the wet level."""
    n = int(min(rt60, 2.5) * sr * 0.8)
    t = np.arange(n) / sr
    low = _noise(rng, (2, n), sr, hi=bright * 0.35, order=2)
    high = _noise(rng, (2, n), sr, lo=bright * 0.35, hi=bright, order=2)
    tau = rt60 / 6.91  # -60 dB at rt60
    ir = low * np.exp(-t / tau) + 0.6 * high * np.exp(-t / (0.45 * tau))
    ir *= np.minimum(1.0, t / 0.004)  # soft onset avoids a click at the predelay
    ir = np.concatenate([np.zeros((2, int(predelay * sr))), ir], axis=1)
    # unit power gain where voices and instruments live (0.1-4 kHz), not over all of 0-sr/2:
    # the IR's energy sits below ``bright``, so unit total energy would be ~+10 dB there
    size = _fast_len(ir.shape[-1])
    f = np.fft.rfftfreq(size, 1.0 / sr)
    band = (f > 100.0) & (f < 4000.0)
    power = np.mean(np.abs(np.fft.rfft(ir, size, axis=-1)[:, band]) ** 2, axis=-1)
    return ir / np.sqrt(power)[:, None]


def _convolve_sends(sends: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Linear convolution of mono sends ``[k, n]`` with a stereo IR ``[2, L]`` -> ``[k, 2, n]``
    (tails past ``n`` dropped), one batched FFT for all sends."""
    n = sends.shape[-1]
    size = _fast_len(n + ir.shape[-1] - 1)
    s = np.fft.rfft(sends, size, axis=-1)
    h = np.fft.rfft(ir, size, axis=-1)
    return np.fft.irfft(s[:, None, :] * h[None, :, :], size, axis=-1)[..., :n]


def _active_rms(x: np.ndarray, sr: int) -> float:
    """RMS over the frames where ``x`` [C, n] plays (within 30 dB of its loudest 50 ms frame),
    so stems with rests (vocals, intro-less parts) are levelled by how loud they sound."""
    hop = max(1, int(0.05 * sr))
    n = (x.shape[-1] // hop) * hop
    if n == 0:
        return float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    frames = np.mean((x[:, :n] ** 2).reshape(x.shape[0], -1, hop), axis=(0, 2))
    peak = frames.max()
    if peak <= 0:
        return 0.0
    return float(np.sqrt(np.mean(frames[frames > peak * 1e-3])))


# --------------------------------------------------------------------------------------------
# song plan


@dataclass
class _Plan:
    """Timing and harmony shared by every part."""

    sr: int
    n: int  # samples
    bpm: float
    tonic: int  # pitch class, 0 = C
    progression: tuple
    n_bars: int
    intro_bars: int

    @property
    def spb(self) -> float:
        """Samples per beat (quarter note)."""
        return 60.0 * self.sr / self.bpm

    def at(self, beat: float) -> int:
        return int(round(beat * self.spb))

    def chord(self, bar: int) -> tuple[int, tuple[int, ...]]:
        """(root pitch class, chord pitch classes) of a bar: one chord per bar."""
        step, quality, _ = self.progression[bar % len(self.progression)]
        root = (self.tonic + step) % 12
        return root, tuple((root + i) % 12 for i in _TRIADS[quality])

    def section(self, bar: int) -> str:
        """'intro', then alternating 8-bar 'verse' and 'chorus'."""
        if bar < self.intro_bars:
            return "intro"
        return "verse" if ((bar - self.intro_bars) // 8) % 2 == 0 else "chorus"

    def fill_bar(self, bar: int) -> bool:
        """Drum fill at the end of every 4-bar phrase and before the first vocal bar."""
        if bar < self.intro_bars:
            return bar == self.intro_bars - 1
        return (bar - self.intro_bars) % 4 == 3


# --------------------------------------------------------------------------------------------
# drums


def _drum_kit(rng: np.random.Generator, sr: int) -> dict[str, list[np.ndarray]]:
    """One-shot drum sounds, mono ``[L]`` (crash and hats stereo ``[2, L]``), several takes
    each so repeated hits are not bit-identical (a machine-gun effect a listener notices)."""

    def t_of(seconds):
        return np.arange(int(seconds * sr)) / sr

    kit: dict[str, list[np.ndarray]] = {}
    t = t_of(0.45)
    f = 48.0 + 110.0 * np.exp(-t / 0.03) + 60.0 * np.exp(-t / 0.004)  # the "thump" sweep
    body = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.22) * np.minimum(1, t / 0.0008)
    kicks = []
    for _ in range(2):
        click = _noise(rng, t.size, sr, lo=1500, hi=7000) * np.exp(-t / 0.0025) * 0.22
        kicks.append(np.tanh(1.6 * (body + click)) / np.tanh(1.6))
    kit["kick"] = kicks

    t = t_of(0.32)
    tone = (np.sin(2 * np.pi * 185 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)) * np.exp(-t / 0.05)
    rattle = np.exp(-t / 0.10) * np.minimum(1, t / 0.001)  # the snare wires
    kit["snare"] = [
        0.45 * tone + 0.85 * _noise(rng, t.size, sr, lo=1200, hi=9000) * rattle for _ in range(3)
    ]

    def hat(seconds, decay, spread):
        t = t_of(seconds)
        common = _noise(rng, t.size, sr, lo=7000, hi=16000, order=3)
        own = _noise(rng, (2, t.size), sr, lo=7000, hi=16000, order=3)
        # part-shared, part-independent noise: a hat that sounds wide but has a clear position
        x = (1.0 - spread) * common + spread * own
        return x * (np.exp(-t / decay) * np.minimum(1, t / 0.0005))

    kit["hat"] = [hat(0.12, 0.022, 0.45) for _ in range(4)]
    kit["open_hat"] = [hat(0.45, 0.16, 0.45) for _ in range(2)]
    t = t_of(1.8)
    crash = _noise(rng, (2, t.size), sr, lo=3500, hi=15000) * np.exp(-t / 0.55)
    kit["crash"] = [crash * np.minimum(1, t / 0.002)]

    for name, f0 in (("tom_hi", 190.0), ("tom_mid", 140.0), ("tom_lo", 100.0)):
        t = t_of(0.4)
        f = f0 * (1.0 + 0.5 * np.exp(-t / 0.04))
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.2)
        x += 0.25 * _noise(rng, t.size, sr, lo=800, hi=6000) * np.exp(-t / 0.02)
        kit[name] = [x]
    return kit


_KICK_PATTERNS = ((0, 8), (0, 7, 8), (0, 8, 10), (0, 6, 8, 11), (0, 3, 8, 10))
_FILLS = (
    ("snare", "snare", "tom_hi", "tom_mid"),
    ("tom_hi", "tom_hi", "tom_mid", "tom_lo"),
    ("snare", "snare", "snare", "snare"),
    ("snare", "tom_mid", "tom_mid", "tom_lo"),
)
_DRUM_GAIN = {"kick": 1.0, "snare": 0.75, "hat": 0.2, "open_hat": 0.16, "crash": 0.22,
              "tom_hi": 0.6, "tom_mid": 0.65, "tom_lo": 0.7}
# Drummer's-eye positions: kick and snare centre, hats a little right, toms across the kit.
_DRUM_PAN = {"kick": 0.0, "snare": 0.05, "hat": 0.35, "open_hat": 0.35, "crash": -0.35,
             "tom_hi": 0.4, "tom_mid": 0.0, "tom_lo": -0.4}


def _render_drums(rng: np.random.Generator, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Drum stem ``[2, n]`` (dry) and its mono reverb send ``[n]`` (no kick: keeps lows dry)."""
    sr, n = plan.sr, plan.n
    kit = _drum_kit(rng, sr)
    out = np.zeros((2, n))
    send = np.zeros(n)
    base_kick = _KICK_PATTERNS[rng.integers(len(_KICK_PATTERNS))]
    busy_hats = rng.random() < 0.4
    step = plan.spb / 4.0  # 16th note in samples
    jitter = 0.002 * sr  # a drummer's few ms of timing looseness

    def hit(name: str, pos: float, vel: float):
        takes = kit[name]
        x = takes[rng.integers(len(takes))] * (vel * _DRUM_GAIN[name] * rng.uniform(0.9, 1.05))
        start = int(round(pos + rng.normal(0.0, jitter)))
        _add(out, start, _balance(x, _DRUM_PAN[name]) if x.ndim == 2 else _pan(x, _DRUM_PAN[name]))
        if name != "kick":
            _add(send, start, x.mean(axis=0) if x.ndim == 2 else x)

    for bar in range(plan.n_bars):
        sec = plan.section(bar)
        bar0 = bar * 4 * plan.spb
        kick = base_kick
        if rng.random() < 0.3:  # variation: a different kick figure now and then
            kick = _KICK_PATTERNS[rng.integers(len(_KICK_PATTERNS))]
        if sec == "intro":
            kick = (0, 8)
        fill = _FILLS[rng.integers(len(_FILLS))] if plan.fill_bar(bar) else None
        last = 12 if fill else 16  # the fill replaces the groove on the last beat
        sixteenths = (busy_hats or sec == "chorus") and sec != "intro"
        if bar > 0 and plan.section(bar - 1) != sec:
            hit("crash", bar0, 1.0)
        for s in range(last):
            pos = bar0 + s * step
            if s in kick:
                hit("kick", pos, 1.0 if s % 8 == 0 else 0.85)
            if sec != "intro" and s in (4, 12):
                hit("snare", pos, 1.0)
            elif sec != "intro" and s in (7, 9, 15) and rng.random() < 0.2:
                hit("snare", pos, rng.uniform(0.12, 0.22))  # ghost notes
            if sec == "chorus" and s in (6, 14):
                hit("open_hat", pos, 0.9)
            elif s % 2 == 0 or sixteenths:
                hit("hat", pos, 1.0 if s % 4 == 0 else (0.7 if s % 2 == 0 else 0.4))
        if fill:
            if sec != "intro":
                hit("kick", bar0 + 12 * step, 0.9)
            for i, name in enumerate(fill):
                hit(name, bar0 + (12 + i) * step, 0.7 + 0.1 * i)  # crescendo into the downbeat
    return out, send


# --------------------------------------------------------------------------------------------
# bass


_BASS_PATTERNS = (  # (16th step, length in 16ths, interval above the root)
    ((0, 3, 0), (3, 1, 0), (6, 2, 0), (8, 3, 0), (11, 1, 0), (14, 2, 12)),
    ((0, 2, 0), (2, 2, 0), (4, 2, 0), (6, 2, 12), (8, 2, 0), (10, 2, 0), (12, 2, 7), (14, 2, 12)),
    ((0, 6, 0), (6, 2, 0), (8, 4, 0), (12, 2, 7), (14, 2, 12)),
    ((0, 4, 0), (4, 2, 0), (7, 1, 0), (8, 4, 0), (12, 3, 7), (15, 1, 0)),
)


def _bass_note(sr: int, midi: int, gate: int, accent: bool) -> np.ndarray:
    """A synth-bass note ``[gate + release]``: additive sawtooth (1/h harmonics) through a
    resonant 2-pole low-pass whose cutoff falls after the attack (the classic filter-envelope
    "pluck"), plus a sine sub at the fundamental so the pitch survives small speakers."""
    f0 = float(_midi_hz(midi))
    rel = int(0.03 * sr)
    t = np.arange(gate + rel) / sr
    hop = 32  # the filter envelope is smooth (90 ms): control rate is plenty
    tf = np.arange(-(-t.size // hop) + 1) * hop / sr
    n_h = max(1, int(min(3000.0, 0.45 * sr) / f0))
    h = np.arange(1, n_h + 1)[:, None]
    cutoff = 160.0 + (1500.0 if accent else 900.0) * np.exp(-tf / 0.09)
    x = h * f0 / cutoff[None, :]
    q = 1.6
    amps = 1.0 / np.sqrt((1.0 - x * x) ** 2 + (x / q) ** 2) / h
    amps[0] += 0.6  # sub
    y = _harmonics(2 * np.pi * f0 * t, amps, hop)
    env = np.minimum(1.0, t / 0.003) * (0.7 + 0.3 * np.exp(-t / 0.25))
    env[gate:] *= np.exp(-(t[gate:] - t[gate]) / 0.008)
    return np.tanh(0.8 * y * env)


def _render_bass(rng: np.random.Generator, plan: _Plan) -> np.ndarray:
    """Bass stem ``[2, n]``: chord roots in G1..F#2 on a per-song rhythm, almost centred."""
    sr = plan.sr
    mono = np.zeros(plan.n)
    pattern = _BASS_PATTERNS[rng.integers(len(_BASS_PATTERNS))]
    cache: dict[tuple, np.ndarray] = {}
    step = plan.spb / 4.0
    for bar in range(plan.n_bars):
        root, _ = plan.chord(bar)
        low = 31 + (root - 7) % 12  # keep the root within G1..F#2
        notes = ((0, 15, 0),) if plan.section(bar) == "intro" else pattern
        if plan.section(bar) != "intro" and rng.random() < 0.25:
            notes = _BASS_PATTERNS[rng.integers(len(_BASS_PATTERNS))]
        for s, length, interval in notes:
            gate = int(length * step * 0.85)
            key = (low + interval, gate, s % 8 == 0)
            if key not in cache:
                cache[key] = _bass_note(sr, *key)
            vel = rng.uniform(0.85, 1.0)
            _add(mono, int(round((bar * 16 + s) * step)), cache[key] * vel)
    return _pan(mono, -0.03)


# --------------------------------------------------------------------------------------------
# other: pad + plucked arpeggio


def _voicing(pcs: tuple[int, ...], prev: list[int] | None, lo: int = 52, hi: int = 70) -> list[int]:
    """Close voicing of the chord in [lo, hi] that moves least from the previous one (smooth
    voice leading, as a keyboard player would)."""
    options = []
    for bottom in range(lo, hi):
        if bottom % 12 not in pcs:
            continue
        notes = [bottom]
        for _ in range(len(pcs) - 1):
            m = notes[-1] + 1
            while m % 12 not in pcs:
                m += 1
            notes.append(m)
        if notes[-1] <= hi:
            options.append(notes)
    if prev is None:
        return options[len(options) // 2]
    return min(options, key=lambda v: sum(abs(a - b) for a, b in zip(v, prev)))


def _polyblep_saw(freq: float, n: int, sr: float, phase0: float) -> np.ndarray:
    """Band-limited sawtooth (PolyBLEP): a naive ramp with its jumps smoothed over one sample
    either side, which removes most aliasing at a few array operations per sample."""
    dt = freq / sr
    p = (phase0 + dt * np.arange(n)) % 1.0
    y = 2.0 * p - 1.0
    a = p < dt
    u = p[a] / dt
    y[a] -= u + u - u * u - 1.0
    b = p > 1.0 - dt
    u = (p[b] - 1.0) / dt
    y[b] -= u * u + u + u + 1.0
    return y


def _pluck(sr: int, midi: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong plucked string ``[L]``.

    A noise burst circulates in a delay loop of one period whose two-point average (plus a
    linear fractional-delay tap for exact tuning) loses highs each round trip: the tone
    starts bright and mellows like a guitar string. The recursion reaches back at least one
    period, so it is computed a whole period at a time.
    """
    period = sr / float(_midi_hz(midi))
    m = int(period - 0.5)
    frac = period - 0.5 - m
    w0, w1, w2 = 0.5 * (1 - frac), 0.5, 0.5 * frac  # [.5,.5] * [1-frac, frac]
    n = int(seconds * sr)
    y = np.zeros(n + m + 2)
    burst = rng.uniform(-1, 1, m)
    burst = np.convolve(burst, [0.5, 0.5], mode="same")  # softer pick
    pick = int(0.18 * m)  # plucking point: comb out harmonics with a node there
    burst[pick:] -= 0.7 * burst[: m - pick]
    y[2 : m + 2] = burst
    rho = 0.996
    pos = m + 2
    while pos < y.size:
        e = min(pos + m, y.size)
        k = e - pos
        y[pos:e] += rho * (w0 * y[pos - m : pos - m + k] + w1 * y[pos - m - 1 : pos - m - 1 + k]
                           + w2 * y[pos - m - 2 : pos - m - 2 + k])
        pos = e
    y = y[2 : n + 2]
    fade = min(n, int(0.08 * sr))
    y[n - fade :] *= np.linspace(1.0, 0.0, fade)
    return y


def _render_other(rng: np.random.Generator, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """'other' stem ``[2, n]`` and its mono reverb send ``[n]``: a wide detuned-saw pad and a
    plucked arpeggio on the right with a ping-pong echo on the left."""
    sr, n = plan.sr, plan.n
    # the pad is low-passed at 2.2 kHz, so it is synthesised at half rate and upsampled by
    # the same FFT that filters it (what aliases above sr/4 lies far above the cutoff)
    sr_pad = sr / 2.0
    bar_len = 4 * plan.spb / 2.0
    pad = np.zeros((2, n // 2 + 1))
    voicing = None
    attack, release = 0.35, 0.35
    detune = (-9.0, 0.0, 9.0)  # cents: the slow beating between copies is what makes a pad
    pans = (-0.85, 0.0, 0.85)  # the detuned copies spread across the stereo field
    for bar in range(plan.n_bars):
        _, pcs = plan.chord(bar)
        voicing = _voicing(pcs, voicing)
        start = int(round(bar * bar_len))
        length = int(bar_len + release * sr_pad)
        t = np.arange(length) / sr_pad
        env = 1.0 - np.exp(-t / (attack / 3.0))
        hold = int(bar_len)
        env[hold:] *= np.exp(-(t[hold:] - t[hold]) / (release / 4.0))
        level = 0.8 if plan.section(bar) == "intro" else 0.6
        for midi in voicing:
            for cents, pan in zip(detune, pans):
                f = float(_midi_hz(midi + (cents + rng.normal(0, 1.5)) / 100.0))
                x = _polyblep_saw(f, length, sr_pad, rng.random()) * env * level
                _add(pad, start, _pan(x, pan + rng.uniform(-0.1, 0.1)))
    # warm, and clear of the bass
    pad = _lowpass(pad, sr_pad, hi=2200.0, order=2, lo=120.0, up=2, n_out=n)

    arp = np.zeros(n)
    cache: dict[tuple, np.ndarray] = {}
    patterns = ((0, 1, 2, 3, 4, 3, 2, 1), (0, 2, 1, 3, 2, 4, 3, 1), (0, 1, 2, 0, 3, 2, 4, 2))
    pattern = patterns[rng.integers(len(patterns))]
    for bar in range(plan.n_bars):
        _, pcs = plan.chord(bar)
        tones = [m for m in range(62, 90) if m % 12 in pcs][:5]
        for i, idx in enumerate(pattern):
            midi = tones[idx]
            key = (midi, int(rng.integers(2)))
            if key not in cache:
                cache[key] = _pluck(sr, midi, 1.1, rng)
            vel = (1.0 if i % 2 == 0 else 0.7) * rng.uniform(0.85, 1.0)
            _add(arp, int(round((bar * 4 + 0.5 * i) * plan.spb)), cache[key] * vel)
    arp = _lowpass(arp, sr, hi=5000.0, order=1)  # guitar body: take the edge off the pick
    arp *= 0.5 / max(float(np.sqrt(np.mean(arp * arp))), 1e-9) * float(np.sqrt(np.mean(pad * pad)))

    other = pad + _pan(arp, 0.55)
    delay = int(round(0.75 * plan.spb))  # dotted-eighth ping-pong echo
    _add(other, delay, _pan(arp * 0.35, -0.7))
    _add(other, 2 * delay, _pan(arp * 0.15, 0.7))
    send = other.mean(axis=0)
    return other, send


# --------------------------------------------------------------------------------------------
# vocals


@dataclass
class _Note:
    on: int  # onset sample (absolute)
    off: int  # end of the sung note (absolute)
    midi: int
    vowel: str
    consonant: str | None
    gain: float


_RHYTHMS = (  # (onset beat, length in beats) within a 2-bar phrase; >= 1.5 beats rest at the end
    ((0, 1), (1, 0.5), (1.5, 0.5), (2, 1), (3, 1), (4, 1), (5, 1.5)),
    ((0.5, 0.5), (1, 1), (2, 0.5), (2.5, 0.5), (3, 1.5), (4.5, 0.5), (5, 1.5)),
    ((0, 1.5), (1.5, 0.5), (2, 1), (3, 1), (4, 0.5), (4.5, 0.5), (5, 1)),
    ((0, 0.5), (0.5, 0.5), (1, 1), (2, 2), (4, 0.5), (4.5, 0.5), (5, 1.5)),
    ((0.5, 0.5), (1, 0.5), (1.5, 1.5), (3, 0.5), (3.5, 0.5), (4, 2)),
)


def _compose_melody(rng: np.random.Generator, plan: _Plan) -> list[list[_Note]]:
    """Two-bar phrases of chord-tone melody (with the odd scale neighbour tone on short
    off-beat notes), each phrase at least three distinct pitches, ending on the chord's root
    or third; a rest closes every phrase."""
    base = 55 + (plan.tonic - 7) % 12  # tonic placed in G3..F#4
    scale = {(plan.tonic + s) % 12 for s in _NATURAL_MINOR}
    phrases = []
    prev = base + 7
    prev_vowel = ""
    bar = plan.intro_bars
    while bar < plan.n_bars:
        sec = plan.section(bar)
        # verse around the tonic, chorus higher; clipped to a comfortable G3..F5 range
        lo, hi = (base - 3, base + 12) if sec == "verse" else (base + 2, base + 16)
        lo, hi = max(lo, 55), min(hi, 77)
        rhythm = _RHYTHMS[rng.integers(len(_RHYTHMS))]
        for _attempt in range(20):
            pitches = []
            p = prev
            for i, (beat, dur) in enumerate(rhythm):
                root, pcs = plan.chord(bar + int(beat // 4))
                last = i == len(rhythm) - 1
                if last:
                    pcs = (root, pcs[1])  # phrases resolve on the root or the third
                if not last and dur <= 0.5 and beat % 1 and rng.random() < 0.25:
                    cands = [m for m in range(p - 2, p + 3) if m != p and m % 12 in scale]
                else:
                    cands = [m for m in range(lo, hi + 1) if m % 12 in pcs]
                cands = np.array(cands)
                w = np.exp(-np.abs(cands - p) / 3.0) * np.where(cands == p, 0.4, 1.0)
                p = int(rng.choice(cands, p=w / w.sum()))
                pitches.append(p)
            if len(set(pitches)) >= 3:
                break
        prev = pitches[-1]
        notes = []
        for i, ((beat, dur), midi) in enumerate(zip(rhythm, pitches)):
            on = plan.at((bar * 4) + beat)
            legato = i > 0 and rng.random() < 0.5
            cons = None if legato else str(rng.choice(list(_CONSONANTS)))
            vowels = [v for v in _VOWEL_ORDER if v != prev_vowel]
            if dur >= 1.5:
                vowels = [v for v in "aoe" if v != prev_vowel]  # long notes on open vowels
            vowel = str(rng.choice(vowels))
            prev_vowel = vowel
            accent = 1.0 if beat % 2 == 0 else (0.9 if beat % 1 == 0 else 0.82)
            off = on + int(dur * plan.spb * (0.97 if legato or i == len(rhythm) - 1 else 0.9))
            notes.append(_Note(on, off, midi, vowel, cons, accent))
        phrases.append(notes)
        bar += 2
    return phrases


def _sing_phrase(
    rng: np.random.Generator, plan: _Plan, notes: list[_Note]
) -> tuple[int, np.ndarray]:
    """Synthesise one phrase: returns (start sample, mono dry voice).

    Control curves (pitch, loudness, formants) are built at a 64-sample frame rate and
    smoothed, then the voice is summed additively: harmonic ``h`` of the glottal-like source
    (amplitude ~ 1/h, i.e. a pulse train's spectrum) is weighted by the vowel's formant
    envelope at ``h * f0``, so harmonics brighten and darken as they cross formants under
    vibrato, as in a real voice.
    """
    sr = plan.sr
    hop = 64
    start = notes[0].on - int(0.12 * sr)
    end = notes[-1].off + int(0.35 * sr)
    n = end - start
    nf = n // hop + 2
    tf = np.arange(nf) * hop  # frame times, local samples
    sec = hop / sr  # seconds per frame

    midi = np.full(nf, float(notes[0].midi))
    amp = np.zeros(nf)
    fmt = np.zeros((3, 5, nf))  # F, level (linear), B per formant
    vib_depth = np.zeros(nf)
    bend = np.zeros(nf)
    for i, note in enumerate(notes):
        on, off = note.on - start, note.off - start
        voiced_on = on
        if note.consonant is not None and not _CONSONANTS[note.consonant][4]:
            voiced_on = on + int(0.02 * sr)  # a plosive's burst precedes the voicing
        nxt = notes[i + 1].on - start if i + 1 < len(notes) else n
        f_on, f_off, f_next = on // hop, off // hop, min(nxt // hop, nf)
        midi[f_on:] = note.midi
        a = np.zeros(nf)
        dur = max(off - on, 1) / sr
        sung = slice(voiced_on // hop, f_off)
        # long notes swell a little, as singers sustain through a note
        a[sung] = note.gain * (1.0 + 0.12 * np.minimum(1.0, (tf[sung] - on) / sr / max(dur, 0.1)))
        if i == len(notes) - 1:
            # phrase end: a soft release instead of a cut, pitch drooping slightly
            tail = np.arange(nf - f_off) * sec
            a[f_off:] = note.gain * np.exp(-tail / 0.07)
            bend[f_off:] -= 0.6 * (1.0 - np.exp(-tail / 0.1))
        amp = np.maximum(amp, a)
        F, L, B = _VOWELS[note.vowel]
        sl = slice(f_on if i else 0, f_next if i + 1 < len(notes) else nf)
        fmt[0, :, sl] = np.array(F)[:, None]
        fmt[1, :, sl] = 10.0 ** (np.array(L)[:, None] / 20.0)
        fmt[2, :, sl] = 1.5 * np.array(B)[:, None]  # wider: smoother envelope for a high voice
        if note.consonant is not None or i == 0:
            # scoop: onsets start a little flat and slide up to pitch
            t_rel = (tf[f_on:] - voiced_on) / sr
            scoop = np.exp(-np.maximum(t_rel, 0.0) / 0.045) * (t_rel > -0.02)
            bend[f_on:] -= rng.uniform(0.4, 1.0) * scoop
        if dur > 0.3:
            # vibrato grows in after the onset, as trained singers do
            t_rel = (tf - on) / sr
            ramp = np.clip((t_rel - 0.18) / 0.3, 0.0, 1.0) * (tf < off)
            vib_depth = np.maximum(vib_depth, 0.3 * ramp)

    glide = max(3, int(0.06 / sec))  # 60 ms portamento between notes
    midi = _hann_smooth(midi, glide)
    rate = 5.6 + 0.3 * rng.standard_normal()
    vib_phase = 2 * np.pi * rate * tf / sr + rng.uniform(0, 2 * np.pi)
    vib = _hann_smooth(vib_depth, int(0.1 / sec)) * np.sin(vib_phase)
    drift = _hann_smooth(np.cumsum(rng.normal(0, 0.02, nf)), int(0.2 / sec))
    drift -= drift.mean()
    pitch = midi + bend + vib + np.clip(drift, -0.08, 0.08)
    amp = _hann_smooth(amp, max(3, int(0.035 / sec)))
    for k in range(3):
        for j in range(5):
            fmt[k, j] = _hann_smooth(fmt[k, j], int(0.05 / sec))

    f0 = _midi_hz(pitch)
    top = min(5500.0, 0.45 * sr)  # above this the breath noise supplies the "air"
    n_h = int(top / f0.min())
    h = np.arange(1, n_h + 1)[:, None, None]
    fh = h * f0[None, None, :]  # [H, 1, nf]
    x = fh / fmt[0][None]  # [H, 5, nf]
    q = fmt[0] / fmt[2]
    res = 1.0 / np.sqrt((1.0 - x * x) ** 2 + (x / q[None]) ** 2) / q[None]  # peak 1 at F
    env = np.sum(fmt[1][None] * res, axis=1) + 10 ** (-48 / 20)  # [H, nf]; floor between formants
    env /= h[:, 0]  # glottal source: harmonics fall ~6 dB per octave
    env *= np.clip((top - fh[:, 0]) / (0.25 * top), 0.0, 1.0)  # fade out harmonics near the top
    env /= np.sqrt(np.sum(env * env, axis=0, keepdims=True)) + 1e-12  # loudness set by amp only
    # shimmer: tiny random loudness wobble, part of what makes a voice sound alive
    env *= amp[None] * (1.0 + 0.04 * _hann_smooth(rng.standard_normal(nf), 8))[None]

    idx = np.arange(n)
    phase = 2 * np.pi * np.cumsum(np.interp(idx, tf, f0)) / sr
    live = np.flatnonzero(amp > 1e-4)
    voice = np.zeros(n)
    if live.size:
        fa, fb = live[0], min(live[-1] + 1, nf - 1)  # synthesise only where the voice sounds
        a0, a1 = fa * hop, min(fb * hop, n)
        voice[a0:a1] = _harmonics(phase[a0:a1], env[:, fa:], hop)
    voice += _noise(rng, n, sr, lo=1500.0, hi=7500.0) * np.interp(idx, tf, amp) * 0.035  # breath

    for note in notes:
        if note.consonant is None:
            continue
        lo, hi, dur, level, before = _CONSONANTS[note.consonant]
        m = int(dur * sr)
        burst = _noise(rng, m, sr, lo=lo, hi=hi, order=3)
        if before:
            burst *= np.hanning(m + 2)[1:-1] ** 0.7
            pos = note.on - start - int(0.8 * m)
        else:
            k = np.arange(m)
            burst *= np.exp(-k / (0.3 * m)) * np.minimum(1.0, k / (0.001 * sr))
            pos = note.on - start
        _add(voice, pos, burst * level * note.gain)
    return start, voice


def _render_vocals(rng: np.random.Generator, plan: _Plan) -> tuple[np.ndarray, int]:
    """Dry lead voice, mono ``[n]`` (to be placed dead centre), and the number of notes sung."""
    dry = np.zeros(plan.n)
    count = 0
    for notes in _compose_melody(rng, plan):
        if notes[0].on >= plan.n:
            break
        # inhale before each phrase: quiet, but it tells the ear a person is singing
        m = int(0.22 * plan.sr)
        breath = _noise(rng, m, plan.sr, lo=900.0, hi=5000.0) * np.hanning(m) * 0.025
        _add(dry, notes[0].on - int(0.4 * plan.sr), breath)
        start, voice = _sing_phrase(rng, plan, notes)
        _add(dry, start, voice)
        count += sum(1 for note in notes if note.on < plan.n)
    return dry, count


# --------------------------------------------------------------------------------------------
# the song


def make_demo_song(
    seconds: float = 12.0,
    sample_rate: int = 44100,
    seed: int = 0,
    tempo_bpm: float | None = None,
) -> DemoSong:
    """Compose and synthesise a short song with ground-truth stems.

    Args:
        seconds: length; ``T = round(seconds * sample_rate)`` samples (> 0).
        sample_rate: Hz (>= 8000; 44100 is the model rate).
        seed: everything (tempo, key, progression, grooves, melody, noise) follows from it;
            the same seed always gives bit-identical audio.
        tempo_bpm: override the seeded tempo (otherwise 90..128 bpm). The other choices do
            not depend on it, so a seed keeps its key and tune at any tempo.

    Returns:
        :class:`DemoSong` with float32 ``[2, T]`` stems and mixture, the mixture peaking at
        about -1 dBFS. The first bar (two for songs of 24 s and more) has no vocals.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    sample_rate = int(sample_rate)
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000 Hz, got {sample_rate}")
    n = int(round(seconds * sample_rate))
    if n < 1:
        raise ValueError(f"{seconds} s at {sample_rate} Hz is less than one sample")

    # independent streams per part: changing one part's code never reshuffles the others
    song_rng, drum_rng, bass_rng, other_rng, voc_rng, mix_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    bpm = float(song_rng.integers(90, 129))
    if tempo_bpm is not None:
        if not 30.0 <= float(tempo_bpm) <= 300.0:
            raise ValueError(f"tempo_bpm must be in [30, 300], got {tempo_bpm}")
        bpm = float(tempo_bpm)
    tonic = int(song_rng.integers(12))
    progression = _PROGRESSIONS[song_rng.integers(len(_PROGRESSIONS))]
    bar_s = 240.0 / bpm
    n_bars = max(1, math.ceil(seconds / bar_s))
    intro = 2 if seconds >= 24.0 else (1 if n_bars >= 3 else 0)
    plan = _Plan(sample_rate, n, bpm, tonic, progression, n_bars, intro)

    drums, drum_send = _render_drums(drum_rng, plan)
    bass = _render_bass(bass_rng, plan)
    other, other_send = _render_other(other_rng, plan)
    dry_voice, n_notes = _render_vocals(voc_rng, plan)

    # Levels first (on the dry parts), then reverb sends in proportion, so the wet/dry balance
    # does not depend on how loud each part happened to be synthesised.
    def gain_for(x, name):
        rms = _active_rms(x, sample_rate)
        return 10.0 ** (_STEM_LEVEL_DB[name] / 20.0) * 0.1 / rms if rms > 0 else 0.0

    g_v = gain_for(dry_voice[None], "vocals")
    g_d = gain_for(drums, "drums")
    g_o = gain_for(other, "other")
    g_b = gain_for(bass, "bass")
    # One room for the band, a slightly longer plate-like tail for the voice. The vocal send
    # is small (-23 dB): enough to be heard, little enough that the voice stays a centre
    # source (its side energy is only the decorrelated part of the reverb).
    room = _reverb_ir(mix_rng, sample_rate, rt60=1.1, predelay=0.012, bright=6000.0)
    plate = _reverb_ir(mix_rng, sample_rate, rt60=1.6, predelay=0.03, bright=7000.0)
    wet_band = _convolve_sends(np.stack([drum_send * g_d, other_send * g_o]), room)
    wet_voice = _convolve_sends((dry_voice * g_v)[None], plate)[0]
    stems = {
        "vocals": np.stack([dry_voice * g_v, dry_voice * g_v]) + 10 ** (-23 / 20) * wet_voice,
        "drums": drums * g_d + 10 ** (-17 / 20) * wet_band[0],
        "bass": bass * g_b,
        "other": other * g_o + 10 ** (-11 / 20) * wet_band[1],
    }

    mix = stems["vocals"] + stems["drums"] + stems["bass"] + stems["other"]
    peak = max(float(np.max(np.abs(mix))), max(float(np.max(np.abs(s))) for s in stems.values()))
    scale = 10.0 ** (_PEAK_DBFS / 20.0) / peak if peak > 0 else 1.0
    out = {k: np.ascontiguousarray(v * scale, dtype=np.float32) for k, v in stems.items()}
    # the mixture is the float32 stems summed (in float64, one rounding), so stems sum to it
    mixture = np.ascontiguousarray(
        sum(out[k].astype(np.float64) for k in SOURCES), dtype=np.float32
    )

    key = f"{_NOTE_NAMES[tonic]} minor"
    chords = "-".join(
        _NOTE_NAMES[(tonic + st) % 12] + ("m" if q == "min" else "") for st, q, _ in progression
    )
    roman = "-".join(r for _, _, r in progression)
    sections = [plan.section(b) for b in range(n_bars)]
    structure = ", ".join(
        f"{sec} x{sum(1 for _ in grp)}" for sec, grp in _groupby(sections)
    )
    description = (
        f"Synthetic demo song, {seconds:g} s at {sample_rate} Hz, {bpm:g} bpm in {key}, "
        f"progression {roman} ({chords}), one chord per bar; bars: {structure}. "
        f"Vocals: formant-synthesised lead ({n_notes} notes, vowels a/e/i/o/u, vibrato, glides, "
        f"consonants), dry voice dead centre with decorrelated stereo reverb. "
        f"Drums: synthesised kick/snare/hats/toms/crash with fills. Bass: filter-enveloped saw "
        f"on the roots, centre. Other: wide detuned-saw pad and Karplus-Strong arpeggio panned "
        f"right with a ping-pong echo. Seed {seed}."
    )
    return DemoSong(out, mixture, sample_rate, bpm, key, description)


def _groupby(items):
    """Runs of equal consecutive items as (item, list) pairs."""
    runs: list[tuple[str, list]] = []
    for it in items:
        if runs and runs[-1][0] == it:
            runs[-1][1].append(it)
        else:
            runs.append((it, [it]))
    return runs
