"""The lead vocal from a pool of singers: pick one per song from the seed, sing, produce.

The default renderer sings with espeak-ng only (so the seeds of existing training sets keep
their audio). A :class:`VoicePool` adds human-recorded voices (Festival diphone and HTS
voices, flite: :mod:`.speakers`) and real vocal stems moved in pitch and formants
(:mod:`.realvocal`). :func:`sing_lead` then makes the vocal tracks of a song:

- the singer: an engine drawn uniformly among the pool's engines, then one of its voices
  (a real stem is moved into the song's key and tuning);
  the lead melody moves by octaves into that voice's range (a male voice sings a female
  line an octave down), formants move a few percent so one voice gives many singers;
- the lead: words driven along the melody by WORLD (scoops, portamento, vibrato, drift,
  release falls: :func:`.voice.sing_phrase`), an audible inhale before each phrase, level
  rides (per-phrase moves and a slow drift, as a singer moving on the microphone);
- sometimes a double-track: a second take (its own scoops and vibrato), a few cents off,
  10-35 ms late, placed to one side, 5-10 dB under the lead;
- the chorus harmony the composer wrote (a third above), by the same or a sibling voice,
  spread left and right.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import mix
from .realvocal import find_vocal_stems, sing_real
from .speakers import ENGINES, SpeakerError, SpeakerVoice, available_voices, prefetch
from .voice import Singer, SungNote, sing_phrase

__all__ = ["VoicePool", "sing_lead", "REAL"]

REAL = "real"  # the pool's name for real vocal stems


@dataclass(frozen=True)
class VoicePool:
    """The singers a song may get: ``voices`` of the speech engines, and real vocal stem
    ``real_files``. ``notes`` says what was skipped (missing packages).

    Build it with :meth:`build`; it is picklable (worker processes get a copy).
    """

    voices: tuple[SpeakerVoice, ...]
    real_files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def build(cls, engines: tuple[str, ...] | list[str] = ("espeak",),
              real_vocals: str | Path | None = None, real_skip: tuple[str, ...] = ()
              ) -> VoicePool:
        """The pool of ``engines`` (any of :data:`.speakers.ENGINES`; voices whose package is
        missing are skipped with a note) plus the vocal stems of the training folder
        ``real_vocals`` (songs named in ``real_skip`` left out).

        Raises:
            SpeakerError: unknown engine, or neither a voice nor a stem is available.
            RealVocalError: ``real_vocals`` is missing, empty or evaluation-only.
        """
        real = tuple(find_vocal_stems(real_vocals, real_skip)) if real_vocals else ()
        engines = tuple(engines)
        if not engines and not real:
            raise SpeakerError(f"no singer: expected at least one voice engine of "
                               f"{', '.join(ENGINES)} or a real-vocals folder")
        voices, notes = (), []
        if engines:
            try:
                found, notes = available_voices(engines)
                voices = tuple(found)
            except SpeakerError:
                if not real:
                    raise
                notes = [f"no voice of {', '.join(engines)} is installed: singing only the "
                         f"real vocal stems"]
        return cls(voices, real, tuple(notes))

    @property
    def engines(self) -> tuple[str, ...]:
        out = tuple(dict.fromkeys(v.engine for v in self.voices))
        return out + ((REAL,) if self.real_files else ())

    def describe(self) -> dict:
        """JSON-ready summary for song.json."""
        return {"engines": list(self.engines), "voices": len(self.voices),
                "real_files": len(self.real_files)}

    def pick(self, rng: np.random.Generator) -> SpeakerVoice | str:
        """An engine uniformly, then one of its voices uniformly; :data:`REAL` for a stem."""
        engine = self.engines[int(rng.integers(len(self.engines)))]
        if engine == REAL:
            return REAL
        cands = [v for v in self.voices if v.engine == engine]
        return cands[int(rng.integers(len(cands)))]


# comfortable centre of the melody for each voice (MIDI); compose writes female lines around
# 66 and male ones around 56
_CENTRE = {"m": 55.0, "f": 66.0}


def _ride(rng: np.random.Generator, n: int, sr: int, depth_db: float) -> np.ndarray:
    """A slow random level drift (linear gain ``[n]``), +-``depth_db`` at most, moving over
    seconds: a singer leaning in and away from the microphone."""
    k = max(2, int(np.ceil(n / sr / 0.5)) + 2)  # a point every half second
    pts = np.cumsum(rng.normal(0.0, depth_db / 3.0, k))
    pts = np.clip(pts - pts.mean(), -depth_db, depth_db)
    curve = np.interp(np.arange(n), np.linspace(0, n, k), pts)
    return 10.0 ** (curve / 20.0)


def _sing_take(phrases: list[list[SungNote]], singer: Singer, rng: np.random.Generator,
               sr: int, n_all: int, breaths: bool, phrase_db: float) -> np.ndarray:
    from livestems.model.evaluation.demo_song import _active_rms, _noise

    buf = np.zeros(n_all)
    for notes in phrases:
        t0, y = sing_phrase(notes, singer, rng, sr)
        y = y * mix.db_to_gain(rng.normal(0.0, phrase_db))
        start = int(round(t0 * sr))
        if breaths:  # an inhale before each phrase, 22-32 dB under the voice
            m = int(0.25 * sr)
            breath = _noise(rng, m, sr, lo=900.0, hi=6000.0) * np.hanning(m)
            level = _active_rms(y[None], sr) * mix.db_to_gain(-rng.uniform(22, 32))
            mix.place(buf, start - m + int(0.1 * sr), breath * level)
        mix.place(buf, start, y)
    return buf


def _transpose(phrases: list[list[SungNote]], semis: float, cents: float = 0.0
               ) -> list[list[SungNote]]:
    d = semis + cents / 100.0
    return [[dataclasses.replace(nt, midi=nt.midi + d) for nt in ph] for ph in phrases]


def sing_lead(song, pool: VoicePool, pick_rng: np.random.Generator,
              rng: np.random.Generator, sr: int, n_all: int
              ) -> tuple[list[tuple[str, str, np.ndarray]], dict]:
    """The vocal tracks of a composed ``song`` (:class:`.compose.Song`) sung by a singer of
    ``pool``.

    Args:
        pick_rng: chooses the singer (kept apart from ``rng`` so the choice of a seed does
            not depend on how many draws the singing used).
        rng: every other random choice.
        sr: sample rate in Hz; n_all: samples of the render (``song.render_seconds``).

    Returns:
        (tracks ``[(stem, role, float64 [2, n_all])]`` with roles ``vocals`` and
        ``harmony``, a JSON-ready description of the singer).
    """
    choice = pool.pick(pick_rng)
    if choice == REAL:
        lead, dbl, real = sing_real(list(pool.real_files), n_all / sr, rng, sr,
                                    (song.tonic, song.mode))
        lead = lead * _ride(rng, n_all, sr, 2.5)
        audio = np.stack([lead, lead])
        if dbl is not None:
            p = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.7))
            audio += mix.pan(dbl[None], p) * mix.db_to_gain(-rng.uniform(5, 10))
        return [("vocals", "vocals", audio)], {"engine": REAL, **dataclasses.asdict(real)}

    voice: SpeakerVoice = choice
    lead_notes = [nt.midi for ph in song.vocal_phrases for nt in ph]
    octave = 0
    if lead_notes:
        octave = int(12 * round((_CENTRE[voice.sex] - float(np.median(lead_notes))) / 12.0))
    base = song.singer
    singer = Singer(voice.name, float(rng.uniform(0.94, 1.07)), base.breathiness,
                    base.vibrato_hz, base.vibrato_st, base.scoop_st, engine=voice.engine)
    words = [nt.word for ph in song.vocal_phrases + song.harmony_phrases for nt in ph]
    if words:
        prefetch(voice, words)
    info = {"engine": voice.engine, "voice": voice.name, "language": voice.language,
            "octave_shift": octave, "formant_shift": round(singer.formant_shift, 3),
            "breathiness": round(singer.breathiness, 3)}
    tracks = []
    if song.vocal_phrases:
        phrases = _transpose(song.vocal_phrases, octave)
        lead = _sing_take(phrases, singer, rng, sr, n_all, True, 1.5)
        lead *= _ride(rng, n_all, sr, 2.0)
        audio = np.stack([lead, lead])
        if rng.random() < 0.45:
            cents = float(rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 12.0))
            delay_ms = float(rng.uniform(10.0, 35.0))
            twin = dataclasses.replace(singer, formant_shift=singer.formant_shift
                                       * float(rng.uniform(0.985, 1.015)))
            take = _sing_take(_transpose(song.vocal_phrases, octave, cents), twin, rng, sr,
                              n_all, False, 1.0)
            d = int(round(delay_ms * 1e-3 * sr))
            take = np.concatenate([np.zeros(d), take[: n_all - d]])
            p = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.7))
            level_db = -float(rng.uniform(5.0, 10.0))
            audio += mix.pan(take[None], p) * mix.db_to_gain(level_db)
            info["double_track"] = {"cents": round(cents, 1), "delay_ms": round(delay_ms, 1),
                                    "pan": round(p, 2), "level_db": round(level_db, 1)}
        tracks.append(("vocals", "vocals", audio))
    if song.harmony_phrases:
        hsinger = dataclasses.replace(singer, formant_shift=singer.formant_shift
                                      * float(rng.uniform(0.97, 1.04)),
                                      breathiness=min(0.8, singer.breathiness + 0.15),
                                      vibrato_st=singer.vibrato_st * 0.7,
                                      scoop_st=singer.scoop_st * 0.5)
        buf = _sing_take(_transpose(song.harmony_phrases, octave), hsinger, rng, sr, n_all,
                         False, 1.0)
        d = int(0.018 * sr)
        late = np.concatenate([np.zeros(d), buf[:-d]])
        p = rng.uniform(0.4, 0.8)
        tracks.append(("vocals", "harmony",
                       mix.pan(buf[None], -p) * 0.6 + mix.pan(late[None], p) * 0.6))
        info["harmony"] = True
    return tracks, info


def print_notes(pool: VoicePool) -> None:
    """One line on stderr per skipped engine or voice."""
    for note in pool.notes:
        print(f"note: {note}", file=sys.stderr)
