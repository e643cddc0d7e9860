"""Steady-state calls allocate nothing: 10,000 calls under tracemalloc, no growth, no arrays."""

import tracemalloc

import numpy as np
import pytest

from livestems.dsp import kernels as K
from livestems.dsp.resample import ResampleStream
from livestems.dsp.stft import StreamISTFT, StreamSTFT
from livestems.dsp.warmup import warmup
from livestems.dsp.windows import asymmetric_pair, sqrt_hann

CALLS = 10_000


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warmup()  # compilation allocates; it must happen before measuring


def _measure_once(step, calls):
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            step()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return end - start, peak - start


def measure(step, calls=CALLS, runs=3):
    """(growth, peak above start) in bytes over ``calls`` calls of ``step``: the smallest of
    ``runs`` measurements. tracemalloc counts every thread's allocations; a thread left
    running by an earlier test allocates now and then, while an allocation in ``step`` shows
    up in every run."""
    for _ in range(50):
        step()
    results = [_measure_once(step, calls) for _ in range(runs)]
    return min(r[0] for r in results), min(r[1] for r in results)


# tracemalloc sees a few dozen bytes of its own bookkeeping (the integers it returns, the loop's
# frame); a leak of even one small object per call would show >= 160 kB over 10,000 calls.
NO_GROWTH = 512
# A single frame-sized array is 4 kB (float32 1024) to 16 kB (complex64 stereo 1024 bins); a
# peak below 1 kB over 10,000 calls means no call allocated one, only transient Python ints.
NO_ARRAY_PEAK = 1024


@pytest.mark.parametrize("n_fft, hop, block", [(1024, 256, 256), (1024, 256, 100), (4096, 1024, 1024)])
def test_stft_istft_round_trip_allocates_nothing(n_fft, hop, block):
    a, s = asymmetric_pair(n_fft, hop, 2 * hop)
    stft = StreamSTFT(n_fft, hop, 2, a, pad_start=n_fft - hop, max_block=block)
    istft = StreamISTFT(n_fft, hop, 2, a, s, max_frames=stft.max_frames)
    x = np.random.default_rng(0).standard_normal((2, block)).astype(np.float32)

    def step():
        istft.process(stft.process(x))

    growth, peak = measure(step)
    assert growth < NO_GROWTH, f"memory grew by {growth} B over {CALLS} calls"
    assert peak < NO_ARRAY_PEAK, f"peak {peak} B: something allocated an array"


def test_numpy_fft_fallback_does_not_grow():
    """numpy.fft allocates a temporary inside each call (documented): bounded, never growing."""
    w = sqrt_hann(768)
    stft = StreamSTFT(768, 192, 2, w, pad_start=576, max_block=192)
    istft = StreamISTFT(768, 192, 2, w, w, max_frames=1)
    x = np.random.default_rng(1).standard_normal((2, 192)).astype(np.float32)
    growth, peak = measure(lambda: istft.process(stft.process(x)))
    assert growth < NO_GROWTH
    assert peak < 64 * 1024  # a few frame-sized temporaries at most, not a leak


def test_kernels_allocate_nothing():
    rng = np.random.default_rng(2)
    stems = rng.standard_normal((4, 2, 256)).astype(np.float32)
    out = np.zeros((2, 256), np.float32)
    gains, target = np.ones(4), np.array([0.0, 0.5, 1.0, 2.0])
    x = rng.standard_normal((2, 256)).astype(np.float32)
    host = np.zeros(512, np.float32)
    peak_level, ms = np.zeros(2), np.zeros(2)
    coeff = K.smoothing_coeff(10.0, 44100.0)

    def step():
        K.mix_stems(stems, gains, target, coeff, out)
        K.ramp_gain_inplace(out, 1.0, 0.5, coeff)
        K.peak_meter(out, peak_level, 1.0, coeff)
        K.rms_meter(out, ms, coeff, coeff)
        K.sanitize_inplace(out)
        K.interleave(x, host)
        K.deinterleave(host, x)

    growth, peak = measure(step)
    assert growth < NO_GROWTH and peak < NO_ARRAY_PEAK, (growth, peak)


def test_resampler_does_not_grow():
    """soxr returns a new array per call (documented): bounded, never growing."""
    r = ResampleStream(48000, 44100, 2)
    x = np.zeros((2, 480), np.float32)
    growth, _ = measure(lambda: r.process(x), calls=2000)
    assert growth < NO_GROWTH
