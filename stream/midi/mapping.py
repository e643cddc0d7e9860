"""MIDI mapping files (TOML): which control moves which parameter, how, and the mix presets.

The format (docs/MIDI.md has the full reference)::

    [midi]                      # defaults for every control
    channel = "any"             # 1..16 or "any"
    soft_takeover = true        # absolute controls pick up the value before moving it
    takeover_window = 0.03      # how close (fraction of the travel) counts as "at the value"
    feedback = false            # echo state to the controller (LEDs, motor faders)
    program_channel = "any"     # channel whose program changes recall presets

    [[control]]
    param = "vocals.gain"       # `livestems midi --list-params`
    cc = 0                      # or note = 36, or pitchbend = true
    cc14 = false                # 14-bit: MSB on cc (0..31), LSB on cc + 32
    channel = 1
    mode = "absolute"           # absolute | relative (CC) | toggle | momentary (buttons)
    encoding = "twos-complement"   # relative: twos-complement | offset | sign-magnitude
    steps = 128                 # relative: ticks for the whole travel
    range = [-120, 6]           # part of the parameter's range the travel covers
    curve = "fader"             # linear | fader
    soft_takeover = true
    feedback = true

    [preset.karaoke]            # program change 1 recalls it
    program = 1
    vocals.gain = -120
    accompaniment.gain = 0

Everything is checked when the file is loaded: unknown keys, values out of range, a control
bound twice to parameters of the loaded model (both lines named), a program number used
twice, syntax errors (line and column).
A parameter of a stem the loaded model lacks (``drums.gain`` with the 2-stem ``center``) is
not an error: that entry is kept but inactive, and :attr:`Mapping.notes` says so, so one file
serves 2-stem and 4-stem models (fader 2 can drive ``drums.gain`` and ``accompaniment.gain``:
only one of them exists in any model).

:func:`write_learned` adds a learned control to the file with tomlkit, keeping the user's
comments, layout and other entries.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from livestems.stream.errors import LivestemsError
from livestems.stream.core.params import CURVES, STEM_FIELDS, ParamSet

__all__ = ["Binding", "Preset", "Mapping", "MappingError", "load_mapping", "parse_mapping",
           "default_mapping_path", "write_learned", "KNOWN_STEMS"]

# stems some model has: a mapping may name them even when the loaded model lacks them
KNOWN_STEMS = ("vocals", "drums", "bass", "other", "accompaniment", "piano", "guitar")
MODES = ("absolute", "relative", "toggle", "momentary")
ENCODINGS = ("twos-complement", "offset", "sign-magnitude")
_CONTROL_KEYS = ("param", "cc", "note", "pitchbend", "cc14", "channel", "mode", "encoding",
                 "steps", "range", "curve", "soft_takeover", "feedback")
_MIDI_KEYS = ("channel", "soft_takeover", "takeover_window", "feedback", "program_channel")
_TOP_KEYS = ("midi", "control", "preset")


class MappingError(LivestemsError):
    """A mapping file that cannot be used; the message names the file, line and reason."""

    exit_code = 2


@dataclass
class Binding:
    """One control -> one parameter, as loaded (field names follow the file's keys).

    ``kind``: 'cc', 'note' or 'pitchbend'; ``number``: CC or note number (0 for pitch bend);
    ``channel``: 0..15, or None for any channel; ``lo``/``hi``: the value range the travel
    covers. ``line``: where it is in the file (0: not from a file). ``active``: False when
    the parameter belongs to a stem this model lacks.
    """

    param: str
    kind: str
    number: int = 0
    channel: int | None = None
    cc14: bool = False
    mode: str = "absolute"
    encoding: str = "twos-complement"
    steps: int = 128
    lo: float = 0.0
    hi: float = 1.0
    curve: str = "linear"
    soft_takeover: bool = True
    takeover_window: float = 0.03
    feedback: bool = False
    line: int = 0
    active: bool = True

    def describe(self) -> str:
        ch = "any channel" if self.channel is None else f"channel {self.channel + 1}"
        if self.kind == "cc":
            what = f"CC {self.number}" + (f"/{self.number + 32} (14-bit)" if self.cc14 else "")
        elif self.kind == "note":
            what = f"note {self.number}"
        else:
            what = "pitch bend"
        return f"{what} on {ch}"

    def keys(self) -> list[tuple[int | None, str, int]]:
        """The (channel, kind, number) messages this binding listens to."""
        if self.kind == "cc" and self.cc14:
            return [(self.channel, "cc", self.number), (self.channel, "cc", self.number + 32)]
        return [(self.channel, self.kind, self.number)]


@dataclass
class Preset:
    """A named set of parameter values, recalled by program change ``program``."""

    name: str
    program: int | None
    values: dict[str, float]
    line: int = 0


@dataclass
class Mapping:
    """A loaded, validated mapping (see the module docstring)."""

    bindings: list[Binding] = field(default_factory=list)
    presets: list[Preset] = field(default_factory=list)
    program_channel: int | None = None
    defaults: dict = field(default_factory=dict)
    path: str | None = None
    notes: list[str] = field(default_factory=list)

    def preset_for(self, program: int) -> Preset | None:
        for p in self.presets:
            if p.program == program:
                return p
        return None


def default_mapping_path() -> Path:
    """The mapping shipped with the package: a generic 4-fader controller."""
    return Path(str(resources.files("livestems.stream.midi").joinpath("data/default-midi.toml")))


# -- where things are in the file ------------------------------------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=""")


