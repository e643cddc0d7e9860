"""Render a composed song to mixed stems: FluidSynth parts, sung vocals, mixing, mastering.

:func:`render_song` is the generator's entry point: a seed in, four stereo stems and their
exact sum out. The pipeline:

1. :func:`.compose.compose` plans the song (style, chords, structure, notes, lyrics).
2. Every instrument part is rendered through FluidSynth (General MIDI sound font), the lead
   and backing vocals are sung by :mod:`.voice` (espeak-ng), or, given a voice pool, by a
   singer of :mod:`.singers` drawn from a fifth random stream of the seed.
3. Each part goes through a channel strip chosen for its role (high-pass, EQ moves,
   compression, pan position, stereo width, double tracking, echo) and is levelled; the parts
   of a stem share reverbs (a room for the band, a plate for the voices) whose returns belong
   to that stem, as in the multitracks of MUSDB18.
4. The master bus (glue compressor and limiter) computes one gain curve from the mixture and
   applies it to every stem, so the stems still sum to the mastered mixture exactly.

Every random choice comes from ``numpy.random.SeedSequence(seed)``; FluidSynth and WORLD are
deterministic, so one seed always gives the same audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from livestems.model.evaluation.demo_song import _active_rms, _convolve_sends, _noise, _reverb_ir
from . import mix
from .compose import chord_name, compose
from .fluid import get_renderer
from .singers import VoicePool, sing_lead
from .voice import sing_phrase

__all__ = ["SOURCES", "SynthSong", "render_song"]

SOURCES = ("vocals", "drums", "bass", "other")
# typical relative stem loudness (dB, active RMS) and how far a song strays from it
_STEM_LEVEL_DB = {"vocals": (0.0, 1.5), "drums": (0.0, 2.5), "bass": (-3.0, 2.5), "other": (-2.5, 3.0)}


@dataclass
class SynthSong:
    """A rendered synthetic song.

    Attributes:
        stems: ``vocals, drums, bass, other`` -> float32 C-contiguous ``[2, T]`` (stereo,
            linear full scale, ``T = round(seconds * sample_rate)``).
        mixture: float32 ``[2, T]``: the stems summed in float64 and rounded once.
        sample_rate: Hz.
        seed: the seed it was made from.
        info: JSON-ready description (style, tempo, key, chords, sections, instruments, singer,
            which stems are silent), written beside the audio by ``livestems synth``.
    """

    stems: dict[str, np.ndarray]
    mixture: np.ndarray
    sample_rate: int
    seed: int
    info: dict = field(default_factory=dict)


def _strip(rng: np.random.Generator, role: str, x: np.ndarray, sr: int, bpm: float
           ) -> tuple[np.ndarray, float, str]:
    """Channel strip for one part: returns (processed [2, n], reverb send level, pan text)."""
    bands: list[tuple] = []
    send = 0.0
    desc = "centre"
    if role == "drums":
        bands = [("highpass", 30.0, 0.7, 0.0), ("lowshelf", 90.0, 0.7, rng.uniform(0, 4)),
                 ("peak", rng.uniform(300, 600), 1.0, -rng.uniform(0, 4)),
                 ("highshelf", 8000.0, 0.7, rng.uniform(-1, 4))]
        x = mix.eq(x, sr, bands)
        x = mix.compress(x, sr, -20 + rng.uniform(-4, 4) + 20 * np.log10(np.abs(x).max() + 1e-9),
                         rng.uniform(2.5, 6), rng.uniform(3, 15), rng.uniform(60, 200))
        x = mix.width(x, rng.uniform(0.7, 1.2))
        send = rng.uniform(0.1, 0.35)
    elif role == "bass":
        bands = [("highpass", rng.uniform(30, 45), 0.7, 0.0),
                 ("peak", rng.uniform(600, 1200), 1.2, rng.uniform(-3, 4)),
                 ("lowpass", rng.uniform(3000, 9000), 0.7, 0.0)]
        x = mix.eq(x, sr, bands)
        x = mix.compress(x, sr, -14 + 20 * np.log10(np.abs(x).max() + 1e-9), rng.uniform(3, 8),
                         rng.uniform(5, 20), rng.uniform(80, 250))
        x = mix.pan(mix.width(x, rng.uniform(0.0, 0.3)), rng.normal(0, 0.05))
        send = rng.uniform(0.0, 0.08)
    elif role in ("vocals", "harmony", "choir"):
        bands = [("highpass", rng.uniform(80, 130), 0.7, 0.0),
                 ("peak", rng.uniform(250, 450), 1.0, -rng.uniform(0, 3)),
                 ("peak", rng.uniform(2500, 5000), 0.9, rng.uniform(1, 5)),
                 ("highshelf", 10000.0, 0.7, rng.uniform(0, 4))]
        x = mix.eq(x, sr, bands)
        x = mix.compress(x, sr, -12 + 20 * np.log10(np.abs(x).max() + 1e-9), rng.uniform(2.5, 5),
                         rng.uniform(2, 10), rng.uniform(60, 200))
        send = rng.uniform(0.15, 0.4) if role == "vocals" else rng.uniform(0.3, 0.6)
    else:  # chord parts and leads: clear the lows for the bass and kick, shape, place
        hp = {"block": 150, "strum": 120, "power": 90, "stabs": 140, "arp": 160, "lead": 180}
        bands = [("highpass", hp.get(role, 120) * rng.uniform(0.7, 1.4), 0.7, 0.0),
                 ("peak", rng.uniform(400, 3000), 1.0, rng.uniform(-4, 3)),
                 ("highshelf", rng.uniform(6000, 10000), 0.7, rng.uniform(-4, 2))]
        x = mix.eq(x, sr, bands)
        if rng.random() < 0.6:
            x = mix.compress(x, sr, -10 + 20 * np.log10(np.abs(x).max() + 1e-9),
                             rng.uniform(2, 4), rng.uniform(5, 30), rng.uniform(80, 300))
        if role == "power" or (role == "strum" and rng.random() < 0.5):
            # double tracking: hard left and right, the copy slightly late and detuned-sounding
            d = int(rng.uniform(0.012, 0.025) * sr)
            mono = x.mean(axis=0)
            late = np.concatenate([np.zeros(d), mono[: mono.size - d]])
            late = mix.eq(late[None], sr, [("peak", rng.uniform(800, 2500), 1.5, rng.uniform(-3, 3))])[0]
            x = np.stack([mono * 0.9 + late * 0.1, late * 0.9 + mono * 0.1])
            desc = "double-tracked L/R"
        elif role == "block":
            x = mix.width(x, rng.uniform(1.0, 1.6))
            x = mix.pan(x, rng.normal(0, 0.15))
            desc = "wide"
        else:
            p = float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.8)) if role != "lead" else rng.normal(0, 0.25)
            x = mix.pan(mix.width(x, rng.uniform(0.2, 0.8)), p)
            desc = f"pan {p:+.2f}"
        send = rng.uniform(0.15, 0.5)
        if role == "lead" and rng.random() < 0.6:
            beat = 60.0 / bpm
            x = x + 0.3 * mix.echo(x, sr, beat * float(rng.choice([0.5, 0.75, 1.0])), 0.45, 4, True)
    return x, send, desc


def render_song(seed: int, seconds: float = 10.0, sample_rate: int = 44100,
                style: str | None = None, soundfont: str | None = None,
                voices: VoicePool | None = None) -> SynthSong:
    """Compose, play and mix a song from ``seed``.

    Args:
        seed: any non-negative int; everything follows from it.
        seconds: clip length, ``T = round(seconds * sample_rate)`` samples (0.5 .. 600 s).
        sample_rate: Hz (22050 .. 96000; 44100 is the model rate).
        style: force a style (see :data:`.compose.STYLES`); None draws one from the seed.
        soundfont: General MIDI .sf2 (default: FluidR3_GM from Debian's fluid-soundfont-gm).
        voices: the singers to draw from (:class:`.singers.VoicePool`); None sings with
            espeak-ng as the first renderer did, so seeds keep their audio.

    Returns:
        :class:`SynthSong` whose mixture peaks between -1 and -4 dBFS.
    """
    if not 0.5 <= seconds <= 600:
        raise ValueError(f"seconds must be in 0.5..600, got {seconds}")
    if not 22050 <= sample_rate <= 96000:
        raise ValueError(f"sample_rate must be 22050..96000 Hz, got {sample_rate}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    sr = int(sample_rate)
    # a fifth stream picks the singer of a voice pool; the first four are as they always were
    comp_rng, voice_rng, mix_rng, rev_rng, pick_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    song = compose(comp_rng, seconds, style)
    n_all = int(math.ceil(song.render_seconds * sr))
    synth = get_renderer(soundfont, sr)

    # ---- play every part -------------------------------------------------------------------
    tracks: list[tuple[str, str, np.ndarray]] = []  # (stem, role, audio [2, n_all])
    for part in song.parts:
        if not part.notes:
            continue
        audio = synth.render(part.notes, part.program, n_all, drums=part.drums,
                             controls=part.controls).astype(np.float64)
        tracks.append((part.stem, part.role, audio))
    singer_info = {"voice": song.singer.voice,
                   "formant_shift": round(song.singer.formant_shift, 3),
                   "breathiness": round(song.singer.breathiness, 3)}
    if voices is not None:
        vocal_tracks, singer_info = sing_lead(song, voices, pick_rng, voice_rng, sr, n_all)
        tracks += vocal_tracks
    for phrases, singer, role in ((song.vocal_phrases, song.singer, "vocals"),
                                  (song.harmony_phrases, song.harmony_singer, "harmony")):
        if not phrases or voices is not None:
            continue
        buf = np.zeros(n_all)
        for notes in phrases:
            t0, y = sing_phrase(notes, singer, voice_rng, sr)
            start = int(round(t0 * sr))
            if role == "vocals":  # an audible inhale before each phrase, ~26 dB under the voice
                m = int(0.25 * sr)
                breath = _noise(voice_rng, m, sr, lo=900.0, hi=6000.0) * np.hanning(m)
                level = _active_rms(y[None], sr) * mix.db_to_gain(-voice_rng.uniform(22, 32))
                mix.place(buf, start - m + int(0.1 * sr), breath * level)
            mix.place(buf, start, y)
        if role == "harmony":
            d = int(0.018 * sr)
            late = np.concatenate([np.zeros(d), buf[:-d]])
            p = voice_rng.uniform(0.4, 0.8)
            audio = mix.pan(buf[None], -p) * 0.6 + mix.pan(late[None], p) * 0.6
        else:
            audio = np.stack([buf, buf])
        tracks.append(("vocals", role, audio))

    # ---- channel strips, levels, reverbs ---------------------------------------------------
    stems = {s: np.zeros((2, n_all)) for s in SOURCES}
    band_sends = {s: np.zeros(n_all) for s in SOURCES}
    voice_sends = np.zeros(n_all)
    stem_gain_db = {s: mix_rng.normal(mu, sd) for s, (mu, sd) in _STEM_LEVEL_DB.items()}
    placements = []
    for stem, role, audio in tracks:
        x, send, desc = _strip(mix_rng, role, audio, sr, song.bpm)
        rms = _active_rms(x, sr)
        if rms <= 0:
            continue
        part_db = {"harmony": -7.0, "choir": -9.0}.get(role, 0.0) + mix_rng.normal(0.0, 2.0)
        if stem == "other":
            part_db -= 2.0  # several parts share the stem's level
        g = 0.1 * mix.db_to_gain(stem_gain_db[stem] + part_db) / rms
        x *= g
        stems[stem] += x
        if stem == "vocals":
            voice_sends += send * x.mean(axis=0)
        else:
            band_sends[stem] += send * x.mean(axis=0)
        placements.append({"stem": stem, "role": role, "placement": desc,
                           "level_db": round(stem_gain_db[stem] + part_db, 1)})

    room_rt = float(rev_rng.uniform(0.4, 1.4))
    plate_rt = float(rev_rng.uniform(1.0, 2.6))
    room = _reverb_ir(rev_rng, sr, rt60=room_rt, predelay=float(rev_rng.uniform(0.005, 0.02)),
                      bright=float(rev_rng.uniform(4000, 9000)))
    plate = _reverb_ir(rev_rng, sr, rt60=plate_rt, predelay=float(rev_rng.uniform(0.02, 0.08)),
                       bright=float(rev_rng.uniform(5000, 10000)))
    band_names = [s for s in ("drums", "bass", "other") if np.any(band_sends[s])]
    if band_names:
        wet = _convolve_sends(np.stack([band_sends[s] for s in band_names]), room)
        for s, w in zip(band_names, wet):
            stems[s] += mix.db_to_gain(-14.0) * w
    if np.any(voice_sends):
        stems["vocals"] += mix.db_to_gain(-12.0) * _convolve_sends(voice_sends[None], plate)[0]
        if mix_rng.random() < 0.5:  # an echo throw on the lead, in time with the song
            beat = 60.0 / song.bpm
            stems["vocals"] += 0.12 * mix.echo(voice_sends[None], sr,
                                               beat * float(mix_rng.choice([0.5, 0.75, 1.0])),
                                               0.4, 4, bool(mix_rng.random() < 0.6), 4000.0)

    # ---- the clip, then the master bus ------------------------------------------------------
    start = int(round(song.preroll_seconds * sr))
    n = int(round(seconds * sr))
    clip = {s: x[:, start:start + n] for s, x in stems.items()}
    for s in clip:
        if clip[s].shape[1] < n:
            clip[s] = np.pad(clip[s], ((0, 0), (0, n - clip[s].shape[1])))
    total = sum(clip.values())
    peak = float(np.abs(total).max())
    if peak > 0:
        glue = mix.gain_curve(total, sr, 20 * math.log10(peak) - mix_rng.uniform(6, 12),
                              mix_rng.uniform(1.5, 3), 10.0, 200.0)
        total = total * glue[None]
        limit = mix.gain_curve(total, sr, 20 * math.log10(np.abs(total).max()) - mix_rng.uniform(0, 4),
                               30.0, 0.3, 60.0, knee_db=2.0)
        shared = glue * limit
        target = mix.db_to_gain(-mix_rng.uniform(1.0, 4.0))
        final_peak = float(np.abs(total * limit[None]).max())
        shared *= target / max(final_peak, 1e-12)
        clip = {s: x * shared[None] for s, x in clip.items()}
    out = {s: np.ascontiguousarray(clip[s], dtype=np.float32) for s in SOURCES}
    mixture = np.ascontiguousarray(sum(out[s].astype(np.float64) for s in SOURCES), dtype=np.float32)

    # ---- description -------------------------------------------------------------------------
    bar_s = 240.0 / song.bpm
    clip_bars = song.bars[1:]
    sections = []
    for name, _ in clip_bars:
        if sections and sections[-1][0] == name:
            sections[-1][1] += 1
        else:
            sections.append([name, 1])
    chords = [[chord_name(r, p) for r, p in ch] for _, ch in clip_bars]
    silent = [s for s in SOURCES if not np.any(out[s])]
    info = {
        "seed": int(seed), "seconds": float(seconds), "sample_rate": sr, "style": song.style,
        "bpm": song.bpm, "key": song.key, "swing": round(song.swing, 3),
        "bar_seconds": round(bar_s, 4), "sections": sections, "chords_per_bar": chords,
        "parts": [{"name": p.name, "stem": p.stem, "program": p.program, "drum_kit": p.drums,
                   "role": p.role, "notes": len(p.notes)} for p in song.parts],
        "singer": singer_info,
        "vocal_phrases": len(song.vocal_phrases), "harmony_phrases": len(song.harmony_phrases),
        "lyrics": " / ".join(" ".join(nt.word for nt in ph) for ph in song.vocal_phrases),
        "mix": placements, "room_rt60_s": round(room_rt, 2), "plate_rt60_s": round(plate_rt, 2),
        "silent_stems": silent, "soundfont": str(synth.soundfont),
    }
    if voices is not None:
        info["voice_pool"] = voices.describe()
    return SynthSong(out, mixture, sr, int(seed), info)
