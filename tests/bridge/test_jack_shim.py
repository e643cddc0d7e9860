"""The native JACK client (bridge/shims/jack) on a real jackd: the Python JACK app's routing
test (tests/stream/io/test_jack.py), run against the C++ shim, plus MIDI control."""

import json
import os
import signal
import subprocess
import time

import jack
import numpy as np
import pytest
from bridgekit import BUILD, error_db, make
from jackio import (PlayRecord, fifo_granted, lsp_capture_latency, thread_policies,
                    wait_for_ports)

from livestems.model.evaluation.demo_song import make_demo_song
from livestems.model.nets.registry import load_separator
from livestems.stream.core.engine import Engine, karaoke_buses
from livestems.stream.io.backends.file import play_through
from livestems.stream.io.backends.jack import port_layout

CLIENT = "livestems"
PORTS = [f"{CLIENT}:{p}" for p in port_layout(("vocals", "accompaniment"))]


@pytest.fixture(scope="module")
def shim():
    make("lib", "jack")
    return BUILD / "livestems-jack"


def _start(shim, server, tmp_path):
    stats = tmp_path / f"stats-{time.monotonic_ns()}.json"
    proc = subprocess.Popen([str(shim), "--server", server.name, "--stats", str(stats)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=server.env())
    try:
        wait_for_ports(server.name, PORTS + [f"{CLIENT}:in_L", f"{CLIENT}:in_R",
                                             f"{CLIENT}:midi_in"])
        deadline = time.monotonic() + 20  # latency is published after activation
        while lsp_capture_latency(server.name, PORTS[0])[0] == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError
            time.sleep(0.1)
    except TimeoutError:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"livestems-jack did not come up:\n{out}\n{err}")
    return proc, stats


def _stop(proc, stats):
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err, err
    return json.loads(stats.read_text())


def _record(server, signal_, lat, **kw):
    pr = PlayRecord(server.name, signal_, PORTS, signal_.shape[1] + lat + 512, **kw)
    try:
        pr.connect_to(f"{CLIENT}:in_L", f"{CLIENT}:in_R")
        return pr.play(), pr.start
    finally:
        pr.close()


def _run_session(shim, server, tmp_path, body, attempts=6):
    """Start the shim, run ``body(server)`` (recordings), stop; returns (stats, result).

    On this shared 2-core machine jackd itself sometimes xruns under load (no real-time
    scheduling) or skips a cycle (a frame gap), even on a quiet machine; a block lost or
    missed then is the machine's, not the shim's; so is a deadline miss while the VM stalls the
    worker (seen with neither). Such a session (xruns, frame gaps or misses) is run again, at
    most ``attempts`` times; if none is clean the test is skipped with the counts.
    """
    for attempt in range(attempts):
        proc, stats = _start(shim, server, tmp_path)
        try:
            result = body()
        finally:
            st = _stop(proc, stats)
        disturbed = st["xruns"] > 0 or st["frame_gaps"] > 0 or st["deadline_misses"] > 0
        if not disturbed:
            return st, result
        if attempt == attempts - 1:  # not a verdict on the shim: no undisturbed session
            pytest.skip(f"{attempts} sessions disturbed by the machine (last: {st['xruns']} "
                        f"xruns, {st['frame_gaps']} frame gaps, {st['deadline_misses']} "
                        "misses): too busy right now (non-real-time jackd; docs/LIVE.md)")
        print(f"attempt {attempt}: {st['xruns']} xruns, {st['frame_gaps']} frame gaps, "
              f"{st['deadline_misses']} misses (machine, not shim): again")


def _check_live(st):
    assert st["frame_gaps"] == 0, st
    assert st["deadline_misses"] == 0, st
    assert st["worker_error"] is None, st
    assert st["process_errors"] == 0 and st["silent_cycles"] == 0, st


def test_stems_equal_livestems_separate_at_44k(shim, jackd_44k, reference, tmp_path):
    """At the model's rate: every port equals `livestems separate` to -60 dB after the
    latency published with jack_port_set_latency_range (768 = model 256 + hop + period)."""
    def body():
        lat = lsp_capture_latency(jackd_44k.name, f"{CLIENT}:vocals_L")
        assert lat[0] == lat[1] == 256 + 256 + 256
        return lat, _record(jackd_44k, reference.mixture, lat[0])[0]

    st, (lat, rec) = _run_session(shim, jackd_44k, tmp_path, body)
    _check_live(st)
    assert st["latency_samples"] == lat[0]
    n = reference.mixture.shape[1]
    for k, port in enumerate(PORTS):
        stem, side = port.split(":")[1].rsplit("_", 1)
        err = error_db(rec[k, lat[0]:lat[0] + n], reference.stems[stem][0 if side == "L" else 1])
        print(f"{port}: error {err:.1f} dB")
        assert err < -60, (port, err)
    assert np.abs(rec[:, :lat[0] - 256]).max() == 0.0


