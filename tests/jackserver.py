"""A real JACK server for tests: `jackd --no-realtime -n <unique> -d dummy` (DESIGN.md).

One implementation shared by tests/stream, tests/stream/midi and tests/bridge (import it as
`from jackserver import JackServer, start_jackd`; tests/conftest.py puts tests/ on sys.path).
"""

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jack
import pytest


@dataclass
class JackServer:
    name: str
    rate: int
    period: int
    proc: subprocess.Popen
    log: Path

    def env(self) -> dict:
        return dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_jackd(tmp_path: Path, rate: int = 48000, period: int = 256,
                prefix: str = "lstest") -> JackServer:
    """Start a uniquely named dummy-driver jackd; returns once a client can join."""
    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed (Debian: apt-get install jackd2); `make test` "
                    "installs it")
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log = tmp_path / f"jackd-{name}.log"
    proc = subprocess.Popen(
        ["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", str(rate), "-p", str(period)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, JACK_NO_AUDIO_RESERVATION="1"))
    server = JackServer(name, rate, period, proc, log)
    deadline = time.monotonic() + 15
    while True:  # ready when a client can join
        if proc.poll() is not None:
            text = log.read_text()
            if "Too many servers already active" in text and _clear_stale_registry():
                return start_jackd(tmp_path, rate, period, prefix)
            pytest.fail(f"jackd exited with {proc.returncode}:\n{text}")
        try:
            jack.Client("lstest-probe", servername=name, no_start_server=True).close()
            return server
        except jack.JackOpenError:
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"jackd did not come up in 15 s:\n{log.read_text()}")
            time.sleep(0.1)


def _clear_stale_registry() -> bool:
    """JACK keeps a fixed-size server registry in /dev/shm; servers that died without
    cleaning up (killed after a hang) leave entries that make new servers refuse to start.
    Clear it, only when no jackd at all is running on the machine. Returns True if cleared."""
    if subprocess.run(["pgrep", "-x", "jackd"], capture_output=True).returncode == 0:
        return False
    stale = list(Path("/dev/shm").glob("jack-*")) + list(Path("/dev/shm").glob("jack_*"))
    for f in stale:
        if f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
    return bool(stale)
