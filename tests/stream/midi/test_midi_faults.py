"""Bad MIDI on the real path: malformed bytes, unmapped channels, a source that disappears and
returns; MIDI feedback out; the python-rtmidi input."""

import threading
import time

import jack
import numpy as np
import pytest
from jackio import PlayRecord
from midirig import CLIENT, PORTS, Controller, Rig, stems_signal, wait_live

RATE = 44100

CH1_MAP = """
[midi]
channel = 1
soft_takeover = false

[[control]]
param = "vocals.gain"
cc = 7
range = [-24, 0]
curve = "linear"
"""


class RawSource:
    """A JACK client that writes arbitrary bytes (no validation) as MIDI events.

    Every batch handed to :meth:`send` goes out in one process cycle, in order. JACK delivers
    MIDI per cycle: a cycle the reader misses (an xrun on a busy non-real-time server) loses
    its events, so one cycle at risk instead of one per event. :meth:`connect` returns once
    the new connection carries events (midirig.wait_live)."""

    def __init__(self, server):
        self.server = server
        self.client = jack.Client("lstest-raw", servername=server, no_start_server=True)
        self.port = self.client.midi_outports.register("out")
        self.queue = []
        self.lock = threading.Lock()
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames):
        self.port.clear_buffer()
        if self.lock.acquire(blocking=False):  # test code: a lock is fine here
            try:
                for k, data in enumerate(self.queue):
                    self.port.write_midi_event(min(k, frames - 1), data)
                self.queue.clear()
            finally:
                self.lock.release()

    def connect(self, dest):
        self.client.connect(self.port, dest)
        wait_live(self.server, self.port.name, lambda: self.send([[0xFE]]))

    def send(self, events):
        """Queue ``events`` (a list of byte lists) for the next cycle and wait a few cycles."""
        with self.lock:
            self.queue.extend(bytes(e) for e in events)
        time.sleep(0.05)

    def close(self):
        self.client.deactivate()
        self.client.close()


def _record_mix(server, seconds=0.5):
    sig = stems_signal(seconds, RATE)
    pr = PlayRecord(server.name, sig, PORTS[:1], sig.shape[1] + 2048, prefix="lstest-f")
    try:
        pr.connect_to(f"{CLIENT}:in_L", f"{CLIENT}:in_R")
        time.sleep(0.2)
        return pr.play()[0]
    finally:
        pr.close()


def test_malformed_bytes_and_unmapped_channels_on_midi_in(jackd_44k, tmp_path):
    for attempt in range(4):
        rig = Rig(jackd_44k, tmp_path, CH1_MAP)
        raw = RawSource(jackd_44k.name)
        try:
            raw.connect(f"{CLIENT}:midi_in")
            raw.send([[0xB0, 7],                    # truncated
                      [0xF0, 1, 2, 3, 0xF7],        # SysEx
                      [0xF8], [0xFE],               # clock, active sensing
                      [0x07, 0x05],                 # data bytes with no status
                      [0xB5, 7, 0],                 # channel 6: not mapped
                      [0xB0, 7, 10, 7, 0xF8, 64],   # running status + clock inside: 10, 64
                      [0xB0, 7]])                   # truncated again at the end
            time.sleep(0.3)
            y = _record_mix(jackd_44k)  # the audio goes on
        finally:
            st = rig.stop(check=False)
            raw.close()
            rig.close()
        if st["midi"]["events"] == 0 and st.get("xruns"):
            # the one cycle that carried the batch was lost to an xrun (two shared cores, a
            # non-real-time server): nothing about MIDI parsing, so run it again
            print(f"attempt {attempt}: the batch was lost with {st['xruns']} xruns; again")
            continue
        break
    else:
        pytest.skip(f"the batch was lost to xruns in 4 sessions (last: {st['xruns']}): this "
                    "machine is too busy right now (docs/LIVE.md)")
    assert np.abs(y).max() > 0.1
    assert st["worker_error"] is None
    assert st["params"]["vocals.gain"] == -24 + 24 * 64 / 127, (st, rig.stderr)  # last CC 7
    m = st["midi"]
    # malformed: the first CC cut short by the SysEx, then 0x07 0x05 with no running status
    # (SysEx cancels it); the final [0xB0, 7] is still waiting for its value at the end
    assert m["applied"] == 2 and m["unmapped"] == 1 and m["malformed"] == 2 + 1, (m, st)


def test_a_source_that_disappears_and_returns(jackd_44k, tmp_path):
    rig = Rig(jackd_44k, tmp_path, CH1_MAP)
    try:
        rig.ctl.send(0xB0, 7, 0)
        time.sleep(0.2)
        rig.ctl.close()  # the controller is unplugged
        rig.ctl = None
        time.sleep(0.6)
        y = _record_mix(jackd_44k)  # audio continues without control
        rig.ctl = Controller()  # plugged in again: reconnected by name
        rig.wait_connected(rig.ctl.port)
        for _ in range(3):  # the same value thrice: one cycle lost to an xrun changes nothing
            rig.ctl.send(0xB0, 7, 127)
            time.sleep(0.1)
    finally:
        st = rig.stop(check=False)
        rig.close()
    assert np.abs(y).max() > 0.05 and st["worker_error"] is None
    assert "MIDI control lost: lstest-ctl:out disappeared; audio continues" in rig.stderr
    assert "MIDI control restored: lstest-ctl:out" in rig.stderr
    assert st["params"]["vocals.gain"] == 0.0  # the CC after the return was applied


