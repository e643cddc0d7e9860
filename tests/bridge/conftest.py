"""Fixtures for the C bridge tests: `make -C bridge` targets, the reference separation, jackd.

Everything is built by the tests themselves with the Python running them (so the library
bakes in this venv); make keeps it incremental, so a second run only re-links what changed.
"""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))  # jackserver
from bridgekit import BUILD, make  # noqa: E402
from jackserver import start_jackd  # noqa: E402


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
    from livestems.model.evaluation.demo_song import make_demo_song

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


@pytest.fixture
def jackd_44k(tmp_path):
    server = start_jackd(tmp_path, 44100, prefix="lsbridge")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jackd_48k(tmp_path):
    server = start_jackd(tmp_path, 48000, prefix="lsbridge")
    try:
        yield server
    finally:
        server.stop()
