"""`livestems karaoke`: vocals removed live from any input device, optional guide vocal."""

from __future__ import annotations

import sys

NAME = "karaoke"


def add_parser(sub) -> None:
    from livestems.model.registry import DEFAULT_MODEL

    p = sub.add_parser(
        NAME,
        help="live karaoke from any input: vocals removed, optional guide vocal",
        description="Take whatever plays on an input device, remove the vocals live, and play "
        "the rest on an output device, with a live view of the stem meters, the latency, the "
        "real-time factor, deadline misses and xruns (q quits). Devices: `livestems devices`.",
    )
    p.add_argument("--input", default=None, metavar="DEV",
                   help="input device: index or part of its name (default: system default)")
    p.add_argument("--output", default=None, metavar="DEV",
                   help="output device: index or part of its name (default: system default)")
    p.add_argument("--guide-db", type=float, default=None, metavar="DB",
                   help="keep the original vocal this many dB down as a guide (e.g. -12); "
                        "default: removed entirely")
    p.add_argument("--rate", type=int, default=None, metavar="HZ",
                   help="stream rate (default: the output device's). The model's own rate "
                        "(44100 for center) avoids the resamplers' added latency")
    p.add_argument("--block", type=int, default=256, metavar="FRAMES",
                   help="frames per audio callback: smaller lowers latency but leaves the "
                        "worker less time per block (more risk of misses); 0 lets the device "
                        "choose (default 256)")
    p.add_argument("--latency", default="low",
                   help="device buffering: 'low', 'high' or seconds. low answers faster; high "
                        "survives a busy machine without dropouts (default low)")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help=f"model (default: {DEFAULT_MODEL})")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--no-view", action="store_true",
                   help="no live view (for scripts); stop with Ctrl-C or --seconds")
    p.add_argument("--stats", default=None, metavar="FILE.json",
                   help="write the run's counters to this JSON file on exit")


def run(args) -> int:
    from .karaoke import run_karaoke

    if args.guide_db is not None and not -120 <= args.guide_db <= 12:
        print(f"error: --guide-db must be -120..12 dB, got {args.guide_db}", file=sys.stderr)
        return 2
    latency = args.latency
    try:
        latency = float(latency)
    except ValueError:
        if latency not in ("low", "high"):
            print(f"error: --latency must be low, high or seconds, got {latency}",
                  file=sys.stderr)
            return 2
    run_karaoke(input=args.input, output=args.output, guide_db=args.guide_db, rate=args.rate,
                blocksize=args.block, latency=latency, model=args.model, seconds=args.seconds,
                view=not args.no_view, stats_path=args.stats)
    return 0
