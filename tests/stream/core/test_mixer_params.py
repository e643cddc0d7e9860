"""Typed parameters and the mixer that reads them: linear ramps of a known length, dry/wet,
mute/solo rules, clamping."""

import numpy as np
import pytest

from livestems.stream.core.mixer import StemMixer
from livestems.stream.core.params import ParamError, ParamSet, stem_params


def _run(mixer, n, block=64):
    """Mix unit stems (stem s is constant s + 1, so the output tells each gain apart)."""
    s = len(mixer.sources)
    stems = np.ones((s, 1, block), np.float32) * np.arange(1, s + 1, dtype=np.float32)[:, None,
                                                                                        None]
    out = np.zeros((1, block), np.float32)
    ys = []
    for _ in range(n // block):
        mixer.mix(stems, out)
        ys.append(out[0].copy())
    return np.concatenate(ys)


def test_a_change_ramps_linearly_and_lands_after_exactly_the_ramp_time():
    m = StemMixer(("vocals", "accompaniment"), 44100, smoothing_ms=10.0)
    assert m.ramp_samples == 441
    m.snap()
    m.params.set("vocals.gain", -6.0206)  # 1.0 -> 0.5
    y = _run(m, 1024)  # output = g_vocals * 1 + g_acc * 2
    g = y - 2.0
    want = 1.0 - 0.5 * np.minimum(np.arange(1, 1025), 441) / 441
    np.testing.assert_allclose(g, want, atol=1e-6)
    assert np.abs(np.diff(g)).max() <= 0.5 / 441 + 1e-6  # no step
    # a new target mid-ramp starts a new ramp from where the gain is: still continuous
    m.params.set("vocals.gain", 0.0)
    y1 = _run(m, 128)
    m.params.set("vocals.gain", -120.0)
    y2 = _run(m, 1024)
    g = np.concatenate([y1, y2]) - 2.0
    assert np.abs(np.diff(g)).max() < 1.0 / 441 + 1e-6
    assert g[-1] == 0.0


def test_mute_solo_and_dry_wet():
    m = StemMixer(("vocals", "drums", "bass"), 48000, smoothing_ms=0.0)
    p = m.params
    p.set("drums.solo", True)
    np.testing.assert_allclose(m.target_gains(), [0, 1, 0])
    p.set("drums.mute", True)  # mute silences even a soloed stem
    np.testing.assert_allclose(m.target_gains(), [0, 0, 0])
    p.set("separation.wet", 25.0)  # 75% of every stem at unity comes back
    np.testing.assert_allclose(m.target_gains(), [0.75, 0.75, 0.75])
    p.set("separation.wet", 0.0)
    p.set("bass.gain", -120)
    np.testing.assert_allclose(m.target_gains(), [1, 1, 1])
    p.set("separation.wet", 100.0)
    p.set("drums.mute", False)
    p.set("drums.solo", False)
    p.set("vocals.gain", 6.0)
    np.testing.assert_allclose(m.target_gains(), [10 ** (6 / 20), 1, 0])
    m.snap()
    assert _run(m, 64)[-1] == pytest.approx(10 ** (6 / 20) * 1 + 2)


def test_parameter_values_are_clamped_quantised_and_checked():
    p = ParamSet(stem_params(("vocals", "accompaniment")))
    assert p.set("vocals.gain", 50) == 12.0
    assert p.set("key.shift", 3.4) == 3.0 and p.set("key.shift", -40) == -12.0
    assert p.set("vocals.mute", 0.7) == 1.0
    assert p.set("separation.wet", -5) == 0.0
    with pytest.raises(ParamError, match="expected a number, got NaN"):
        p.set("vocals.gain", float("nan"))
    with pytest.raises(ParamError, match="unknown parameter 'drums.gain'"):
        p.set("drums.gain", 0)
    seen = []
    p.watch("guide.level", seen.append)
    p.set("guide.level", -12)
    p.set("guide.level", -12)  # no change, no call
    assert seen == [-12.0]
    # the mixer reads the very array the control side writes (no copy, no lock)
    m = StemMixer(("vocals", "accompaniment"), 44100, params=p)
    assert m.params.values is p.values
