"""Named separators and model files: what `--model NAME|PATH` resolves to.

A name picks a built-in separator; a path picks a model description on disk. Model files are
JSON configs (``{"class": ..., "args": {...}}``), optionally beside a ``.safetensors`` file of
weights; nothing here unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

from .center import CenterCancel

__all__ = ["DEFAULT_MODEL", "MODELS", "load_separator", "describe_models"]

#: the separator used when no model is named (the DSP baseline until a learned default ships)
DEFAULT_MODEL = "center"

MODELS = {
    "center": (CenterCancel, "DSP centre-channel karaoke baseline: vocals, accompaniment; "
                             "no weights, 5.8 ms latency at 44.1 kHz"),
}
_CLASSES = {"CenterCancel": CenterCancel}


class ModelError(ValueError):
    """A model name or file that cannot be loaded; the message says how to fix it."""


def describe_models() -> str:
    """One line per built-in model, for help text and `livestems models`."""
    return "\n".join(f"  {name:10s} {desc}" for name, (_, desc) in MODELS.items())


def load_separator(name_or_path: str | None = None):
    """Build the separator named ``name_or_path`` (default :data:`DEFAULT_MODEL`)."""
    spec = name_or_path or DEFAULT_MODEL
    if spec in MODELS:
        return MODELS[spec][0]()
    path = Path(spec)
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
    except TypeError as exc:
        raise ModelError(f"model config {spec!r}: bad arguments for {cfg['class']}: {exc}") \
            from None
