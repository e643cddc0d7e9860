"""MIDI input: a byte-stream parser, the audio-thread event ring, and python-rtmidi inputs.

Where MIDI comes from:

- :class:`EventRing`: the JACK client's own ``midi_in`` port. Its process callback copies the
  raw bytes of each event into this preallocated single-producer/single-consumer ring and does
  nothing else; the control thread drains it and parses. This is the default for
  ``livestems jack`` / ``livestems midi`` (see docs/MIDI.md for why).
- :class:`RtMidiInput`: python-rtmidi on JACK (``rtmidi.API_UNIX_JACK``: its own JACK client)
  or ALSA (``rtmidi.API_LINUX_ALSA``, needs /dev/snd/seq), either as a virtual port that others
  connect to, or connected by name to a source, reconnecting when the source comes back.

Both yield raw bytes; :class:`MidiParser` turns a byte stream into :class:`MidiEvent`. It
keeps running status, drops SysEx, system common and real-time bytes (clock, active sensing:
legal anywhere, even inside a message, and they do not cancel running status), and discards
a message cut short by a new status byte. Parsing runs on the control thread, never on the
audio thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["MidiEvent", "MidiParser", "EventRing", "RtMidiInput", "MidiPortError",
           "NOTE_OFF", "NOTE_ON", "CC", "PROGRAM", "PITCH_BEND", "rtmidi_api",
           "list_rtmidi_ports", "describe_event"]

NOTE_OFF, NOTE_ON, CC, PROGRAM, PITCH_BEND = "note_off", "note_on", "cc", "program", "pitch_bend"

# data bytes that follow each channel-voice status (high nibble)
_DATA_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
# system common: data bytes after the status (0xF0 SysEx and 0xF7 handled separately)
_COMMON_LEN = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF4: 0, 0xF5: 0, 0xF6: 0}


@dataclass(frozen=True, slots=True)
class MidiEvent:
    """One parsed channel message.

    ``kind``: NOTE_ON (velocity > 0), NOTE_OFF (also note on with velocity 0), CC, PROGRAM,
    PITCH_BEND. ``channel``: 0..15 (shown to people as 1..16). ``number``: note, controller
    or program number (0 for pitch bend). ``value``: velocity, controller value (0..127), or
    pitch bend 0..16383 (8192 is the centre); 0 for program change.
    """

    kind: str
    channel: int
    number: int
    value: int


def describe_event(ev: MidiEvent) -> str:
    """``ev`` for people: 'CC 7 = 100 on channel 1'."""
    ch = f"channel {ev.channel + 1}"
    if ev.kind == CC:
        return f"CC {ev.number} = {ev.value} on {ch}"
    if ev.kind in (NOTE_ON, NOTE_OFF):
        return f"note {ev.number} {'on' if ev.kind == NOTE_ON else 'off'} " \
               f"(velocity {ev.value}) on {ch}"
    if ev.kind == PITCH_BEND:
        return f"pitch bend {ev.value} on {ch}"
    return f"program change {ev.number} on {ch}"


class MidiParser:
    """Turns a MIDI byte stream into :class:`MidiEvent` (see the module docstring).

    One parser per source (running status belongs to a stream). Never raises on any input:
    ``feed`` accepts any bytes. Counters: ``events`` parsed, ``ignored`` (SysEx, system common,
    real-time, aftertouch), ``malformed`` (stray data bytes, messages cut short).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._status = 0  # running status (a channel-voice status byte) or 0
        self._need = 0
        self._data: list[int] = []
        self._sysex = False
        self._common = 0  # data bytes of a system common message still to skip
        self.events = 0
        self.ignored = 0
        self.malformed = 0

    def feed(self, data) -> list[MidiEvent]:
        out: list[MidiEvent] = []
        for b in bytes(data):
            if b >= 0xF8:  # real-time: on its own, anywhere; changes nothing
                self.ignored += 1
                continue
            if b >= 0x80:
                if self._sysex and b == 0xF7:  # end of SysEx
                    self._sysex = False
                    continue
                if self._data or self._common:  # a message cut short by a new status
                    self.malformed += 1
                self._data = []
                self._common = 0
                self._sysex = False
                if b < 0xF0:
                    self._status = b
                    self._need = _DATA_LEN[b & 0xF0]
                    continue
                self._status = 0  # system messages cancel running status
                if b == 0xF0:
                    self._sysex = True
                    self.ignored += 1
                elif b == 0xF7:  # an end of SysEx without a start
                    self.malformed += 1
                else:
                    self._common = _COMMON_LEN[b]
                    self.ignored += 1
                continue
            # a data byte
            if self._sysex:
                continue
            if self._common:
                self._common -= 1
                continue
            if not self._status:
                self.malformed += 1
                continue
            self._data.append(b)
            if len(self._data) == self._need:
                ev = self._message(self._status, self._data)
                self._data = []
                if ev is None:
                    self.ignored += 1
                else:
                    self.events += 1
                    out.append(ev)
        return out

    @staticmethod
    def _message(status: int, d: list[int]) -> MidiEvent | None:
        kind, ch = status & 0xF0, status & 0x0F
        if kind == 0x90:
            return MidiEvent(NOTE_ON if d[1] else NOTE_OFF, ch, d[0], d[1])
        if kind == 0x80:
            return MidiEvent(NOTE_OFF, ch, d[0], d[1])
        if kind == 0xB0:
            return MidiEvent(CC, ch, d[0], d[1])
        if kind == 0xC0:
            return MidiEvent(PROGRAM, ch, d[0], 0)
        if kind == 0xE0:
            return MidiEvent(PITCH_BEND, ch, 0, d[0] | (d[1] << 7))
        return None  # aftertouch (0xA0, 0xD0): parsed, not used


