"""The MIDI control thread: parsed events -> parameters, with soft takeover, learn and presets.

:class:`MidiController` owns a :class:`~livestems.stream.midi.mapping.Mapping` and a
:class:`~livestems.stream.core.params.ParamSet`. Its thread (``livestems-midi``) polls the MIDI
sources every millisecond, parses their bytes (:class:`~livestems.stream.midi.input.MidiParser`,
one per source), and turns each event into at most a few :meth:`ParamSet.set` calls: the only
thing that crosses over to the audio side is that store into the parameter array. Every few
hundred milliseconds it asks the sources whether a port vanished or returned, and (with
feedback on) sends LED and motor-fader updates for parameters that changed.

Conventions (the ones Mixxx and Traktor users know):

- absolute controls with soft takeover ignore the fader until it reaches the parameter's
  current value (within ``takeover_window`` of the travel) or passes through it; while a
  control is the last to have written its parameter it is "in sync" and moves it directly;
- 14-bit CCs: the MSB (CC n) sets the value with the LSB reset to 0, as the MIDI spec says;
  the LSB (CC n + 32) refines it;
- relative encoders: two's complement (1..63 up, 127..65 down), binary offset (65 up, 63
  down) or sign-magnitude (1..63 up, 65..127 down), ``steps`` ticks for the whole travel;
- buttons: toggle flips on press; momentary is on while held; a note on with velocity 0 is a
  release;
- program change N recalls the preset whose ``program = N``.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass

from livestems.stream.midi.input import CC, NOTE_OFF, NOTE_ON, PITCH_BEND, PROGRAM, MidiEvent, MidiParser
from livestems.stream.midi.mapping import Binding, Mapping, with_binding, write_learned
from livestems.stream.core.params import ParamSet, curve_position, curve_value

__all__ = ["MidiController"]

_POLL_S = 0.001
_CHECK_S = 0.25
_FEEDBACK_S = 0.02
_LSB_WAIT_S = 0.15  # learn: how long to wait for CC n + 32 after CC n (14-bit detection)


@dataclass
class _State:
    """Per-binding runtime state (control thread only)."""

    written: float | None = None  # the value this control last stored
    pos: float | None = None  # the position of its last message, in [0, 1]
    msb: int = 0
    lsb: int = 0
    shown: tuple | None = None  # what the controller shows (feedback)


def _relative_ticks(value: int, encoding: str) -> int:
    if encoding == "offset":
        return value - 64
    if encoding == "sign-magnitude":
        return -(value - 64) if value > 64 else value
    return value - 128 if value >= 64 else value  # two's complement, 7 bits


class MidiController:
    """Applies MIDI to parameters (see the module docstring). Thread contract: after
    :meth:`start`, only the control thread calls :meth:`feed`/:meth:`handle`; other threads
    use :meth:`learn`, :meth:`stats`, :meth:`stop`.

    Args:
        params: the parameters to move.
        mapping: the loaded mapping.
        map_path: file that learned controls are written back to (None: learn in memory).
        sources: objects with ``read() -> list[bytes]`` and ``check() -> list[str]``.
        send: ``send(bytes)`` for feedback messages (None: no feedback).
        notify: called with one line for people (lost/restored ports, learned controls,
            presets); default prints to stderr.
    """

    def __init__(self, params: ParamSet, mapping: Mapping, *, map_path=None, sources=(),
                 send=None, notify=None):
        self.params = params
        self.map_path = map_path
        self.sources = list(sources)
        self.send = send
        self.notify = notify or (lambda line: print(line, file=sys.stderr, flush=True))
        self.recent: collections.deque[str] = collections.deque(maxlen=8)
        self._parsers: dict[int, MidiParser] = {}
        self.counts = collections.Counter()
        self._learn: dict | None = None
        self.learned: list[Binding] = []
        self._thread: threading.Thread | None = None
        self._running = False
        self._use(mapping)

    def _use(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self._states: dict[int, _State] = {}
        self._by_key: dict[tuple[str, int], list[Binding]] = {}
        for b in mapping.bindings:
            if not b.active:
                continue
            self._states[id(b)] = _State()
            for ch, kind, num in b.keys():
                self._by_key.setdefault((kind, num), []).append(b)

    def _say(self, line: str) -> None:
        self.recent.append(line)
        self.notify(line)

    # -- the control thread ----------------------------------------------------------------
    def start(self) -> "MidiController":
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="livestems-midi",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            # bounded: after a JACK server died, a port query on this thread can block in
            # libjack; the thread is a daemon, so the program still exits
            self._thread.join(timeout=2.0)
            self._thread = None

    def _idle(self, next_check: float, next_fb: float) -> None:
        """Between two polls: with one source that can wake us (``wait(timeout)``, the C
        JACK callback's MIDI ring), sleep until it has events or the next port check,
        feedback or learn deadline is due; otherwise sleep :data:`_POLL_S`."""
        wait = getattr(self.sources[0], "wait", None) if len(self.sources) == 1 else None
        if wait is None:
            time.sleep(_POLL_S)
            return
        due = next_check
        if self.send is not None:
            due = min(due, next_fb)
        if self._learn is not None and self._learn.get("pending") is not None:
            due = min(due, self._learn["deadline"])
        wait(min(_CHECK_S, max(0.0, due - time.monotonic())))

    def _run(self) -> None:
        next_check = next_fb = 0.0
        while self._running:
            try:
                self.poll()
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + _CHECK_S
                    for src in self.sources:
                        for line in src.check():
                            self._say(line)
                if self.send is not None and now >= next_fb:
                    next_fb = now + _FEEDBACK_S
                    self.send_feedback()
            except Exception as exc:  # noqa: BLE001 - the audio goes on; say it, keep going
                self.counts["errors"] += 1
                if self.counts["errors"] <= 3:
                    self._say(f"MIDI control error (audio continues): "
                              f"{type(exc).__name__}: {exc}")
            self._idle(next_check, next_fb)

    def poll(self) -> int:
        """Drain every source once; returns the events handled."""
        n = 0
        for src in self.sources:
            for data in src.read():
                n += len(self.feed(data, src))
        if self._learn is not None and self._learn.get("pending") is not None and \
                time.monotonic() > self._learn["deadline"]:
            self._finish_learn(self._learn["pending"], cc14=False)
        return n

    def feed(self, data: bytes, source=None) -> list[MidiEvent]:
        """Parse raw bytes from ``source`` (one parser per source) and apply them."""
        parser = self._parsers.get(id(source))
        if parser is None:
            parser = self._parsers[id(source)] = MidiParser()
        events = parser.feed(data)
        for ev in events:
            self.handle(ev)
        return events

    # -- events ----------------------------------------------------------------------------
    def handle(self, ev: MidiEvent) -> None:
        self.counts["events"] += 1
        if self._learn is not None and self._learning(ev):
            return
        if ev.kind == PROGRAM:
            self._program(ev)
            return
        kind = {CC: "cc", NOTE_ON: "note", NOTE_OFF: "note", PITCH_BEND: "pitchbend"}[ev.kind]
        hit = False
        for b in self._by_key.get((kind, ev.number), ()):
            if b.channel is not None and b.channel != ev.channel:
                continue
            hit = True
            self._apply(b, self._states[id(b)], ev)
        if not hit:
            self.counts["unmapped"] += 1

    def _apply(self, b: Binding, st: _State, ev: MidiEvent) -> None:
        i = self.params.index(b.param)
        if b.mode in ("toggle", "momentary"):
            press = ev.kind == NOTE_ON or (ev.kind == CC and ev.value > 0)
            if b.mode == "toggle":
                if not press:
                    return
                value = 0.0 if self.params.values[i] >= 0.5 else 1.0
            else:
                value = 1.0 if press else 0.0
            st.written = self.params.set_index(i, value)  # its LED is sent by send_feedback
            self.counts["applied"] += 1
            return
        if b.kind == "note":
            return
        if b.mode == "relative":
            ticks = _relative_ticks(ev.value, b.encoding)
            cur = curve_position(b.curve, self.params.values[i], b.lo, b.hi)
            pos = min(1.0, max(0.0, cur + ticks / b.steps))
            st.written = self.params.set_index(i, curve_value(b.curve, pos, b.lo, b.hi))
            st.pos = pos
            self.counts["applied"] += 1
            return
        if b.kind == "pitchbend":
            pos = ev.value / 16383.0
        elif b.cc14:
            if ev.number == b.number:
                st.msb, st.lsb = ev.value, 0
            else:
                st.lsb = ev.value
            pos = ((st.msb << 7) | st.lsb) / 16383.0
        else:
            pos = ev.value / 127.0
        if self.params.param(b.param).is_switch:  # a fader on an on/off parameter
            value = 1.0 if pos >= 0.5 else 0.0
        else:
            value = curve_value(b.curve, pos, b.lo, b.hi)
        cur = self.params.values[i]
        if b.soft_takeover and st.written != cur:
            cur_pos = curve_position(b.curve, cur, b.lo, b.hi)
            near = abs(pos - cur_pos) <= b.takeover_window
            crossed = st.pos is not None and (st.pos - cur_pos) * (pos - cur_pos) <= 0
            st.pos = pos
            if not (near or crossed):
                self.counts["takeover_waits"] += 1
                return
            self.counts["takeovers"] += 1
        st.pos = pos
        st.written = self.params.set_index(i, value)
        st.shown = self._feedback_msg(b, st)  # the fader is where it is: no echo to it
        self.counts["applied"] += 1

    def _program(self, ev: MidiEvent) -> None:
        ch = self.mapping.program_channel
        if ch is not None and ch != ev.channel:
            self.counts["unmapped"] += 1
            return
        p = self.mapping.preset_for(ev.number)
        if p is None:
            self.counts["unmapped"] += 1
            self._say(f"program change {ev.number}: no preset has program = {ev.number}")
            return
        self.recall(p.name)

    def recall(self, name: str) -> None:
        """Set every value of preset ``name`` (controls then pick up by soft takeover)."""
        for p in self.mapping.presets:
            if p.name == name:
                for k, v in p.values.items():
                    self.params.set(k, v)
                self.counts["presets"] += 1
                self._say(f"preset {p.name!r} recalled"
                          + (f" (program {p.program})" if p.program is not None else ""))
                return
        raise ValueError(f"no preset named {name!r}; presets: "
                         f"{', '.join(p.name for p in self.mapping.presets) or 'none'}")

    # -- learn -----------------------------------------------------------------------------
    def learn(self, param: str, as_mode: str | None = None, on_done=None) -> None:
        """Any thread: bind the next control moved to ``param``. ``as_mode``: 'relative' for
        an endless encoder, 'momentary' for a held button (default: absolute for faders and
        knobs, toggle for buttons). The binding is written back to ``map_path``."""
        p = self.params.param(param)  # raises for an unknown name
        if as_mode not in (None, "absolute", "relative", "toggle", "momentary"):
            raise ValueError(f"learn as: absolute, relative, toggle or momentary, got "
                             f"{as_mode!r}")
        if as_mode in ("toggle", "momentary") and not p.is_switch:
            raise ValueError(f"{param} is continuous: learn it as absolute or relative")
        self._learn = {"param": param, "as": as_mode, "pending": None, "deadline": 0.0,
                       "on_done": on_done}
        self._say(f"learn {param}: move a control on the MIDI controller")

    @property
    def learning(self) -> str | None:
        return None if self._learn is None else self._learn["param"]

    def _learning(self, ev: MidiEvent) -> bool:
        """True when ``ev`` was taken by learn (and must not move anything)."""
        lr = self._learn
        p = self.params.param(lr["param"])
        pend = lr["pending"]
        if pend is not None:
            if ev.kind == CC and ev.channel == pend.channel and ev.number == pend.number + 32:
                self._finish_learn(pend, cc14=True)
                return True
            if ev.kind == CC and ev.channel == pend.channel and ev.number == pend.number:
                return True  # the same fader still moving
            self._finish_learn(pend, cc14=False)
            return False
        if p.is_switch:
            if ev.kind == NOTE_ON or (ev.kind == CC and ev.value > 0):
                self._finish_learn(ev, cc14=False)
                return True
            return ev.kind in (NOTE_OFF, CC)  # the release of the learned press
        if ev.kind == PITCH_BEND:
            self._finish_learn(ev, cc14=False)
            return True
        if ev.kind == CC:
            if ev.number < 32 and lr["as"] != "relative":
                lr["pending"] = ev
                lr["deadline"] = time.monotonic() + _LSB_WAIT_S
            else:
                self._finish_learn(ev, cc14=False)
            return True
        return False  # notes cannot move a continuous parameter

    def _finish_learn(self, ev: MidiEvent, cc14: bool) -> None:
        lr, self._learn = self._learn, None
        p = self.params.param(lr["param"])
        kind = {CC: "cc", NOTE_ON: "note", PITCH_BEND: "pitchbend"}[ev.kind]
        mode = lr["as"] or ("toggle" if p.is_switch else "absolute")
        hi = min(p.hi, 6.0) if p.unit == "dB" else p.hi  # faders: unity at 71% of the travel
        d = self.mapping.defaults
        b = Binding(param=p.name, kind=kind, number=ev.number if kind != "pitchbend" else 0,
                    channel=ev.channel, cc14=cc14, mode=mode, lo=p.lo, hi=hi, curve=p.curve,
                    soft_takeover=d.get("soft_takeover", True),
                    takeover_window=d.get("takeover_window", 0.03),
                    feedback=d.get("feedback", False))
        where = ""
        if self.map_path is not None:
            b.line = write_learned(self.map_path, b,
                                   value_range=(b.lo, b.hi) if hi != p.hi else None)
            where = f" (written to {self.map_path}, line {b.line})"
        self._use(with_binding(self.mapping, b))
        self.learned.append(b)
        self.counts["learned"] += 1
        self._say(f"learned {p.name} <- {b.describe()}"
                  + (f", {mode}" if mode != "absolute" else "") + where)
        if lr["on_done"] is not None:
            lr["on_done"](b)

    # -- feedback --------------------------------------------------------------------------
    def _feedback_msg(self, b: Binding, st: _State) -> tuple | None:
        """The message(s) that show ``b``'s parameter on the controller, as a tuple of ints."""
        v = self.params.get(b.param)
        ch = 0 if b.channel is None else b.channel
        if b.mode in ("toggle", "momentary"):
            on = 127 if v >= 0.5 else 0
            return (0x90 | ch, b.number, on) if b.kind == "note" else (0xB0 | ch, b.number, on)
        pos = curve_position(b.curve, v, b.lo, b.hi)
        if b.kind == "pitchbend":
            x = int(round(pos * 16383))
            return (0xE0 | ch, x & 0x7F, x >> 7)
        if b.cc14:
            x = int(round(pos * 16383))
            return (0xB0 | ch, b.number, x >> 7, 0xB0 | ch, b.number + 32, x & 0x7F)
        return (0xB0 | ch, b.number, int(round(pos * 127)))

    def send_feedback(self) -> int:
        """Send what changed since last time to controls with feedback on; returns messages."""
        sent = 0
        for b in self.mapping.bindings:
            if not (b.feedback and b.active):
                continue
            st = self._states[id(b)]
            msg = self._feedback_msg(b, st)
            if msg != st.shown:
                for k in range(0, len(msg), 3):
                    self.send(bytes(msg[k:k + 3]))
                    sent += 1
                st.shown = msg
        self.counts["feedback"] += sent
        return sent

    def stats(self) -> dict:
        out = dict(self.counts)
        for k, p in self._parsers.items():
            out["malformed"] = out.get("malformed", 0) + p.malformed
            out["ignored"] = out.get("ignored", 0) + p.ignored
        return out
