"""How good a separator is: metrics and the material they are measured on.

- ``evaluate``: BSSEval v4 SDR (museval's), MDX "new SDR", baselines and oracle bounds.
- ``consistency``: shift consistency (how much the output changes with the input's delay).
- ``demo_song``: a synthetic song with known stems, seeded and download-free (the demo's,
  the benchmarks' and many tests' input).

May import: ``livestems.model.nets``, ``livestems.dsp``. Not training or livestems.stream.
"""
