"""Convert an official ``demucs``-package HDemucs checkpoint into our safetensors + JSON format.

The demucs package stores a model as a pickled dict ``{"klass": <class>, "args": [...],
"kwargs": {...}, "state": {name: tensor}, "training_args": {...}}`` (its
``states.serialize_model``), often with half-precision tensors. Reading it means unpickling,
which can run arbitrary code: :func:`import_demucs` refuses unless ``trust=True``, and even then
unpickles with a restricted loader that resolves only torch's tensor-rebuilding functions and
plain containers, and turns references to demucs classes into inert names, so the demucs
package does not need to be installed. The tensors are then renamed from demucs' module names
to ours (:func:`demucs_name`), checked one by one against our :class:`HDemucsNet` built from the
checkpoint's arguments, and written with :func:`~livestems.model.nets.checkpoint.save_model`.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_state_checked, save_model
from .hybrid.blocks import ResidualLayer
from .hybrid.official import OFFICIAL_DEFAULTS, HDemucsNet

__all__ = ["import_demucs", "demucs_name", "read_demucs_package", "UNPICKLE_WARNING",
           "convert_package"]

UNPICKLE_WARNING = (
    "reading a demucs checkpoint means unpickling it, and unpickling can run code embedded in "
    "the file; only import checkpoints from a source you trust (livestems uses a restricted "
    "unpickler, which narrows but does not remove that risk)")

_BRANCH = {"freq_encoder": "encoder", "freq_decoder": "decoder",
           "time_encoder": "tencoder", "time_decoder": "tdecoder"}
_ENC = {"conv": "conv", "norm_conv": "norm1", "rewrite": "rewrite", "norm_rewrite": "norm2"}
_DEC = {"upconv": "conv_tr", "norm_out": "norm2", "rewrite": "rewrite", "norm_rewrite": "norm1"}
_ATTN = {"content": "content", "query": "query", "key": "key", "decay_query": "query_decay",
         "out": "proj"}


def demucs_name(net: HDemucsNet, name: str) -> str:
    """The demucs-package state-dict name of our tensor ``name`` in ``net``."""
    if name == "freq_embedding.weight":
        return "freq_emb.embedding.weight"
    m = re.fullmatch(r"(\w+)\.(\d+)\.(.+)", name)
    if not m or m.group(1) not in _BRANCH:
        raise KeyError(name)
    branch, idx, rest = m.groups()
    prefix = f"{_BRANCH[branch]}.{idx}"
    table = _ENC if branch.endswith("encoder") else _DEC
    head, _, tail = rest.partition(".")
    if head in table:
        return f"{prefix}.{table[head]}.{tail}"
    r = re.fullmatch(r"residual\.layers\.(\d+)\.(\w+)\.(.+)", rest)
    if not r:
        raise KeyError(name)
    d, part, tail = r.groups()
    layer = net.get_submodule(f"{branch}.{idx}.residual.layers.{d}")
    assert isinstance(layer, ResidualLayer)
    # demucs keeps the residual layer as one Sequential: conv, norm, act, [lstm], [attn],
    # conv, norm, glu, layerscale; our named parts map to those positions
    n_lstm, n_attn = int(layer.lstm is not None), int(layer.attn is not None)
    out = 3 + n_lstm + n_attn
    where = f"{prefix}.dconv.layers.{d}"
    if part == "conv_in":
        return f"{where}.0.{tail}"
    if part == "norm_in":
        return f"{where}.1.{tail}"
    if part == "lstm":
        sub, _, t2 = tail.partition(".")
        return f"{where}.3.{'lstm' if sub == 'rnn' else 'linear'}.{t2}"
    if part == "attn":
        sub, _, t2 = tail.partition(".")
        return f"{where}.{3 + n_lstm}.{_ATTN[sub]}.{t2}"
    if part == "conv_out":
        return f"{where}.{out}.{tail}"
    if part == "norm_out":
        return f"{where}.{out + 1}.{tail}"
    if part == "scale" and tail == "gain":
        return f"{where}.{out + 3}.scale"
    raise KeyError(name)


class _ClassRef:
    """An inert stand-in for a class the checkpoint names (e.g. demucs.hdemucs.HDemucs)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __repr__(self):
        return f"{self.module}.{self.name}"

    def __call__(self, *args, **kwargs):
        raise CheckpointError(f"checkpoint tries to construct {self!r}; refusing")