def _norm_key(k: str) -> str:
    """``a . "b"`` -> ``a.b`` (the dotted name tomllib's nesting gives back after flattening)."""
    return ".".join(p.strip("\"'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', k))


class _Lines:
    """Line numbers of tables and keys, found by scanning the text (tomllib gives none).

    ``table(path, k)``: line of the header of the k-th ``[[path]]`` (or of ``[path]``);
    ``key(path, k, key)``: line of ``key = ...`` inside it (falls back to the header)."""

    def __init__(self, text: str):
        self._tables: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
        counts: dict[str, int] = {}
        cur = ("", 0)
        self._tables[cur] = (1, {})
        for no, line in enumerate(text.splitlines(), 1):
            m = _HEADER.match(line)
            if m and not line.lstrip().startswith("#"):
                path = _norm_key(m.group(2))
                k = counts.get(path, 0)
                counts[path] = k + 1
                cur = (path, k)
                self._tables[cur] = (no, {})
                continue
            m = _KEY.match(line)
            if m:
                self._tables[cur][1].setdefault(_norm_key(m.group(1)), no)

    def table(self, path: str, k: int = 0) -> int:
        return self._tables.get((path, k), (0, {}))[0]

    def key(self, path: str, k: int, key: str) -> int:
        line, keys = self._tables.get((path, k), (0, {}))
        if key in keys:
            return keys[key]
        # a dotted key may sit in the table as its first part (vocals = { gain = 1 })
        first = key.split(".")[0]
        return keys.get(first, line)


# -- loading ---------------------------------------------------------------------------------
def load_mapping(path: str | os.PathLike | None, params: ParamSet) -> Mapping:
    """Read and check a mapping file (None: the default mapping) against ``params``.

    Raises :class:`MappingError` naming every problem with its line."""
    p = default_mapping_path() if path is None else Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError("mapping file not found", path=p,
                           fix="check the path, or start one with `livestems midi --map "
                               f"{p} --learn PARAM`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read the mapping file: {exc}", path=p) from None
    return parse_mapping(text, params, path=str(p))


def _channel(value, where, errors, line):
    if value == "any":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
        errors.append((line, f"{where}: channel must be 1..16 or \"any\", got {value!r}"))
        return None
    return value - 1


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _param_ok(name: str, params: ParamSet, where: str, errors, line, notes) -> bool | None:
    """True: a parameter of this model; False: a known stem this model lacks (inactive);
    None: an error (recorded)."""
    if not isinstance(name, str):
        errors.append((line, f"{where}: param must be a parameter name (text), got {name!r}"))
        return None
    if name in params:
        return True
    stem, _, fld = name.partition(".")
    if stem in KNOWN_STEMS and fld in STEM_FIELDS:
        notes.append(f"line {line}: {name} is inactive: this model has no {stem} stem "
                     f"(stems: {', '.join(n[:-5] for n in params.names if n.endswith('.gain'))})")
        return False
    errors.append((line, f"{where}: unknown parameter {name!r}; expected one of "
                         f"{', '.join(params.names)}"))
    return None


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_mapping(text: str, params: ParamSet, path: str | None = None) -> Mapping:
    """:func:`load_mapping` for text already read (``path`` only names it in messages)."""
    where_file = path or "mapping"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            reason = msg[:m.start()].strip()
            problem = f"line {m.group(1)}, column {m.group(2)}: TOML syntax error: {reason}"
        else:
            problem = f"TOML syntax error: {msg}"
        raise MappingError(problem, path=path,
                           fix="see docs/MIDI.md for the format") from None
    lines = _Lines(text)
    errors: list[tuple[int, str]] = []
    notes: list[str] = []
    for k in data:
        if k not in _TOP_KEYS:
            errors.append((lines.table(k) or lines.key("", 0, k),
                           f"unknown top-level key {k!r}; expected {', '.join(_TOP_KEYS)}"))

    # [midi] defaults
    midi = data.get("midi", {})
    defaults = {"channel": None, "soft_takeover": True, "takeover_window": 0.03,
                "feedback": False, "program_channel": None}
    if not isinstance(midi, dict):
        errors.append((lines.key("", 0, "midi"), "[midi] must be a table"))
        midi = {}
    for k, v in midi.items():
        line = lines.key("midi", 0, k)
        if k not in _MIDI_KEYS:
            errors.append((line, f"[midi]: unknown key {k!r}; expected one of "
                                 f"{', '.join(_MIDI_KEYS)}"))
        elif k in ("channel", "program_channel"):
            defaults[k] = _channel(v, f"[midi] {k}", errors, line)
        elif k in ("soft_takeover", "feedback"):
            if not isinstance(v, bool):
                errors.append((line, f"[midi] {k}: expected true or false, got {v!r}"))
            else:
                defaults[k] = v
        elif k == "takeover_window":
            if not _num(v) or not 0.0 <= v <= 0.5:
                errors.append((line, f"[midi] takeover_window: expected a fraction of the "
                                     f"travel in 0..0.5, got {v!r}"))
            else:
                defaults[k] = float(v)

    bindings: list[Binding] = []
    controls = data.get("control", [])
    if not isinstance(controls, list):
        errors.append((lines.key("", 0, "control"),
                       "control must be an array of tables: write [[control]]"))
        controls = []
    for i, c in enumerate(controls):
        b = _parse_control(c, i, params, defaults, lines, errors, notes)
        if b is not None:
            bindings.append(b)

    # one control bound twice
    seen: dict[tuple[str, int], list[tuple[int | None, Binding]]] = {}
    for b in bindings:
        if not b.active:  # a stem this model lacks: may share a control with its stand-in
            continue
        for ch, kind, num in b.keys():
            for other_ch, other in seen.get((kind, num), ()):
                if other is not b and (ch is None or other_ch is None or ch == other_ch):
                    errors.append((b.line, f"{b.describe()} is bound twice: line "
                                           f"{other.line} ({other.param}) and line {b.line} "
                                           f"({b.param}); remove one or give them different "
                                           f"channels"))
                    break
            seen.setdefault((kind, num), []).append((ch, b))

    presets: list[Preset] = []
    ptab = data.get("preset", {})
    if not isinstance(ptab, dict):
        errors.append((lines.key("", 0, "preset"),
                       "preset must be tables: write [preset.NAME]"))
        ptab = {}
    programs: dict[int, Preset] = {}
    for name, body in ptab.items():
        line = lines.table(f"preset.{name}")
        if not isinstance(body, dict):
            errors.append((line, f"[preset.{name}] must be a table of parameter = value"))
            continue
        values = {}
        program = None
        for k, v in _flatten(body).items():
            kl = lines.key(f"preset.{name}", 0, k) or line
            if k == "program":
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 127:
                    errors.append((kl, f"[preset.{name}] program: expected 0..127, got {v!r}"))
                else:
                    program = v
                continue
            ok = _param_ok(k, params, f"[preset.{name}]", errors, kl, notes)
            if ok is None or ok is False:
                continue
            p = params.param(k)
            if isinstance(v, bool) and p.is_switch:
                v = float(v)
            if not _num(v) or not p.lo <= v <= p.hi:
                errors.append((kl, f"[preset.{name}] {k}: expected {p.lo:g}..{p.hi:g} {p.unit}, "
                                   f"got {v!r}"))
                continue
            values[k] = float(v)
        pr = Preset(name, program, values, line)
        if program is not None and program in programs:
            errors.append((line, f"program {program} recalls two presets: line "
                                 f"{programs[program].line} ({programs[program].name}) and line "
                                 f"{line} ({name})"))
        elif program is not None:
            programs[program] = pr
        presets.append(pr)

    if errors:
        errors.sort(key=lambda e: e[0])
        body = "\n  ".join(f"line {ln}: {msg}" for ln, msg in errors)
        raise MappingError(f"{len(errors)} problem(s) in the MIDI mapping:\n  {body}",
                           path=where_file, fix="see docs/MIDI.md for the format")
    return Mapping(bindings, presets, defaults["program_channel"], defaults, path, notes)


def _parse_control(c, i, params, defaults, lines, errors, notes) -> Binding | None:
    head = lines.table("control", i)
    where = f"[[control]] at line {head}"

    def line_of(key):
        return lines.key("control", i, key) or head

    if not isinstance(c, dict):
        errors.append((head, f"{where}: expected a table"))
        return None
    n_err = len(errors)
    for k in c:
        if k not in _CONTROL_KEYS:
            errors.append((line_of(k), f"{where}: unknown key {k!r}; expected one of "
                                       f"{', '.join(_CONTROL_KEYS)}"))
    if "param" not in c:
        errors.append((head, f"{where}: missing param = \"...\" (the parameter it moves)"))
        return None
    active = _param_ok(c["param"], params, where, errors, line_of("param"), notes)
    if active is None:
        return None
    sources = [k for k in ("cc", "note", "pitchbend") if k in c]
    if len(sources) != 1:
        errors.append((head, f"{where}: give exactly one of cc, note or pitchbend, got "
                             f"{', '.join(sources) or 'none'}"))
        return None
    kind = sources[0]
    number = 0
    if kind == "pitchbend":
        if c["pitchbend"] is not True:
            errors.append((line_of("pitchbend"), f"{where}: pitchbend must be true"))
    else:
        v = c[kind]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 127:
            errors.append((line_of(kind), f"{where}: {kind} must be 0..127, got {v!r}"))
        else:
            number = v
    b = Binding(param=c["param"], kind=kind, number=number, line=head, active=bool(active),
                channel=defaults["channel"], soft_takeover=defaults["soft_takeover"],
                takeover_window=defaults["takeover_window"], feedback=defaults["feedback"])
    if "channel" in c:
        b.channel = _channel(c["channel"], where, errors, line_of("channel"))
    for key in ("cc14", "soft_takeover", "feedback"):
        if key in c:
            if not isinstance(c[key], bool):
                errors.append((line_of(key), f"{where}: {key} must be true or false, got "
                                             f"{c[key]!r}"))
            else:
                setattr(b, key, c[key])
    if b.cc14 and (kind != "cc" or not 0 <= number <= 31):
        errors.append((line_of("cc14"), f"{where}: cc14 needs cc = 0..31 (the MSB; the LSB is "
                                        f"cc + 32), got {kind} {number}"))
    p = params.param(b.param) if active else None
    switch = p.is_switch if p else b.param.endswith((".mute", ".solo"))
    default_mode = "toggle" if switch and kind in ("cc", "note") else "absolute"
    b.mode = c.get("mode", default_mode)
    if b.mode not in MODES:
        errors.append((line_of("mode"), f"{where}: mode must be one of {', '.join(MODES)}, "
                                        f"got {b.mode!r}"))
    elif b.mode in ("toggle", "momentary") and not switch:
        errors.append((line_of("mode"), f"{where}: mode {b.mode!r} is for on/off parameters "
                                        f"(mute, solo); {b.param} is continuous"))
    elif b.mode == "relative" and kind != "cc":
        errors.append((line_of("mode"), f"{where}: relative mode needs a CC (an endless "
                                        f"encoder), got {kind}"))
    elif b.mode == "relative" and b.cc14:
        errors.append((line_of("mode"), f"{where}: a relative encoder cannot be 14-bit"))
    elif kind == "note" and b.mode not in ("toggle", "momentary"):
        errors.append((line_of("mode"), f"{where}: a note is a button: mode toggle or "
                                        f"momentary, got {b.mode!r}"))
    b.encoding = c.get("encoding", "twos-complement")
    if b.encoding not in ENCODINGS:
        errors.append((line_of("encoding"), f"{where}: encoding must be one of "
                                            f"{', '.join(ENCODINGS)}, got {b.encoding!r}"))
    if "steps" in c:
        v = c["steps"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100000:
            errors.append((line_of("steps"), f"{where}: steps must be 1..100000 ticks for the "
                                             f"whole travel, got {v!r}"))
        else:
            b.steps = v
    b.curve = c.get("curve", p.curve if p else "linear")
    if b.curve not in CURVES:
        errors.append((line_of("curve"), f"{where}: curve must be one of {', '.join(CURVES)}, "
                                         f"got {b.curve!r}"))
    if p is not None:
        b.lo, b.hi = p.lo, p.hi
        if "range" in c:
            r = c["range"]
            if (not isinstance(r, list) or len(r) != 2 or not all(_num(x) for x in r)):
                errors.append((line_of("range"), f"{where}: range must be [low, high] in "
                                                 f"{p.unit}, got {r!r}"))
            elif not (p.lo <= r[0] <= p.hi and p.lo <= r[1] <= p.hi) or r[0] == r[1]:
                errors.append((line_of("range"), f"{where}: range {r} is outside {b.param}'s "
                                                 f"{p.lo:g}..{p.hi:g} {p.unit} (or empty)"))
            else:
                b.lo, b.hi = float(r[0]), float(r[1])
        if b.curve == "fader" and b.lo > b.hi:
            errors.append((line_of("range"), f"{where}: the fader curve needs range [low, high] "
                                             f"with low < high"))
    if len(errors) > n_err:
        return None
    return b


# -- learn: write back -------------------------------------------------------------------------
_NEW_FILE = """\
# livestems MIDI mapping (format: docs/MIDI.md). Learned controls are appended below;
# comments and entries you write yourself are kept.
"""


def write_learned(path: str | os.PathLike, binding: Binding, value_range=None) -> int:
    """Add ``binding`` to the mapping file at ``path`` (created if missing) as a
    ``[[control]]`` entry, first removing any entry bound to the same control; comments and
    every other entry stay as they were. ``value_range``: ``(lo, hi)`` written as ``range``.
    Returns the line of the new entry."""
    import tomlkit

    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else _NEW_FILE
    doc = tomlkit.parse(text)
    if "control" in doc:
        aot = doc["control"]
        keep = []
        for t in aot:
            same_kind = (("cc" in t and binding.kind == "cc") or
                         ("note" in t and binding.kind == "note") or
                         ("pitchbend" in t and binding.kind == "pitchbend"))
            nums = set()
            if same_kind and binding.kind != "pitchbend":
                n = int(t[binding.kind])
                nums = {n, n + 32} if t.get("cc14", False) else {n}
            ch = t.get("channel", doc.get("midi", {}).get("channel", "any"))
            ch = None if ch == "any" else int(ch) - 1
            mine = {k[2] for k in binding.keys()}
            clash = same_kind and (binding.kind == "pitchbend" or nums & mine) and \
                (ch is None or binding.channel is None or ch == binding.channel)
            if not clash:
                keep.append(t)
        for j in reversed(range(len(aot))):
            if not any(aot[j] is t for t in keep):
                del aot[j]
    else:
        aot = tomlkit.aot()
        doc.append("control", aot)
    t = tomlkit.table()
    t.add(tomlkit.comment("learned"))
    t["param"] = binding.param
    if binding.kind == "pitchbend":
        t["pitchbend"] = True
    else:
        t[binding.kind] = binding.number
    if binding.cc14:
        t["cc14"] = True
    t["channel"] = "any" if binding.channel is None else binding.channel + 1
    if binding.mode not in ("absolute",) or binding.kind == "note":
        t["mode"] = binding.mode
    if binding.mode == "relative":
        t["encoding"] = binding.encoding
    if value_range is not None:
        t["range"] = [float(value_range[0]), float(value_range[1])]
    aot.append(t)
    out = tomlkit.dumps(doc)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(out)
    os.replace(tmp, path)
    return _Lines(out).table("control", len(aot) - 1)


def with_binding(mapping: Mapping, b: Binding) -> Mapping:
    """A copy of ``mapping`` with ``b`` added and bindings on the same control removed."""
    mine = {(k[1], k[2]) for k in b.keys()}
    keep = []
    for o in mapping.bindings:
        clash = any((k[1], k[2]) in mine and (k[0] is None or b.channel is None
                                               or k[0] == b.channel) for k in o.keys())
        if not clash:
            keep.append(o)
    return replace(mapping, bindings=keep + [b])
