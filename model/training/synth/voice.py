"""Sung vocals from speech: a voice says each word, WORLD re-pitches and stretches it to a note.

The words come from espeak-ng (the default: intelligible words with real consonants and vowel
formants but a robotic, spoken prosody) or, with ``Singer.engine``, from the human-recorded
Festival, HTS and flite voices of :mod:`.speakers`, analysed at their own rate. Each word is analysed once with the WORLD vocoder
(pyworld: DIO + StoneMask pitch, CheapTrick spectral envelope, D4C aperiodicity) and then sung:

- the onset consonant is kept at its natural speed and placed just *before* the beat, as
  singers do, the vowel is stretched to fill the note, the coda consonant closes it;
- the pitch follows the melody, with scoops into notes, portamento between legato notes,
  delayed-onset vibrato, slow drift and a falling release at phrase ends;
- the singer's timbre comes from the espeak voice variant plus a formant shift (a warp of the
  spectral envelope along frequency) and a breathiness setting (aperiodicity raised above
  2 kHz); the band above espeak's 11 kHz limit is filled with aperiodic "air".

Word analyses are cached per process (lyrics repeat), so a song costs little more than the
synthesis of its phrases.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .speakers import VoiceError, say, speak, voice_by_key

__all__ = ["LYRIC_WORDS", "SungNote", "Singer", "VoiceError", "say", "sing_phrase",
           "warp_envelope"]

FRAME_MS = 5.0

# Words that lyrics are made of (one per note); long notes get open-vowel words or "oh"/"ah".
LYRIC_WORDS = (
    "love", "you", "me", "night", "day", "heart", "fire", "dream", "go", "home", "light",
    "time", "away", "shine", "run", "feel", "know", "tonight", "baby", "hold", "on", "stay",
    "life", "way", "rain", "sky", "down", "fall", "free", "high", "gone", "dance", "sun",
    "alone", "world", "eyes", "mind", "soul", "say", "burn", "wild", "cold", "gold", "blue",
    "road", "more", "now", "never", "again", "we", "are", "all", "so", "long", "find",
)
OPEN_WORDS = ("oh", "ah", "yeah", "ooh", "hey", "no", "I", "why", "fly", "more", "so", "low")

@dataclass(frozen=True)
class Singer:
    """A voice: espeak-ng ``voice`` name (e.g. ``en-us+f3``), ``formant_shift`` (envelope
    frequency factor, 1 = unchanged, >1 brighter/smaller), ``breathiness`` 0..1, vibrato
    ``vibrato_hz`` and ``vibrato_st`` (depth in semitones), ``scoop_st`` (how far below a
    note attacks start, semitones)."""

    voice: str = "en-us"
    formant_shift: float = 1.0
    breathiness: float = 0.2
    vibrato_hz: float = 5.5
    vibrato_st: float = 0.35
    scoop_st: float = 0.7
    engine: str = "espeak"  # who says the words: see .speakers.ENGINES (voice is its name)


@dataclass(frozen=True)
class SungNote:
    """A note of the lead: ``start_s``/``end_s`` seconds (the vowel's onset and end),
    ``midi`` pitch, ``word`` to sing, ``gain`` linear loudness (~0.5-1), ``legato`` True
    when it glides into the next note."""

    start_s: float
    end_s: float
    midi: float
    word: str
    gain: float = 1.0
    legato: bool = False


# --------------------------------------------------------------------------------------------
# WORLD analysis of a word

@dataclass(frozen=True)
class _Word:
    voiced: np.ndarray  # [F] bool
    sp: np.ndarray  # [F, bins] power envelope at the synthesis rate, nucleus power ~1
    ap: np.ndarray  # [F, bins]
    v0: int  # first frame of the voiced nucleus
    v1: int  # one past its last frame
    sample_rate: int  # of the analysis (espeak's 22050 Hz)


def _pyworld():
    try:
        import pyworld
    except ImportError as exc:
        raise VoiceError("pyworld is not installed: expected the WORLD vocoder bindings. "
                         "Fix: pip install pyworld-prebuilt") from exc
    return pyworld


@functools.lru_cache(maxsize=1024)
def _analyse(word: str, voice: str, engine: str = "espeak") -> _Word:
    """WORLD parameters of ``word`` spoken by ``voice`` of ``engine``, at the engine's rate
    (22050 Hz for espeak-ng, 16000-44100 Hz for the others: see :func:`.speakers.speak`)."""
    pw = _pyworld()
    if engine == "espeak":
        x, sr = say(word, voice, 110)
    else:
        x, sr = speak(voice_by_key(f"{engine}:{voice}"), word)
    if x.size == 0:
        raise VoiceError(f"{engine} produced no audio for {word!r} with voice {voice!r}")
    # trim the silence espeak puts around a word (keep 20 ms)
    env = np.convolve(np.abs(x), np.ones(64) / 64, mode="same")
    loud = np.flatnonzero(env > env.max() * 10 ** (-45 / 20))
    pad = int(0.02 * sr)
    x = x[max(0, loud[0] - pad): loud[-1] + pad]
    f0, t = pw.dio(x, sr, f0_floor=60.0, f0_ceil=500.0, frame_period=FRAME_MS)
    f0 = pw.stonemask(x, f0, t, sr)
    sp = pw.cheaptrick(x, f0, t, sr)
    ap = pw.d4c(x, f0, t, sr)
    voiced = f0 > 0
    # the nucleus is the longest voiced run (vowel plus voiced consonants around it)
    runs, start = [], None
    for i, v in enumerate(np.append(voiced, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((i - start, start, i))
            start = None
    if runs:
        _, v0, v1 = max(runs)
    else:
        v0, v1 = 0, len(f0)
    sp = sp / max(float(np.mean(np.sum(sp[v0:v1], axis=1))), 1e-20)
    return _Word(voiced, np.ascontiguousarray(sp), np.ascontiguousarray(ap), int(v0), int(v1),
                 int(sr))


def warp_envelope(sp: np.ndarray, factor: float) -> np.ndarray:
    """Move the formants of WORLD spectral envelopes ``sp`` ``[frames, bins]`` up by
    ``factor`` in frequency (>1 a smaller, brighter vocal tract; <1 a larger, darker one):
    bin k takes the envelope at k / factor, interpolated linearly."""
    bins = sp.shape[1]
    src_bin = np.arange(bins) / factor
    i0 = np.clip(np.floor(src_bin).astype(int), 0, bins - 1)
    i1 = np.clip(i0 + 1, 0, bins - 1)
    frac = np.clip(src_bin - i0, 0.0, 1.0)
    return sp[:, i0] * (1 - frac) + sp[:, i1] * frac


def _hann_smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width < 3:
        return x
    k = np.hanning(width + 2)[1:-1]
    k /= k.sum()
    pad = width // 2 + 1
    xp = np.concatenate([np.full(pad, x[0]), x, np.full(pad, x[-1])])
    return np.convolve(xp, k, mode="same")[pad:-pad]


def sing_phrase(notes: list[SungNote], singer: Singer, rng: np.random.Generator,
                sample_rate: int = 44100) -> tuple[float, np.ndarray]:
    """Sing one phrase (notes in time order, not overlapping).

    Returns:
        (start time in seconds of the returned audio, float64 mono ``[n]`` at
        ``sample_rate``); the audio starts before the first note (its onset consonant) and
        ends after the release of the last one. Peak level follows the notes' ``gain``
        (unit-power vowels), not normalised.
    """
    pw = _pyworld()
    if not notes:
        raise ValueError("sing_phrase needs at least one note")
    fp = FRAME_MS / 1000.0
    words = [_analyse(nt.word, singer.voice, singer.engine) for nt in notes]
    world_sr = words[0].sample_rate
    lead = 0.25  # seconds of room before the first note for its consonant
    t0 = notes[0].start_s - lead
    tail = 0.4
    n_frames = int(np.ceil((notes[-1].end_s + tail - t0) / fp)) + 1
    bins = words[0].sp.shape[1]
    sp = np.full((n_frames, bins), 1e-16)
    ap = np.ones((n_frames, bins))
    voiced = np.zeros(n_frames, dtype=bool)
    target = np.full(n_frames, float(notes[0].midi))  # pitch target, semitones
    amp = np.zeros(n_frames)
    vib = np.zeros(n_frames)
    bend = np.zeros(n_frames)

    prev_end = 0
    for i, (nt, w) in enumerate(zip(notes, words)):
        on = int(round((nt.start_s - t0) / fp))
        off = max(on + 4, int(round((nt.end_s - t0) / fp)))
        onset = min(w.v0, 24)  # consonant frames kept, at most 120 ms
        coda = min(len(w.voiced) - w.v1, 20)
        c0 = max(on - onset, prev_end)
        # source frame for every output frame of this note: onset consonant 1:1 ahead of the
        # beat, the first 40 ms of the vowel 1:1 (its transition), the rest stretched, coda 1:1
        src_on = np.arange(w.v0 - (on - c0), w.v0)
        body = max(off - coda - on, 1)
        nuc = w.v1 - w.v0
        head = min(8, nuc, body)
        src_body = np.concatenate([
            w.v0 + np.arange(head),
            w.v0 + head + np.linspace(0, max(nuc - head - 1, 0), body - head),
        ]) if body > head else w.v0 + np.arange(body)
        src_coda = np.arange(w.v1, w.v1 + coda)
        src = np.clip(np.round(np.concatenate([src_on, src_body, src_coda])).astype(int),
                      0, len(w.voiced) - 1)
        end = min(c0 + len(src), n_frames)
        src = src[: end - c0]
        sp[c0:end] = w.sp[src] * nt.gain**2
        ap[c0:end] = w.ap[src]
        voiced[c0:end] = w.voiced[src]
        voiced[on:on + body] = True  # the sung vowel never drops out, whatever espeak did
        target[on:] = nt.midi
        amp[c0:end] = nt.gain
        prev_end = end
        if not (i > 0 and notes[i - 1].legato):
            # attack from below, settling in ~60 ms
            k = np.arange(n_frames - on) * fp
            bend[on:] -= singer.scoop_st * rng.uniform(0.5, 1.0) * np.exp(-k / 0.06)
        dur = (off - on) * fp
        if dur > 0.35:
            k = np.arange(off - on) * fp
            vib[on:off] = np.maximum(vib[on:off], np.clip((k - 0.2) / 0.3, 0.0, 1.0))
    last_off = int(round((notes[-1].end_s - t0) / fp))
    k = np.arange(max(n_frames - last_off, 0)) * fp
    bend[last_off:] -= 1.5 * (1.0 - np.exp(-k / 0.12))  # pitch falls off at the phrase end

    glide = max(3, int(0.07 / fp))
    pitch = _hann_smooth(target, glide) + bend
    rate = singer.vibrato_hz * rng.uniform(0.93, 1.07)
    phase = 2 * np.pi * np.cumsum(np.full(n_frames, rate * fp)) + rng.uniform(0, 2 * np.pi)
    pitch += singer.vibrato_st * _hann_smooth(vib, 20) * np.sin(phase)
    drift = _hann_smooth(np.cumsum(rng.normal(0.0, 0.015, n_frames)), 40)
    pitch += np.clip(drift - drift.mean(), -0.12, 0.12)
    f0 = np.where(voiced, 440.0 * 2.0 ** ((pitch - 69.0) / 12.0), 0.0)

    # timbre: formant shift (warp the envelope), breathiness (aperiodicity above 2 kHz)
    freqs = np.arange(bins) * (world_sr / 2.0) / (bins - 1)
    if abs(singer.formant_shift - 1.0) > 1e-3:
        sp = warp_envelope(sp, singer.formant_shift)
    breath = singer.breathiness * np.clip((freqs - 2000.0) / 4000.0, 0.0, 1.0)
    ap = ap + (1.0 - ap) * breath[None]
    # shimmer: small slow loudness wobble, part of what makes a held note sound alive
    sp *= (1.0 + 0.08 * _hann_smooth(rng.standard_normal(n_frames), 12))[:, None] ** 2
    y = pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(sp),
                      np.ascontiguousarray(np.clip(ap, 0.0, 1.0)), world_sr, FRAME_MS)
    if sample_rate != world_sr:
        y = _to_rate(y, world_sr, sample_rate, rng)
    return t0, y


def _to_rate(y: np.ndarray, sr_in: int, sr_out: int, rng: np.random.Generator) -> np.ndarray:
    """Resample WORLD's output and, above its Nyquist, add "air": noise following the
    envelope of the voice's 5-10 kHz band, continuing its level (sibilants and breath of a
    real vocal reach 16 kHz and more; a model must not learn that vocals stop at 11 kHz)."""
    import soxr
    from scipy.signal import sosfilt

    from .mix import biquad

    out = soxr.resample(y, sr_in, sr_out, quality="HQ")
    if sr_out <= sr_in:
        return out
    band = sosfilt(np.concatenate([biquad("highpass", 5000.0, sr_in, 0.7),
                                   biquad("lowpass", 10000.0, sr_in, 0.7)]), y)
    k = max(1, int(0.01 * sr_in))
    env = np.sqrt(np.convolve(band * band, np.ones(k) / k, mode="same"))
    env = np.interp(np.arange(out.size) * (sr_in / sr_out), np.arange(env.size), env)
    noise = sosfilt(np.concatenate([biquad("highpass", 0.45 * sr_in, sr_out, 0.7),
                                    biquad("highpass", 0.45 * sr_in, sr_out, 0.7),
                                    biquad("highshelf", 14000.0, sr_out, 0.7, -9.0)]),
                    rng.standard_normal(out.size))
    return out + 0.35 * env * noise
