"""Numba-jitted DSP kernels: streaming STFT, windows, gain ramps, meters, resampling.

Modules (docs/DSP.md has the details, latencies and benchmark numbers):

- ``windows``: ``hann``, ``sqrt_hann``, ``asymmetric_pair`` (low-latency Mauler & Martin pair),
  ``check_reconstruction``, ``synthesis_support``.
- ``stft``: ``StreamSTFT`` (float32 blocks [C, n] in, complex64 frames [C, k, n_fft//2+1] out)
  and ``StreamISTFT`` (frames in, ``hop`` float32 samples per frame out, ``latency_samples``).
- ``fft``: allocation-free radix-2 real FFT in numba used inside the STFT kernels.
- ``kernels``: ``sanitize_inplace``, ``db_to_gain``, ``gain_to_db``, ``smoothing_coeff``,
  ``ramp_gain_inplace``, ``mix_stems``, ``peak_meter``, ``rms_meter``, ``interleave``,
  ``deinterleave``.
- ``resample``: ``ResampleStream`` over soxr, with a declared latency and steady output counts.
- ``pitch``: the granular pitch shifter (numba) and ``KeyShiftedSeparator``, the separator
  wrapper that runs it on the engine's worker (the live key shift).
- ``warmup``: ``warmup()`` compiles every kernel before the audio path runs.

Their benchmark (``livestems bench dsp``) lives with the others in ``livestems.stream.bench``.
This package imports nothing else from livestems: every other layer may import it.
"""
