"""The `livestems` command line: a thin layer that parses, calls, and turns errors into advice."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]

EPILOG = "Run `livestems COMMAND --help` for the options of one command."


def build_parser() -> argparse.ArgumentParser:
    from livestems.model.registry import default_model, describe_models

    p = argparse.ArgumentParser(
        prog="livestems",
        description="Real-time music source separation: vocals, drums, bass and other, live.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "separate",
        help="separate audio files into stems",
        description="Separate audio files into one file per stem (plus 'accompaniment', "
        "everything but the vocals), streamed through the same real-time engine that runs "
        "live, as fast as the CPU allows. Stems have the input's exact length and sample rate "
        "and are aligned with it (the engine's latency is removed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models:\n" + describe_models(),
    )
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="wav, flac, ogg, mp3, aiff, or an NI .stem.mp4 (its mixture stream)")
    s.add_argument("-o", "--out", required=True, metavar="OUTDIR",
                   help="folder for the results: one sub-folder per input, named after it")
    s.add_argument("--model", default=None, metavar="NAME|PATH",
                   help=f"built-in model name or model file (default: {default_model()}; $LIVESTEMS_MODEL overrides)")
    s.add_argument("--stems", default=None, metavar="LIST",
                   help="comma-separated stems to write (default: all of the model's stems "
                        "and accompaniment)")
    s.add_argument("--format", default="wav", choices=["wav", "flac", "stem.mp4"],
                   help="wav: 32-bit float, exact, large. flac: 24-bit, lossless within "
                        "[-1, 1] (clips beyond), about half the size. stem.mp4: one NI Stems "
                        "file (mixture + drums, bass, other, vocals; AAC, lossy) that Traktor "
                        "and Mixxx load")
    s.add_argument("--force", action="store_true",
                   help="replace an existing output (the old one is kept until the new one is "
                        "complete)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")

    d = sub.add_parser(
        "demo",
        help="the main job: synthesise a song, separate it live, write karaoke + stems",
        description="Synthesise a short song (no download), play it through the real-time "
        "engine paced to the audio clock as a live input, write the karaoke mix, the stems, "
        "the input and a spectrogram PNG, and print latency, real-time factor, deadline misses "
        "and quality against the song's known stems.",
    )
    d.add_argument("-o", "--out", default="demo-out", metavar="OUTDIR",
                   help="folder for the demo's files (default: demo-out; its files are "
                        "replaced on each run)")
    d.add_argument("--seconds", type=float, default=12.0, help="song length (default 12)")
    d.add_argument("--model", default=None, metavar="NAME|PATH",
                   help=f"model (default: {default_model()}; $LIVESTEMS_MODEL overrides)")
    d.add_argument("--block", type=int, default=256, metavar="SAMPLES",
                   help="host block size: smaller lowers latency, but leaves the worker less "
                        "time per block and raises the risk of deadline misses (default 256)")
    d.add_argument("--fast", action="store_true",
                   help="do not pace to the audio clock: run as fast as possible (no "
                        "meaningful deadline figures)")
    d.add_argument("--seed", type=int, default=0, help="song seed (default 0)")

    m = sub.add_parser("models", help="list the built-in models")
    m.set_defaults(command="models")

    for module in _command_modules():
        module.add_parser(sub)
    return p


# Commands that live in their own modules: each has `NAME`, `add_parser(subparsers)` (which
# adds a parser for NAME) and `run(args) -> int`. Add new commands here, one line each.
COMMAND_MODULES: list[str] = [".cmd_bench", ".cmd_jack", ".cmd_devices", ".cmd_karaoke", ".cmd_synth", ".cmd_eval", ".cmd_import_demucs", ".cmd_midi", ".cmd_train"]


def _command_modules():
    import importlib

    return [importlib.import_module(name, __package__) for name in COMMAND_MODULES]


def _cmd_separate(args) -> int:
    from livestems.model.registry import load_separator

    from .errors import LivestemsError
    from .separate import separate_file

    sep = load_separator(args.model)
    stems = [s.strip() for s in args.stems.split(",") if s.strip()] if args.stems else None
    failed = 0
    for inp in args.inputs:
        try:
            res = separate_file(inp, args.out, sep, stems=stems, fmt=args.format,
                                force=args.force, progress=not args.quiet)
        except LivestemsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = max(failed, exc.exit_code)
            continue
        if not args.quiet:
            for note in res.notes:
                print(f"note: {inp}: {note}", file=sys.stderr)
            st = res.stats
            print(f"{inp} -> {res.folder} ({res.frames / res.sample_rate:.1f} s at "
                  f"{res.sample_rate} Hz; per-hop p50 {st.per_hop_ms['p50']:.3f} ms; "
                  f"{len(res.files)} file(s))")
    return failed


def _cmd_demo(args) -> int:
    from .demo import run_demo

    if args.block < 1 or args.block > 8192:
        print(f"error: --block must be 1..8192 samples, got {args.block}", file=sys.stderr)
        return 2
    if not 0.5 <= args.seconds <= 600:
        print(f"error: --seconds must be 0.5..600, got {args.seconds}", file=sys.stderr)
        return 2
    run_demo(args.out, seconds=args.seconds, model=args.model, block_size=args.block,
             paced=not args.fast, seed=args.seed)
    return 0


def main(argv=None) -> int:
    """Run one command; Ctrl-C at any point (the model and torch load for seconds before a
    command's own handling starts) ends with "interrupted" and exit code 130, no traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from livestems import __version__

        print(f"livestems {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    from livestems.model.registry import ModelError

    from .errors import LivestemsError

    try:
        if args.command == "separate":
            return _cmd_separate(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "models":
            from livestems.model.registry import describe_models

            print(describe_models())
            return 0
        for module in _command_modules():
            if args.command in (module.NAME, *getattr(module, "ALIASES", ())):
                return int(module.run(args) or 0)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LivestemsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
