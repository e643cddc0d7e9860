"""Package a trained model file as a shipped default (``model/weights/NAME.json``).

    python -m livestems.model.training.ship RUN/best.json --name rt-tiny \\
        [--eval held-out-synthetic=EVAL1.json] [--eval real-clips=EVAL2.json]

Copies the weights unchanged (the sha256 in the config still holds), keeps the training
provenance but replaces this machine's absolute paths by their last component (a shipped file
should not name the folders of the machine it was trained on), and records the given
``livestems eval --json`` reports under ``provenance.evaluation`` so ``livestems models`` and
the model card can quote what was measured. Nothing is evaluated here: run ``livestems eval``
first.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from livestems.model.nets.checkpoint import load_model, read_config

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def strip_paths(value):
    """``value`` (JSON-like) with every absolute path, or comma-separated list of them, cut to
    the last component of each."""
    if isinstance(value, dict):
        return {k: strip_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return ", ".join(Path(p.strip()).name for p in value.split(","))
    return value


def _summary(report: dict) -> dict:
    """The parts of a ``livestems eval --json`` report worth keeping in a model file."""
    keep = {"tracks": report.get("tracks"), "sdr": report.get("sdr"),
            "nsdr": report.get("nsdr")}
    base = report.get("baselines") or {}
    keep["baselines"] = {name: {"sdr": b.get("sdr")} for name, b in base.items()}
    return keep


def ship(src: Path, name: str, evaluations: dict[str, dict], out_dir: Path = WEIGHTS_DIR) -> Path:
    cfg, src = read_config(src)
    load_model(src)  # refuse to ship a file that does not load (checksum, shapes, class)
    weights = src.parent / cfg["weights"]
    out_dir.mkdir(parents=True, exist_ok=True)
    dst_weights = out_dir / f"{name}.safetensors"
    tmp = dst_weights.with_suffix(".safetensors.tmp")
    shutil.copyfile(weights, tmp)
    tmp.replace(dst_weights)
    cfg["weights"] = dst_weights.name
    prov = strip_paths(cfg.get("provenance", {}))
    prov["shipped_as"] = name
    if evaluations:
        prov["evaluation"] = {k: _summary(v) for k, v in evaluations.items()}
    cfg["provenance"] = prov
    dst = out_dir / f"{name}.json"
    dst.write_text(json.dumps(cfg, indent=2) + "\n")
    load_model(dst)
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m livestems.model.training.ship", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a livestems model JSON (e.g. RUN/best.json)")
    p.add_argument("--name", required=True, help="shipped name, e.g. rt-tiny")
    p.add_argument("--eval", action="append", default=[], metavar="LABEL=REPORT.json",
                   help="a `livestems eval --json` report to record (repeatable)")
    p.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    evaluations = {}
    for item in args.eval:
        label, sep, path = item.partition("=")
        if not sep:
            p.error(f"--eval expects LABEL=REPORT.json, got {item!r}")
        evaluations[label] = json.loads(Path(path).read_text())
    dst = ship(args.model, args.name, evaluations, args.out_dir)
    print(f"shipped {args.model} as {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
