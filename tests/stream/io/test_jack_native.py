"""`livestems jack`'s C callback (`--callback native`, the default once the bridge library is
built; `--native` is the same): the process callback in C (bridge/ C API), on real JACK servers.

Needs bridge/build/liblivestems.so (`make -C bridge`; tests/bridge builds it too)."""

import ctypes
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from jackio import error_db, fifo_granted, lsp_capture_latency, thread_policies
from test_jack import (PORTS, _judge_sessions, _port_errors, _record_song, _start_livestems,
                       _stop)

from livestems.model.evaluation.demo_song import make_demo_song
from livestems.model.nets.registry import load_separator
from livestems.stream.io.backends.jack import JackHost
from livestems.stream.io.backends.jack_native import NativeJackHost, library_path

HOLD_S = 0.3  # < jackd's 500 ms client timeout


@pytest.fixture(scope="module", autouse=True)
def _bridge_built():
    if not library_path().exists():
        r = subprocess.run(["make", "-C", str(library_path().parents[1])],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def _hold_the_gil(seconds):
    """Block this thread for ``seconds`` *holding* the GIL: ctypes.PyDLL does not release it
    around foreign calls (ctypes.CDLL would)."""
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))


def test_native_stems_equal_livestems_separate_at_44k(jackd_44k, tmp_path):
    """Same computation as the Python host: every port equals `separate` to -60 dB, at the
    published latency (model + hop + period, no margin).

    With no margin a worker descheduled by the machine for more than a period misses its
    deadline and plays the dry fallback: not an xrun, so `_record_song` does not record again,
    and the comparison fails. A session that fails it and in which livestems counted deadline
    misses, xruns or skipped cycles is run again (at most 4 times, then skipped with the
    counts: the machine, not livestems); a session without any fails at once."""
    song = make_demo_song(seconds=3.0, sample_rate=44100, seed=5).mixture
    wav = tmp_path / "song.wav"
    sf.write(wav, song.T, 44100, subtype="FLOAT")
    ref = subprocess.run([sys.executable, "-m", "livestems.stream", "separate", str(wav), "-o",
                          str(tmp_path / "ref"), "-q"], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    want = {s: sf.read(tmp_path / "ref" / "song" / f"{s}.wav", dtype="float32")[0].T
            for s in ("vocals", "accompaniment")}
    want["mix"] = want["vocals"] + want["accompaniment"]
    want["karaoke"] = want["accompaniment"]

    def session():
        proc, stats = _start_livestems(jackd_44k, tmp_path, "--native", "--safety-ms", "0")
        try:
            lat = lsp_capture_latency(jackd_44k.name, PORTS[0])
            assert lat[0] == lat[1] == 256 + 256 + 256  # center: model 256 + hop + period
            rec, _ = _record_song(jackd_44k, song, lat[0])
        finally:
            st, out = _stop(proc, stats)
        assert "process callback in C (no GIL)" in out
        assert st["backend"] == "jack-native" and st["latency_samples"] == lat[0]
        assert st["cycles"] > 0 and st["errors"] == 0 and st["worker_error"] is None
        return st, _port_errors(rec, lat[0], want)

    _judge_sessions(session)


def test_native_callback_runs_while_python_holds_the_gil(jackd):
    """The point of --native: with the GIL held for 0.3 s, JACK keeps calling the C callback
    (about 56 cycles at 48 kHz / 256), while the Python host's callback cannot run at all."""
    sep = load_separator("center")
    py = JackHost(sep, name="lspy", servername=jackd.name)
    nat = NativeJackHost("center", name="lsnat", servername=jackd.name, safety_ms=0.0)
    try:
        py.activate()
        nat.activate()
        time.sleep(0.5)
        lib, state = nat._proc.lib, nat._state
        py_eng = py.engine
        # q0 is read last before the hold and q1 first after it: reading the C count goes
        # through cffi, which releases the GIL, and the Python host's callbacks waiting for it
        # run then; between the hold and q1 they would be counted as if they ran in the hold
        c0 = lib.ls_jack_cycles(state)
        q0 = py_eng._q
        _hold_the_gil(HOLD_S)
        q1 = py_eng._q
        c1 = lib.ls_jack_cycles(state)
        native_cycles, python_cycles = c1 - c0, (q1 - q0) // 256
        print(f"GIL held {HOLD_S} s: native {native_cycles} cycles, Python host "
              f"{python_cycles} (a period is 5.3 ms: {HOLD_S / (256 / 48000):.0f} expected)")
        assert native_cycles >= 0.5 * HOLD_S * 48000 / 256
        # the Python host cannot run while the GIL is held: what it counts comes from the
        # edges (a cycle started before the hold; callbacks that were waiting for the GIL and
        # took it between its release and the read of q1: 3 of about 5 allowed seen in CI
        # when c1 was read first), not from the 0.3 s itself; had it run through the hold it
        # would count about as many cycles as the native one, not a quarter
        assert python_cycles <= native_cycles // 4, (python_cycles, native_cycles)
        time.sleep(0.3)
        st = nat.stats()
        assert st["cycles"] > c1  # still running
        # the Python host's counters too (the engine behind the handle is in this process)
        assert st["hops_processed"] > 0 and st["per_hop_ms"]["p50"] > 0
        assert st["latency_samples"] == nat.latency_samples and st["backend"] == "jack-native"
        assert set(nat.levels()) == {"vocals", "accompaniment", "mix", "karaoke"}
    finally:
        nat.close()
        py.close()


def test_native_worker_stays_an_ordinary_thread_beside_a_non_realtime_server(jackd):
    """Under `jackd --no-realtime` JACK's threads are ordinary ones: a SCHED_FIFO worker would
    hold them off for a whole hop of compute, and other clients miss their cycles (the soak
    counted several times the xruns of the server beside it; docs/LIVE.md). So the worker asks for
    real-time only beside a real-time server."""
    if not fifo_granted():
        pytest.skip("this machine grants no SCHED_FIFO: the worker could not take it anyway")
    nat = NativeJackHost("center", name="lsprio", servername=jackd.name, safety_ms=0.0)
    try:
        nat.activate()
        assert nat.client.realtime is False
        deadline = time.monotonic() + 20
        while nat.stats()["hops_processed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert nat.stats()["hops_processed"] > 0  # the worker is past its start-up
        workers = [t.native_id for t in threading.enumerate() if t.name == "livestems-bridge"]
        assert workers
        pol = thread_policies(os.getpid())
        assert all(pol[w][1] == os.SCHED_OTHER for w in workers), (workers, pol)
    finally:
        nat.close()


def test_native_refuses_python_only_options_and_reports_a_missing_server(jackd, tmp_path):
    r = subprocess.run([sys.executable, "-m", "livestems.stream", "jack", "--native",
                        "--key", "2", "--rt-priority", "5", "--server", jackd.name,
                        "--seconds", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "--key, --rt-priority cannot be used with the C callback" in r.stderr
    r = subprocess.run([sys.executable, "-m", "livestems.stream", "jack", "--native",
                        "--server", "no-such-server-x", "--seconds", "1", "--safety-ms", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 5 and "no JACK server is running" in r.stderr


def test_the_default_callback_is_c_when_built_else_python_saying_why(monkeypatch, tmp_path):
    from argparse import Namespace

    import livestems.stream.io.backends.jack_native as jn
    from livestems.stream.cli.jack import choose_callback

    def args(**kw):
        return Namespace(**{"callback": "auto", "key": None, "rt_priority": 0, **kw})

    assert choose_callback(args()) == ("native", None)
    assert choose_callback(args(callback="python")) == ("python", None)
    how, why = choose_callback(args(key=2.0))
    assert how == "python" and "--key" in why
    monkeypatch.setattr(jn, "library_path", lambda: tmp_path / "liblivestems.so")
    how, why = choose_callback(args())
    assert how == "python" and "not built" in why and "make -C bridge" in why
    assert choose_callback(args(callback="native")) == ("native", None)  # then a clear error


def test_native_follows_a_larger_period(jackd, tmp_path):
    """The period doubles mid-run: a new engine (a new C API handle) is swapped in without
    stopping JACK, the published latency grows by the extra 256 frames, and an impulse lands
    there."""
    from test_jack import CLIENT

    proc, stats = _start_livestems(jackd, tmp_path, "--native", "--safety-ms", "0")
    try:
        before = lsp_capture_latency(jackd.name, f"{CLIENT}:karaoke_L")[0]
        subprocess.run(["jack_bufsize", "512"], env=jackd.env(), check=True,
                       capture_output=True)
        deadline = time.monotonic() + 30
        after = before
        while after == before and time.monotonic() < deadline:
            time.sleep(0.2)
            after = lsp_capture_latency(jackd.name, f"{CLIENT}:karaoke_L")[0]
        assert after == before + 256, (before, after)
        imp = np.zeros((2, 9600), np.float32)
        imp[0, 1000] = 1.0
        rec, _ = _record_song(jackd, imp, after)
        k = PORTS.index(f"{CLIENT}:karaoke_L")
        assert int(np.argmax(np.abs(rec[k]))) == 1000 + after
    finally:
        st, _ = _stop(proc, stats)
    assert st["block_size"] == 512 and st["worker_error"] is None and st["errors"] == 0


def test_native_defaults_at_48k_equal_the_offline_computation(jackd, tmp_path):
    """Issue 16's acceptance, with the defaults (margin chosen at start-up, LD resamplers) at
    48 kHz: every port recorded by a real client equals the same engine computation run
    offline on the same input to -60 dB, with no deadline miss. A session in which the
    machine disturbed livestems (xruns, skipped cycles, a miss despite the measured margin) is
    run again, at most 4 times, then skipped with the counts (docs/LIVE.md)."""
    from livestems.stream.core.engine import Engine, auto_safety_ms, karaoke_buses
    from livestems.stream.io.backends.file import play_through
    from test_jack import CLIENT

    song = make_demo_song(seconds=2.0, sample_rate=48000, seed=6).mixture
    sep = load_separator(None)
    for attempt in range(4):
        # the defaults (`--callback auto` is the default; named so the helper, which picks
        # the Python callback for test_jack.py, leaves the choice to livestems)
        proc, stats = _start_livestems(jackd, tmp_path, "--callback", "auto")
        try:
            lat = lsp_capture_latency(jackd.name, f"{CLIENT}:karaoke_L")[0]
            rec, start = _record_song(jackd, song, lat)
        finally:
            st, out = _stop(proc, stats)
        assert st["latency_samples"] == lat and st["sample_rate"] == 48000
        assert st["backend"] == "jack-native"  # the bridge is built: the C callback
        assert st["resample_quality"] == "LD" and st["warmup_hop_ms"] is not None
        # the margin is the rule applied to this server's period (256 frames at 48 kHz), not
        # to a block at the model's rate
        w = st["warmup_hop_ms"]
        assert st["safety_ms"] == auto_safety_ms(w["p99"], w["max2"], 1e3 * 256 / 48000)
        eng = Engine(sep, block_size=256, io_rate=48000, buses=karaoke_buses(sep.sources),
                     safety_ms=st["safety_ms"])
        assert eng.latency_samples == lat  # the margin is in the published latency, exactly
        offset = start - st["first_frame"]  # the engine's sample 0 is the first cycle
        x = np.zeros((2, offset + song.shape[1]), np.float32)
        x[:, offset:] = song
        mix_ref, stems_ref = play_through(eng, x)
        want = {"vocals": stems_ref[0, :, offset:], "accompaniment": stems_ref[1, :, offset:],
                "mix": mix_ref[:, offset:], "karaoke": stems_ref[1, :, offset:]}
        n = song.shape[1]
        errors = {port: error_db(rec[k, lat:lat + n],
                                 want[port.split(":")[1].rsplit("_", 1)[0]][
                                     0 if port.endswith("_L") else 1])
                  for k, port in enumerate(PORTS)}
        # a miss with the margin the warm-up chose is a stall it could not foresee: on this
        # shared VM that is the machine (docs/LIVE.md), like an xrun; the session is run again
        disturbed = st["xruns"] > 0 or st["frame_gaps"] > 0 or st["deadline_misses"] > 0
        print(f"attempt {attempt}: margin {st['safety_ms']:g} ms, latency {lat}, "
              f"{st['deadline_misses']} misses, {st['xruns']} xruns, {st['frame_gaps']} gaps, "
              f"worst error {max(errors.values()):.1f} dB")
        if not disturbed:
            break
    else:
        pytest.skip(f"4 sessions disturbed by the machine (last: {st['deadline_misses']} "
                    f"misses, {st['xruns']} xruns, {st['frame_gaps']} skipped cycles; "
                    f"docs/LIVE.md)")
    assert st["deadline_misses"] == 0, st
    for port, err in errors.items():
        assert err < -60, (port, err, st)


def test_c_frame_clock_matches_the_python_one():
    """ls_jack_frame_step (C) against FrameClock (Python, tests/stream/io/test_jack_frames.py) on
    random call sequences: steps, misreports (a jump then the same time again), real skips,
    backward steps, large jumps, short blocks, across the uint32 wrap."""
    from livestems.stream.io.backends.jack import FrameClock
    from livestems.stream.io.backends.jack_native import _proc_lib

    proc = _proc_lib()
    rng = np.random.default_rng(11)
    for trial in range(20):
        st = proc.ffi.new("ls_jack_state *")
        st.max_gap = 16 * 256
        py = FrameClock(16 * 256)
        t = int(rng.integers(0, 1 << 32))
        for _ in range(400):
            r = rng.random()
            frames = 256 if rng.random() < 0.9 else int(rng.integers(1, 257))
            if r < 0.05:
                t += 256  # a misreport: this call reports the next cycle's time
            elif r < 0.10:
                t += 256 * int(rng.integers(1, 4))  # skipped cycles
            elif r < 0.12:
                t -= 256  # a step backwards
            elif r < 0.13:
                t += 256 * 40  # too far to fill
            t &= 0xFFFFFFFF
            want = py.step(t, frames)
            got = proc.lib.ls_jack_frame_step(st, t, frames)
            assert got == want, (trial, t, frames)
            if r < 0.05:
                t -= 256  # ... the next call reports the true time again
            t = (t + frames) & 0xFFFFFFFF
        assert (st.frame_gaps, st.frame_repeats, st.frames_filled, st.frame_slips,
                st.first_frame) == (py.gaps, py.repeats, py.filled, py.slips, py.first_frame)


def test_native_midi_goes_through_the_c_ring_to_the_mapping(jackd, tmp_path, monkeypatch):
    """A controller's CC on midi_in: the C callback puts it in its ring, the Python MIDI
    controller maps it (a --map file) onto the host's parameters, and those drive the mixer
    of the C API's engine."""
    import argparse
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "midi"))
    from midirig import Controller

    from livestems.stream.apps.jack_client import start_midi

    monkeypatch.setenv("JACK_DEFAULT_SERVER", jackd.name)
    mapping = tmp_path / "map.toml"
    mapping.write_text('[midi]\nsoft_takeover = false\n\n[[control]]\nparam = "vocals.gain"\n'
                       'cc = 7\nrange = [-24, 0]\ncurve = "linear"\n')
    ctl_out = Controller()
    host = NativeJackHost("center", name="lsmidi", servername=jackd.name, safety_ms=0.0)
    ctl = None
    try:
        args = argparse.Namespace(map=str(mapping), midi_connect=[ctl_out.port])
        ctl = start_midi(host, args)
        host.activate()
        ctl.start()
        eng = host._bridge_engine(host._handle)
        assert eng.mixer.params is host.params
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ctl_out.send(0xB0, 7, 64)  # until the controller's port is connected and read
            time.sleep(0.1)
            if abs(host.params.get("vocals.gain") - (-24 + 24 * 64 / 127)) < 1e-3:
                break
        assert abs(host.params.get("vocals.gain") - (-11.906)) < 1e-3
        st = host.stats()
        assert st["midi_events"] >= 1 and st["midi_dropped"] == 0
        # with no MIDI coming, the control thread sleeps on the ring's eventfd (it polled
        # every millisecond: a thousand wake-ups a second beside the audio threads)
        wakeups = _thread_wakeups(ctl._thread.native_id)
        time.sleep(1.0)
        assert _thread_wakeups(ctl._thread.native_id) - wakeups < 50
    finally:
        if ctl is not None:
            ctl.stop()
        host.close()
        ctl_out.close()


def _thread_wakeups(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


def test_native_midi_ring_wakes_its_reader_only_when_events_come(jackd, monkeypatch):
    """The C callback writes the ring's eventfd in a cycle that queued MIDI: ``wait``
    returns True once a CC has arrived (and ``get`` gives it), False while nothing comes."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "midi"))
    from midirig import Controller

    monkeypatch.setenv("JACK_DEFAULT_SERVER", jackd.name)
    ctl_out = Controller()
    host = NativeJackHost("center", name="lswake", servername=jackd.name, safety_ms=0.0)
    try:
        host.activate()
        host.client.connect(ctl_out.port, host.midi_in.name)
        ring = host.midi_ring
        assert ring.wait(0.2) is False  # nothing sent yet
        # resent until one arrives: jack_connect returns before the cycles run the new
        # graph, so a CC sent at once can go nowhere (tests/bridge/test_jack_shim.py)
        deadline, woke = time.monotonic() + 10, False
        while not woke and time.monotonic() < deadline:
            ctl_out.send(0xB0, 7, 99)
            woke = ring.wait(0.2)
        assert woke is True
        got = []
        while (item := ring.get()) is not None:
            got.append(item[1])
        assert bytes([0xB0, 7, 99]) in got
        assert ring.wait(0.2) is False  # drained, and no cycle has queued more
    finally:
        host.close()
        ctl_out.close()


def test_native_live_view_in_a_terminal_quits_on_q(jackd):
    """--native --view under a pseudo-terminal: meters, latency, misses; q quits with 0."""
    import os
    import pty
    import select
    import signal

    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI in a terminal
        os.environ.update(jackd.env())
        os.execv(sys.executable, [sys.executable, "-m", "livestems.stream", "jack",
                                  "--native", "--view", "--safety-ms", "0"])
    try:
        screen, deadline = b"", time.monotonic() + 60
        while b"deadline misses" not in screen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    break
        text = screen.decode(errors="replace")
        for word in ("C callback", "vocals", "accompaniment", "latency", "deadline misses"):
            assert word in text, (word, text[-2000:])
        os.write(fd, b"q")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            try:
                select.select([fd], [], [], 0.1) and os.read(fd, 65536)
            except OSError:
                pass
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("livestems jack --native --view did not quit on q")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
