"""Mapping files: errors with line numbers, the shipped default, learn write-back, curves."""

import tomllib

import pytest

from livestems.stream.midi.input import CC, NOTE_ON, MidiEvent
from livestems.stream.midi.controller import MidiController
from livestems.stream.midi.mapping import Binding, MappingError, load_mapping, parse_mapping, \
    write_learned
from livestems.stream.core.params import ParamSet, curve_position, curve_value, stem_params

CENTER = ("vocals", "accompaniment")
FOUR = ("vocals", "drums", "bass", "other")


def _params(sources=CENTER):
    return ParamSet(stem_params(sources))


def _error(text, sources=CENTER):
    with pytest.raises(MappingError) as e:
        parse_mapping(text, _params(sources), path="m.toml")
    return str(e.value)


def test_unknown_keys_and_out_of_range_values_name_their_lines():
    msg = _error('[midi]\nchanel = 2\n\n[[control]]\nparam = "vocals.gain"\ncc = 130\n'
                 'range = [-200, 0]\n\n[[control]]\nparam = "vocals.mute"\nnote = 3\n'
                 'mdoe = "toggle"\n\n[preset.p]\nprogram = 200\nvocals.gain = 40\n'
                 '\n[extra]\nx = 1\n')
    assert msg.startswith("m.toml: 7 problem(s)")
    for want in ("line 2: [midi]: unknown key 'chanel'",
                 "line 6: [[control]] at line 4: cc must be 0..127, got 130",
                 "line 7: [[control]] at line 4: range [-200, 0] is outside vocals.gain's "
                 "-120..12 dB",
                 "line 12: [[control]] at line 9: unknown key 'mdoe'",
                 "line 15: [preset.p] program: expected 0..127, got 200",
                 "line 16: [preset.p] vocals.gain: expected -120..12 dB, got 40",
                 "line 18: unknown top-level key 'extra'"):
        assert want in msg, (want, msg)


def test_syntax_error_gives_line_and_column():
    msg = _error('[[control]]\nparam = "vocals.gain"\ncc = = 7\n')
    assert "m.toml: line 3, column 6: TOML syntax error" in msg


def test_a_control_bound_twice_names_both_lines():
    text = ('[[control]]\nparam = "vocals.gain"\ncc = 7\nchannel = 2\n\n'
            '[[control]]\nparam = "accompaniment.gain"\ncc = 7\n')  # any channel: overlaps
    msg = _error(text)
    assert "CC 7 on any channel is bound twice: line 1 (vocals.gain) and line 6 " \
           "(accompaniment.gain)" in msg
    # the LSB of a 14-bit pair counts as bound too
    msg = _error('[[control]]\nparam = "vocals.gain"\ncc = 1\ncc14 = true\n\n'
                 '[[control]]\nparam = "vocals.mute"\ncc = 33\n')
    assert "bound twice: line 1 (vocals.gain) and line 6 (vocals.mute)" in msg
    # different channels do not clash
    parse_mapping('[[control]]\nparam = "vocals.gain"\ncc = 7\nchannel = 1\n'
                  '[[control]]\nparam = "accompaniment.gain"\ncc = 7\nchannel = 2\n', _params())
    # two presets on one program
    msg = _error('[preset.a]\nprogram = 3\n[preset.b]\nprogram = 3\n')
    assert "program 3 recalls two presets: line 1 (a) and line 3 (b)" in msg


def test_modes_are_checked_against_the_parameter():
    assert "mode 'toggle' is for on/off parameters" in _error(
        '[[control]]\nparam = "vocals.gain"\ncc = 1\nmode = "toggle"\n')
    assert "a note is a button" in _error('[[control]]\nparam = "vocals.mute"\nnote = 1\n'
                                          'mode = "absolute"\n')
    assert "cc14 needs cc = 0..31" in _error('[[control]]\nparam = "vocals.gain"\ncc = 40\n'
                                             'cc14 = true\n')
    assert "unknown parameter 'vocal.gain'" in _error('[[control]]\nparam = "vocal.gain"\n'
                                                      'cc = 1\n')
    assert "channel must be 1..16" in _error('[[control]]\nparam = "vocals.gain"\ncc = 1\n'
                                             'channel = 0\n')


