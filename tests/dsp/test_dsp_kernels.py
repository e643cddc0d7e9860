"""Per-sample kernels: sanitising, dB, smoothing, gain ramps and stem mixing (jump bound), meters,
interleave."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livestems.dsp import kernels as K


def test_sanitize_counts_and_replaces_any_shape():
    x = np.array([[1.0, np.nan, np.inf], [-np.inf, 2.0, 3.0]], np.float32)
    assert K.sanitize_inplace(x) == 3
    np.testing.assert_array_equal(x, [[1, 0, 0], [0, 2, 3]])
    assert K.sanitize_inplace(x) == 0
    cube = np.full((3, 4, 5), np.nan, np.float32)
    view = cube[:, ::2, 1:]  # strided view: only its 3*2*4 elements are touched
    assert K.sanitize_inplace(view) == 24
    assert np.all(view == 0) and np.isnan(cube[:, 1, :]).all() and np.isnan(cube[:, :, 0]).all()
    flat = np.array([np.nan, 1.5], np.float32)
    assert K.sanitize_inplace(flat) == 1 and flat[0] == 0 and flat[1] == 1.5
    assert K.sanitize_inplace(np.zeros((2, 0), np.float32)) == 0


def test_db_to_gain_and_back():
    assert K.db_to_gain(0.0) == 1.0
    assert K.db_to_gain(-6.0) == pytest.approx(10 ** (-6 / 20))
    assert K.db_to_gain(6.0) == pytest.approx(1.9952623)
    assert K.db_to_gain(-120.0) == 0.0
    assert K.db_to_gain(-np.inf) == 0.0
    assert K.db_to_gain(-119.9) > 0.0
    for db in (-60.0, -6.0, 0.0, 12.0):
        assert K.gain_to_db(K.db_to_gain(db)) == pytest.approx(db)
    assert K.gain_to_db(0.0) == K.MIN_DB


def test_smoothing_coeff_reaches_63_percent_in_time_ms():
    sr, ms = 48000, 10.0
    c = K.smoothing_coeff(ms, sr)
    assert c == pytest.approx(1 - math.exp(-1 / (ms * 1e-3 * sr)))
    x = np.ones((1, 480), np.float32)
    g = K.ramp_gain_inplace(x, 0.0, 1.0, c)
    assert g == pytest.approx(1 - math.exp(-1.0), rel=1e-3)  # after time_ms: ~63%
    assert K.smoothing_coeff(0.0, sr) == 1.0 and K.smoothing_coeff(-5.0, sr) == 1.0


def test_ramp_gain_is_one_pole_and_bounded():
    coeff = K.smoothing_coeff(5.0, 44100)
    x = np.ones((2, 1000), np.float32)
    g_end = K.ramp_gain_inplace(x, 0.25, 1.0, coeff)
    expected = 1.0 - 0.75 * (1 - coeff) ** np.arange(1, 1001)
    np.testing.assert_allclose(x[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(x[0], x[1])
    assert g_end == pytest.approx(expected[-1])
    assert np.abs(np.diff(np.concatenate([[0.25], x[0]]))).max() <= coeff * 0.75 * (1 + 1e-6)
    y = np.full((1, 4), 2.0, np.float32)
    assert K.ramp_gain_inplace(y, 0.0, 0.5, 1.0) == 0.5 and np.all(y == 1.0)  # coeff 1: no smoothing


def mix_reference(stems, g0, target, coeff):
    s, c, n = stems.shape
    out = np.zeros((c, n))
    g = g0.copy()
    for t in range(n):
        g = g + coeff * (target - g)
        out[:, t] = np.einsum("s,sc->c", g, stems[:, :, t].astype(np.float64))
    return out, g


@settings(max_examples=25, deadline=None)
@given(
    n_stems=st.integers(1, 5),
    channels=st.integers(1, 2),
    n=st.integers(0, 600),
    time_ms=st.floats(0.0, 50.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_mix_stems_matches_reference(n_stems, channels, n, time_ms, seed):
    rng = np.random.default_rng(seed)
    stems = rng.uniform(-1, 1, (n_stems, channels, n)).astype(np.float32)
    g0 = rng.uniform(0, 2, n_stems)
    target = rng.uniform(0, 2, n_stems)
    coeff = K.smoothing_coeff(time_ms, 44100)
    out = np.full((channels, n), 99.0, np.float32)
    gains = g0.copy()
    K.mix_stems(stems, gains, target, coeff, out)
    ref, g_ref = mix_reference(stems, g0, target, coeff)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(gains, g_ref if n else g0, rtol=1e-12)


@pytest.mark.parametrize("time_ms", [2.0, 10.0, 50.0])
def test_mix_step_has_no_jump_above_bound(time_ms):
    """A target step D on a DC stem of amplitude A moves the output by <= coeff*|D|*A per sample."""
    sr = 44100
    coeff = K.smoothing_coeff(time_ms, sr)
    # signs chosen so all four steps push the bus the same way: the triangle bound is then tight
    amp = np.array([-1.0, 0.5, 0.8, 0.3])
    stems = np.broadcast_to(amp[:, None, None], (4, 2, 4096)).astype(np.float32)
    gains = np.array([1.0, 1.0, 0.0, 0.5])
    out = np.zeros((2, 4096), np.float32)
    K.mix_stems(stems, gains, gains.copy(), coeff, out)  # settled: target == current
    before = out[:, -1].copy()
    target = np.array([0.0, 1.0, 1.0, K.db_to_gain(6.0)])  # cut, hold, full-on, boost
    K.mix_stems(stems, gains, target, coeff, out)
    trace = np.concatenate([before[:, None], out], axis=1).astype(np.float64)
    jumps = np.abs(np.diff(trace, axis=1))
    bound = coeff * np.sum(np.abs(target - [1.0, 1.0, 0.0, 0.5]) * np.abs(amp))
    assert jumps.max() <= bound * (1 + 1e-5) + 1e-7
    assert jumps.max() >= 0.99 * bound  # reached on the first sample after the step
    # and a hard switch (coeff 1) really is a discontinuity of the full step size
    hard = np.zeros((2, 4), np.float32)
    K.mix_stems(stems[:, :, :4], np.array([1.0, 1.0, 0.0, 0.5]), target, 1.0, hard)
    assert abs(hard[0, 0] - before[0]) == pytest.approx(
        np.sum((target - [1.0, 1.0, 0.0, 0.5]) * amp), rel=1e-5
    )


def test_mix_rejects_mismatched_shapes():
    stems = np.zeros((2, 2, 8), np.float32)
    with pytest.raises(ValueError, match="out must have shape"):
        K.mix_stems(stems, np.ones(2), np.ones(2), 0.5, np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="shape \\[S\\]"):
        K.mix_stems(stems, np.ones(3), np.ones(2), 0.5, np.zeros((2, 8), np.float32))


def test_peak_meter_ballistics():
    sr = 48000
    att, rel = 1.0, K.smoothing_coeff(300.0, sr)
    level = np.zeros(2)
    t = np.arange(sr // 10) / sr
    x = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), 0.1 * np.sin(2 * np.pi * 50 * t)]).astype(np.float32)
    K.peak_meter(x, level, att, rel)
    # instant attack: holds close to the peak amplitude (release sags a little between peaks)
    assert 0.49 < level[0] <= 0.5 + 1e-6
    assert 0.09 < level[1] <= 0.1 + 1e-6
    # release: after 300 ms of silence the level has fallen to 1/e of where it was
    start = level.copy()
    K.peak_meter(np.zeros((2, int(0.3 * sr)), np.float32), level, att, rel)
    np.testing.assert_allclose(level, start * math.exp(-1), rtol=1e-3)
    # slow attack: a step reaches ~63% after the attack time
    level = np.zeros(1)
    K.peak_meter(np.ones((1, 480), np.float32), level, K.smoothing_coeff(10.0, sr), rel)
    assert level[0] == pytest.approx(1 - math.exp(-1), rel=1e-3)


def test_rms_meter_reads_sine_rms():
    sr = 44100
    c = K.smoothing_coeff(50.0, sr)
    ms = np.zeros(1)
    t = np.arange(sr) / sr
    x = (0.8 * np.sin(2 * np.pi * 441 * t))[None].astype(np.float32)
    K.rms_meter(x, ms, c, c)
    assert math.sqrt(ms[0]) == pytest.approx(0.8 / math.sqrt(2), rel=0.02)
    assert K.gain_to_db(math.sqrt(ms[0])) == pytest.approx(20 * math.log10(0.8 / math.sqrt(2)), abs=0.2)
    # faster release than attack: falls faster than it rose
    ms_up = np.zeros(1)
    K.rms_meter(np.ones((1, 441), np.float32), ms_up, K.smoothing_coeff(100.0, sr), K.smoothing_coeff(1.0, sr))
    rose = ms_up[0]
    K.rms_meter(np.zeros((1, 441), np.float32), ms_up, K.smoothing_coeff(100.0, sr), K.smoothing_coeff(1.0, sr))
    assert ms_up[0] < 1e-3 * rose


@settings(max_examples=20, deadline=None)
@given(channels=st.integers(1, 8), n=st.integers(0, 300), seed=st.integers(0, 2**31 - 1))
def test_interleave_roundtrip_matches_numpy(channels, n, seed):
    rng = np.random.default_rng(seed)
    planar = rng.standard_normal((channels, n)).astype(np.float32)
    host = np.empty(n * channels, np.float32)
    K.interleave(planar, host)
    np.testing.assert_array_equal(host, planar.T.reshape(-1))
    back = np.empty((channels, n), np.float32)
    K.deinterleave(host, back)
    np.testing.assert_array_equal(back, planar)


def test_interleave_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="n \\* C"):
        K.interleave(np.zeros((2, 4), np.float32), np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="n \\* C"):
        K.deinterleave(np.zeros(9, np.float32), np.zeros((2, 4), np.float32))
