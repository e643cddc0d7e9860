"""New singers from real vocal stems: a random excerpt, moved in pitch and formants by WORLD.

A real singer recorded once becomes many: WORLD (pyworld: DIO + StoneMask pitch, CheapTrick
envelope, D4C aperiodicity) analyses an excerpt of a vocal stem, the pitch track is scaled by
``2 ** (semitones / 12)`` and the spectral envelope is warped along frequency (formants up or
down: a smaller or larger vocal tract), and WORLD resynthesises it. Breath, consonants,
phrasing, vibrato and the room stay those of the real performance. In a song the move is the
one that puts the singing into the song's key and tuning (:func:`key_shift`).

Only training material may come in here. ``../shared/data/real`` holds the recordings kept for
evaluation: :func:`find_vocal_stems` refuses any folder named ``real`` under a ``data``
folder, so evaluation songs cannot leak into training data by a typo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .voice import FRAME_MS, VoiceError, _pyworld, warp_envelope

__all__ = ["STEM_SUFFIXES", "RealSinger", "RealVocalError", "find_vocal_stems", "key_shift",
           "read_excerpt", "shift_voice", "sing_real"]

STEM_SUFFIXES = (".opus", ".ogg", ".flac", ".wav", ".mp3")
_ACTIVE_DB = -45.0  # a 50 ms frame quieter than this (RMS, dBFS) counts as a rest


class RealVocalError(VoiceError):
    """The vocal-stem folder is missing, empty, evaluation-only or unreadable."""


def _is_eval_only(folder: Path) -> bool:
    parts = folder.resolve().parts
    return any(a == "data" and b == "real" for a, b in zip(parts, parts[1:]))


def find_vocal_stems(folder: str | Path, skip: tuple[str, ...] | list[str] = ()) -> list[Path]:
    """The vocal stems of a training folder: ``folder/<song>/vocals.<ext>`` (MUSDB layout)
    and ``folder/vocals.<ext>``, ext one of :data:`STEM_SUFFIXES`; songs whose folder name is
    in ``skip`` (e.g. a validation song) are left out. Sorted, so a seed always picks the
    same file.

    Raises:
        RealVocalError: no such folder, no stem in it, or an evaluation-only folder.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise RealVocalError(f"real-vocals folder {root} does not exist: expected a training "
                             f"folder of <song>/vocals.opus|flac|wav stems, e.g. "
                             f"../shared/data/train-real")
    if _is_eval_only(root):
        raise RealVocalError(f"{root} is evaluation-only (a data/real folder): its songs must "
                             f"never become training data. Fix: name a training folder, e.g. "
                             f"../shared/data/train-real")
    found = [p for p in sorted(root.glob("*/vocals.*")) + sorted(root.glob("vocals.*"))
             if p.suffix.lower() in STEM_SUFFIXES and p.is_file()
             and p.parent.name not in set(skip)]
    if not found:
        raise RealVocalError(f"no vocal stem in {root}: expected <song>/vocals.<ext> with ext "
                             f"one of {', '.join(STEM_SUFFIXES)}"
                             + (f" (skipped songs: {', '.join(skip)})" if skip else ""))
    return found


def _active_fraction(x: np.ndarray, sr: int) -> float:
    n = int(0.05 * sr)
    m = x.size // n
    if m == 0:
        return 0.0
    rms = np.sqrt(np.mean(x[: m * n].reshape(m, n) ** 2, axis=1))
    return float(np.mean(rms > 10 ** (_ACTIVE_DB / 20)))


def read_excerpt(path: str | Path, seconds: float, rng: np.random.Generator,
                 tries: int = 8, min_active: float = 0.5) -> tuple[np.ndarray, int, float]:
    """A mono excerpt of ``seconds`` from a vocal stem, where the singer sings.

    Draws up to ``tries`` start times from ``rng`` and keeps the first excerpt whose 50 ms
    frames are at least ``min_active`` above -45 dBFS (else the most active one).

    Returns:
        (float64 mono ``[round(seconds * sr)]``, the file's rate in Hz, start in seconds);
        zero-padded when the file is shorter than ``seconds``.
    """
    with sf.SoundFile(str(path)) as f:
        sr = int(f.samplerate)
        n = int(round(seconds * sr))
        best = (-1.0, np.zeros(n), 0.0)
        for _ in range(max(1, tries)):
            start = int(rng.integers(0, max(1, f.frames - n)))
            f.seek(start)
            x = f.read(n, dtype="float64", always_2d=True).mean(axis=1)
            x = np.pad(x, (0, n - x.size))
            act = _active_fraction(x, sr)
            if act > best[0]:
                best = (act, x, start / sr)
            if act >= min_active:
                break
    return best[1], sr, best[2]


