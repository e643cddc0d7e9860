"""Numba-jitted DSP kernels: streaming STFT, windows, gain ramps, meters, resampling."""