def test_48k_server_resamples_and_impulse_lands_on_the_latency(shim, jackd_48k, tmp_path):
    """48 kHz server, 44.1 kHz model: the ports equal the engine's own 48 kHz path offline
    (-60 dB), and an impulse comes out exactly at the published latency."""
    song = make_demo_song(seconds=3.0, sample_rate=48000, seed=4).mixture
    def body():
        lat = lsp_capture_latency(jackd_48k.name, f"{CLIENT}:karaoke_L")[0]
        rec, start = _record(jackd_48k, song, lat)
        imp = np.zeros((2, 4800), np.float32)
        imp[0, 1000] = 1.0
        return lat, rec, start, _record(jackd_48k, imp, lat)[0]

    st, (lat, rec, start, rec_imp) = _run_session(shim, jackd_48k, tmp_path, body)
    _check_live(st)
    assert st["latency_samples"] == lat and st["sample_rate"] == 48000
    offset = start - st["first_frame"]  # the engine's sample 0 is the shim's first cycle
    x = np.zeros((2, offset + song.shape[1]), np.float32)
    x[:, offset:] = song
    sep = load_separator(None)
    eng = Engine(sep, block_size=256, io_rate=48000, buses=karaoke_buses(sep.sources),
                 resample_quality="HQ")  # the C API's default recipe
    assert eng.latency_samples == lat
    mix, stems = play_through(eng, x)
    want = {"vocals": stems[0, :, offset:], "accompaniment": stems[1, :, offset:],
            "mix": mix[:, offset:], "karaoke": stems[1, :, offset:]}
    n = song.shape[1]
    for k, port in enumerate(PORTS):
        stem, side = port.split(":")[1].rsplit("_", 1)
        err = error_db(rec[k, lat:lat + n], want[stem][0 if side == "L" else 1])
        print(f"{port}: error {err:.1f} dB against the engine offline")
        assert err < -60, (port, err)
    names = [p.split(":")[1] for p in PORTS]
    for name in ("accompaniment_L", "mix_L", "karaoke_L"):
        y = rec_imp[names.index(name)]
        assert int(np.argmax(np.abs(y))) == 1000 + lat, (name, np.argmax(np.abs(y)), lat)
    assert np.abs(rec_imp[names.index("vocals_L")]).max() < 1e-3


def test_no_thread_goes_real_time_beside_a_non_realtime_server(shim, jackd_44k, tmp_path):
    """Under `jackd --no-realtime` JACK's threads are ordinary ones; the shim's worker (its
    deadline is a period) would go SCHED_FIFO with LIVESTEMS_FLAG_RT_WORKER and hold them off
    for a whole hop of compute. The shim sets the flag only beside a real-time server."""
    if not fifo_granted():
        pytest.skip("this machine grants no SCHED_FIFO: the worker could not take it anyway")
    proc, stats = _start(shim, jackd_44k, tmp_path)
    try:
        time.sleep(1.0)  # the worker sets its policy when it starts, before its first hop
        pol = thread_policies(proc.pid)
    finally:
        st = _stop(proc, stats)
    assert st["hops_processed"] > 0
    assert len(pol) > 2  # main, JACK's threads, the worker
    assert all(p == os.SCHED_OTHER for _, p in pol.values()), pol


def test_midi_in_mutes_a_stem(shim, jackd_44k, reference, tmp_path):
    """CC 20 = 127 on MIDI channel 1 into midi_in mutes vocals: the mix port becomes the
    accompaniment, while the stem ports do not change."""
    def body():
        midi = jack.Client("lsbridge-midi", servername=jackd_44k.name, no_start_server=True)
        port = midi.midi_outports.register("out")
        pending = []
        cycles = [0]

        @midi.set_process_callback
        def _send(frames):
            port.clear_buffer()
            cycles[0] += 1
            if pending and port.number_of_connections:
                port.write_midi_event(0, pending.pop())

        try:
            midi.activate()
            midi.connect(port, f"{CLIENT}:midi_in")
            # jack_connect returns before the graph the cycles run has the connection: an
            # event queued at once was once written in a cycle that still ran the old graph
            # and never arrived (a fresh-clone CI failure). Queue it three cycles later.
            c0, deadline = cycles[0], time.monotonic() + 10
            while cycles[0] < c0 + 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            pending.append(bytes([0xB0, 20, 127]))
            while pending and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.5)
            lat = lsp_capture_latency(jackd_44k.name, f"{CLIENT}:mix_L")[0]
            return lat, _record(jackd_44k, reference.mixture, lat)[0]
        finally:
            midi.close()

    st, (lat, rec) = _run_session(shim, jackd_44k, tmp_path, body)
    _check_live(st)
    assert st["midi_events"] == 1, st
    n = reference.mixture.shape[1]
    names = [p.split(":")[1] for p in PORTS]
    got_mix = rec[names.index("mix_L"), lat:lat + n]
    assert error_db(got_mix, reference.stems["accompaniment"][0]) < -60
    assert error_db(rec[names.index("vocals_L"), lat:lat + n], reference.stems["vocals"][0]) < -60
