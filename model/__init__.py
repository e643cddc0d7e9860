"""Separators and how they are made, in three parts (each imports only those listed after it):

- ``training``: the trainer, datasets, synthetic songs (``synth``), campaigns, shipping a
  model. May import ``evaluation``, ``nets`` and ``livestems.dsp``.
- ``evaluation``: SDR metrics, shift consistency, the synthetic demo song with known stems.
  May import ``nets`` and ``livestems.dsp``.
- ``nets``: what inference needs: the separator protocol, the networks (``hybrid``), the DSP
  baseline, model files and the registry that resolves `--model`. May import ``livestems.dsp``.

``weights/`` holds only shipped models (``NAME.safetensors`` + its ``NAME.json`` card).
Training runs live in the git-ignored ``runs/`` at the repository root; the one resume
checkpoint that outlives a session is ``campaign/NAME/`` there (docs/MODEL.md).
Nothing here imports ``livestems.stream``.
"""
