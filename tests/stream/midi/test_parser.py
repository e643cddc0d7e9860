"""The MIDI byte-stream parser, and the controller fed random bytes (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from livestems.stream.midi.input import CC, NOTE_OFF, NOTE_ON, PITCH_BEND, PROGRAM, EventRing, \
    MidiEvent, MidiParser
from livestems.stream.midi.controller import MidiController
from livestems.stream.midi.mapping import load_mapping, parse_mapping
from livestems.stream.core.params import ParamSet, stem_params


def _parse(data):
    return MidiParser().feed(bytes(data))


def test_channel_messages():
    assert _parse([0x90, 60, 100, 0x80, 60, 0, 0xB3, 7, 127, 0xC1, 5, 0xE0, 0x00, 0x40]) == [
        MidiEvent(NOTE_ON, 0, 60, 100), MidiEvent(NOTE_OFF, 0, 60, 0),
        MidiEvent(CC, 3, 7, 127), MidiEvent(PROGRAM, 1, 5, 0),
        MidiEvent(PITCH_BEND, 0, 0, 8192)]
    assert _parse([0x9F, 1, 0]) == [MidiEvent(NOTE_OFF, 15, 1, 0)]  # velocity 0 = release
    assert _parse([0xE0, 0x7F, 0x7F]) == [MidiEvent(PITCH_BEND, 0, 0, 16383)]


def test_running_status_and_realtime_inside_a_message():
    # CC 7 three times under one status byte; a clock (F8) and active sensing (FE) in between
    # and inside a message do not break it
    evs = _parse([0xB0, 7, 1, 7, 0xF8, 2, 0xFE, 7, 3])
    assert evs == [MidiEvent(CC, 0, 7, v) for v in (1, 2, 3)]
    # program change is one data byte per message under running status
    assert _parse([0xC2, 1, 2]) == [MidiEvent(PROGRAM, 2, 1, 0), MidiEvent(PROGRAM, 2, 2, 0)]


def test_sysex_system_common_and_garbage_are_dropped():
    p = MidiParser()
    evs = p.feed(bytes([0xF0, 0x7E, 0x01, 0x02, 0xF7,   # SysEx
                        0xB0, 1, 2,                       # kept
                        0xF2, 0x10, 0x20,                 # song position (cancels running)
                        3, 4,                             # data with no status: malformed
                        0xB0, 9,                          # truncated by the next status
                        0x91, 64, 1,                      # kept
                        0xF7,                             # stray end of SysEx
                        0xA0, 1, 2, 0xD0, 3]))            # aftertouch: parsed, unused
    assert evs == [MidiEvent(CC, 0, 1, 2), MidiEvent(NOTE_ON, 1, 64, 1)]
    assert p.malformed == 4  # 3, 4, the cut CC, the stray F7
    # a SysEx cut short by a status byte does not swallow what follows
    assert _parse([0xF0, 1, 2, 0xB0, 5, 6]) == [MidiEvent(CC, 0, 5, 6)]


@given(st.lists(st.binary(max_size=12), max_size=30))
@settings(max_examples=300, deadline=None)
def test_chunking_does_not_change_the_events(chunks):
    whole = _parse(b"".join(chunks))
    p = MidiParser()
    parts = [ev for c in chunks for ev in p.feed(c)]
    assert parts == whole
    for ev in whole:
        assert 0 <= ev.channel <= 15 and 0 <= ev.number <= 127
        assert 0 <= ev.value <= (16383 if ev.kind == PITCH_BEND else 127)


_FUZZ_MAP = """
[midi]
soft_takeover = false
[[control]]
param = "vocals.gain"
cc = 1
cc14 = true
range = [-60, 12]
[[control]]
param = "accompaniment.gain"
cc = 10
mode = "relative"
steps = 16
[[control]]
param = "key.shift"
cc = 11
mode = "relative"
encoding = "sign-magnitude"
steps = 3
[[control]]
param = "separation.wet"
pitchbend = true
[[control]]
param = "vocals.mute"
note = 36
mode = "momentary"
[[control]]
param = "vocals.solo"
cc = 64
[preset.a]
program = 0
vocals.gain = 12
key.shift = -12
"""

# messages that hit the mappings above often, mixed with arbitrary bytes
_hot = st.sampled_from([bytes([0xB0, 1]), bytes([0xB0, 33]), bytes([0xB0, 10]),
                        bytes([0xB0, 11]), bytes([0xE0]), bytes([0x90, 36]), bytes([0xC0]),
                        bytes([0xB0, 0]), bytes([0xB0, 17]), bytes([0xB0, 48])])


@given(st.lists(st.one_of(st.binary(max_size=8), _hot), max_size=60),
       st.lists(st.integers(0, 255), max_size=60))
@settings(max_examples=300, deadline=None)
def test_fuzz_no_exception_and_no_parameter_leaves_its_range(pieces, tail):
    for sources, text in ((("vocals", "accompaniment"), _FUZZ_MAP),
                          (("vocals", "drums", "bass", "other"), None)):
        params = ParamSet(stem_params(sources))
        mapping = parse_mapping(text, params) if text else load_mapping(None, params)
        ctl = MidiController(params, mapping, notify=lambda line: None)
        for piece in pieces:
            ctl.feed(piece)
        ctl.feed(bytes(tail))
        for p, v in zip(params, params.values):
            assert p.lo <= v <= p.hi and np.isfinite(v), (p.name, v)
            if p.step:
                assert abs((v - p.lo) / p.step - round((v - p.lo) / p.step)) < 1e-9


def test_event_ring_drops_when_full_and_truncates_long_events():
    r = EventRing(4, slot_bytes=4)
    for k in range(6):
        r.put(k, bytes([0xB0, k, 1]))
    assert r.dropped == 2
    assert [r.get() for _ in range(5)] == [(k, bytes([0xB0, k, 1])) for k in range(4)] + [None]
    r.put(9, bytes([0xF0] + [1] * 10 + [0xF7]))
    assert r.truncated == 1 and r.get() == (9, bytes([0xF0, 1, 1, 1]))
