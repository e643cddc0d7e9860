"""Making models: the trainer, its data, campaigns, and shipping the result.

- ``trainer``: training and distillation of the causal presets: resumable, budgeted, exact.
- ``data``: MUSDB-layout datasets: scanning, segments, augmentation, compressed stems.
- ``synth``: synthetic multitrack songs (FluidSynth, sung vocals) for training data.
- ``campaign``: a fixed recipe trained a session at a time; its resume checkpoint lives in
  ``campaign/NAME/`` at the repository root, its working runs in git-ignored ``runs/``.
- ``ship``: a trained model file packaged as a shipped default in ``model/weights``.

May import: ``livestems.model.evaluation``, ``livestems.model.nets``, ``livestems.dsp``.
Not livestems.stream.
"""
