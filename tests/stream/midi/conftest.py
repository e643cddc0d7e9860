"""Fixtures for the MIDI tests: the live tests' jackd (one per test) and a virtual controller."""

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parent))  # jackio

sys.path.insert(0, str(_HERE.parents[1]))  # jackserver
from jackserver import start_jackd  # noqa: E402


@pytest.fixture
def jackd_44k(tmp_path, monkeypatch):
    """jackd at the default model's rate (44.1 kHz / 256), and $JACK_DEFAULT_SERVER pointing
    at it for python-rtmidi's JACK clients in this process."""
    server = start_jackd(tmp_path, 44100, 256)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jackd(tmp_path, monkeypatch):
    """jackd at 48 kHz / 256 (the engine resamples to the model's 44.1 kHz)."""
    server = start_jackd(tmp_path, 48000, 256)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    try:
        yield server
    finally:
        server.stop()
