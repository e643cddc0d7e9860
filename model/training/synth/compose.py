"""Song composition: style, key, chords, structure and every part's notes, from one RNG.

A :class:`Song` is a plan that the renderer plays: a style (pop, rock, funk, ballad, dance,
hip-hop, country, jazz) decides tempo, swing, drum kit, instruments and the rhythm vocabulary
of each part; a key and two chord progressions (verse and chorus) are shared by all parts; a
random song structure (intro, verse, pre-chorus, chorus, bridge, breakdown, solo, outro) says
which parts play in each section, so stems drop out and come back as in real songs.

Parts:

- drums: a style groove on a 16th grid (kick, snare or clap, hats or ride, ghost notes),
  humanised in time and velocity, with crashes on section starts and fills at section ends;
- bass: style patterns on the chord roots with fifths, octaves and approach notes (walking
  lines in jazz);
- chord parts (the "other" stem): voice-led block chords (pads, strings, organ), rhythmic
  stabs, strummed guitar (strings spread in time, down and up strokes), power chords and
  arpeggios; a lead instrument plays a melody in solos and intros;
- vocals: a lead melody in two-bar phrases (chord tones on strong beats, stepwise motion,
  repeated motifs, rests between phrases) with one lyric word per note, and in choruses
  sometimes a harmony a third above or a choir "ooh" pad.

All times are seconds from the start of the render (which starts one bar before the clip, so
notes and reverbs ring into the clip as they would in the middle of a song).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .fluid import NoteEvent
from .voice import LYRIC_WORDS, OPEN_WORDS, Singer, SungNote

__all__ = ["Part", "Song", "compose", "chord_name", "STYLES", "NOTE_NAMES"]

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "sus2": (0, 2, 7), "sus4": (0, 5, 7),
    "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10), "dom7": (0, 4, 7, 10), "m7b5": (0, 3, 6, 10),
}
# progressions as (scale degree 0-6, quality); qualities are diatonic to the mode
PROGRESSIONS = {
    "major": (
        ((0, "maj"), (4, "maj"), (5, "min"), (3, "maj")),  # I-V-vi-IV
        ((5, "min"), (3, "maj"), (0, "maj"), (4, "maj")),  # vi-IV-I-V
        ((0, "maj"), (5, "min"), (3, "maj"), (4, "maj")),  # I-vi-IV-V
        ((0, "maj"), (3, "maj"), (4, "maj"), (3, "maj")),  # I-IV-V-IV
        ((0, "maj"), (3, "maj"), (5, "min"), (4, "maj")),  # I-IV-vi-V
        ((1, "min"), (4, "maj"), (0, "maj"), (0, "maj")),  # ii-V-I-I
        ((3, "maj"), (0, "maj"), (4, "maj"), (5, "min")),  # IV-I-V-vi
        ((0, "maj"), (2, "min"), (3, "maj"), (4, "maj")),  # I-iii-IV-V
    ),
    "minor": (
        ((0, "min"), (5, "maj"), (2, "maj"), (6, "maj")),  # i-VI-III-VII
        ((0, "min"), (6, "maj"), (5, "maj"), (6, "maj")),  # i-VII-VI-VII
        ((0, "min"), (3, "min"), (5, "maj"), (4, "min")),  # i-iv-VI-v
        ((0, "min"), (3, "min"), (6, "maj"), (2, "maj")),  # i-iv-VII-III
        ((5, "maj"), (6, "maj"), (0, "min"), (0, "min")),  # VI-VII-i-i
        ((0, "min"), (5, "maj"), (3, "min"), (6, "maj")),  # i-VI-iv-VII
    ),
}
_SEVENTH = {"maj": "maj7", "min": "min7", "dim": "m7b5"}

# GM drum keys
KICK, SIDESTICK, SNARE, CLAP, SNARE2 = 36, 37, 38, 39, 40
HAT, PEDAL, OPEN_HAT, CRASH, RIDE, RIDE_BELL, TAMB, SHAKER = 42, 44, 46, 49, 51, 53, 54, 70
TOMS = (50, 48, 47, 45, 43, 41)


@dataclass(frozen=True)
class Style:
    """What a genre sounds like: tempo range (bpm), swing (fraction of a grid step), which
    grid the swing applies to (8 or 16), modes, drum kits (GM bank-128 programs), bass
    programs, chord-part choices as (role, programs), lead programs, chords per bar and
    whether chords take sevenths."""

    name: str
    bpm: tuple[int, int]
    swing: tuple[float, float]
    swing_grid: int
    modes: tuple[str, ...]
    kits: tuple[int, ...]
    groove: str
    bass_programs: tuple[int, ...]
    bass_style: str
    chord_parts: tuple[tuple[str, tuple[int, ...]], ...]
    leads: tuple[int, ...]
    sevenths: float
    humanize_ms: float


STYLES = {
    "pop": Style("pop", (88, 128), (0.0, 0.0), 16, ("major", "minor"), (0, 8, 24), "pop",
                 (33, 34, 38, 39), "pop",
                 (("block", (89, 88, 48, 90, 4)), ("strum", (25, 24, 27)), ("arp", (0, 4, 46)),
                  ("stabs", (0, 4, 5))), (80, 81, 73, 65, 30), 0.3, 6.0),
    "rock": Style("rock", (100, 152), (0.0, 0.0), 16, ("major", "minor"), (0, 16, 8), "rock",
                  (34, 33, 35), "rock",
                  (("power", (30, 29)), ("strum", (29, 27, 25)), ("block", (16, 17, 18, 48)),
                   ("stabs", (0, 1))), (30, 29, 81), 0.0, 7.0),
    "funk": Style("funk", (88, 116), (0.0, 0.12), 16, ("minor", "major"), (0, 8), "funk",
                  (36, 33, 37), "funk",
                  (("stabs", (4, 7, 61, 62, 5)), ("strum", (27, 28)), ("block", (16, 17, 89))),
                  (65, 66, 56, 81), 0.8, 6.0),
    "ballad": Style("ballad", (60, 84), (0.0, 0.0), 16, ("major", "minor"), (0, 40, 32),
                    "ballad", (32, 33, 35), "ballad",
                    (("arp", (0, 1, 24, 46)), ("block", (48, 49, 88, 89, 52)),
                     ("strum", (24, 25))), (40, 73, 71, 68), 0.4, 9.0),
    "dance": Style("dance", (118, 130), (0.0, 0.0), 16, ("minor", "major"), (24, 25), "dance",
                   (38, 39, 81, 87), "dance",
                   (("block", (90, 88, 91, 94, 95)), ("stabs", (81, 80, 62, 0)),
                    ("arp", (81, 80, 84, 98))), (80, 81, 84), 0.2, 2.0),
    "hiphop": Style("hiphop", (72, 98), (0.05, 0.25), 16, ("minor",), (25, 24, 0), "hiphop",
                    (38, 39, 87), "hiphop",
                    (("block", (4, 5, 89, 48)), ("arp", (0, 4, 11, 46)), ("stabs", (4, 61))),
                    (80, 73, 65), 0.7, 8.0),
    "country": Style("country", (88, 132), (0.0, 0.08), 8, ("major",), (0, 40), "country",
                     (32, 33), "country",
                     (("strum", (25, 24)), ("arp", (24, 25, 105)), ("block", (48, 16, 0))),
                     (110, 22, 105), 0.1, 7.0),
    "jazz": Style("jazz", (96, 160), (0.2, 0.3), 8, ("major", "minor"), (32, 40), "jazz",
                  (32, 35), "walking",
                  (("stabs", (0, 1, 4)), ("block", (48, 61, 16)), ("strum", (26,))),
                  (65, 66, 56, 71), 1.0, 10.0),
}

# section types: (vocal probability, drum probability, bass probability, energy 0..1)
SECTIONS = {
    "intro": (0.15, 0.5, 0.5, 0.3),
    "verse": (0.92, 0.95, 0.92, 0.55),
    "prechorus": (0.9, 0.85, 0.9, 0.7),
    "chorus": (0.95, 0.97, 0.97, 1.0),
    "bridge": (0.75, 0.8, 0.8, 0.6),
    "breakdown": (0.5, 0.15, 0.35, 0.35),
    "solo": (0.1, 0.95, 0.95, 0.85),
    "outro": (0.3, 0.6, 0.7, 0.4),
}
_FORMS = (
    ("intro", "verse", "prechorus", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
    ("intro", "verse", "chorus", "verse", "chorus", "solo", "chorus", "outro"),
    ("intro", "verse", "verse", "chorus", "breakdown", "chorus", "outro"),
    ("verse", "chorus", "verse", "chorus", "bridge", "chorus"),
    ("intro", "chorus", "verse", "chorus", "breakdown", "solo", "chorus"),
)
_SECTION_BARS = {"intro": (2, 4), "verse": (4, 8), "prechorus": (2, 4), "chorus": (4, 8),
                 "bridge": (4,), "breakdown": (2, 4), "solo": (4, 8), "outro": (2, 4)}


@dataclass
class Part:
    """One instrument track: ``stem`` it belongs to, GM ``program`` (drum kit if ``drums``),
    ``role`` (what it plays), ``notes`` (seconds from the render start), MIDI ``controls``
    set before playing, and ``pan`` in [-1, 1] chosen by the arranger."""

    name: str
    stem: str
    program: int
    role: str
    notes: list[NoteEvent] = field(default_factory=list)
    drums: bool = False
    controls: dict[int, int] = field(default_factory=dict)
    pan: float = 0.0


@dataclass
class Song:
    """A composed song: timing, harmony, structure, instrument parts and the sung lead.

    ``bars`` lists ``(section name, [(chord root pitch class, chord pitch classes), ...])``
    per bar, starting with the one pre-roll bar before the clip. ``vocal_phrases`` are lists
    of :class:`SungNote`; ``harmony_phrases`` the backing-vocal line (may be empty).
    """

    style: str
    bpm: float
    tonic: int
    mode: str
    swing: float
    bars: list
    parts: list[Part]
    singer: Singer
    vocal_phrases: list[list[SungNote]]
    harmony_phrases: list[list[SungNote]]
    harmony_singer: Singer
    render_seconds: float
    preroll_seconds: float

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    @property
    def spb(self) -> float:
        """Seconds per beat."""
        return 60.0 / self.bpm


# --------------------------------------------------------------------------------------------
# helpers


def _step_time(song_bpm: float, swing: float, swing_grid: int, bar: int, step: float) -> float:
    """Seconds of 16th-grid ``step`` (may be fractional) in ``bar`` (bar 0 = render start)."""
    s16 = 15.0 / song_bpm
    pos = bar * 16 + step
    if swing > 0:
        if swing_grid == 8 and abs(step % 4 - 2) < 1e-9:
            pos += swing * 2
        elif swing_grid == 16 and abs(step % 2 - 1) < 1e-9:
            pos += swing
    return pos * s16


def chord_name(root: int, pcs: tuple[int, ...]) -> str:
    """E.g. ``Am7`` for root 9 and pitch classes (9, 0, 4, 7)."""
    intervals = tuple((pc - root) % 12 for pc in pcs)
    suffix = {"maj": "", "min": "m", "dim": "dim", "sus2": "sus2", "sus4": "sus4", "maj7": "maj7",
              "min7": "m7", "dom7": "7", "m7b5": "m7b5"}
    for q, iv in QUALITIES.items():
        if iv == intervals:
            return NOTE_NAMES[root] + suffix[q]
    return NOTE_NAMES[root] + "?"


def _chord(tonic: int, mode: str, degree: int, quality: str) -> tuple[int, tuple[int, ...]]:
    root = (tonic + SCALES[mode][degree]) % 12
    return root, tuple((root + i) % 12 for i in QUALITIES[quality])


def _nearest(pc: int, around: float) -> int:
    """The MIDI note of pitch class ``pc`` closest to ``around``."""
    base = int(round(around))
    return min((base + d for d in range(-6, 7) if (base + d) % 12 == pc), key=lambda m: abs(m - around))


def _voicing(pcs: tuple[int, ...], prev: list[int] | None, lo: int, hi: int,
             rng: np.random.Generator) -> list[int]:
    """A close voicing of pitch classes within [lo, hi], moving least from ``prev``."""
    cands = []
    for inv in range(len(pcs)):
        order = pcs[inv:] + pcs[:inv]
        for base in range(lo, lo + 12):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                m = notes[-1] + 1
                while m % 12 != pc:
                    m += 1
                notes.append(m)
            if notes[-1] <= hi:
                cands.append(notes)
    if not cands:
        return [lo + (pc - lo) % 12 for pc in pcs]
    if prev is None:
        return cands[int(rng.integers(len(cands)))]
    center = float(np.mean(prev))
    return min(cands, key=lambda v: abs(float(np.mean(v)) - center) + 0.01 * rng.random())


# --------------------------------------------------------------------------------------------
# drums

_GROOVES = {
    # instrument -> list of (16th step, velocity); variants are mixed in below
    "pop": {KICK: [(0, 110), (8, 100)], SNARE: [(4, 105), (12, 108)],
            HAT: [(s, 80 if s % 4 == 0 else 62) for s in range(0, 16, 2)]},
    "rock": {KICK: [(0, 115), (8, 108), (10, 95)], SNARE: [(4, 118), (12, 120)],
             HAT: [(s, 90 if s % 4 == 0 else 70) for s in range(0, 16, 2)]},
    "funk": {KICK: [(0, 112), (3, 80), (10, 100)], SNARE: [(4, 112), (12, 115), (7, 38),
             (9, 35), (15, 40)], HAT: [(s, 78 if s % 2 == 0 else 50) for s in range(16)]},
    "ballad": {KICK: [(0, 90), (10, 70)], SIDESTICK: [(4, 80), (12, 85)],
               HAT: [(s, 60 if s % 4 == 0 else 45) for s in range(0, 16, 2)]},
    "dance": {KICK: [(0, 120), (4, 118), (8, 120), (12, 118)], CLAP: [(4, 105), (12, 108)],
              OPEN_HAT: [(2, 85), (6, 85), (10, 85), (14, 85)],
              HAT: [(s, 55) for s in range(16) if s % 4 != 2]},
    "hiphop": {KICK: [(0, 115), (7, 95), (10, 105)], SNARE: [(4, 112), (12, 115)],
               HAT: [(s, 72 if s % 2 == 0 else 50) for s in range(16)]},
    "country": {KICK: [(0, 100), (8, 95)], SNARE: [(4, 100), (12, 102)],
                HAT: [(s, 70 if s % 4 == 0 else 55) for s in range(0, 16, 2)]},
    "jazz": {RIDE: [(0, 80), (4, 85), (6, 60), (8, 80), (12, 85), (14, 60)],
             PEDAL: [(4, 60), (12, 60)], KICK: [(0, 40), (8, 35)]},
}


def _drum_part(rng: np.random.Generator, song: Song, style: Style, plays: list[bool],
               kit: int) -> Part:
    base = {k: list(v) for k, v in _GROOVES[style.groove].items()}
    # per-song variation: extra kicks, ghost snares, a shaker or tambourine layer
    if style.groove in ("pop", "rock", "country", "hiphop") and rng.random() < 0.6:
        base[KICK].append((int(rng.choice([6, 14, 11, 3])), 90))
    if style.groove in ("pop", "rock", "funk") and rng.random() < 0.4:
        base.setdefault(SNARE, []).append((int(rng.choice([7, 9, 15])), 35))
    if style.groove in ("pop", "country", "ballad") and rng.random() < 0.35:
        base[SHAKER if rng.random() < 0.5 else TAMB] = [(s, 50 + 10 * (s % 4 == 2))
                                                          for s in range(0, 16, 2)]
    chorus_hat = OPEN_HAT if style.groove in ("rock", "pop") and rng.random() < 0.4 else (
        RIDE if style.groove in ("rock", "pop", "country") and rng.random() < 0.5 else None)
    notes: list[NoteEvent] = []
    jit = style.humanize_ms / 1000.0
    n_bars = len(song.bars)
    for bar in range(n_bars):
        if not plays[bar]:
            continue
        section = song.bars[bar][0]
        energy = SECTIONS[section][3]
        last_of_section = bar + 1 >= n_bars or song.bars[bar + 1][0] != section
        first_of_section = bar > 0 and song.bars[bar - 1][0] != section
        fill = last_of_section and rng.random() < 0.7
        hits: list[tuple[int, float, int]] = []
        for key, pattern in base.items():
            if key in (HAT, OPEN_HAT) and section == "chorus" and chorus_hat is not None:
                key = chorus_hat if key == HAT else key
            for step, vel in pattern:
                if fill and step >= 8 and key != PEDAL:
                    continue
                if section in ("intro", "breakdown", "outro") and key in (SNARE, CLAP) \
                        and rng.random() < 0.3:
                    continue
                hits.append((key, step, vel))
        if fill:
            pat = int(rng.integers(3))
            steps = range(8, 16) if pat else range(12, 16)
            toms = [t for t in TOMS if rng.random() < 0.8] or [SNARE]
            for i, step in enumerate(steps):
                key = SNARE if pat == 2 else toms[min(i * len(toms) // len(steps), len(toms) - 1)]
                hits.append((key, step, 85 + 3 * i))
            hits.append((KICK, 8, 100))
        if first_of_section or (bar == 1 and rng.random() < 0.5):
            hits.append((CRASH, 0, 110))
        for key, step, vel in hits:
            t = _step_time(song.bpm, song.swing, style.swing_grid, bar, step)
            t += rng.normal(0.0, jit)
            v = vel * (0.8 + 0.25 * energy) + rng.normal(0.0, 6.0)
            dur = 0.8 if key in (CRASH, RIDE, OPEN_HAT) else 0.15
            notes.append(NoteEvent(max(t, 0.0), max(t, 0.0) + dur, key, int(np.clip(v, 20, 127))))
    return Part("drums", "drums", kit, "drums", notes, drums=True)


# --------------------------------------------------------------------------------------------
# bass

_BASS_PATTERNS = {
    # (step, length in steps, what): what = r root, f fifth, o octave, a approach to next root
    "pop": (((0, 6, "r"), (6, 2, "r"), (8, 4, "r"), (12, 2, "f"), (14, 2, "a")),
            ((0, 3, "r"), (3, 3, "r"), (6, 2, "r"), (8, 6, "r"), (14, 2, "o"))),
    "rock": (tuple((s, 2, "r") for s in range(0, 16, 2)),
             tuple((s, 2, "r" if s < 12 else "f") for s in range(0, 16, 2))),
    "funk": (((0, 2, "r"), (3, 1, "o"), (4, 1, "r"), (6, 1, "r"), (7, 1, "f"), (10, 2, "r"),
              (12, 1, "o"), (14, 1, "r"), (15, 1, "a")),
             ((0, 3, "r"), (3, 1, "r"), (6, 2, "o"), (8, 1, "r"), (10, 1, "f"), (11, 1, "r"),
              (13, 1, "o"), (14, 2, "a"))),
    "ballad": (((0, 8, "r"), (8, 8, "f")), ((0, 14, "r"), (14, 2, "a"))),
    "dance": (tuple((s, 2, "r") for s in (2, 6, 10, 14)),
              tuple((s, 1, "o" if s % 4 == 3 else "r") for s in range(16))),
    "hiphop": (((0, 7, "r"), (7, 3, "r"), (10, 6, "o")), ((0, 10, "r"), (10, 6, "f"))),
    "country": (((0, 4, "r"), (4, 4, "f"), (8, 4, "r"), (12, 4, "f")),
                ((0, 4, "r"), (4, 4, "f"), (8, 4, "o"), (12, 2, "f"), (14, 2, "a"))),
}


def _bass_part(rng: np.random.Generator, song: Song, style: Style, plays: list[bool],
               program: int) -> Part:
    notes: list[NoteEvent] = []
    s16 = 15.0 / song.bpm
    scale = [(song.tonic + s) % 12 for s in SCALES[song.mode]]
    patterns = _BASS_PATTERNS.get(style.bass_style)
    pat = patterns[int(rng.integers(len(patterns)))] if patterns else None
    legato = 0.92 if style.bass_style in ("ballad", "hiphop", "pop") else 0.7
    jit = style.humanize_ms / 1000.0 * 0.7
    n_bars = len(song.bars)
    for bar in range(n_bars):
        if not plays[bar]:
            continue
        chords = song.bars[bar][1]
        nxt = song.bars[bar + 1][1][0][0] if bar + 1 < n_bars else chords[0][0]
        if style.bass_style == "walking":
            # quarter notes: root on 1, chord tones, chromatic approach into the next bar
            root = _nearest(chords[0][0], 38)
            line = [root]
            for beat in (1, 2):
                pcs = chords[min(beat * len(chords) // 4, len(chords) - 1)][1]
                line.append(_nearest(int(rng.choice(pcs)), line[-1] + rng.choice([-3, 3])))
            target = _nearest(nxt, line[-1])
            line.append(target + int(rng.choice([-1, 1])))
            hits = [(4 * i, 4, m) for i, m in enumerate(line)]
        else:
            hits = []
            for step, length, what in pat:
                ci = min(step * len(chords) // 16, len(chords) - 1)
                root = _nearest(chords[ci][0], 40)
                if what == "r":
                    m = root
                elif what == "f":
                    m = root + 7 if root + 7 <= 50 else root - 5
                elif what == "o":
                    m = root + 12 if root + 12 <= 55 else root
                else:
                    tgt = _nearest(nxt, root)
                    below = [x for x in range(tgt - 2, tgt) if x % 12 in scale]
                    m = below[-1] if below and rng.random() < 0.6 else tgt - 1
                hits.append((step, length, m))
        for step, length, m in hits:
            t = max(_step_time(song.bpm, song.swing, style.swing_grid, bar, step)
                    + rng.normal(0, jit), 0.0)
            vel = int(np.clip(95 + (8 if step % 4 == 0 else 0) + rng.normal(0, 7), 40, 127))
            bend = 0.0
            if style.bass_style == "hiphop" and rng.random() < 0.15:
                bend = float(rng.choice([-2.0, 2.0])) * 0.5  # an 808-ish scoop
            notes.append(NoteEvent(t, t + length * s16 * legato, int(m), vel, bend))
    return Part("bass", "bass", program, "bass", notes)


# --------------------------------------------------------------------------------------------
# chords and leads

_STRUMS = ((0, 4, 6, 10, 12, 14), (0, 3, 6, 8, 10, 12, 14), (0, 8), (0, 6, 8, 12),
           (0, 2, 4, 6, 8, 10, 12, 14))
_STABS = ((4, 12), (2, 6, 10, 14), (0, 3, 6, 10), (3, 7, 11, 14), (0, 6, 12))


def _chord_part(rng: np.random.Generator, song: Song, style: Style, role: str, program: int,
                plays: list[bool], name: str) -> Part:
    notes: list[NoteEvent] = []
    s16 = 15.0 / song.bpm
    prev = None
    jit = style.humanize_ms / 1000.0
    strum_pat = _STRUMS[int(rng.integers(len(_STRUMS)))]
    stab_pat = _STABS[int(rng.integers(len(_STABS)))]
    arp_rate = int(rng.choice([2, 2, 1])) if song.bpm < 110 else 2
    arp_shape = int(rng.integers(3))
    lo = int(rng.integers(50, 56))
    for bar in range(len(song.bars)):
        if not plays[bar]:
            continue
        chords = song.bars[bar][1]
        span = 16 // len(chords)
        for ci, (root, pcs) in enumerate(chords):
            s0 = ci * span
            voicing = _voicing(pcs, prev, lo, lo + 22, rng)
            prev = voicing
            if role == "block":
                t = _step_time(song.bpm, 0.0, 16, bar, s0) + rng.normal(0, jit * 0.5)
                for m in voicing:
                    notes.append(NoteEvent(max(t, 0.0), t + span * s16 * 0.98, m, 72 + int(rng.integers(-6, 7))))
            elif role in ("strum", "power"):
                if role == "power":
                    r = _nearest(root, 45)
                    voicing = [r, r + 7, r + 12]
                else:  # guitar-like: a low root under the close voicing
                    voicing = sorted({_nearest(root, 43)} | set(voicing))
                pat = strum_pat if role == "strum" else tuple(range(0, 16, 2))
                for i, step in enumerate(p for p in pat if s0 <= p < s0 + span):
                    t = _step_time(song.bpm, song.swing, style.swing_grid, bar, step) + rng.normal(0, jit)
                    up = role == "strum" and step % 4 == 2
                    order = voicing[::-1] if up else voicing
                    spread = rng.uniform(0.006, 0.014) if role == "strum" else 0.002
                    nxt = [p for p in pat if p > step]
                    length = ((nxt[0] if nxt else 16) - step) * s16 * (0.5 if role == "power" else 0.95)
                    for k, m in enumerate(order):
                        vel = (70 if up else 88) + int(rng.integers(-8, 9)) - 2 * k * up
                        tk = max(t + k * spread, 0.0)
                        notes.append(NoteEvent(tk, tk + length, m, vel))
            elif role == "stabs":
                for step in (p for p in stab_pat if s0 <= p < s0 + span):
                    t = max(_step_time(song.bpm, song.swing, style.swing_grid, bar, step) + rng.normal(0, jit), 0.0)
                    for m in voicing:
                        notes.append(NoteEvent(t, t + s16 * rng.uniform(0.8, 1.8), m, 90 + int(rng.integers(-8, 9))))
            elif role == "arp":
                tones = voicing + [voicing[0] + 12]
                seq = {0: tones, 1: tones + tones[-2:0:-1], 2: [tones[0], tones[2], tones[1], tones[-1]]}[arp_shape]
                for i, step in enumerate(range(s0, s0 + span, arp_rate)):
                    t = max(_step_time(song.bpm, song.swing, style.swing_grid, bar, step) + rng.normal(0, jit), 0.0)
                    m = seq[i % len(seq)]
                    notes.append(NoteEvent(t, t + arp_rate * s16 * 1.5, m, 78 + int(rng.integers(-10, 11))))
    return Part(name, "other", program, role, notes)


_RHYTHMS = (  # (onset in 8ths, length in 8ths) within a 2-bar phrase, ending with a rest
    ((0, 2), (2, 1), (3, 1), (4, 2), (6, 2), (8, 2), (10, 3)),
    ((1, 1), (2, 2), (4, 1), (5, 1), (6, 3), (9, 1), (10, 3)),
    ((0, 3), (3, 1), (4, 2), (6, 2), (8, 1), (9, 1), (10, 2)),
    ((0, 1), (1, 1), (2, 2), (4, 4), (8, 1), (9, 1), (10, 3)),
    ((1, 1), (2, 1), (3, 3), (6, 1), (7, 1), (8, 4)),
    ((0, 2), (2, 2), (4, 1), (5, 1), (6, 1), (7, 5)),
    ((2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (8, 1), (9, 1), (10, 2)),
)


def _melody(rng: np.random.Generator, song: Song, bar: int, lo: int, hi: int, start: int,
            rhythm) -> list[tuple[float, float, int, float]]:
    """One two-bar phrase from ``bar``: (onset s, end s, midi, accent) per note."""
    scale = {(song.tonic + s) % 12 for s in SCALES[song.mode]}
    out = []
    p = start
    s8 = 30.0 / song.bpm
    for i, (on8, len8) in enumerate(rhythm):
        b = bar + on8 // 8
        if b >= len(song.bars):
            break
        chords = song.bars[b][1]
        root, pcs = chords[min((on8 % 8) * len(chords) // 8, len(chords) - 1)]
        strong = on8 % 2 == 0
        last = i == len(rhythm) - 1
        if last:
            pcs = (root, pcs[1])
        if strong or last or rng.random() < 0.5:
            cands = [m for m in range(lo, hi + 1) if m % 12 in pcs]
        else:
            cands = [m for m in range(p - 2, p + 3) if m % 12 in scale and m != p and lo <= m <= hi]
        if not cands:
            cands = [m for m in range(lo, hi + 1) if m % 12 in scale]
        c = np.array(cands)
        w = np.exp(-np.abs(c - p) / 2.5) * np.where(c == p, 0.5, 1.0)
        p = int(rng.choice(c, p=w / w.sum()))
        t_on = _step_time(song.bpm, song.swing, 8, bar, on8 * 2)
        out.append((t_on, t_on + len8 * s8, p, 1.0 if on8 % 4 == 0 else 0.85))
    return out


def _sections(rng: np.random.Generator, n_bars: int) -> list[str]:
    """Section name per bar, from a song form entered at a random section."""
    form = _FORMS[int(rng.integers(len(_FORMS)))]
    seq: list[str] = []
    i = int(rng.integers(len(form)))
    # land anywhere in the song, including mid-section
    while len(seq) < n_bars + 8:
        name = form[i % len(form)]
        seq += [name] * int(rng.choice(_SECTION_BARS[name]))
        i += 1
    offset = int(rng.integers(0, 4))
    return seq[offset: offset + n_bars]


# --------------------------------------------------------------------------------------------


def compose(rng: np.random.Generator, seconds: float, style_name: str | None = None) -> Song:
    """Compose a song long enough for a ``seconds`` clip (plus one pre-roll bar).

    Args:
        rng: the only source of randomness; the same generator state gives the same song.
        seconds: clip length (> 0).
        style_name: a key of :data:`STYLES`, or None to draw one.
    """
    names = sorted(STYLES)
    style = STYLES[style_name] if style_name else STYLES[names[int(rng.integers(len(names)))]]
    bpm = float(rng.integers(style.bpm[0], style.bpm[1] + 1))
    mode = str(rng.choice(style.modes))
    tonic = int(rng.integers(12))
    swing = float(rng.uniform(*style.swing))
    bar_s = 240.0 / bpm
    n_bars = 1 + math.ceil(seconds / bar_s) + 1  # pre-roll + clip + a bar of tail
    sections = _sections(rng, n_bars)

    progs = PROGRESSIONS[mode]
    verse_prog = progs[int(rng.integers(len(progs)))]
    chorus_prog = progs[int(rng.integers(len(progs)))]
    per_bar = 2 if (style.name in ("funk", "jazz", "pop") and rng.random() < 0.3) else 1
    use7 = rng.random() < style.sevenths
    bars = []
    count: dict[str, int] = {}
    for name in sections:
        prog = chorus_prog if name in ("chorus", "solo", "outro") else verse_prog
        k = count.get(name, 0)
        count[name] = k + 1
        chords = []
        for j in range(per_bar):
            deg, q = prog[(k * per_bar + j) % len(prog)]
            if use7:
                q = _SEVENTH.get(q, q)
                if deg == 4 and q in ("maj", "maj7"):
                    q = "dom7"
            chords.append(_chord(tonic, mode, deg, q))
        bars.append((name, chords))

    female = rng.random() < 0.5
    voices = ("en-us+f2", "en-us+f3", "en-us+f4", "en+f3") if female else \
        ("en-us", "en-us+m3", "en-us+m7", "en+m2")
    singer = Singer(str(rng.choice(voices)), float(rng.uniform(1.02, 1.15) if female else rng.uniform(0.9, 1.02)),
                    float(rng.uniform(0.05, 0.45)), float(rng.uniform(4.8, 6.4)),
                    float(rng.uniform(0.15, 0.5)), float(rng.uniform(0.3, 1.2)))
    harmony_singer = Singer(str(rng.choice(voices)), singer.formant_shift * float(rng.uniform(0.97, 1.05)),
                            min(0.8, singer.breathiness + 0.15), singer.vibrato_hz * 1.05,
                            singer.vibrato_st * 0.7, singer.scoop_st * 0.5)

    song = Song(style.name, bpm, tonic, mode, swing, bars, [], singer, [], [], harmony_singer,
                render_seconds=n_bars * bar_s, preroll_seconds=bar_s)

    def plays(prob_index: int, p_scale: float = 1.0) -> list[bool]:
        """Per-bar activity: one draw per section occurrence, held across its bars."""
        out, cur, prev_name = [], False, None
        for b, (name, _) in enumerate(bars):
            if name != prev_name or b == 0:
                cur = rng.random() < SECTIONS[name][prob_index] * p_scale
            out.append(cur)
            prev_name = name
        return out

    kits = [k for k in style.kits]
    song.parts.append(_drum_part(rng, song, style, plays(1), int(rng.choice(kits))))
    song.parts.append(_bass_part(rng, song, style, plays(2), int(rng.choice(style.bass_programs))))
    # two or three chord parts with different roles; at least one plays in every section
    roles = list(style.chord_parts)
    order = rng.permutation(len(roles))
    n_parts = min(len(roles), int(rng.integers(2, 4)))
    chosen = [roles[i] for i in order[:n_parts]]
    activity = []
    for j, (role, programs) in enumerate(chosen):
        act = [True] * len(bars) if j == 0 else plays(3, 0.9)
        if j > 0:
            # higher-energy sections bring in the extra parts
            act = [a and rng.random() < 0.5 + SECTIONS[bars[b][0]][3] * 0.5 for b, a in enumerate(act)]
            act = _hold_per_section(bars, act)
        activity.append(act)
        song.parts.append(_chord_part(rng, song, style, role, int(rng.choice(programs)), act,
                                      f"{role}{j}"))

    # the sung lead, and a lead instrument where the vocals rest in solos and intros
    vocal_on = plays(0)
    female_lo = 57 if female else 47
    lo, hi = female_lo, female_lo + 17
    lead_part = Part("lead", "other", int(rng.choice(style.leads)), "lead")
    harmony = rng.random() < 0.5
    choir = (not harmony) and rng.random() < 0.35
    choir_part = Part("choir", "vocals", int(rng.choice([52, 53, 54])), "choir")
    motif: dict[str, tuple] = {}
    prev = (lo + hi) // 2
    words = list(LYRIC_WORDS)
    for bar in range(1, len(bars), 2):  # phrases start on odd bars: bar 0 is the pre-roll
        name = bars[bar][0]
        if name not in motif:
            motif[name] = _RHYTHMS[int(rng.integers(len(_RHYTHMS)))]
        rhythm = motif[name] if rng.random() < 0.7 else _RHYTHMS[int(rng.integers(len(_RHYTHMS)))]
        if vocal_on[bar] and rng.random() < 0.9:
            shift = 3 if name == "chorus" else 0
            mel = _melody(rng, song, bar, lo + shift, hi + shift, prev, rhythm)
            if not mel:
                continue
            prev = mel[-1][2]
            phrase = []
            for i, (t_on, t_off, m, acc) in enumerate(mel):
                long = t_off - t_on > 0.6
                word = str(rng.choice(OPEN_WORDS if long and rng.random() < 0.5 else words))
                legato = i + 1 < len(mel) and abs(mel[i + 1][0] - t_off) < 1e-6 and rng.random() < 0.4
                gap = 0.0 if legato else min(0.06, 0.25 * (t_off - t_on))
                gain = acc * (1.1 if name == "chorus" else 1.0) * float(rng.uniform(0.85, 1.0))
                phrase.append(SungNote(t_on, t_off - gap, float(m), word, gain, legato))
            song.vocal_phrases.append(phrase)
            if name == "chorus" and harmony:
                scale = [(tonic + s) % 12 for s in SCALES[mode]]
                hp = []
                for nt in phrase:
                    up = [x for x in range(int(nt.midi) + 3, int(nt.midi) + 5) if x % 12 in scale]
                    hp.append(SungNote(nt.start_s + 0.01, nt.end_s, float(up[0] if up else nt.midi + 3),
                                       nt.word, nt.gain * 0.8, nt.legato))
                song.harmony_phrases.append(hp)
            if name == "chorus" and choir:
                for b in (bar, bar + 1):
                    if b < len(bars):
                        for m in _voicing(bars[b][1][0][1], None, lo + 2, lo + 16, rng)[:3]:
                            t = _step_time(bpm, 0.0, 16, b, 0)
                            choir_part.notes.append(NoteEvent(t, t + bar_s * 0.97, m, 70))
        elif name in ("solo", "intro", "breakdown", "outro") and rng.random() < 0.6:
            mel = _melody(rng, song, bar, 62, 81, prev + 12, rhythm)
            for t_on, t_off, m, acc in mel:
                lead_part.notes.append(NoteEvent(t_on, t_off * 0.98 + t_on * 0.02, m, int(100 * acc)))
    if lead_part.notes:
        song.parts.append(lead_part)
    if choir_part.notes:
        song.parts.append(choir_part)
    return song


def _hold_per_section(bars, act: list[bool]) -> list[bool]:
    """Make activity constant within each section occurrence (its first bar decides)."""
    out, cur, prev = [], False, None
    for b, (name, _) in enumerate(bars):
        if name != prev or b == 0:
            cur = act[b]
        out.append(cur)
        prev = name
    return out
