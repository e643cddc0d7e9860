"""livestems: real-time music source separation engine and host bridge.

Subpackages (dependency direction dsp <- model <- stream <- bridge):
``livestems.dsp`` numba kernels, ``livestems.model`` separators, ``livestems.stream`` the
real-time engine, I/O and CLI, ``livestems.bridge`` the C ABI and native shims.
"""

__version__ = "0.1.0"
