"""Typed live parameters: name, unit, range, default and curve of everything a controller moves.

Every parameter a performer can move (a stem's gain, mute and solo, the guide-vocal level, the
key shift, the dry/wet of the separation) is a :class:`Param` in one :class:`ParamSet`. The set
keeps all current values in one float64 numpy array, :attr:`ParamSet.values`:

- control threads (MIDI, the CLI, a UI) write one element at a time through
  :meth:`ParamSet.set`, which validates, clamps and quantises first. One aligned 8-byte store
  is all another thread can observe, so no lock is needed;
- the worker reads the array once per hop (see :class:`~livestems.stream.core.mixer.StemMixer`)
  and ramps towards it per sample.

Curves map a control's travel ``position`` in [0, 1] onto a value range ``[lo, hi]`` (the
parameter's, or a narrower one a mapping chooses) and back; the inverse is what soft takeover
and motor-fader feedback need:

- ``linear``: ``lo + position * (hi - lo)``;
- ``fader`` (for dB): amplitude grows with ``position**2``, the "audio taper" of console and DJ
  faders: ``hi + 40 log10(position)`` dB, never below ``lo``. With ``hi = +6 dB`` unity gain sits
  at 71% of the travel, -6 dB at 50%, and the bottom is ``lo`` (silence when ``lo`` is -120).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Param", "ParamSet", "ParamError", "CURVES", "stem_params", "curve_value",
           "curve_position", "STEM_FIELDS", "MIN_GAIN_DB", "MAX_GAIN_DB"]

MIN_GAIN_DB = -120.0  # at or below this a gain is silence
MAX_GAIN_DB = 12.0
CURVES = ("linear", "fader")
STEM_FIELDS = ("gain", "mute", "solo")


class ParamError(ValueError):
    """A parameter name or value that cannot be used (unknown name, NaN, wrong type)."""


@dataclass(frozen=True)
class Param:
    """One controllable parameter.

    Args:
        name: dotted name, ``<stem>.gain`` / ``<stem>.mute`` / ``<stem>.solo``,
            ``guide.level``, ``key.shift``, ``separation.wet``.
        unit: ``dB``, ``on/off``, ``semitones``, ``%``.
        lo, hi: the range; values outside are clamped by :meth:`ParamSet.set`.
        default: the value at start-up and after :meth:`ParamSet.reset`.
        curve: default curve for a control moving it (one of :data:`CURVES`).
        step: values are rounded to multiples of ``step`` (0: continuous). On/off has 1.
        doc: one line for help text.
    """

    name: str
    unit: str
    lo: float
    hi: float
    default: float
    curve: str = "linear"
    step: float = 0.0
    doc: str = ""

    @property
    def is_switch(self) -> bool:
        """An on/off parameter (mute, solo): buttons drive it."""
        return self.unit == "on/off"

    def clamp(self, value: float) -> float:
        v = min(self.hi, max(self.lo, float(value)))
        if self.step:
            v = self.lo + round((v - self.lo) / self.step) * self.step
        return v

    def format(self, value: float) -> str:
        if self.is_switch:
            return "on" if value >= 0.5 else "off"
        if self.unit == "dB" and value <= MIN_GAIN_DB:
            return "-inf dB"
        if self.step >= 1:
            return f"{value:+.0f} {self.unit}"
        return f"{value:+.1f} {self.unit}" if self.unit == "dB" else f"{value:.0f} {self.unit}"


def curve_value(curve: str, position: float, lo: float, hi: float) -> float:
    """Value at ``position`` in [0, 1] of a control's travel (see the module docstring)."""
    p = min(1.0, max(0.0, float(position)))
    if curve == "fader":
        if p <= 0.0:
            return lo
        return max(lo, hi + 40.0 * math.log10(p))
    return lo + p * (hi - lo)


