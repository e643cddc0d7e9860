"""Test signals shared by the suite (import from tests, not from conftest: several
conftest.py files exist and the name `conftest` is ambiguous)."""

import numpy as np


def music_like(seconds=2.0, sample_rate=44100, seed=0):
    """A stereo test signal with a centred harmonic 'voice' and side-panned noise and tones."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 220 * 2 ** (np.floor(t * 3) % 5 / 12)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2
    left = 0.1 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 97 * t)
    right = 0.1 * rng.standard_normal(t.size) + 0.15 * np.sin(2 * np.pi * 151 * t)
    return np.stack([voice + left, voice + right]).astype(np.float32)
