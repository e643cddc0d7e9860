"""`livestems jack` on a real JACK server: stems equal `livestems separate`, latency, faults."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from jackio import PlayRecord, error_db, lsp_capture_latency, thread_dump, wait_for_ports

from livestems.model.evaluation.demo_song import make_demo_song
from livestems.model.nets.registry import load_separator
from livestems.stream.core.engine import Engine, karaoke_buses
from livestems.stream.io.backends.file import play_through
from livestems.stream.io.backends.jack import port_layout

CLIENT = "livestems"
PORTS = [f"{CLIENT}:{p}" for p in port_layout(("vocals", "accompaniment"))]


def _cli(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "livestems.stream", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _start_livestems(server, tmp_path, *extra, sources=("vocals", "accompaniment")):
    """`livestems jack` on ``server``, once its ports (those of a model separating into
    ``sources``) exist and it has published its latency."""
    ports = [f"{CLIENT}:{p}" for p in port_layout(tuple(sources))]
    stats = tmp_path / f"stats-{time.monotonic_ns()}.json"
    if "--native" not in extra and "--callback" not in extra:
        extra = ("--callback", "python", *extra)  # this file tests the Python callback
    proc = _cli("jack", "--server", server.name, "--stats", str(stats), *extra)
    try:
        wait_for_ports(server.name, ports + [f"{CLIENT}:in_L", f"{CLIENT}:midi_in"])
        deadline = time.monotonic() + 30  # ports exist before activation; latency after
        while lsp_capture_latency(server.name, ports[0])[0] == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError
            time.sleep(0.1)
    except TimeoutError:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"livestems jack did not register its ports:\n{out}\n{err}")
    return proc, stats


def _stop(proc, stats):
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        dump = thread_dump(proc.pid)
        proc.kill()
        raise AssertionError(f"livestems jack did not exit within 30 s of SIGINT:\n{dump}") \
            from None
    assert proc.returncode == 0, (out, err)
    return json.loads(stats.read_text()), out


def _record_song(server, mix, lat, attempts=8):
    """Play ``mix`` into livestems and record every output port.

    A recording during which JACK reported an xrun is retried (up to ``attempts``): on a
    non-real-time server sharing two cores, another process can starve a cycle, and then the
    samples of that cycle are lost, which says nothing about the computation being tested.
    Whether xruns happen at all is what test_soak measures."""
    total = mix.shape[1] + lat + 512
    for _ in range(attempts):
        pr = PlayRecord(server.name, mix, PORTS, total)
        try:
            pr.connect_to(f"{CLIENT}:in_L", f"{CLIENT}:in_R")
            time.sleep(0.2)  # let the graph change settle before the lead-in
            rec = pr.play()
        finally:
            pr.close()
        if pr.disturbed == 0:
            return rec, pr.start
        print(f"xruns or skipped cycles during the recording ({pr.xruns}, {pr.gaps}); recording again")
    # Not a verdict on livestems: no clean recording could be made, so the comparison this
    # test exists for could not run. Reported as a skip with the reason; the xrun counts
    # themselves are what tests/stream/io/test_soak.py measures (and fails on).
    pytest.skip(f"JACK reported xruns in all {attempts} recordings: this machine is too busy "
                "right now to record cleanly (non-real-time jackd; see docs/LIVE.md)")


def _check_live_stats(st):
    brief = {k: st[k] for k in ("deadline_misses", "missed_samples", "hops_skipped", "xruns",
                                "xruns_after_grace", "frame_gaps", "per_hop_ms")}
    if st["xruns"] == 0:  # (test_soak asserts that there are none)
        assert st["frame_gaps"] == 0, brief  # the engine saw every cycle
    # Deadline misses are not asserted here: the recording the caller compared to -60 dB was
    # the model's output throughout (a miss in it would have failed that comparison); a miss
    # elsewhere in the session (warm-up, a retried recording) is a stall of the VM, which the
    # soak measures (tests/stream/io/test_soak.py).
    print(brief)
    assert st["worker_error"] is None, st["worker_error"]


def _disturbed(st) -> str:
    """What the machine did to a session that a recording cannot see ('' when nothing):
    deadline misses (a hop played dry), xruns after start-up (all xruns, for the C-callback
    host, which has no start-up count), cycles the engine never got."""
    xruns = "xruns_after_grace" if "xruns_after_grace" in st else "xruns"
    got = {k: st[k] for k in ("deadline_misses", xruns, "frame_gaps") if st[k]}
    return ", ".join(f"{v} {k}" for k, v in got.items())


def _port_errors(rec, at, want):
    """Error (dB) of each recorded port from sample ``at`` against ``want[stem]`` [2, n]."""
    errors = {}
    for k, port in enumerate(PORTS):
        stem, side = port.split(":")[1].rsplit("_", 1)
        ref = want[stem][0 if side == "L" else 1]
        errors[port] = error_db(rec[k, at:at + ref.shape[0]], ref)
    return errors


def _judge_sessions(session, attempts=4):
    """Run ``session() -> (stats, {port: error dB}, *rest)`` until its errors are all under
    -60 dB or it was not disturbed (then it is judged: every port must be under -60 dB), at
    most ``attempts`` times, then skip with the counts. Returns ``rest``."""
    for attempt in range(attempts):
        st, errors, *rest = session()
        if max(errors.values()) < -60 or not _disturbed(st):
            break
        print(f"attempt {attempt}: {_disturbed(st)}; errors {errors}: again")
    else:
        pytest.skip(f"{attempts} sessions disturbed by the machine (last: {_disturbed(st)}; "
                    "docs/LIVE.md)")
    for port, err in errors.items():
        print(f"{port}: error {err:.1f} dB")
        assert err < -60, (port, err, st)
    return rest


def test_stems_equal_livestems_separate_at_44k(jackd_44k, tmp_path):
    """At the model's rate the live path is the very computation `separate` does: -60 dB."""
    song = make_demo_song(seconds=4.0, sample_rate=44100, seed=3).mixture
    wav = tmp_path / "song.wav"
    sf.write(wav, song.T, 44100, subtype="FLOAT")
    ref = subprocess.run([sys.executable, "-m", "livestems.stream", "separate", str(wav), "-o",
                          str(tmp_path / "ref"), "-q"], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    want = {s: sf.read(tmp_path / "ref" / "song" / f"{s}.wav", dtype="float32")[0].T
            for s in ("vocals", "accompaniment")}
    want["mix"] = want["vocals"] + want["accompaniment"]
    want["karaoke"] = want["accompaniment"]

    # --safety-ms 0: the geometry alone (the default margin is measured at start-up). With no
    # margin, a worker the machine descheduled for more than a period misses a hop, which
    # plays dry: such a session (misses, xruns or skipped cycles reported) is run again, a
    # clean one is judged
    def session():
        proc, stats = _start_livestems(jackd_44k, tmp_path, "--safety-ms", "0")
        try:
            lat = lsp_capture_latency(jackd_44k.name, f"{CLIENT}:vocals_L")
            assert lat[0] == lat[1] == 256 + 256 + 256  # center: model 256 + hop + period
            rec, _ = _record_song(jackd_44k, song, lat[0])
        finally:
            st, _ = _stop(proc, stats)
        _check_live_stats(st)
        assert st["latency_samples"] == lat[0]
        return st, _port_errors(rec, lat[0], want), rec, lat

    rec, lat = _judge_sessions(session)
    # silence before the song reached the outputs: `center`'s 256-sample synthesis window
    # may smear the first estimates at most that far ahead of the latency, never further
    assert np.abs(rec[:, :lat[0] - 256]).max() == 0.0


def test_48k_server_through_resamplers_and_impulse(jackd, tmp_path):
    """48 kHz server, 44.1 kHz model: stems equal the same streaming computation offline
    (-60 dB); an impulse into in_L comes out of the stem and karaoke ports exactly at the
    latency published on those ports, which includes --safety-ms (20 ms of headroom that
    keeps a worker descheduled by the VM from missing inside the recordings).

    A session in which livestems itself saw xruns or skipped cycles after start-up may have
    lost input samples that the test clients did not notice, and one with a deadline miss
    played a hop dry: such a session, if its errors are over the bound, is run again (at most
    4 times, then skipped with the counts: the machine, not livestems)."""
    song = make_demo_song(seconds=2.0, sample_rate=48000, seed=4).mixture
    sep = load_separator(None)
    def session():
        proc, stats = _start_livestems(jackd, tmp_path, "--safety-ms", "20")
        try:
            lat = lsp_capture_latency(jackd.name, f"{CLIENT}:karaoke_L")[0]
            rec, start = _record_song(jackd, song, lat)
            imp = np.zeros((2, 4800), np.float32)
            imp[0, 1000] = 1.0
            rec_imp, _ = _record_song(jackd, imp, lat)
        finally:
            st, _ = _stop(proc, stats)
        _check_live_stats(st)
        return st, _compare_48k(st, sep, song, rec, start, lat), rec_imp, lat

    rec_imp, lat = _judge_sessions(session)
    # the impulse: L only, so `center` leaves it all in the accompaniment
    names = [p.split(":")[1] for p in PORTS]
    for name in ("accompaniment_L", "mix_L", "karaoke_L"):
        y = rec_imp[names.index(name)]
        assert int(np.argmax(np.abs(y))) == 1000 + lat, (name, np.argmax(np.abs(y)), lat)
        assert y[1000 + lat] > 0.7  # band-limited: the LD resamplers pass up to ~19.5 kHz
    assert np.abs(rec_imp[names.index("vocals_L")]).max() < 1e-3


def _compare_48k(st, sep, song, rec, start, lat):
    """Error (dB) of each recorded port against the same engine run offline."""
    assert st["latency_samples"] == lat and st["sample_rate"] == 48000
    assert st["resampler_latency_samples"] > 0 and st["resampler_underruns"] == 0
    # the reference: the same engine configuration, run offline on the same stream (the
    # engine's sample 0 is its first JACK cycle, `first_frame`)
    offset = start - st["first_frame"]
    assert offset > 0
    x = np.zeros((2, offset + song.shape[1]), np.float32)
    x[:, offset:] = song
    assert Engine(sep, block_size=256, io_rate=48000).latency_samples + 960 == lat  # 20 ms
    eng = Engine(sep, block_size=256, io_rate=48000, buses=karaoke_buses(sep.sources),
                 safety_ms=20)
    assert eng.latency_samples == lat
    # play_through returns mix and stems; the karaoke bus equals the accompaniment stem for
    # `center` (vocals + accompaniment == input), checked below against the live port
    mix_ref, stems_ref = play_through(eng, x)
    n = song.shape[1]
    want = {"vocals": stems_ref[0, :, offset:offset + n],
            "accompaniment": stems_ref[1, :, offset:offset + n],
            "mix": mix_ref[:, offset:offset + n], "karaoke": stems_ref[1, :, offset:offset + n]}
    return _port_errors(rec, lat, want)


def test_server_stopping_mid_run_exits_cleanly(jackd, tmp_path):
    proc, stats = _start_livestems(jackd, tmp_path)
    time.sleep(0.5)
    jackd.stop()
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("livestems jack hung after the server stopped")
    assert proc.returncode == 6, (proc.returncode, out, err)
    assert "JACK server shut down" in err and "restart jackd" in err
    assert json.loads(stats.read_text())["shutdown_reason"]


def test_no_server_and_missing_port_give_clear_errors(jackd, tmp_path):
    r = subprocess.run([sys.executable, "-m", "livestems.stream", "jack", "--callback", "python",
                        "--server",
                        jackd.name + "-absent", "--seconds", "1"], capture_output=True, text=True)
    assert r.returncode == 5
    assert "no JACK server is running" in r.stderr and "jackd" in r.stderr
    r = subprocess.run([sys.executable, "-m", "livestems.stream", "jack", "--callback", "python",
                        "--server",
                        jackd.name, "--connect", "nosuch:port", "--seconds", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 5
    assert "no JACK audio output port or client named 'nosuch:port'" in r.stderr
    assert "system:capture_1" in r.stderr  # the message lists what exists
    r = subprocess.run([sys.executable, "-m", "livestems.stream", "jack", "--callback", "python",
                        "--server",
                        jackd.name, "--safety-ms", "-5", "--seconds", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--safety-ms must be 0..500 ms, got -5" in r.stderr


def test_buffer_size_change_is_followed(jackd, tmp_path):
    """The server's period doubles mid-run: a new engine is built off the audio thread, the
    published latency grows by the extra block, and audio keeps flowing."""
    proc, stats = _start_livestems(jackd, tmp_path)
    try:
        before = lsp_capture_latency(jackd.name, f"{CLIENT}:karaoke_L")[0]
        subprocess.run(["jack_bufsize", "512"], env=jackd.env(), check=True,
                       capture_output=True)
        deadline = time.monotonic() + 10
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
    assert st["block_size"] == 512 and st["worker_error"] is None
