"""What inference needs: the separator protocol, the networks, model files and the registry.

- ``protocol``: the separator protocol (``step``/``forward``/``reset``) and its checks.
- ``hybrid``: the Hybrid Demucs family: offline (official) and causal streaming networks.
- ``center``: the weightless DSP baseline (``center``).
- ``presets``: the causal presets (rt-tiny, rt-small...) and how to build them.
- ``checkpoint``: safetensors + JSON model files, never a pickle.
- ``registry``: what `--model NAME|PATH` resolves to; the shipped models in ``../weights``.
- ``import_demucs``: official Demucs checkpoints converted to our format.

May import: ``livestems.dsp``. Not training, evaluation or anything in ``livestems.stream``.
"""
