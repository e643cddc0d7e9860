"""Fixtures for the C bridge tests: `make -C bridge` targets, the reference separation, jackd.

Everything is built by the tests themselves with the Python running them (so the library
bakes in this venv); make keeps it incremental, so a second run only re-links what changed.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from bridgekit import BUILD, make  # noqa: E402


@pytest.fixture(scope="session")
def harness() -> Path:
    make("lib", "harness")
    return BUILD / "ls_harness"


@dataclass
class Reference:
    wav: Path
    mixture: np.ndarray  # [2, T] float32 at 44.1 kHz
    stems: dict  # vocals, accompaniment, mix, karaoke -> [2, T], from `livestems separate`


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    """A 4 s demo song and what `livestems separate` (the CLI, default model) makes of it."""
    from livestems.model.demo_song import make_demo_song

    d = tmp_path_factory.mktemp("ref")
    song = make_demo_song(seconds=4.0, sample_rate=44100, seed=3).mixture.astype(np.float32)
    wav = d / "song.wav"
    sf.write(wav, song.T, 44100, subtype="FLOAT")
    r = subprocess.run([sys.executable, "-m", "livestems.stream", "separate", str(wav), "-o",
                        str(d / "out"), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stems = {s: sf.read(d / "out" / "song" / f"{s}.wav", dtype="float32")[0].T
             for s in ("vocals", "accompaniment")}
    stems["mix"] = stems["vocals"] + stems["accompaniment"]
    stems["karaoke"] = stems["accompaniment"]
    return Reference(wav, song, stems)


@dataclass
class JackServer:
    name: str
    rate: int
    proc: subprocess.Popen
    log: Path

    def env(self) -> dict:
        return dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")


def _start_jackd(tmp_path: Path, rate: int, period: int = 256) -> JackServer:
    """`jackd --no-realtime -n <unique> -d dummy` (DESIGN.md), ready when a client can join."""
    import jack

    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed (Debian: apt-get install jackd2)")
    name = f"lsbridge-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log = tmp_path / f"jackd-{name}.log"
    proc = subprocess.Popen(
        ["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", str(rate), "-p",
         str(period)], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, JACK_NO_AUDIO_RESERVATION="1"))
    server = JackServer(name, rate, proc, log)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jackd exited with {proc.returncode}:\n{log.read_text()}")
        try:
            jack.Client("lsbridge-probe", servername=name, no_start_server=True).close()
            return server
        except jack.JackOpenError:
            if time.monotonic() > deadline:
                _stop(proc)
                pytest.fail(f"jackd did not come up in 15 s:\n{log.read_text()}")
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def jackd_44k(tmp_path):
    server = _start_jackd(tmp_path, 44100)
    try:
        yield server
    finally:
        _stop(server.proc)


@pytest.fixture
def jackd_48k(tmp_path):
    server = _start_jackd(tmp_path, 48000)
    try:
        yield server
    finally:
        _stop(server.proc)
