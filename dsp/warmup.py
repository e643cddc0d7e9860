"""Compile every DSP kernel at start-up so no JIT compilation ever happens in the audio path.

numba compiles a kernel the first time it sees a new combination of argument types (dtype,
number of dimensions and memory layout: a C-contiguous block and a strided slice such as
``buf[:, :n]`` are different types). :func:`warmup` calls every kernel with each combination
the engine uses: float32 audio and complex64 spectra, C-contiguous and strided, float64 gains
and meter states, Python float and int scalars. With ``cache=True`` the machine code is stored
next to the sources (``__pycache__/*.nbi``/``*.nbc``), so after the first run warm-up only
loads it (well under a second).

Call it from the main thread while configuring, before the audio callback or worker starts.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from . import fft, kernels, stft
from .stft import StreamISTFT, StreamSTFT
from .windows import hann, sqrt_hann

__all__ = ["warmup", "dispatchers"]


def dispatchers() -> dict:
    """Every numba dispatcher in livestems.dsp, by qualified name."""
    found = {}
    for module in (kernels, stft, fft):
        for name in dir(module):
            obj = getattr(module, name)
            if hasattr(obj, "signatures") and hasattr(obj, "py_func") and obj.__module__ == module.__name__:
                found[f"{module.__name__.rsplit('.', 1)[-1]}.{name}"] = obj
    return found


def _audio(shape, strided: bool) -> np.ndarray:
    """float32 array of ``shape``; when strided, a non-contiguous view of the same shape."""
    if not strided:
        return np.zeros(shape, dtype=np.float32)
    wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype=np.float32)
    return wide[..., ::2]


def _warm_kernels() -> None:
    # Every contiguous/strided combination of the audio-array arguments (state and gain arrays
    # are always small contiguous float64 vectors).
    layouts = (False, True)
    for strided in layouts:
        for shape in ((8,), (2, 8), (2, 2, 8)):
            kernels.sanitize_inplace(_audio(shape, strided))
        x = _audio((2, 8), strided)
        kernels.peak_meter(x, np.zeros(2), 1.0, 0.01)
        kernels.rms_meter(x, np.zeros(2), 0.1, 0.01)
        for gain in (1.0, 1):
            kernels.ramp_gain_inplace(x, gain, gain, 0.1)
    for stems_strided, out_strided in itertools.product(layouts, layouts):
        for coeff in (0.5, 1):
            kernels.mix_stems(
                _audio((4, 2, 8), stems_strided), np.ones(4), np.ones(4), coeff, _audio((2, 8), out_strided)
            )
    for planar_strided, host_strided in itertools.product(layouts, layouts):
        kernels.interleave(_audio((2, 8), planar_strided), _audio((16,), host_strided))
        kernels.deinterleave(_audio((16,), host_strided), _audio((2, 8), planar_strided))
    for scalar in (-6.0, -6, np.float32(-6.0)):
        kernels.db_to_gain(scalar)
        kernels.gain_to_db(scalar)
        for rate in (48000, 48000.0):
            kernels.smoothing_coeff(scalar, rate)


def _warm_stft() -> None:
    # 256 uses the numba FFT, 384 the numpy fallback; both kernel families get compiled.
    for n_fft in (256, 384):
        hop = n_fft // 4
        w = sqrt_hann(n_fft)
        for strided in (False, True):
            a = StreamSTFT(n_fft, hop, 2, w, pad_start=n_fft - hop, max_block=4 * n_fft)
            s = StreamISTFT(n_fft, hop, 2, w, w, max_frames=a.max_frames)
            x = _audio((2, 2 * n_fft), strided)
            frames = a.process(x)  # a partial view of the frame buffer: strided layout
            s.process(frames)
            if strided:
                wide = np.zeros((2, 2 * frames.shape[1], frames.shape[2]), np.complex64)
                s.process(wide[:, ::2])
            else:
                # the model's own contiguous output, or a full frame buffer
                s.process(np.zeros((2, 2, n_fft // 2 + 1), np.complex64))
    StreamSTFT(256, 64, 1, hann(256)).process(np.zeros((1, 256), np.float32))
    plan = fft.RfftPlan(16)
    spec = np.zeros(9, np.complex64)
    for dtype in (np.float32, np.float64):
        frame = np.zeros(16, dtype)
        fft.rfft_into(frame, spec, plan.bitrev, plan.twiddle, plan.split, plan.scratch)
        fft.irfft_into(spec, frame, plan.bitrev, plan.twiddle, plan.split, plan.scratch)


def warmup(verbose: bool = False) -> dict:
    """Compile (or load from the on-disk cache) every kernel for the types in use.

    Args:
        verbose: print how long it took.

    Returns:
        dict mapping each kernel's name to the number of type signatures now compiled.
    """
    t0 = time.perf_counter()
    _warm_kernels()
    _warm_stft()
    compiled = {name: len(d.signatures) for name, d in dispatchers().items()}
    if verbose:
        print(f"livestems.dsp warm-up: {len(compiled)} kernels in {time.perf_counter() - t0:.2f} s")
    return compiled