def test_default_mapping_serves_2_and_4_stem_models():
    for sources, active_faders in ((CENTER, {0: "vocals.gain", 1: "accompaniment.gain"}),
                                   (FOUR, {0: "vocals.gain", 1: "drums.gain", 2: "bass.gain",
                                           3: "other.gain"})):
        m = load_mapping(None, _params(sources))
        faders = {b.number: b.param for b in m.bindings
                  if b.active and b.kind == "cc" and b.param.endswith(".gain")}
        assert faders == active_faders
        assert {p.program for p in m.presets} == {0, 1, 2, 3}
        assert any("inactive" in n for n in m.notes)


def test_curves_round_trip_and_fader_taper():
    for curve, lo, hi in (("linear", -24, 0), ("fader", -120, 6), ("linear", 100, 0)):
        for pos in (0.0, 0.1, 0.5, 0.708, 1.0):
            v = curve_value(curve, pos, lo, hi)
            assert curve_position(curve, v, lo, hi) == pytest.approx(pos, abs=1e-12)
    assert curve_value("fader", 10 ** (-6 / 40), -120, 6) == pytest.approx(0.0)
    assert curve_value("fader", 0.5, -120, 6) == pytest.approx(6 + 40 * -0.30103, abs=1e-4)
    assert curve_value("fader", 0.0, -120, 6) == -120


USER_FILE = """\
# my controller (a comment that must survive)
[midi]
channel = 1   # only channel 1

[[control]]
param = "accompaniment.gain"   # fader 2
cc = 2

[[control]]
param = "vocals.mute"
cc = 21          # this control gets learned for another parameter below

[preset.quiet]   # my preset
program = 4
vocals.gain = -20
"""


def test_learn_writes_back_keeping_comments_and_other_entries(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text(USER_FILE)
    params = _params()
    ctl = MidiController(params, load_mapping(path, params), map_path=path,
                         notify=lambda line: None)
    done = []
    ctl.learn("vocals.gain", on_done=done.append)
    ctl.handle(MidiEvent(CC, 0, 21, 90))  # CC 21 < 32: waits for a possible LSB on CC 53
    assert not done
    ctl.handle(MidiEvent(CC, 0, 53, 5))  # the LSB: a 14-bit control
    assert done and done[0].cc14 and done[0].number == 21
    assert params.get("vocals.gain") == 0.0  # learning moved nothing
    text = path.read_text()
    for line in USER_FILE.splitlines():
        if "cc = 21" in line or line.startswith('param = "vocals.mute"'):
            continue  # the entry whose control was taken over is removed
        assert line in text, line
    data = tomllib.loads(text)
    assert [c["param"] for c in data["control"]] == ["accompaniment.gain", "vocals.gain"]
    assert data["control"][1] == {"param": "vocals.gain", "cc": 21, "cc14": True,
                                  "channel": 1, "range": [-120.0, 6.0]}
    m = load_mapping(path, _params())  # the file still loads
    assert m.bindings[1].line == done[0].line
    # now it moves the parameter (soft takeover: 0 dB is at 70.8% of the travel)
    ctl.handle(MidiEvent(CC, 0, 21, 90))
    ctl.handle(MidiEvent(CC, 0, 53, 90))
    assert params.get("vocals.gain") == pytest.approx(
        curve_value("fader", (90 * 128 + 90) / 16383, -120, 6))
    # a button learned for a switch, into a new file
    new = tmp_path / "new.toml"
    ctl2 = MidiController(params, load_mapping(path, params), map_path=new,
                          notify=lambda line: None)
    ctl2.learn("accompaniment.mute")
    ctl2.handle(MidiEvent(NOTE_ON, 9, 40, 100))
    assert tomllib.loads(new.read_text())["control"] == [
        {"param": "accompaniment.mute", "note": 40, "channel": 10, "mode": "toggle"}]
    assert new.read_text().startswith("# livestems MIDI mapping")


def test_write_learned_replaces_only_the_clashing_control(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(USER_FILE)
    write_learned(path, Binding(param="vocals.solo", kind="cc", number=2, channel=None))
    data = tomllib.loads(path.read_text())
    assert [(c["param"], c["cc"]) for c in data["control"]] == [("vocals.mute", 21),
                                                                ("vocals.solo", 2)]
    assert "# my controller (a comment that must survive)" in path.read_text()