FEEDBACK_MAP = """
[midi]
feedback = true

[[control]]
param = "vocals.mute"
cc = 48                   # a button with an LED

[[control]]
param = "vocals.gain"
cc = 0                    # a motor fader
range = [-120, 6]
curve = "fader"

[preset.down]
program = 1
vocals.gain = -6
"""


def test_feedback_lights_leds_and_moves_motor_faders(jackd_44k, tmp_path):
    for attempt in range(4):
        st, first, later = _feedback_session(jackd_44k, tmp_path)
        want = [(0xB0, 48, 127), (0xB0, 0, 64)]
        if later == want or not st.get("xruns"):
            break
        # four messages each crossed a cycle (two in, two out): one lost to an xrun on a
        # busy non-real-time server says nothing about feedback
        print(f"attempt {attempt}: {st['xruns']} xruns, got {later}: again")
    else:
        pytest.skip(f"xruns in 4 sessions with messages lost (last: {st['xruns']}, got "
                    f"{later}): this machine is too busy right now (docs/LIVE.md)")
    # the state when the monitor connected may have been sent before it listened; after
    # that: the LED on, and the fader to 10**(-12/40) of the travel (64 of 127)
    assert later == want, (first, later, st)
    assert st["params"]["vocals.mute"] == 1.0 and st["midi"]["feedback"] >= 2


def _feedback_session(server, tmp_path):
    got = []
    mon = jack.Client("lstest-mon", servername=server.name, no_start_server=True)
    port = mon.midi_inports.register("in")

    def process(frames):
        for _, buf in port.incoming_midi_events():
            got.append(tuple(bytes(buf)))

    mon.set_process_callback(process)
    mon.activate()
    rig = Rig(server, tmp_path, FEEDBACK_MAP, "--feedback")
    try:
        mon.connect(f"{CLIENT}:midi_out", "lstest-mon:in")
        time.sleep(0.3)
        first = list(got)
        rig.ctl.send(0xB0, 48, 127)  # press: mute on
        rig.ctl.send(0xB0, 48, 0)
        time.sleep(0.3)
        rig.ctl.send(0xC0, 1)  # preset: the motor fader goes to -6 dB
        time.sleep(0.3)
    finally:
        st = rig.stop(check=False)
        rig.close()
        mon.deactivate()
        mon.close()
    return st, first, got[len(first):]


def test_rtmidi_jack_input_virtual_port(jackd_44k, tmp_path):
    """--midi-api jack: python-rtmidi's own JACK client with a virtual input port."""
    for attempt in range(4):
        st, dest = _rtmidi_session(jackd_44k, tmp_path)
        if st["midi"]["applied"] == 3 or not st.get("xruns"):
            break
        # the three CCs cross one or two cycles: lost to an xrun, nothing about rtmidi
        print(f"attempt {attempt}: {st['xruns']} xruns, {st['midi']}: again")
    else:
        pytest.skip(f"xruns in 4 sessions with messages lost (last: {st['xruns']}, "
                    f"{st['midi']}): this machine is too busy right now (docs/LIVE.md)")
    assert dest == "livestems-midi:ctl_in", dest
    assert st["params"]["vocals.gain"] == -24 + 24 * 64 / 127, st
    assert st["midi"]["applied"] == 3, st


def _rtmidi_session(server, tmp_path):
    rig = Rig(server, tmp_path, CH1_MAP, "--midi-api", "jack", "--midi-virtual", "ctl_in",
              controller=False)
    ctl = Controller()
    try:
        c = jack.Client("lstest-c", servername=server.name, no_start_server=True)
        deadline = time.monotonic() + 10
        while not [p for p in c.get_ports(is_midi=True, is_input=True)
                   if p.name.endswith(":ctl_in")]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        dest = [p.name for p in c.get_ports(is_midi=True, is_input=True)
                if p.name.endswith(":ctl_in")][0]
        c.connect(ctl.port, dest)
        c.close()
        wait_live(server.name, ctl.port, lambda: ctl.send(0xFE))
        ctl.send(0xB0, 7, 0)
        ctl.send(0xB0, 7, 127)
        ctl.send(0xB0, 7, 64)
        time.sleep(0.3)
    finally:
        st = rig.stop(check=False)
        rig.close()
        ctl.close()
    return st, dest


KEY_MAP = """
[midi]
soft_takeover = false

[[control]]
param = "key.shift"
cc = 18                  # -12..+12 semitones over the travel
"""


def test_key_shift_moves_the_shifter(jackd_44k, tmp_path):
    """With --key, CC 18 = 127 -> key.shift +12: a 440 Hz tone comes out at 880 Hz."""
    rig = Rig(jackd_44k, tmp_path, KEY_MAP, "--key", "0")
    try:
        for _ in range(3):  # the same value thrice: one cycle lost to an xrun changes nothing
            rig.ctl.send(0xB0, 18, 127)
            time.sleep(0.1)
        t = np.arange(int(0.6 * RATE)) / RATE
        tone = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
        pr = PlayRecord(jackd_44k.name, tone, PORTS[:1], tone.shape[1] + 4096,
                        prefix="lstest-k")
        try:
            pr.connect_to(f"{CLIENT}:in_L", f"{CLIENT}:in_R")
            time.sleep(0.2)
            y = pr.play()[0]
        finally:
            pr.close()
    finally:
        st = rig.stop(check=False)
        rig.close()
    seg = y[8192:8192 + 16384] * np.hanning(16384)
    peak_hz = np.argmax(np.abs(np.fft.rfft(seg))) * RATE / 16384
    assert st["params"]["key.shift"] == 12.0 and st["key_semitones"] == 12.0
    assert abs(peak_hz - 880) < 10, peak_hz
