"""Fixtures for the stream tests that run live (io, apps, midi): a real jackd (dummy driver) per
test, always killed afterwards; tests/stream/jackio.py holds the test-side JACK clients."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # jackio
sys.path.insert(0, str(Path(__file__).parents[1]))  # jackserver
from jackserver import JackServer, start_jackd  # noqa: E402,F401  (re-exported for tests)


@pytest.fixture
def jackd(tmp_path):
    """A jackd at 48 kHz / 256 frames; yields a JackServer; killed at teardown."""
    server = start_jackd(tmp_path, 48000, 256)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jackd_44k(tmp_path):
    """A jackd at the default model's rate (44.1 kHz / 256 frames)."""
    server = start_jackd(tmp_path, 44100, 256)
    try:
        yield server
    finally:
        server.stop()
