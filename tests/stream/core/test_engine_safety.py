"""safety_ms="auto": the margin chosen at start-up from the measured per-hop compute time."""

import math
import subprocess
import sys

import numpy as np
import pytest
from separators import Sleepy, SplitDelay
from signals import music_like

from livestems.stream.io.backends.file import play_through
from livestems.stream.core.engine import (AUTO_MIN_BUDGET_MS, SAFETY_MS_MAX, Engine,
                                          auto_safety_ms, safety_line)


def test_the_rule():
    """max(0, max(4 p99, 3 x the second slowest, the floor) - block), whole ms up, capped."""
    # a quiet machine: the floor, which covers the worker's wake-up, not only its compute
    assert auto_safety_ms(1.0, 1.5, 5.8) == math.ceil(AUTO_MIN_BUDGET_MS - 5.8) > 0
    assert auto_safety_ms(1.0, 1.5, 2.7) == math.ceil(AUTO_MIN_BUDGET_MS - 2.7)
    assert auto_safety_ms(1.0, 1.5, AUTO_MIN_BUDGET_MS + 1) == 0.0  # a long block covers it
    assert auto_safety_ms(5.0, 6.0, 5.8) == 15.0  # 20 - 5.8 = 14.2 -> 15
    assert auto_safety_ms(2.0, 9.0, 5.8) == 22.0  # one slow hop: 27 - 5.8 = 21.2 -> 22
    assert auto_safety_ms(1000.0, 1000.0, 5.8) == SAFETY_MS_MAX


def test_auto_measures_the_separator_and_publishes_what_it_chose():
    """A separator that sleeps 4 ms every other hop: the warm-up sees it (p99 >= 4 ms), the
    margin follows the rule, and the latency is exactly the fixed figure plus that margin."""
    sep = Sleepy(every=2, stall_s=0.004, hop=256, latency=0)
    eng = Engine(sep, block_size=256, safety_ms="auto")
    w = eng.warmup_hop_ms
    assert eng.safety_auto and 32 <= w["hops"] <= 512
    assert w["p99"] >= 4.0 and w["max"] >= w["max2"] >= w["p99"] >= w["p50"]
    want = auto_safety_ms(w["p99"], w["max2"], 1e3 * 256 / 44100)
    assert eng.safety_ms == want >= 11.0  # 4 * 4 ms - 5.8 ms
    assert eng.safety_samples == round(want * 1e-3 * 44100)
    fixed = Engine(SplitDelay(hop=256, latency=0), block_size=256, safety_ms=want)
    assert eng.latency_samples == fixed.latency_samples
    assert f"safety margin: {want:g} ms, chosen at start-up" in safety_line(eng)
    assert "(--safety-ms)" in safety_line(fixed)
    # the timing hops left nothing behind: counters at zero, output is the model's, exactly
    assert eng.stats().hops_processed == 0
    x = music_like(1.0)
    _, stems = play_through(eng, x)
    want_stems = SplitDelay(hop=256, latency=0).forward(x[None])[0]
    np.testing.assert_allclose(stems, want_stems, atol=1e-4)


def test_auto_at_another_io_rate_and_a_failing_separator():
    eng = Engine(SplitDelay(hop=256, latency=0), block_size=256, io_rate=48000,
                 safety_ms="auto")
    assert eng.safety_samples == round(eng.safety_ms * 48)

    class Failing(SplitDelay):
        def step(self, x):
            raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="warm-up hops .*RuntimeError: no"):
        Engine(Failing(hop=256, latency=0), safety_ms="auto")
    with pytest.raises(ValueError, match="or 'auto'"):
        Engine(SplitDelay(hop=64, latency=0), safety_ms="fast")


def test_cli_takes_auto_or_milliseconds():
    def demo(*args):
        return subprocess.run([sys.executable, "-m", "livestems.stream", "demo", *args],
                              capture_output=True, text=True)

    bad = demo("--safety-ms", "soon")
    assert bad.returncode == 2 and "expected 'auto' or a number of milliseconds" in bad.stderr
    bad = demo("--safety-ms", "-1")
    assert bad.returncode == 2 and "--safety-ms must be 0..500 ms, got -1" in bad.stderr