def curve_position(curve: str, value: float, lo: float, hi: float) -> float:
    """Inverse of :func:`curve_value`: where on the travel ``value`` sits, in [0, 1]."""
    v = min(max(lo, hi), max(min(lo, hi), float(value)))
    if curve == "fader":
        if v <= lo:
            return 0.0
        return min(1.0, 10.0 ** ((v - hi) / 40.0))
    return 0.0 if hi == lo else (v - lo) / (hi - lo)


def stem_params(sources) -> list[Param]:
    """The parameters of a model with stems ``sources`` (created per stem of the model)."""
    out = []
    for s in sources:
        out += [
            Param(f"{s}.gain", "dB", MIN_GAIN_DB, MAX_GAIN_DB, 0.0, "fader",
                  doc=f"level of the {s} stem in the mix (-120 dB is silence)"),
            Param(f"{s}.mute", "on/off", 0.0, 1.0, 0.0, step=1.0,
                  doc=f"silence the {s} stem in the mix"),
            Param(f"{s}.solo", "on/off", 0.0, 1.0, 0.0, step=1.0,
                  doc="while any stem is soloed, only soloed stems play (mute still silences)"),
        ]
    out += [
        Param("guide.level", "dB", MIN_GAIN_DB, 0.0, MIN_GAIN_DB, "fader",
              doc="guide vocal: the vocals' level in the karaoke output (-120 dB: removed)"),
        Param("key.shift", "semitones", -12.0, 12.0, 0.0, step=1.0,
              doc="transpose the music (live with `--key`, whose shifter adds ~30 ms; else inert)"),
        Param("separation.wet", "%", 0.0, 100.0, 100.0,
              doc="0%: the mix is every stem at unity (the input, unseparated); 100%: the "
                  "mixer's gains, mutes and solos apply fully"),
    ]
    return out


class ParamSet:
    """An ordered set of :class:`Param` with their current values (see module docstring).

    ``values`` (float64 ``[len(params)]``) is the one array the worker reads. ``version`` is
    bumped after every change, so a reader that polls (the feedback sender, a view) can tell
    cheaply whether anything moved.
    """

    def __init__(self, params):
        self.params = tuple(params)
        self._index = {p.name: i for i, p in enumerate(self.params)}
        if len(self._index) != len(self.params):
            raise ValueError("duplicate parameter names")
        self.values = np.array([p.default for p in self.params], dtype=np.float64)
        self.version = 0
        self._watchers: dict[int, list] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ParamError(f"unknown parameter {name!r}; parameters: "
                             f"{', '.join(self._index)}") from None

    def param(self, name: str) -> Param:
        return self.params[self.index(name)]

    def get(self, name: str) -> float:
        return float(self.values[self.index(name)])

    def set(self, name: str, value) -> float:
        """Control thread: set ``name`` (clamped to its range, rounded to its step); returns
        the value stored. Raises :class:`ParamError` for an unknown name or a non-number."""
        i = self.index(name)
        return self.set_index(i, value)

    def set_index(self, i: int, value) -> float:
        if isinstance(value, bool):
            value = float(value)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ParamError(f"{self.params[i].name}: expected a number, got {value!r}") \
                from None
        if v != v:
            raise ParamError(f"{self.params[i].name}: expected a number, got NaN")
        v = self.params[i].clamp(v)
        if self.values[i] != v:
            self.values[i] = v
            self.version += 1
            for fn in self._watchers.get(i, ()):
                fn(v)
        return v

    def watch(self, name: str, fn) -> None:
        """Call ``fn(value)`` on the setting thread after every change of ``name`` (for
        parameters applied outside the mixer: the guide level, the key shift)."""
        self._watchers.setdefault(self.index(name), []).append(fn)

    def reset(self) -> None:
        for i, p in enumerate(self.params):
            self.set_index(i, p.default)

    def snapshot(self) -> dict[str, float]:
        return {p.name: float(self.values[i]) for i, p in enumerate(self.params)}