class EventRing:
    """SPSC ring of raw MIDI events, filled on JACK's process thread, drained by a control
    thread. Everything is allocated here; :meth:`put` only copies bytes and stores ints.

    Args:
        capacity: events held (a power of two); when full, new events are dropped and counted.
        slot_bytes: bytes kept per event. Longer events (SysEx, which the parser drops
            anyway) keep their first ``slot_bytes`` and count as ``truncated``.
    """

    def __init__(self, capacity: int = 1024, slot_bytes: int = 32):
        if capacity & (capacity - 1) or capacity < 2:
            raise ValueError(f"capacity must be a power of two >= 2, got {capacity}")
        self.capacity = capacity
        self.slot = slot_bytes
        self._mask = capacity - 1
        self._store = bytearray(capacity * slot_bytes)
        self._mv = memoryview(self._store)
        self._len = np.zeros(capacity, dtype=np.int64)
        self._frame = np.zeros(capacity, dtype=np.int64)
        self._w = 0  # events ever written (producer owns)
        self._r = 0  # events ever read (consumer owns)
        self.dropped = 0
        self.truncated = 0

    def put(self, frame: int, data) -> None:
        """Producer (JACK's process thread): copy one event. Never blocks, raises or grows."""
        w = self._w
        if w - self._r >= self.capacity:
            self.dropped += 1
            return
        n = len(data)
        if n > self.slot:
            self.truncated += 1
            n = self.slot
            data = data[:n]
        k = w & self._mask
        o = k * self.slot
        self._mv[o:o + n] = data
        self._len[k] = n
        self._frame[k] = frame
        self._w = w + 1  # publish after the copy

    def readable(self) -> int:
        return self._w - self._r

    def get(self) -> tuple[int, bytes] | None:
        """Consumer: ``(frame, bytes)`` of the oldest event, or None."""
        r = self._r
        if self._w == r:
            return None
        k = r & self._mask
        o = k * self.slot
        item = int(self._frame[k]), bytes(self._mv[o:o + int(self._len[k])])
        self._r = r + 1
        return item

    def put_message(self, data) -> bool:
        """Producer on a control thread (feedback out): False when full."""
        if self._w - self._r >= self.capacity:
            self.dropped += 1
            return False
        self.put(0, data)
        return True


class MidiPortError(Exception):
    """A MIDI port cannot be opened (no such port, no sequencer, no JACK server)."""


