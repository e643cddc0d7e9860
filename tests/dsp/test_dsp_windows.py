"""Windows: values, perfect reconstruction of every supported pair, and rejection of bad pairs."""

import numpy as np
import pytest
import torch

from livestems.dsp.windows import (
    asymmetric_pair,
    check_reconstruction,
    hann,
    overlap_envelope,
    sqrt_hann,
    synthesis_support,
)


@pytest.mark.parametrize("n", [4, 256, 1000, 4096])
def test_hann_matches_torch_periodic(n):
    w = hann(n)
    assert w.dtype == np.float32 and w.shape == (n,)
    np.testing.assert_allclose(w, torch.hann_window(n, periodic=True, dtype=torch.float64).numpy(), atol=1e-7)
    np.testing.assert_allclose(sqrt_hann(n).astype(np.float64) ** 2, w, atol=1e-6)


@pytest.mark.parametrize("n_fft", [256, 1024, 4096])
@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_symmetric_pairs_reconstruct(n_fft, ratio):
    hop = n_fft // ratio
    assert check_reconstruction(sqrt_hann(n_fft), sqrt_hann(n_fft), hop) == pytest.approx(n_fft / (2 * hop))
    # Hann analysis with rectangular synthesis (plain OLA)
    assert check_reconstruction(hann(n_fft), np.ones(n_fft), hop) == pytest.approx(n_fft / (2 * hop))


@pytest.mark.parametrize("n_fft", [256, 1024, 4096])
@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_every_asymmetric_pair_reconstructs_with_unit_gain(n_fft, ratio):
    hop = n_fft // ratio
    for m in range(2 * hop, n_fft + 1, hop):
        a, s = asymmetric_pair(n_fft, hop, m)
        assert a.dtype == np.float32 and s.dtype == np.float32
        assert a.shape == s.shape == (n_fft,)
        env = overlap_envelope(a, s, hop)
        np.testing.assert_allclose(env, 1.0, atol=1e-6)
        assert check_reconstruction(a, s, hop) == pytest.approx(1.0, abs=1e-6)
        assert np.all(s[: n_fft - m] == 0.0), "synthesis must vanish outside its last M samples"
        assert synthesis_support(s, hop) == m
        assert np.all(a >= 0) and np.all(np.isfinite(s))
        # analysis window is the long one: nonzero over (0, n_fft)
        assert np.all(a[1:] > 0)


def test_asymmetric_full_support_is_scaled_sqrt_hann():
    a, s = asymmetric_pair(1024, 256, 1024)
    np.testing.assert_allclose(a, sqrt_hann(1024), atol=1e-6)
    np.testing.assert_allclose(s, sqrt_hann(1024) * 0.5, atol=1e-6)


@pytest.mark.parametrize(
    "args, match",
    [
        ((1024, 300, 600), "hop must divide"),
        ((1024, 256, 300), "multiple of hop"),
        ((1024, 256, 256), "2\\*hop <= synthesis_len"),
        ((1024, 256, 2048), "2\\*hop <= synthesis_len"),
        ((1024, 0, 512), ">= 1"),
    ],
)
def test_asymmetric_pair_rejects_bad_geometry(args, match):
    with pytest.raises(ValueError, match=match):
        asymmetric_pair(*args)


def test_check_reconstruction_rejects_and_says_why():
    # Hann^2 at hop n/2 is not constant: deviation of order 1
    with pytest.raises(ValueError, match="max relative deviation"):
        check_reconstruction(hann(1024), hann(1024), 512)
    # asymmetric pair used at a different hop than designed
    a, s = asymmetric_pair(1024, 128, 256)
    with pytest.raises(ValueError, match="not constant"):
        check_reconstruction(a, s, 256)
    with pytest.raises(ValueError, match="envelope is zero"):
        check_reconstruction(np.zeros(64), np.ones(64), 16)
    with pytest.raises(ValueError, match="same length"):
        check_reconstruction(hann(64), hann(32), 16)
    with pytest.raises(ValueError, match="hop must divide"):
        check_reconstruction(hann(64), hann(64), 24)
    with pytest.raises(ValueError, match="NaN"):
        check_reconstruction(np.full(64, np.nan), hann(64), 16)


def test_synthesis_support_rounds_to_hops():
    assert synthesis_support(hann(1024), 256) == 1024  # first tap is 0: still a full frame
    s = np.zeros(1024)
    s[-300:] = 1.0
    assert synthesis_support(s, 256) == 512