def _world(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD analysis of mono ``x``: (f0 Hz ``[F]``, 0 where unvoiced; envelope and
    aperiodicity ``[F, bins]``), 5 ms frames."""
    pw = _pyworld()
    f0, t = pw.dio(x, sr, f0_floor=60.0, f0_ceil=1000.0, frame_period=FRAME_MS)
    f0 = pw.stonemask(x, f0, t, sr)
    return f0, pw.cheaptrick(x, f0, t, sr), pw.d4c(x, f0, t, sr)


def _check_mono(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono vocal [n], got shape {x.shape}")
    return x


def _resynth(analysis, n: int, sr: int, semitones: float, formant_factor: float,
             detune_cents: tuple[float, ...]) -> list[np.ndarray]:
    pw = _pyworld()
    if not -24 <= semitones <= 24:
        raise ValueError(f"semitones must be in -24..24, got {semitones}")
    if not 0.5 <= formant_factor <= 2.0:
        raise ValueError(f"formant_factor must be in 0.5..2, got {formant_factor}")
    f0, sp, ap = analysis
    if abs(formant_factor - 1.0) > 1e-3:
        sp = np.ascontiguousarray(warp_envelope(sp, formant_factor))
    outs = []
    for cents in detune_cents:
        ratio = 2.0 ** ((semitones + cents / 100.0) / 12.0)
        y = pw.synthesize(np.ascontiguousarray(f0 * ratio), sp, ap, sr, FRAME_MS)
        outs.append(y[:n] if y.size >= n else np.pad(y, (0, n - y.size)))
    return outs


def shift_voice(x: np.ndarray, sr: int, semitones: float, formant_factor: float = 1.0,
                detune_cents: tuple[float, ...] = (0.0,)) -> list[np.ndarray]:
    """Move a mono vocal ``x`` ``[n]`` at ``sr`` Hz by ``semitones`` (-24..24) and warp its
    formants by ``formant_factor`` (0.5..2, see :func:`.voice.warp_envelope`) with WORLD.

    One analysis serves several takes: each entry of ``detune_cents`` gives one output,
    shifted by ``semitones + cents / 100`` (a double-track is a take a few cents off).

    Returns:
        one float64 ``[n]`` per detune entry, at ``sr``.
    """
    x = _check_mono(x)
    return _resynth(_world(x, sr), x.size, sr, semitones, formant_factor, detune_cents)


def key_shift(f0_hz: np.ndarray, tonic: int, mode: str) -> tuple[int, float]:
    """The move that puts a sung pitch track into a song's key.

    Args:
        f0_hz: pitch track ``[F]`` in Hz, 0 where unvoiced.
        tonic: pitch class of the key (0 = C); mode: ``"major"`` or ``"minor"``.

    Returns:
        (semitones in -6..5 that put the most singing time on the notes of the scale, a
        tuning correction in cents in -50..50 that centres the singer's notes on the
        semitone grid of A = 440 Hz). (0, 0.0) when nothing is voiced.
    """
    from .compose import SCALES

    if mode not in SCALES:
        raise ValueError(f"mode must be one of {', '.join(SCALES)}, got {mode!r}")
    midi = 69.0 + 12.0 * np.log2(f0_hz[f0_hz > 0] / 440.0)
    if midi.size == 0:
        return 0, 0.0
    # the singer's tuning: circular mean of the distance to the nearest semitone
    ang = 2 * np.pi * (midi - np.round(midi))
    tuning = float(np.angle(np.mean(np.exp(1j * ang))) / (2 * np.pi))  # semitones, -0.5..0.5
    pcs = np.round(midi - tuning).astype(int) % 12
    hist = np.bincount(pcs, minlength=12).astype(float)
    in_scale = np.zeros(12, bool)
    in_scale[[(tonic + s) % 12 for s in SCALES[mode]]] = True
    best = max(range(-6, 6), key=lambda r: (hist[in_scale[(np.arange(12) + r) % 12]].sum(),
                                            -abs(r)))
    return int(best), round(-100.0 * tuning, 1)


@dataclass(frozen=True)
class RealSinger:
    """What :func:`sing_real` made: the source ``file``, excerpt ``start_s``, the pitch move
    ``semitones`` plus ``tuning_cents``, the ``formant_shift`` factor, and the double-track's
    ``double_cents`` and ``double_delay_ms`` (None when the take is single)."""

    file: str
    start_s: float
    semitones: int
    tuning_cents: float
    formant_shift: float
    double_cents: float | None
    double_delay_ms: float | None


def sing_real(files: list[Path], seconds: float, rng: np.random.Generator, sample_rate: int,
              key: tuple[int, str] | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, RealSinger]:
    """A new singer from one of ``files``: a random excerpt of ``seconds``, moved in pitch
    with formants following part of the way (as between real singers of different range),
    sometimes double-tracked.

    The pitch move: with ``key`` = (tonic pitch class, ``"major"``/``"minor"``) the one of
    -6..5 semitones that puts the singing in that key, tuned to the song's A = 440 Hz
    (:func:`key_shift`), so the voice sits in the harmony as in a real song; without, a
    random -5..5.

    Returns:
        (lead float64 ``[round(seconds * sample_rate)]``, the double-track take of the same
        length or None, a :class:`RealSinger` describing them).
    """
    import soxr

    path = files[int(rng.integers(len(files)))]
    x, sr, start_s = read_excerpt(path, seconds, rng)
    analysis = _world(x, sr)
    if key is not None:
        semis, tune_cents = key_shift(analysis[0], *key)
    else:
        semis, tune_cents = int(rng.integers(-5, 6)), 0.0
    formant = float(2.0 ** (semis / 12.0 * rng.uniform(0.3, 0.8)) * rng.uniform(0.95, 1.05))
    double = rng.random() < 0.35
    cents = float(rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 14.0)) if double else None
    takes = _resynth(analysis, x.size, sr, semis + tune_cents / 100.0, formant,
                     (0.0,) if cents is None else (0.0, cents))
    n = int(round(seconds * sample_rate))

    def fit(y: np.ndarray) -> np.ndarray:
        y = soxr.resample(y, sr, sample_rate, quality="HQ") if sr != sample_rate else y
        return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))

    lead = fit(takes[0])
    delay_ms = dbl = None
    if cents is not None:
        delay_ms = float(rng.uniform(12.0, 35.0))
        d = int(round(delay_ms * 1e-3 * sample_rate))
        dbl = np.concatenate([np.zeros(d), fit(takes[1])[: n - d]])
    return lead, dbl, RealSinger(
        f"{path.parent.name}/{path.name}", round(start_s, 3), semis, tune_cents,
        round(formant, 4), None if cents is None else round(cents, 2),
        None if delay_ms is None else round(delay_ms, 2))
