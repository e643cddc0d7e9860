"""The numba real FFT against numpy.fft for every power-of-two size the STFT may use."""

import numpy as np
import pytest

from livestems.dsp.fft import RfftPlan, irfft_into, is_power_of_two, rfft_into


@pytest.mark.parametrize("n", [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])
def test_rfft_and_irfft_match_numpy(n):
    rng = np.random.default_rng(n)
    plan = RfftPlan(n)
    x = rng.standard_normal(n).astype(np.float32)
    spec = np.zeros(n // 2 + 1, np.complex64)
    rfft_into(x, spec, plan.bitrev, plan.twiddle, plan.split, plan.scratch)
    ref = np.fft.rfft(x.astype(np.float64))
    assert np.abs(spec - ref).max() <= 1e-6 * np.abs(ref).max()
    # inverse of an arbitrary spectrum, including non-real DC/Nyquist (irfft ignores their imag)
    z = (rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)).astype(np.complex64)
    y = np.zeros(n, np.float32)
    irfft_into(z, y, plan.bitrev, plan.twiddle, plan.split, plan.scratch)
    ref_y = np.fft.irfft(z.astype(np.complex128), n)
    assert np.abs(y - ref_y).max() <= 1e-6 * np.abs(ref_y).max()
    # float64 output buffers work too (the ISTFT uses one)
    y64 = np.zeros(n, np.float64)
    irfft_into(spec, y64, plan.bitrev, plan.twiddle, plan.split, plan.scratch)
    np.testing.assert_allclose(y64, x, atol=1e-5)


def test_plan_rejects_other_sizes():
    assert is_power_of_two(4) and is_power_of_two(4096)
    assert not is_power_of_two(2) and not is_power_of_two(768) and not is_power_of_two(0)
    for n in (2, 6, 768, 1000):
        with pytest.raises(ValueError, match="power-of-two"):
            RfftPlan(n)