_ALLOWED = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"), ("torch", "Size"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "slice"), ("torch", "device"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        if module == "torch" and name in ("float16", "float32", "bfloat16", "float64"):
            return super().find_class(module, name)
        if module.split(".")[0] in ("demucs", "omegaconf"):
            return _ClassRef(module, name)
        raise CheckpointError(f"checkpoint references {module}.{name}, which a demucs "
                              "checkpoint has no reason to contain; refusing to load it")


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load`` that uses :class:`_RestrictedUnpickler`."""

    Unpickler = _RestrictedUnpickler
    __name__ = "livestems_restricted_pickle"

    @staticmethod
    def load(f, **kw):
        return _RestrictedUnpickler(f, **kw).load()


def read_demucs_package(path, *, trust: bool) -> dict:
    """Unpickle a demucs checkpoint (only with ``trust=True``); returns its dict."""
    path = Path(path)
    if not trust:
        raise CheckpointError(
            f"not importing {path}: {UNPICKLE_WARNING}. Pass --trust (trust=True) to proceed.")
    warnings.warn(UNPICKLE_WARNING, stacklevel=2)
    try:
        package = torch.load(path, map_location="cpu", weights_only=False,
                             pickle_module=_RestrictedPickle)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {exc}") from None
    if not isinstance(package, dict):
        raise CheckpointError(f"{path}: expected a demucs package dict, got "
                              f"{type(package).__name__}")
    return package


def convert_package(package: dict, where: str = "checkpoint") -> HDemucsNet:
    """Build our :class:`HDemucsNet` from a demucs package dict and load its weights."""
    for field in ("klass", "args", "kwargs", "state"):
        if field not in package:
            raise CheckpointError(f"{where}: missing field {field!r} (not a demucs package)")
    klass = package["klass"]
    cls_name = getattr(klass, "name", getattr(klass, "__name__", repr(klass)))
    if cls_name != "HDemucs":
        raise CheckpointError(
            f"{where}: field 'klass' is {cls_name!r}; only HDemucs (Hybrid Demucs v3) "
            "checkpoints are supported (HTDemucs and Demucs are not)")
    state = package["state"]
    if state.get("__quantized"):
        raise CheckpointError(f"{where}: field 'state' is diffq-quantized; quantized "
                              "checkpoints are not supported (use the non-quantized release)")
    args, kwargs = list(package["args"]), dict(package["kwargs"])
    if args:
        kwargs.setdefault("sources", args[0])
        if len(args) > 1:
            raise CheckpointError(f"{where}: field 'args' has {len(args)} positional "
                                  "arguments; expected only the sources")
    if "sources" not in kwargs:
        raise CheckpointError(f"{where}: no 'sources' in the model arguments")
    sources = list(kwargs.pop("sources"))
    unknown = sorted(set(kwargs) - set(OFFICIAL_DEFAULTS))
    if unknown:
        warnings.warn(f"{where}: dropping argument(s) HDemucs 4.0.1 does not know: {unknown}",
                      stacklevel=2)
        for k in unknown:
            kwargs.pop(k)
    try:
        net = HDemucsNet(sources, **kwargs)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: unsupported HDemucs configuration: {exc}") from None
    ours = {}
    for name in net.state_dict():
        theirs = demucs_name(net, name)
        if theirs not in state:
            raise CheckpointError(f"{where}: missing tensor {theirs!r} (our {name!r})")
        ours[name] = state[theirs].float()
    expected = {demucs_name(net, n) for n in ours}
    extra = sorted(set(state) - expected)
    if extra:
        raise CheckpointError(f"{where}: unexpected tensor(s) {', '.join(extra[:8])}")
    load_state_checked(net, ours, where)
    return net.eval()


def import_demucs(checkpoint, out, *, trust: bool) -> Path:
    """Convert ``checkpoint`` (demucs pickle) to ``out.json`` + ``out.safetensors``.

    Returns the JSON path. Raises :class:`CheckpointError` (without ``trust``, or for a
    checkpoint we cannot reproduce exactly).
    """
    checkpoint = Path(checkpoint)
    package = read_demucs_package(checkpoint, trust=trust)
    net = convert_package(package, str(checkpoint))
    from .checkpoint import sha256_file

    provenance = {"imported_from": checkpoint.name, "source_sha256": sha256_file(checkpoint),
                  "source_format": "demucs 4 package (pickle)",
                  "training_args": package.get("training_args") or {}}
    return save_model(net, out, provenance=provenance)
