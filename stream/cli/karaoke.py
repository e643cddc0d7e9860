"""`livestems karaoke`: vocals removed live from any input device; optional guide vocal, key
shift and microphone chain."""

from __future__ import annotations

import sys

NAME = "karaoke"


def add_parser(sub) -> None:
    from livestems.model.nets.registry import default_model

    p = sub.add_parser(
        NAME,
        help="live karaoke from any input: vocals removed, optional guide vocal, key shift "
             "and microphone",
        description="Take whatever plays on an input device, remove the vocals live, and play "
        "the rest on an output device, with a live view of the stem meters, the latency, the "
        "real-time factor, deadline misses and xruns (q quits). Optionally shift the key of "
        "the music (--key) and mix a microphone through a gate, compressor and reverb into "
        "the output (--mic). Devices: `livestems devices`.",
    )
    p.add_argument("--input", default=None, metavar="DEV",
                   help="input device: index or part of its name (default: system default)")
    p.add_argument("--output", default=None, metavar="DEV",
                   help="output device: index or part of its name (default: system default)")
    p.add_argument("--guide-db", type=float, default=None, metavar="DB",
                   help="keep the original vocal this many dB down as a guide (e.g. -12); "
                        "default: removed entirely")
    p.add_argument("--key", type=float, default=None, metavar="SEMITONES",
                   help="shift the music's key by this many semitones, -12..+12 (e.g. -2 for a "
                        "lower voice). The shifter (synchronised grains, on the worker thread) "
                        "adds latency, 3/4 of a grain (30 ms at the default 40 ms grain), and "
                        "artefacts: some roughness on dense mixes and smeared or doubled "
                        "drum hits, more the further you shift. On a deadline miss the fallback "
                        "is the original key. Default: no shifter, no added latency")
    p.add_argument("--key-grain-ms", type=float, default=None, metavar="MS",
                   help="the shifter's grain (5..200 ms, default 40): longer keeps low notes "
                        "smoother but adds latency and smears transients more")
    p.add_argument("--guide-original-key", action="store_true",
                   help="with --key and --guide-db: leave the guide vocal in the original key "
                        "(only delayed to stay aligned); default: it moves with the music")
    p.add_argument("--mic", default=None, metavar="CH[,CH]",
                   help="input channel(s) of the input device that carry a microphone, e.g. 3 "
                        "or 3,4 (channels 1-2 are the music). It goes through a gate, a "
                        "compressor and a reverb (pyo, run inside the audio callback) and is "
                        "mixed into the output; mic latency = one block (see --block) plus "
                        "the devices' buffering, not delayed with the music. Needs a fixed "
                        "--block")
    p.add_argument("--mic-db", type=float, default=0.0, metavar="DB",
                   help="microphone level in the output (default 0 dB)")
    p.add_argument("--mic-gate-db", type=float, default=-45.0, metavar="DB",
                   help="gate threshold: the mic is muted while quieter than this (spill, "
                        "stage noise); the gate opens a few ms into a phrase (default -45)")
    p.add_argument("--mic-reverb", type=float, default=0.25, metavar="MIX",
                   help="reverb mix, 0 (dry) .. 1 (all reverb), default 0.25")
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
                   help=f"model (default: {default_model()}; $LIVESTEMS_MODEL overrides)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--no-view", action="store_true",
                   help="no live view (for scripts); stop with Ctrl-C or --seconds")
    from livestems.stream.cli.jack import add_safety_option

    add_safety_option(p)
    p.add_argument("--stats", default=None, metavar="FILE.json",
                   help="write the run's counters to this JSON file on exit")


def run(args) -> int:
    from livestems.stream.apps.karaoke import run_karaoke

    if args.guide_db is not None and not -120 <= args.guide_db <= 12:
        print(f"error: --guide-db must be -120..12 dB, got {args.guide_db}", file=sys.stderr)
        return 2
    if args.key is not None and not -12 <= args.key <= 12:
        print(f"error: --key must be -12..+12 semitones, got {args.key:+g}", file=sys.stderr)
        return 2
    if args.key_grain_ms is not None and not 5 <= args.key_grain_ms <= 200:
        print(f"error: --key-grain-ms must be 5..200, got {args.key_grain_ms}", file=sys.stderr)
        return 2
    if not 0 <= args.mic_reverb <= 1:
        print(f"error: --mic-reverb must be 0..1, got {args.mic_reverb}", file=sys.stderr)
        return 2
    if args.mic is not None:
        from livestems.stream.apps.mic import parse_mic_channels

        try:
            parse_mic_channels(args.mic)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.block == 0:
            print("error: --mic needs a fixed block size: pass --block 256 (or another size)",
                  file=sys.stderr)
            return 2
    from livestems.stream.cli.jack import check_safety

    if (msg := check_safety(args)) is not None:
        print(msg, file=sys.stderr)
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
                view=not args.no_view, stats_path=args.stats, key=args.key,
                key_grain_ms=args.key_grain_ms, guide_original_key=args.guide_original_key,
                mic=args.mic, mic_db=args.mic_db, mic_gate_db=args.mic_gate_db,
                mic_reverb=args.mic_reverb, safety_ms=args.safety_ms)
    return 0
