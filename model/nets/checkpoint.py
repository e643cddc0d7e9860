"""Model files: safetensors weights beside a self-describing JSON config; never a pickle.

A model is two files with the same stem: ``NAME.json`` and ``NAME.safetensors``. The JSON is

    {"format": "livestems-model", "version": 1, "class": "HDemucsNet",
     "args": {...constructor arguments...}, "sources": [...], "sample_rate": 44100,
     "provenance": {...free-form: training run, import source...},
     "weights": "NAME.safetensors", "sha256": "<hex digest of the weights file>"}

Loading checks everything and names what is wrong: unknown class, a sample rate the class was
not built for, a checksum mismatch, missing or unexpected tensors, wrong tensor shapes. Files
in PyTorch's pickle format (``.th``, ``.pt``, ``.pth``, ``.ckpt``) are refused: unpickling runs
arbitrary code. Official Demucs checkpoints are converted once, explicitly, with
``livestems import-demucs --trust`` (:mod:`livestems.model.nets.import_demucs`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

__all__ = ["CheckpointError", "PICKLE_SUFFIXES", "save_model", "load_model", "read_config",
           "sha256_file", "model_classes", "refuse_pickle"]

FORMAT = "livestems-model"
VERSION = 1
PICKLE_SUFFIXES = (".th", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


class CheckpointError(ValueError):
    """A model file that cannot be loaded; the message names the field or tensor and the fix."""


def refuse_pickle(path: Path) -> None:
    """Raise :class:`CheckpointError` explaining why a pickle checkpoint is not loaded."""
    raise CheckpointError(
        f"{path} is a PyTorch pickle checkpoint. Loading a pickle runs whatever code it "
        "contains, so livestems never loads one implicitly. If it is an official Demucs "
        "(HDemucs) checkpoint from a source you trust, convert it once with\n"
        f"    livestems import-demucs {path} -o OUT --trust\n"
        "and load OUT.json instead.")


def model_classes() -> dict[str, type]:
    """Classes a model file may name, by name (imported lazily: torch modules are heavy)."""
    from .hybrid.causal import CausalHybridNet
    from .hybrid.official import HDemucsNet

    return {"HDemucsNet": HDemucsNet, "CausalHybridNet": CausalHybridNet}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def save_model(module: torch.nn.Module, path, *, provenance: dict | None = None) -> Path:
    """Write ``module`` (which must have ``.config`` = its constructor arguments, ``sources``
    among them, and ``sample_rate`` or ``samplerate``) as ``path.json`` + ``path.safetensors``.
    Returns the JSON path. Tensors are saved as float32, contiguous."""
    from safetensors.torch import save_file

    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_suffix(".safetensors")
    config_path = stem.with_suffix(".json")
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in module.state_dict().items()}
    save_file(state, str(weights), metadata={"format": FORMAT})
    args = dict(module.config)
    sources = list(args.pop("sources"))
    rate = int(args.get("samplerate", args.get("sample_rate", 44100)))
    cfg = {
        "format": FORMAT, "version": VERSION, "class": type(module).__name__,
        "args": _json_safe(args), "sources": sources, "sample_rate": rate,
        "provenance": _json_safe(provenance or {}), "weights": weights.name,
        "sha256": sha256_file(weights),
    }
    config_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return config_path


def read_config(path) -> tuple[dict, Path]:
    """Parse and validate a model JSON; returns ``(config, config_path)``."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        refuse_pickle(path)
    if path.suffix.lower() == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"no model config at {path}")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read model config {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"model config {path}: expected a JSON object")
    for field in ("class", "args", "sources", "sample_rate", "weights", "sha256"):
        if field not in cfg:
            raise CheckpointError(f"model config {path}: missing field {field!r}")
    if cfg.get("format", FORMAT) != FORMAT:
        raise CheckpointError(f"model config {path}: field 'format' is {cfg['format']!r}, "
                              f"expected {FORMAT!r}")
    if not isinstance(cfg["args"], dict):
        raise CheckpointError(f"model config {path}: field 'args' must be an object")
    return cfg, path


def load_model(path, *, verify_checksum: bool = True) -> torch.nn.Module:
    """Build the module a model JSON describes and load its weights (eval mode, CPU).

    Raises :class:`CheckpointError` naming the field or tensor at fault.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg, path = read_config(path)
    classes = model_classes()
    cls = classes.get(cfg["class"])
    if cls is None:
        raise CheckpointError(f"model config {path}: field 'class' is {cfg['class']!r}; "
                              f"known classes: {', '.join(classes)}")
    args = dict(cfg["args"])
    rate = cfg["sample_rate"]
    built_for = args.get("samplerate", args.get("sample_rate"))
    if built_for is not None and int(built_for) != int(rate):
        raise CheckpointError(
            f"model config {path}: field 'sample_rate' is {rate} Hz but the model was built "
            f"for {built_for} Hz (args)")
    # Build on the meta device first: absurd or negative sizes in 'args' fail (or are caught
    # below by the shape check against the weights file) before any memory is allocated.
    try:
        with torch.device("meta"):
            shell = cls(cfg["sources"], **args)
    except (TypeError, ValueError, NotImplementedError, RuntimeError, OverflowError,
            MemoryError) as exc:
        raise CheckpointError(f"model config {path}: field 'args' does not build "
                              f"{cfg['class']}: {exc}") from None
    weights = path.parent / cfg["weights"]
    if not weights.is_file():
        raise CheckpointError(f"model config {path}: weights file {weights} not found")
    _check_shapes_in_header(shell, weights)
    del shell
    try:
        module = cls(cfg["sources"], **args)
    except (TypeError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(f"model config {path}: field 'args' does not build "
                              f"{cfg['class']}: {exc}") from None
    if verify_checksum:
        digest = sha256_file(weights)
        if digest != cfg["sha256"]:
            raise CheckpointError(f"{weights}: sha256 {digest} does not match field 'sha256' "
                                  f"{cfg['sha256']} in {path} (file changed or truncated)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file: {exc}") from None
    load_state_checked(module, state, where=str(weights))
    module.provenance = cfg.get("provenance", {})
    return module.eval()


def _check_shapes_in_header(shell: torch.nn.Module, weights: Path) -> None:
    """Compare the (meta) module's tensor shapes with the safetensors header, reading no
    tensor data, so a config that would build a huge model is refused before it is built."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file: {exc}") from None
    for name, t in shell.state_dict().items():
        if name in shapes and shapes[name] != tuple(t.shape):
            raise CheckpointError(f"{weights}: tensor '{name}' has shape {list(shapes[name])}, "
                                  f"the config builds {list(t.shape)}")


def load_state_checked(module: torch.nn.Module, state: dict, where: str) -> None:
    """``module.load_state_dict(state)`` with errors that name each bad tensor."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing:
        raise CheckpointError(f"{where}: missing tensor(s) {', '.join(missing[:8])}"
                              + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    if extra:
        raise CheckpointError(f"{where}: unexpected tensor(s) {', '.join(extra[:8])}"
                              + (f" and {len(extra) - 8} more" if len(extra) > 8 else ""))
    for name, ref in own.items():
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}: tensor {name!r} has shape {list(got.shape)}, "
                                  f"the model expects {list(ref.shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
