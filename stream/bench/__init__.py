"""Measurements, and the reports in docs/ they regenerate: the one home of benchmarking.

- ``measure``: per-hop cost, real-time factor, latency (declared and measured), offline
  throughput, beside peer separators (`livestems bench`, `livestems latency`).
- ``report``: docs/BENCHMARKS.md and its plots (`livestems bench report`).
- ``dsp_kernels``: the DSP kernels' per-hop cost (`livestems bench dsp`).
- ``resample``: the live resampler's response and its cost in SDR (docs/DSP.md).
- ``quality``: the quality tables of docs/MODEL.md (`livestems campaign report`).

May import: ``livestems.stream.apps``, ``livestems.stream.io``, ``livestems.stream.midi``,
``livestems.stream.core``, ``livestems.stream.errors``, all of ``livestems.model``,
``livestems.dsp``. Not the CLI.
"""
