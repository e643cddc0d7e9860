"""`livestems import-demucs`: convert an official Demucs (HDemucs) checkpoint to our format."""

from __future__ import annotations

import sys

NAME = "import-demucs"


def add_parser(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="convert an official Hybrid Demucs checkpoint (.th) to safetensors + JSON",
        description="Convert a demucs-package HDemucs checkpoint (the pickled .th files the "
        "demucs package downloads, e.g. for hdemucs_mmi) into a livestems model file: "
        "OUT.json (class, arguments, sources, sample rate, provenance, sha256) and "
        "OUT.safetensors. Reading the checkpoint means unpickling it, and unpickling can run "
        "code hidden in the file, so this needs --trust; the result loads without any "
        "unpickling. The converted model runs offline-exact and, in `separate`/live use, "
        "over a sliding window (latency = look-ahead + hop; wants a GPU).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="demucs .th checkpoint")
    p.add_argument("-o", "--out", required=True, metavar="OUT",
                   help="output path stem: writes OUT.json and OUT.safetensors")
    p.add_argument("--trust", action="store_true",
                   help="I trust this file: allow unpickling it (required)")
    p.add_argument("--force", action="store_true", help="replace existing output files")


def run(args) -> int:
    import warnings
    from pathlib import Path

    from livestems.model.nets.checkpoint import CheckpointError
    from livestems.model.nets.import_demucs import UNPICKLE_WARNING, import_demucs

    src = Path(args.checkpoint)
    if not src.is_file():
        print(f"error: no such checkpoint: {src}", file=sys.stderr)
        return 2
    stem = Path(args.out)
    stem = stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem
    outs = [stem.with_suffix(".json"), stem.with_suffix(".safetensors")]
    if not args.force and any(o.exists() for o in outs):
        print(f"error: {outs[0]} or {outs[1]} exists; pass --force to replace", file=sys.stderr)
        return 3
    if not args.trust:
        print(f"error: not importing {src}: {UNPICKLE_WARNING}.\n"
              "Re-run with --trust if you trust where the file came from.", file=sys.stderr)
        return 2
    print(f"warning: {UNPICKLE_WARNING}", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            path = import_demucs(src, stem, trust=True)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{src} -> {path} (+ {path.with_suffix('.safetensors').name})")
    return 0
