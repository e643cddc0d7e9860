"""The PortAudio path (sounddevice) on a real JACK server, `livestems devices`, `karaoke`."""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
from jackio import PlayRecord, error_db, wait_for_ports

from livestems.model.evaluation.demo_song import make_demo_song

PA_IN = ["PortAudio:in_0", "PortAudio:in_1"]
PA_OUT = ["PortAudio:out_0", "PortAudio:out_1"]


def _cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "livestems.stream", *args], env=env,
                          capture_output=True, text=True, **kw)


def test_devices_lists_the_jack_server(jackd):
    r = _cli(["devices"], jackd.env())
    assert r.returncode == 0, r.stderr
    assert "JACK Audio Connection Kit" in r.stdout and "in  2  out  2  48000 Hz" in r.stdout


def test_rate_the_device_rejects_names_the_supported_ones(jackd):
    r = _cli(["karaoke", "--rate", "44100", "--seconds", "1", "--no-view"], jackd.env())
    assert r.returncode == 5, r.stderr
    assert "rejects 2 channels of float32 at 44100 Hz" in r.stderr
    assert "expected one of 48000 Hz" in r.stderr and "--rate 48000" in r.stderr


def test_safety_margin_out_of_range_is_refused_before_any_device_opens(jackd):
    r = _cli(["karaoke", "--safety-ms", "501", "--seconds", "1", "--no-view"], jackd.env())
    assert r.returncode == 2 and "--safety-ms must be 0..500 ms, got 501" in r.stderr, r.stderr


def test_no_device_names_what_to_start(tmp_path):
    env = dict(os.environ, JACK_DEFAULT_SERVER=f"absent-{os.getpid()}", JACK_NO_START_SERVER="1")
    probe = subprocess.run([sys.executable, "-c", "import sounddevice as sd; "
                            "print(len(sd.query_devices()))"], env=env, capture_output=True,
                           text=True)
    if probe.stdout.strip() != "0":
        import pytest

        pytest.skip("this machine has a sound card, so 'no device' cannot be produced")
    r = _cli(["karaoke", "--seconds", "1", "--no-view"], env)
    assert r.returncode == 5
    assert "no audio devices found" in r.stderr and "jackd" in r.stderr


def test_karaoke_through_portaudio_equals_separate(jackd_44k, tmp_path):
    """PortAudio's JACK host API at 44.1 kHz: the karaoke output equals `livestems separate`'s
    accompaniment to -60 dB once the engine's latency plus PortAudio's one period is removed."""
    song = make_demo_song(seconds=3.0, sample_rate=44100, seed=6).mixture
    wav = tmp_path / "song.wav"
    sf.write(wav, song.T, 44100, subtype="FLOAT")
    r = _cli(["separate", str(wav), "-o", str(tmp_path / "ref"), "-q"], None)
    assert r.returncode == 0, r.stderr
    want = sf.read(tmp_path / "ref" / "song" / "accompaniment.wav", dtype="float32")[0].T
    n = song.shape[1]
    # --safety-ms 0 (the geometry alone): a worker the machine descheduled for more than a
    # period misses a hop, played dry; a session with misses whose output is off is run again
    for attempt in range(4):
        st, rec, lat = _karaoke_session(jackd_44k, song, tmp_path / f"stats{attempt}.json")
        # PortAudio's JACK host API buffers one period of its own (measured: the best
        # alignment over every shift is exactly one period past the engine's latency)
        errs = {d: error_db(rec[0, lat + d:lat + d + n], want[0]) for d in range(-lat, 512)}
        shift = min(errs, key=errs.get)
        errors = [error_db(rec[ch, lat + shift:lat + shift + n], want[ch]) for ch in (0, 1)]
        if max(errors) < -60 or not st["deadline_misses"]:
            break
        print(f"attempt {attempt}: {st['deadline_misses']} deadline misses, errors {errors}: "
              "again")
    else:
        pytest.skip(f"deadline misses in 4 sessions (last: {st['deadline_misses']}): the "
                    "machine is too busy right now (docs/LIVE.md)")
    assert shift == jackd_44k.period
    for ch in (0, 1):
        print(f"{PA_OUT[ch]}: error {errors[ch]:.1f} dB against `livestems separate` "
              "accompaniment")
        assert errors[ch] < -60, (errors, st)


def _karaoke_session(server, song, stats):
    """`livestems karaoke --safety-ms 0` through PortAudio on ``server``, ``song`` played
    into it and its output recorded: (stats, recording [2, T], the engine's latency)."""
    proc = subprocess.Popen([sys.executable, "-m", "livestems.stream", "karaoke", "--no-view",
                             "--block", "256", "--safety-ms", "0", "--stats", str(stats)],
                            env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lat = None
        for line in proc.stdout:  # "latency N samples = ..."
            if line.startswith("latency "):
                lat = int(line.split()[1])
                break
        assert lat == 256 + 256 + 256, lat
        wait_for_ports(server.name, PA_IN + PA_OUT)
        for attempt in range(8):
            pr = PlayRecord(server.name, song, PA_OUT, song.shape[1] + lat + 512,
                            prefix=f"lspa{attempt}")
            try:
                for port in PA_IN:  # PortAudio joined system:capture by itself: unplug it
                    for src in pr.recorder.get_all_connections(port):
                        pr.recorder.disconnect(src, port)
                pr.connect_to(*PA_IN)
                time.sleep(0.2)
                rec = pr.play()
            finally:
                pr.close()
            if pr.disturbed == 0:
                break
            print(f"xruns or skipped cycles during the recording ({pr.xruns}, {pr.gaps}); "
                  "recording again")
        else:  # not a verdict on livestems: no clean recording could be made (docs/LIVE.md)
            pytest.skip(f"xruns or skipped cycles in all 8 recordings (last: {pr.xruns} "
                        f"xruns, {pr.gaps} skipped cycles): the machine is too busy right now")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    st = json.loads(stats.read_text())
    assert st["worker_error"] is None and st["latency_samples"] == lat
    return st, rec, lat


def _read_until(fd, needle, timeout_s):
    buf = b""
    deadline = time.monotonic() + timeout_s
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} did not appear; got {buf[-2000:]!r}")
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_karaoke_live_view_in_a_terminal_quits_on_q(jackd):
    """Under a pseudo-terminal: the view shows stem meters, latency, real-time factor, misses
    and xruns; pressing q ends the program cleanly with exit code 0."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI in a terminal
        os.environ.update(jackd.env())
        os.execv(sys.executable, [sys.executable, "-m", "livestems.stream", "karaoke",
                                  "--guide-db", "-12"])
    try:
        screen = _read_until(fd, b"press q to quit", 60)
        time.sleep(0.5)
        screen += _read_until(fd, b"press q to quit", 5)
        text = screen.decode(errors="replace")
        for word in ("vocals", "accompaniment", "latency", "real-time factor",
                     "deadline misses", "xruns", "guide vocal -12.0 dB"):
            assert word in text, word
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
            raise AssertionError("karaoke did not quit on q")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
