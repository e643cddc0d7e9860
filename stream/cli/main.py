"""The `livestems` command line: a thin layer that parses, calls, and turns errors into advice."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]

EPILOG = "Run `livestems COMMAND --help` for the options of one command."


def build_parser() -> argparse.ArgumentParser:
    from livestems.model.nets.registry import default_model, describe_models

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
        description="Separate audio files, or whole folders of them, into one file per stem "
        "(plus 'accompaniment', everything but the vocals). The same causal network that runs "
        "live, run offline in long passes over each file (the result equals the live one). "
        "Stems have the input's exact length and sample rate and are aligned with it. Folders "
        "are searched recursively; their sub-folders are kept under OUTDIR. Outputs already "
        "complete for the same input and settings are skipped, so an interrupted run resumes "
        "where it stopped; a bad file is reported and the others go on. Exit codes: 0 all "
        "done or skipped, 2 a bad input or usage, 3 an output exists or cannot be written, "
        "4 a tool (ffmpeg) is missing, 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models:\n" + describe_models(),
    )
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="wav, flac, ogg, mp3, aiff, or an NI .stem.mp4 (its mixture stream); "
                        "or a folder, searched recursively for those extensions")
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
    s.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, notes or per-file lines (errors and the summary "
                        "still print)")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="files separated at once, each worker a process that loads the model "
                        "once (default: one per CPU core, at most one per file). More workers "
                        "use the cores better on many files; one file uses one worker")
    s.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads per worker (default 1). With more, one file is cut into "
                        "blocks separated in parallel (the same result as one thread): faster "
                        "for a long file on an otherwise idle machine, slower when other "
                        "processes busy the cores; more workers are the safer way to use cores")
    s.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run the files on a Ray cluster instead of local processes: 'auto' "
                        "joins the cluster this machine belongs to (or starts a local one), "
                        "ADDRESS a head node (e.g. ray://head:10001). Inputs and -o must be "
                        "on storage every node sees at the same path (docs/SCALE.md). Needs "
                        "`pip install livestems[ray]`")

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
    from livestems.stream.cli.jack import add_safety_option

    add_safety_option(d)

    m = sub.add_parser("models", help="list the built-in models")
    m.set_defaults(command="models")

    for module in _command_modules():
        module.add_parser(sub)
    return p


# Commands that live in their own modules: each has `NAME`, `add_parser(subparsers)` (which
# adds a parser for NAME) and `run(args) -> int`. Add new commands here, one line each.
COMMAND_MODULES: list[str] = [".bench", ".jack", ".devices", ".karaoke", ".synth", ".eval", ".import_demucs", ".midi", ".train", ".campaign"]


def _command_modules():
    import importlib

    return [importlib.import_module(name, __package__) for name in COMMAND_MODULES]


def _cmd_separate(args) -> int:
    from livestems.stream.apps.library import Options, collect_tasks, default_workers, run_library

    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            print(f"error: {flag} must be >= 1, got {value}", file=sys.stderr)
            return 2
    tasks, problems = collect_tasks(args.inputs, args.out)
    workers = args.workers or (None if args.ray else default_workers(len(tasks)))
    # one torch thread per worker by default: parallel files use the cores without OpenMP
    # threads spinning against each other (on the shared 2-core VM, one file on 2 threads ran
    # at 0.6x real time while 2 workers of 1 thread did 14.7x: docs/SCALE.md)
    threads = args.threads or 1
    stems = tuple(s.strip() for s in args.stems.split(",") if s.strip()) if args.stems else None
    options = Options(model=args.model, stems=stems, fmt=args.format, force=args.force,
                      threads=threads)
    backend = None
    if args.ray:
        from livestems.stream.apps.ray_backend import ray_backend

        backend = ray_backend(args.ray)
    summary = run_library(tasks, options, backend=backend, workers=workers, quiet=args.quiet,
                          problems=problems)
    return summary.exit_code


def _cmd_demo(args) -> int:
    from livestems.stream.apps.demo import run_demo

    if args.block < 1 or args.block > 8192:
        print(f"error: --block must be 1..8192 samples, got {args.block}", file=sys.stderr)
        return 2
    if not 0.5 <= args.seconds <= 600:
        print(f"error: --seconds must be 0.5..600, got {args.seconds}", file=sys.stderr)
        return 2
    from livestems.stream.cli.jack import check_safety

    if (msg := check_safety(args)) is not None:
        print(msg, file=sys.stderr)
        return 2
    run_demo(args.out, seconds=args.seconds, model=args.model, block_size=args.block,
             paced=not args.fast, seed=args.seed, safety_ms=args.safety_ms)
    return 0


def main(argv=None) -> int:
    """Run one command; Ctrl-C at any point (the model and torch load for seconds before a
    command's own handling starts) ends with "interrupted" and exit code 130, no traceback."""
    try:
        return _main(argv)
    except BaseException as exc:
        # a C extension's import (numpy's core, for one) turns a KeyboardInterrupt raised
        # inside it into an ImportError: still the user's Ctrl-C, not a failure
        if not _caused_by_ctrl_c(exc):
            raise
        print("interrupted", file=sys.stderr)
        return 130


def _caused_by_ctrl_c(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in ``exc``'s chain of causes and contexts."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


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
    from livestems.model.nets.registry import ModelError

    from livestems.stream.errors import LivestemsError

    try:
        if args.command == "separate":
            return _cmd_separate(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "models":
            from livestems.model.nets.registry import describe_models

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
