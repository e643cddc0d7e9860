"""`livestems eval`: SDR of a model beside the mixture, DSP-baseline and oracle floors/ceiling."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

NAME = "eval"


def add_parser(sub) -> None:
    from livestems.model.nets.registry import default_model

    p = sub.add_parser(
        "eval",
        help="score a model's separation (SDR v4 and nSDR) against baselines",
        description="Separate each track's mixture (the sum of its stems) through the model's "
        "streaming path, as users hear it, and report per source the museval SDR (BSSEval v4, "
        "1 s windows, median over windows, median over tracks) and the MDX 2021 new SDR (whole "
        "track, mean over tracks), beside the unprocessed mixture, the DSP karaoke baseline "
        "`center` and the ideal-ratio-mask oracle at the model's STFT size. A 2-stem model is "
        "scored on vocals and accompaniment; a 4-stem model on its four stems plus "
        "accompaniment (the sum of its non-vocal stems).",
    )
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="a MUSDB-layout folder (root/[train|test/]track/{vocals,drums,bass,"
                        "other}.wav) or NI .stem.mp4 files")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help=f"model under test (default: {default_model()}; $LIVESTEMS_MODEL overrides)")
    p.add_argument("--subset", default=None, metavar="NAME",
                   help="only this subset folder of a MUSDB folder (e.g. test)")
    p.add_argument("--max-tracks", type=int, default=None, metavar="N",
                   help="evaluate only the first N tracks (sorted by name)")
    p.add_argument("--max-seconds", type=float, default=None, metavar="S",
                   help="evaluate only the first S seconds of each track (faster, less exact)")
    p.add_argument("--no-baselines", action="store_true",
                   help="score only the model (no mixture, center, oracle rows)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unusable track instead of skipping it with a report")
    p.add_argument("--json", action="store_true",
                   help='print JSON: {"method", "tracks", "sdr": {source: dB}, "nsdr", '
                        '"baselines": {...}, "per_track"}')
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _tracks(args):
    """(lazy track iterator, names of the sources checked, notes) from the DATA arguments."""
    from livestems.model.training.data import DatasetError, read_source, scan_musdb
    from livestems.model.evaluation.evaluate import FOUR, EvalTrack

    from livestems.stream.io.files import read_stems
    from livestems.stream.errors import AudioFileError

    loaders = []
    notes = []
    for item in args.data:
        path = Path(item)
        if path.is_dir():
            subsets = (args.subset,) if args.subset else None
            report = scan_musdb(path, FOUR, sample_rate=None, subsets=subsets, strict=args.strict)
            if report.skipped:
                notes.append(report.summary())
            for tr in report.tracks:
                loaders.append((tr.name, lambda tr=tr: (
                    {s: read_source(tr, s) for s in FOUR}, tr.sample_rate)))
        elif path.name.lower().endswith(".stem.mp4") or path.suffix.lower() == ".mp4":
            def load(path=path):
                st = read_stems(path)
                return {s: st[s] for s in FOUR}, st.sample_rate
            loaders.append((path.name.removesuffix(".stem.mp4"), load))
        elif not path.exists():
            raise AudioFileError("not found", expected="a MUSDB-layout folder or a .stem.mp4 file",
                                 got="no such path", fix="check the path", path=path)
        else:
            raise DatasetError(f"{path}: expected a MUSDB-layout folder or an NI .stem.mp4 file, "
                               f"got a {path.suffix or 'plain'} file. Fix: pass the folder holding "
                               "the track folders, or .stem.mp4 files")
    loaders.sort(key=lambda x: x[0])
    if args.max_tracks is not None:
        loaders = loaders[: args.max_tracks]

    def gen():
        for name, load in loaders:
            stems, sr = load()
            if args.max_seconds is not None:
                n = int(args.max_seconds * sr)
                stems = {k: v[:, :n] for k, v in stems.items()}
            yield EvalTrack(name, stems, sr)

    return gen, len(loaders), notes


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def run(args) -> int:
    from livestems.model.training.data import DatasetError
    from livestems.model.evaluation.evaluate import evaluate, format_report
    from livestems.model.nets.registry import default_model, load_separator

    if args.max_tracks is not None and args.max_tracks < 1:
        print(f"error: --max-tracks must be >= 1, got {args.max_tracks}", file=sys.stderr)
        return 2
    if args.max_seconds is not None and args.max_seconds <= 1:
        print(f"error: --max-seconds must be > 1 (SDR v4 uses 1 s windows), got {args.max_seconds}",
              file=sys.stderr)
        return 2
    sep = load_separator(args.model)
    try:
        gen, count, notes = _tracks(args)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if count == 0:
        print("error: no tracks to evaluate", file=sys.stderr)
        return 2
    try:
        report = evaluate(gen, sep, args.model or default_model(),
                          baselines=not args.no_baselines, progress=not args.quiet)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_jsonable(report), indent=1))
    else:
        print(format_report(report))
    return 0
