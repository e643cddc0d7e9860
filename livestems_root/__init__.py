"""livestems: real-time music source separation engine and host bridge.

Subpackages: ``livestems.dsp`` numba kernels; ``livestems.model`` separators (``nets``,
``evaluation``, ``training``); ``livestems.stream`` the real-time engine (``core``), MIDI, I/O,
apps, benchmarks and the CLI; ``livestems.bridge`` the Python half of the C ABI. Which may import
which: tools/layers.py, drawn in docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
