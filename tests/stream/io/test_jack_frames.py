"""JACK frame times -> the engine's stream: a repeated frame time inserts nothing, a real
skipped cycle is filled with silence, alignment holds either way (stream/io/backends/jack.py).

The replay tests drive the host's real cycle code (``JackHost._cycle``: frame bookkeeping,
push, pull) with a recorded call sequence, on a client of a real server that is not
activated (so JACK itself never calls it meanwhile), and run the worker's job in between
with ``Engine.run_pending``: the exact same code path, with the frame times under control.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from livestems.stream.io.backends.jack import FrameClock, JackHost, port_layout

sys.path.insert(0, str(Path(__file__).parents[2]))
from separators import SplitDelay  # noqa: E402  (tests/separators.py: real small separators)

P = 256  # the server's period (the jackd fixture: 48 kHz / 256)
T0 = (1 << 32) - 3 * P  # frame times wrap (uint32) a few cycles in


def _replay(jackd, calls, seconds_blocks=40):
    """Run ``calls`` = [(reported frame time, true block index), ...] through ``_cycle``.

    Returns (input x [2, n], output mix [2, n] indexed by true frame (NaN: never played),
    the latency, the host's stats)."""
    sep = SplitDelay(hop=P, latency=100, sample_rate=48000)
    host = JackHost(sep, name="lsframes", servername=jackd.name)
    try:
        assert host.client.blocksize == P
        eng = host.engine
        n = seconds_blocks * P
        rng = np.random.default_rng(7)
        x = rng.uniform(-0.5, 0.5, (2, n)).astype(np.float32)
        got = np.full((2, n), np.nan, np.float32)
        mix_l = port_layout(sep.sources).index("mix_L")
        for reported, block in calls:
            a = block * P
            rows = host._cycle(eng, reported & 0xFFFFFFFF, P, x[0, a:a + P], x[1, a:a + P])
            got[0, a:a + P] = rows[mix_l]
            got[1, a:a + P] = rows[mix_l + 1]
            eng.run_pending()  # the worker's job, between two cycles
        return x, got, eng.latency_samples, host.stats()
    finally:
        host.close()


def _delayed(x, lat):
    want = np.zeros_like(x)
    want[:, lat:] = x[:, :-lat]
    return want


def test_repeated_frame_time_inserts_no_zeros_and_keeps_alignment(jackd):
    """JACK's thread stalls: a late call reports the next cycle's frame time, the next call
    the same time again, then normal steps. Every cycle's audio arrived: nothing to fill."""
    blocks = 40
    calls = [(T0 + b * P, b) for b in range(blocks)]
    calls[10] = (T0 + 11 * P, 10)  # the late call: frame time of cycle 11, audio of cycle 10
    assert calls[11] == (T0 + 11 * P, 11)  # ... and cycle 11 reports the same time again
    x, got, lat, st = _replay(jackd, calls, blocks)
    assert st["frames_filled"] == 0 and st["frame_repeats"] == 1, st
    assert st["frame_slips"] == 0 and st["frame_gaps"] == 1, st
    assert st["deadline_misses"] == 0, st
    want = _delayed(x, lat)
    # every output frame is the model's output for input frame t - latency, exactly (the
    # old code played 256 samples from a period later, then the model run on 256 zeros)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_skipped_cycle_is_filled_once_confirmed_and_alignment_holds(jackd):
    """A real skip: JACK never calls us for cycle 12. Its frames are fed as silence (once
    the next call confirms the jump), so later output stays at the published latency."""
    blocks = 40
    calls = [(T0 + b * P, b) for b in range(blocks) if b != 12]
    x, got, lat, st = _replay(jackd, calls, blocks)
    assert st["frames_filled"] == P and st["frame_repeats"] == 0, st
    assert st["frame_gaps"] == 1 and st["frame_slips"] == 0, st
    want = _delayed(x, lat)
    played = ~np.isnan(got[0])
    assert not played[12 * P:13 * P].any() and played.sum() == (blocks - 1) * P
    f = np.arange(x.shape[1])
    # the block played by the jumping call (cycle 13) is the one glitch left: it is taken as
    # contiguous until the next call confirms the skip, so it plays one period late
    played &= (f < 13 * P) | (f >= 14 * P)
    before = f - lat < 12 * P  # from input before the skip
    after = f - lat >= 14 * P  # from input after the confirmation
    np.testing.assert_allclose(got[:, played & before], want[:, played & before], atol=1e-6)
    np.testing.assert_allclose(got[:, played & after], want[:, played & after], atol=1e-6)
    assert after[played].sum() > 10 * P  # the comparison covered many blocks


@pytest.mark.parametrize("start", [0, T0])
def test_frame_clock_sequences(start):
    """FrameClock alone: fill only what the next call confirms; re-base what it cannot fill."""
    c = FrameClock(max_gap=16 * P)
    t = start
    assert [c.step((t + k * P) & 0xFFFFFFFF, P) for k in range(3)] == [0, 0, 0]
    assert c.first_frame == start
    t += 3 * P
    # a misreport: a jump of one period, then the same time again: nothing filled
    assert c.step((t + P) & 0xFFFFFFFF, P) == 0
    assert c.step((t + P) & 0xFFFFFFFF, P) == 0
    assert (c.repeats, c.filled, c.gaps) == (1, 0, 1)
    t += 2 * P
    # a real skip of two periods: filled on the call after the jump
    assert c.step((t + 2 * P) & 0xFFFFFFFF, P) == 0
    assert c.step((t + 3 * P) & 0xFFFFFFFF, P) == 2 * P
    assert (c.filled, c.gaps) == (2 * P, 2)
    t += 4 * P
    # smaller blocks than the period are contiguous too
    assert c.step(t & 0xFFFFFFFF, 100) == 0 and c.step((t + 100) & 0xFFFFFFFF, 156) == 0
    t += P
    # a step backwards, and a jump too large to fill: counted, re-based, never filled
    assert c.step((t - P) & 0xFFFFFFFF, P) == 0
    assert c.step(t & 0xFFFFFFFF, P) == 0
    assert c.step((t + 100 * P) & 0xFFFFFFFF, P) == 0
    assert c.step((t + 101 * P) & 0xFFFFFFFF, P) == 0
    assert (c.slips, c.filled, c.gaps) == (2, 2 * P, 4)
