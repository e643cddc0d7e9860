"""Allocation-free real FFT of power-of-two length, in numba, for the streaming STFT.

Why our own FFT: hop by hop, the STFT transforms one frame per channel, and there the cost of
calling a library FFT is largely call overhead plus the arrays it allocates. Measured on the
2-core dev machine, forward transform of a stereo frame:

    n_fft   numpy.fft.rfft(out=)   scipy.fft.rfft   torch.fft.rfft(out=)   this module (2 calls)
    1024    14.8 us                12.6 us          11.0 us                11.4 us
    4096    37.6 us                37.7 us          33.9 us                48 us

numpy's ``out=`` path still allocates a frame-sized temporary inside every call (tracemalloc
peak ~130 kB for a stereo 4096 rfft + irfft); scipy and torch allocate their outputs. This
transform is called from inside the framing and overlap-add kernels, so one jitted call does ring, window
and FFT with no allocation at all; it is slower than pocketfft at 4096 and we accept that (see
docs/DSP.md). rocket-fft (pocketfft for numba) is not available here.

Algorithm: a length-N real FFT is computed as a length-N/2 complex FFT of the even/odd samples
packed as real/imaginary parts (scattered straight into bit-reversed order, which saves the
permutation pass), followed by the split step, which computes bins k and N/2-k together. The
complex FFT is iterative radix-2 decimation in time with stages fused in pairs (radix 2^2) and
per-stage contiguous twiddle tables. The arithmetic is complex128 on a per-plan scratch buffer
(float32 in, complex64 out): within ~1e-7 relative of a float64 reference, and no slower than
complex64 here (the loops are scalar either way).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["is_power_of_two", "RfftPlan", "rfft_into", "irfft_into"]


def is_power_of_two(n: int) -> bool:
    """True when ``n`` is a power of two >= 4 (the sizes this module transforms)."""
    return n >= 4 and (n & (n - 1)) == 0


class RfftPlan:
    """Tables and scratch for a real FFT of length ``n`` (power of two >= 4).

    Attributes (all preallocated; pass them to :func:`rfft_into` / :func:`irfft_into`):
        n: transform length in samples.
        bitrev: int64 [n/2], bit-reversal permutation of the half-length complex FFT.
        twiddle: complex128 [n/2 - 1], per-stage twiddles: the stage whose butterflies span
            ``half`` holds ``exp(-2 pi i j / (2 half))``, j < half, at offset ``half - 1``.
        split: complex128 [n/2 + 1], ``exp(-2 pi i k / n)`` for the real/complex split step.
        scratch: complex128 [n/2], work buffer (one plan per thread: not shareable).
    """

    def __init__(self, n: int):
        if not is_power_of_two(n):
            raise ValueError(f"RfftPlan needs a power-of-two length >= 4, got {n}")
        self.n = int(n)
        h = n // 2
        bits = h.bit_length() - 1
        idx = np.arange(h)
        rev = np.zeros(h, dtype=np.int64)
        for b in range(bits):
            rev |= ((idx >> b) & 1) << (bits - 1 - b)
        self.bitrev = rev
        # Stage tables laid out contiguously so each stage reads its twiddles with stride 1.
        stages = []
        half = 1
        while half < h:
            stages.append(np.exp(-2j * np.pi * np.arange(half) / (2 * half)))
            half *= 2
        self.twiddle = np.concatenate(stages).astype(np.complex128)
        self.split = np.exp(-2j * np.pi * np.arange(h + 1) / n).astype(np.complex128)
        self.scratch = np.zeros(h, dtype=np.complex128)


@numba.njit(cache=True, nogil=True)
def _radix2_stage(buf, twiddle, half):
    # One radix-2 DIT stage: butterflies (a, b) half apart within groups of 2*half.
    h = buf.shape[0]
    w = twiddle[half - 1 : 2 * half - 1]
    for start in range(0, h, 2 * half):
        a = buf[start : start + half]
        b = buf[start + half : start + 2 * half]
        for j in range(half):
            x = b[j] * w[j]
            y = a[j]
            a[j] = y + x
            b[j] = y - x


@numba.njit(cache=True, nogil=True)
def _radix4_stage(buf, twiddle, q):
    # Two radix-2 DIT stages (half = q, then half = 2q) fused into one pass: half the memory
    # traffic of doing them one after the other, which is what bounds a scalar FFT here.
    h = buf.shape[0]
    w1 = twiddle[q - 1 : 2 * q - 1]
    w2 = twiddle[2 * q - 1 : 4 * q - 1]
    for start in range(0, h, 4 * q):
        z0 = buf[start : start + q]
        z1 = buf[start + q : start + 2 * q]
        z2 = buf[start + 2 * q : start + 3 * q]
        z3 = buf[start + 3 * q : start + 4 * q]
        for j in range(q):
            w = w1[j]
            a0 = z0[j]
            a1 = z1[j] * w
            a2 = z2[j]
            a3 = z3[j] * w
            b0 = a0 + a1
            b1 = a0 - a1
            b2 = w2[j] * (a2 + a3)
            b3 = w2[j + q] * (a2 - a3)
            z0[j] = b0 + b2
            z2[j] = b0 - b2
            z1[j] = b1 + b3
            z3[j] = b1 - b3


@numba.njit(cache=True, nogil=True)
def _cfft_bitreversed(buf, twiddle):
    # Forward complex FFT of buf[h] in place (unnormalised), input already in bit-reversed
    # order (callers scatter into that order while packing, which saves a permutation pass):
    # log2(h) radix-2 DIT stages, fused in pairs. The inverse is conj(fft(conj(x))).
    h = buf.shape[0]
    stages = 0
    m = h
    while m > 1:
        stages += 1
        m //= 2
    half = 1
    if stages % 2 == 1:
        _radix2_stage(buf, twiddle, 1)
        half = 2
    while half < h:
        _radix4_stage(buf, twiddle, half)
        half *= 4


@numba.njit(cache=True, nogil=True)
def rfft_into(frame, out, bitrev, twiddle, split, scratch):
    """Real FFT of ``frame`` (float32/float64 [n]) into ``out`` (complex64 [n/2+1]).

    Same convention as ``numpy.fft.rfft`` (no normalisation, ``exp(-2 pi i k m / n)``).
    Allocates nothing; ``scratch`` (complex128 [n/2]) is overwritten.
    """
    h = scratch.shape[0]
    for m in range(h):
        scratch[bitrev[m]] = complex(frame[2 * m], frame[2 * m + 1])
    _cfft_bitreversed(scratch, twiddle)
    z0 = scratch[0]
    out[0] = z0.real + z0.imag
    out[h] = z0.real - z0.imag
    # Bins k and h-k come from the same pair Z[k], Z[h-k]: X[k] = E + s O, X[h-k] = conj(E - s O)
    # with E, O the spectra of the even and odd samples and s = exp(-2 pi i k / n).
    for k in range(1, h // 2 + 1):
        zk = scratch[k]
        zc = scratch[h - k].conjugate()
        even = 0.5 * (zk + zc)
        odd = -0.5j * (zk - zc)
        so = split[k] * odd
        out[k] = even + so
        out[h - k] = (even - so).conjugate()


@numba.njit(cache=True, nogil=True)
def irfft_into(spec, out, bitrev, twiddle, split, scratch):
    """Inverse real FFT of ``spec`` (complex64 [n/2+1]) into ``out`` (float32/float64 [n]).

    Same convention as ``numpy.fft.irfft(spec, n)``, including the 1/n scale and ignoring the
    imaginary parts of the DC and Nyquist bins. Allocates nothing; ``scratch`` is overwritten.
    """
    h = scratch.shape[0]
    n = 2 * h
    # DC and Nyquist are real for a real signal; their imaginary parts are dropped as irfft does.
    x0 = spec[0].real
    xh = spec[h].real
    # Z[0] = E + iO with E = X0 + Xh, O = X0 - Xh; stored conjugated so the forward transform
    # computes the inverse: ifft(Z) = conj(fft(conj(Z))) / h.
    scratch[0] = complex(x0 + xh, -(x0 - xh))
    for k in range(1, h // 2 + 1):
        xk = complex(spec[k].real, spec[k].imag)
        xc = complex(spec[h - k].real, -spec[h - k].imag)
        even = xk + xc
        odd = (xk - xc) * split[k].conjugate()
        # Z[k] = E + iO and Z[h-k] = conj(E) + i conj(O); both stored conjugated, bit-reversed.
        scratch[bitrev[k]] = (even + 1j * odd).conjugate()
        scratch[bitrev[h - k]] = even - 1j * odd
    _cfft_bitreversed(scratch, twiddle)
    scale = 1.0 / n
    for m in range(h):
        z = scratch[m]
        out[2 * m] = z.real * scale
        out[2 * m + 1] = -z.imag * scale
