"""FluidSynth through its C library: render timed MIDI note events to float32 stereo audio.

The synthesiser runs offline (no audio driver, no MIDI files): events are applied at exact
sample positions and audio is pulled with ``fluid_synth_write_float`` in between, so a track
renders at hundreds of times real time. FluidSynth's own reverb and chorus are off; the mixer
(:mod:`.mix`) adds those, per stem, so the stems stay separable and sum to the mixture.

One instance per process and sound font keeps the sound font's samples cached (loading
FluidR3_GM takes ~0.2 s); each track is played by a fresh synthesiser made from it, so a
track's audio depends only on its own events (events land on FluidSynth's 64-sample blocks).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_SOUNDFONTS",
    "DRUM_CHANNEL",
    "FluidError",
    "FluidRenderer",
    "NoteEvent",
    "find_soundfont",
    "get_renderer",
]

#: General MIDI sound fonts shipped by Debian, in order of preference (fluid-soundfont-gm,
#: then musescore-general-soundfont if present). Debian's TimGM6mb (timgm6mb-soundfont) is
#: never picked by default: it is kept for evaluation renders (a set made with a sound font
#: the training data never used); name it explicitly for those.
DEFAULT_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/MuseScore_General.sf2",
)

#: MIDI channel (0-based) that GM reserves for percussion; programs there select drum kits
DRUM_CHANNEL = 9

_DEBIAN_FIX = "apt-get install fluidsynth fluid-soundfont-gm (Debian/Ubuntu)"


class FluidError(RuntimeError):
    """FluidSynth (library or sound font) is missing or refused a request; says how to fix."""


@dataclass(frozen=True)
class NoteEvent:
    """One note: ``start_s``/``end_s`` in seconds from the track start, MIDI ``key`` 0-127,
    ``velocity`` 1-127. ``bend`` (semitones, -2..2) is applied at the note start for the
    whole channel; use it only on monophonic tracks."""

    start_s: float
    end_s: float
    key: int
    velocity: int
    bend: float = 0.0


def find_soundfont(path: str | os.PathLike | None = None) -> Path:
    """The sound font to use: ``path``, else ``$LIVESTEMS_SOUNDFONT``, else the first of
    :data:`DEFAULT_SOUNDFONTS` that exists. Raises FluidError when none is found."""
    if path is None:
        path = os.environ.get("LIVESTEMS_SOUNDFONT") or None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FluidError(f"sound font not found: expected an .sf2 file, got {p}. Fix: pass "
                             f"an existing General MIDI .sf2, or {_DEBIAN_FIX}")
        return p
    for cand in DEFAULT_SOUNDFONTS:
        if Path(cand).is_file():
            return Path(cand)
    raise FluidError(f"no General MIDI sound font found (looked for {', '.join(DEFAULT_SOUNDFONTS)})"
                     f". Fix: {_DEBIAN_FIX}, or set LIVESTEMS_SOUNDFONT to an .sf2 file")


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("fluidsynth")
    if name is None:
        raise FluidError(f"libfluidsynth not found: expected the FluidSynth shared library. "
                         f"Fix: {_DEBIAN_FIX}")
    lib = ctypes.CDLL(name)
    vp, ci, cd, cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
    sigs = {
        "new_fluid_settings": (vp, []),
        "delete_fluid_settings": (None, [vp]),
        "fluid_settings_setnum": (ci, [vp, cs, cd]),
        "fluid_settings_setint": (ci, [vp, cs, ci]),
        "new_fluid_synth": (vp, [vp]),
        "delete_fluid_synth": (None, [vp]),
        "fluid_synth_sfload": (ci, [vp, cs, ci]),
        "fluid_synth_get_sfont_by_id": (vp, [vp, ci]),
        "fluid_sfont_get_preset": (vp, [vp, ci, ci]),
        "fluid_synth_program_select": (ci, [vp, ci, ci, ci, ci]),
        "fluid_synth_noteon": (ci, [vp, ci, ci, ci]),
        "fluid_synth_noteoff": (ci, [vp, ci, ci]),
        "fluid_synth_cc": (ci, [vp, ci, ci, ci]),
        "fluid_synth_pitch_bend": (ci, [vp, ci, ci]),
        "fluid_synth_system_reset": (ci, [vp]),
        "fluid_synth_all_sounds_off": (ci, [vp, ci]),
        "fluid_synth_write_float": (ci, [vp, ci, vp, ci, ci, vp, ci, ci]),
        "fluid_set_log_function": (vp, [ci, vp, vp]),
    }
    for fname, (res, args) in sigs.items():
        fn = getattr(lib, fname)
        fn.restype, fn.argtypes = res, args
    # warnings about missing presets are handled (we check presets ourselves); keep stderr clean
    for level in (2, 3, 4):  # FLUID_WARN, FLUID_INFO, FLUID_DBG
        lib.fluid_set_log_function(level, None, None)
    return lib


class FluidRenderer:
    """An offline FluidSynth instance with one sound font loaded.

    Args:
        soundfont: path of a General MIDI ``.sf2`` (see :func:`find_soundfont`).
        sample_rate: Hz of the rendered audio.

    Not thread-safe: use one renderer per thread (:func:`get_renderer` does).
    """

    def __init__(self, soundfont: str | os.PathLike | None = None, sample_rate: int = 44100):
        self.soundfont = find_soundfont(soundfont)
        self.sample_rate = int(sample_rate)
        self._lib = lib = _load_library()
        self._settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(self._settings, b"synth.sample-rate", float(sample_rate))
        lib.fluid_settings_setint(self._settings, b"synth.reverb.active", 0)
        lib.fluid_settings_setint(self._settings, b"synth.chorus.active", 0)
        lib.fluid_settings_setint(self._settings, b"synth.cpu-cores", 1)
        lib.fluid_settings_setint(self._settings, b"synth.polyphony", 256)
        lib.fluid_settings_setnum(self._settings, b"synth.gain", 0.5)
        self._synth = lib.new_fluid_synth(self._settings)
        if not self._synth:
            raise FluidError("FluidSynth could not create a synthesiser (out of memory?)")
        self._sfid = lib.fluid_synth_sfload(self._synth, str(self.soundfont).encode(), 1)
        if self._sfid < 0:
            raise FluidError(f"FluidSynth cannot load sound font {self.soundfont}: expected a "
                             f"valid .sf2 file. Fix: reinstall it ({_DEBIAN_FIX})")
        self._sfont = lib.fluid_synth_get_sfont_by_id(self._synth, self._sfid)

    def close(self) -> None:
        if self._synth:
            self._lib.delete_fluid_synth(self._synth)
            self._lib.delete_fluid_settings(self._settings)
            self._synth = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def has_preset(self, bank: int, program: int) -> bool:
        """Whether the sound font has ``program`` in ``bank`` (drum kits live in bank 128)."""
        return bool(self._lib.fluid_sfont_get_preset(self._sfont, int(bank), int(program)))

    def render(self, notes: list[NoteEvent], program: int, n_samples: int, *,
               drums: bool = False, controls: dict[int, int] | None = None) -> np.ndarray:
        """Render one instrument track.

        Args:
            notes: the track's notes; times past ``n_samples`` are ignored.
            program: GM program 0-127 (for ``drums``, the drum kit: 0 standard, 8 room,
                16 power, 24 electronic, 25 TR-808, 32 jazz, 40 brush); a program the sound
                font lacks falls back to 0.
            n_samples: length of the output in samples at :attr:`sample_rate`.
            drums: play on the percussion channel (bank 128).
            controls: MIDI CC number -> value set before the first note (e.g. 74 brightness).

        Returns:
            float32 ``[2, n_samples]``, the sound font's own stereo image, linear full scale.
        """
        lib = self._lib
        chan = DRUM_CHANNEL if drums else 0
        bank = 128 if drums else 0
        # A fresh synthesiser per track: FluidSynth renders ahead in blocks and lets killed
        # voices fade, so a reused one leaks the previous track's tail into this one and
        # shifts event timing by its block phase. The sample data stays cached by the
        # long-lived instance, so this costs ~70 ms, not a sound-font load.
        syn = lib.new_fluid_synth(self._settings)
        if not syn:
            raise FluidError("FluidSynth could not create a synthesiser (out of memory?)")
        try:
            sfid = lib.fluid_synth_sfload(syn, str(self.soundfont).encode(), 1)
            if sfid < 0:
                raise FluidError(f"FluidSynth cannot load sound font {self.soundfont}")
            return self._render(syn, sfid, notes, program, n_samples, chan, bank, drums,
                                controls or {})
        finally:
            lib.delete_fluid_synth(syn)

    def _render(self, syn, sfid, notes, program, n_samples, chan, bank, drums, controls):
        lib, sr = self._lib, self.sample_rate
        if not self.has_preset(bank, program):
            program = 0
        if lib.fluid_synth_program_select(syn, chan, sfid, bank, int(program)) != 0:
            raise FluidError(f"sound font {self.soundfont} has no bank {bank} program {program}")
        for num, val in controls.items():
            lib.fluid_synth_cc(syn, chan, int(num), int(val))
        # (sample, order, kind, key, value): note-offs sort before note-ons at the same sample,
        # so a repeated key retriggers instead of being cut by its own release
        events = []
        for nt in notes:
            on = int(round(nt.start_s * sr))
            off = int(round(nt.end_s * sr))
            if on >= n_samples or off <= on:
                continue
            events.append((on, 1, int(nt.key), int(np.clip(nt.velocity, 1, 127)), nt.bend))
            events.append((off, 0, int(nt.key), 0, 0.0))
        events.sort(key=lambda e: (e[0], e[1]))
        out = np.zeros((2, n_samples), dtype=np.float32)
        left, right = out[0], out[1]
        pos = 0
        for when, kind, key, vel, bend in events:
            when = min(max(when, 0), n_samples)
            if when > pos:
                self._write(syn, left, right, pos, when - pos)
                pos = when
            if kind == 1:
                if not drums:
                    lib.fluid_synth_pitch_bend(syn, chan, int(8192 + np.clip(bend, -2, 2) * 4096))
                lib.fluid_synth_noteon(syn, chan, key, vel)
            else:
                lib.fluid_synth_noteoff(syn, chan, key)
        if pos < n_samples:
            self._write(syn, left, right, pos, n_samples - pos)
        return out

    def _write(self, syn, left: np.ndarray, right: np.ndarray, pos: int, count: int) -> None:
        # write_float takes a pointer and an offset; the arrays are C-contiguous float32
        self._lib.fluid_synth_write_float(syn, count, left.ctypes.data, pos, 1,
                                          right.ctypes.data, pos, 1)


_local = threading.local()


def get_renderer(soundfont: str | os.PathLike | None = None,
                 sample_rate: int = 44100) -> FluidRenderer:
    """A cached :class:`FluidRenderer` for this thread, sound font and sample rate."""
    key = (str(find_soundfont(soundfont)), int(sample_rate))
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    if key not in cache:
        cache[key] = FluidRenderer(key[0], sample_rate)
    return cache[key]
