"""Named separators and model files: what `--model NAME|PATH` resolves to.

A name picks a built-in separator (the DSP baseline, or a causal hybrid preset from
:mod:`.presets`); a path picks a model description on disk. Model files are JSON configs: either
``{"class": "CenterCancel", "args": {...}}`` (no weights), or a livestems model file (class,
args, sources, sample rate, provenance, sha256) beside its ``.safetensors`` weights, see
:mod:`.checkpoint`. A causal hybrid model becomes a :class:`StreamingHybrid`; an offline
(official Hybrid Demucs) model a :class:`WindowedHybrid`. Nothing here unpickles: a ``.th``
or ``.pt`` path is refused with the ``import-demucs`` command to run instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from .center import CenterCancel
from .presets import PRESETS, build_preset

__all__ = ["DEFAULT_MODEL", "MODEL_ENV", "default_model", "SHIPPED", "MODELS", "load_separator", "describe_models", "ModelError",
           "load_model_file"]

#: the separator used when no model is named: the trained rt-tiny (docs/MODEL.md)
DEFAULT_MODEL = "rt-tiny"

#: environment variable naming the model used when none is given (overrides DEFAULT_MODEL)
MODEL_ENV = "LIVESTEMS_MODEL"


def default_model() -> str:
    """The model used when none is named: ``$LIVESTEMS_MODEL`` if set, else DEFAULT_MODEL."""
    import os

    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


#: presets that ship trained weights (``model/weights/NAME.json``, packaged with livestems);
#: the other presets build with seeded random weights
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = {"rt-tiny": WEIGHTS_DIR / "rt-tiny.json"}

MODELS = {
    "center": (CenterCancel, "DSP centre-channel karaoke baseline: vocals, accompaniment; "
                             "no weights, 5.8 ms latency at 44.1 kHz"),
}


def _shipped_description(name: str) -> str:
    preset = PRESETS[name]
    desc = preset.describe().replace("untrained (random weights) unless a checkpoint is given",
                                     "")
    try:
        cfg = json.loads(SHIPPED[name].read_text())
        prov = cfg.get("provenance", {})
        ev = prov.get("evaluation", {}).get("real-clips", {}).get("sdr", {})
        quality = (f"; real clips SDR vocals {ev['vocals']:.1f} dB, accompaniment "
                   f"{ev['accompaniment']:.1f} dB" if "vocals" in ev else "")
        return (f"{desc}trained on synthetic multitracks ({prov.get('steps', '?')} steps)"
                f"{quality}; weights model/weights/{SHIPPED[name].name}")
    except (OSError, ValueError, KeyError, TypeError):
        return f"{desc}TRAINED WEIGHTS MISSING ({SHIPPED[name]}): reinstall livestems"


for _name, _preset in PRESETS.items():
    if _name in SHIPPED:
        MODELS[_name] = (lambda _n=_name: load_model_file(SHIPPED[_n]),
                         _shipped_description(_name))
    else:
        MODELS[_name] = (lambda _n=_name: build_preset(_n), _preset.describe())
_CLASSES = {"CenterCancel": CenterCancel}


class ModelError(ValueError):
    """A model name or file that cannot be loaded; the message says how to fix it."""


def describe_models() -> str:
    """One line per built-in model, for help text and `livestems models`."""
    chosen = default_model()
    lines = [f"{'*' if name == chosen else ' '} {name:10s} {desc}"
             for name, (_, desc) in MODELS.items()]
    return "\n".join(lines) + f"\n(* the default: {chosen}; set $LIVESTEMS_MODEL or pass " \
        "--model to choose another)"


def _preset_args(net) -> dict:
    cfg = dict(getattr(net, "config", {}))
    cfg.pop("sources", None)
    return cfg


def load_model_file(path: Path, device: str = "cpu", **options):
    """A livestems model file (JSON + safetensors) as a separator: causal nets stream
    (:class:`StreamingHybrid`), offline nets run windowed (:class:`WindowedHybrid`, with
    ``options`` as its hop/context/lookahead)."""
    from .checkpoint import CheckpointError, load_model
    from .hybrid.causal import CausalHybridNet
    from .hybrid.streaming import StreamingHybrid
    from .hybrid.windowed import WindowedHybrid

    try:
        net = load_model(path)
    except CheckpointError as exc:
        raise ModelError(str(exc)) from None
    if isinstance(net, CausalHybridNet):
        # a net trained from a preset steps as that preset does (rt-tiny: two frames a call)
        preset = PRESETS.get(str(getattr(net, "provenance", {}).get("preset")))
        if preset is not None and preset.args.items() <= _preset_args(net).items():
            options.setdefault("hop_frames", preset.hop_frames)
        return StreamingHybrid(net, device=device, **options)
    return WindowedHybrid(net, device=device, **options)


def load_separator(name_or_path: str | None = None, device: str = "cpu"):
    """Build the separator named ``name_or_path`` (default: :func:`default_model`).

    ``device`` ('cpu', 'cuda') applies to the hybrid networks (presets and model files); on
    'cuda' the causal nets run their hop as a CUDA graph.
    """
    spec = name_or_path or default_model()
    if spec in SHIPPED:
        if not SHIPPED[spec].is_file():
            raise ModelError(f"the trained weights of {spec!r} are missing ({SHIPPED[spec]}); "
                             "reinstall livestems, or name another model with --model")
        return load_model_file(SHIPPED[spec], device=device)
    if spec in PRESETS:
        return build_preset(spec, device=device)
    if spec in MODELS:
        return MODELS[spec][0]()
    path = Path(spec)
    from .checkpoint import PICKLE_SUFFIXES, CheckpointError, refuse_pickle

    if path.suffix.lower() in PICKLE_SUFFIXES:
        try:
            refuse_pickle(path)
        except CheckpointError as exc:
            raise ModelError(str(exc)) from None
    if not path.exists():
        raise ModelError(
            f"unknown model {spec!r}: not a built-in name and no such file.\n"
            f"Built-in models:\n{describe_models()}"
        )
    if path.is_dir() or path.suffix.lower() != ".json":
        raise ModelError(
            f"model file {spec!r} is not a JSON model config (expected a .json file with "
            '{"class": ..., "args": {...}})'
        )
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model config {spec!r}: {exc}") from None
    if not isinstance(cfg, dict) or "class" not in cfg:
        raise ModelError(f"model config {spec!r} has no \"class\" key")
    if "weights" in cfg:  # a livestems model file: network + weights
        return load_model_file(path, device=device)
    cls = _CLASSES.get(cfg["class"])
    if cls is None:
        raise ModelError(
            f"model config {spec!r} names class {cfg['class']!r}; known: {', '.join(_CLASSES)}"
        )
    args = cfg.get("args", {})
    if not isinstance(args, dict):
        raise ModelError(f"model config {spec!r}: \"args\" must be an object, got {args!r}")
    try:
        return cls(**args)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelError(f"model config {spec!r}: bad arguments for {cfg['class']}: {exc}") \
            from None