def rtmidi_api(name: str):
    """``'jack'`` or ``'alsa'`` -> the rtmidi API constant (checked against this build)."""
    import rtmidi

    apis = {"jack": rtmidi.API_UNIX_JACK, "alsa": rtmidi.API_LINUX_ALSA}
    if name not in apis:
        raise MidiPortError(f"unknown MIDI API {name!r}; expected jack or alsa")
    if apis[name] not in rtmidi.get_compiled_api():
        raise MidiPortError(f"this python-rtmidi was built without {name} support")
    return apis[name]


def _open_midi_in(api_name: str, client_name: str):
    import rtmidi

    api = rtmidi_api(api_name)
    if api_name == "alsa" and not os.path.exists("/dev/snd/seq"):
        raise MidiPortError("ALSA MIDI needs /dev/snd/seq, which this machine lacks; load "
                            "the snd-seq kernel module, or use --midi-api jack")
    try:
        return rtmidi.MidiIn(api, name=client_name, queue_size_limit=4096)
    except rtmidi.SystemError as exc:
        raise MidiPortError(f"cannot open {api_name} MIDI input: {exc}"
                            + ("; is a JACK server running (JACK_DEFAULT_SERVER)?"
                               if api_name == "jack" else "")) from None


def list_rtmidi_ports(api_name: str) -> list[str]:
    """Names of the MIDI sources python-rtmidi sees through ``api_name``."""
    m = _open_midi_in(api_name, "livestems-list")
    try:
        return list(m.get_ports())
    finally:
        m.close_port()
        del m


class RtMidiInput:
    """A python-rtmidi input read by polling on the control thread.

    Args:
        api: ``'jack'`` (rtmidi's own JACK client; the server named by
            ``$JACK_DEFAULT_SERVER``) or ``'alsa'``.
        connect: connect to the first source whose name contains this text (case
            insensitive); when that source disappears :meth:`check` says so and reconnects
            when it returns.
        virtual: open a virtual input port with this name instead, for sources to connect to.
        client_name: the rtmidi client's name (JACK client / ALSA client).

    Polling (``get_message``) rather than rtmidi's callback keeps Python off rtmidi's thread,
    which under JACK is a process thread of the graph.
    """

    def __init__(self, api: str = "jack", *, connect: str | None = None,
                 virtual: str | None = None, client_name: str = "livestems-midi"):
        if (connect is None) == (virtual is None):
            raise ValueError("give exactly one of connect= or virtual=")
        self.api = api
        self.want = connect
        self.virtual = virtual
        self._in = _open_midi_in(api, client_name)
        self._in.ignore_types(sysex=True, timing=True, active_sense=True)
        self.port_name: str | None = None
        self.lost = False
        if virtual is not None:
            self._in.open_virtual_port(virtual)
            self.port_name = virtual
        else:
            if not self._try_open():
                ports = self._in.get_ports()
                self.close()
                raise MidiPortError(f"no MIDI source matching {connect!r}; sources: "
                                    f"{', '.join(ports) or '(none)'}")

    def _find(self) -> tuple[int, str] | None:
        for i, name in enumerate(self._in.get_ports()):
            if self.want.lower() in name.lower():
                return i, name
        return None

    def _try_open(self) -> bool:
        hit = self._find()
        if hit is None:
            return False
        self._in.open_port(hit[0])
        self.port_name = hit[1]
        return True

    def read(self) -> list[bytes]:
        """Control thread: every message waiting (raw bytes)."""
        out = []
        while True:
            m = self._in.get_message()
            if m is None:
                return out
            out.append(bytes(m[0]))

    def check(self) -> list[str]:
        """Control thread, every few hundred ms: notice a source that vanished or returned."""
        if self.virtual is not None:
            return []
        notes = []
        present = self._find()
        if not self.lost and (present is None or present[1] != self.port_name):
            self.lost = True
            self._in.close_port()
            notes.append(f"MIDI control lost: {self.port_name} disappeared; audio continues; "
                         f"reconnecting when it returns")
        elif self.lost and present is not None:
            self._in.open_port(present[0])
            self.port_name = present[1]
            self.lost = False
            notes.append(f"MIDI control restored: connected to {self.port_name}")
        return notes

    def close(self) -> None:
        if self._in is not None:
            self._in.close_port()
            self._in.delete()
            self._in = None
