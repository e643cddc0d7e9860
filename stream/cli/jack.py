"""`livestems jack`: run the separator as a JACK client with one output pair per stem."""

from __future__ import annotations

import sys

NAME = "jack"
CALLBACKS = ("auto", "native", "python")


def add_parser(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="run as a JACK client: per-stem output ports, mix, karaoke",
        description=(
            "Join a running JACK server as a client that separates in_L/in_R live. Output "
            "ports: one L/R pair per stem of the model (drums, bass, other, vocals for the "
            "default rt-tiny; vocals_L/R and accompaniment_L/R for 'center'), "
            "mix_L/R (the stem mixer, MIDI-controlled) and karaoke_L/R (every stem but "
            "vocals); a MIDI input port midi_in. The latency (model + hop + JACK period, plus "
            "the resamplers when the server's rate is not the model's, plus --safety-ms) is "
            "published as JACK "
            "port latency so hosts can compensate. MIDI on midi_in drives the mixer through "
            "the default mapping (a generic 4-fader controller) or --map; `livestems midi` "
            "has learn, feedback and the other MIDI options. Runs until Ctrl-C, `q` in "
            "--view, --seconds, or the server stopping (exit code 6)."),
    )
    add_jack_arguments(p)
    p.add_argument("--map", default=None, metavar="FILE.toml",
                   help="MIDI mapping for midi_in (default: the generic 4-fader mapping "
                        "shipped with livestems; 'none': no MIDI control). See docs/MIDI.md")
    p.add_argument("--callback", choices=CALLBACKS, default="auto",
                   help="where JACK's process callback runs. native: in C, through the C "
                        "API's lock-free rings (the bridge library, built by the README's "
                        "set-up or `make -C bridge`), so a busy Python (the model worker, the "
                        "garbage collector) can never make JACK's thread wait; same ports, "
                        "latency, MIDI mapping and --view, but no --key or --rt-priority. "
                        "python: in Python (JACK-Client), which takes the GIL every period. "
                        "auto (default): native when the bridge library is built and neither "
                        "--key nor --rt-priority is given, else python, saying why "
                        "(docs/LIVE.md)")
    p.add_argument("--native", action="store_const", const="native", dest="callback",
                   help="the same as --callback native")


def add_jack_arguments(p) -> None:
    """The options every JACK-client command shares (`jack`, `midi`)."""
    from livestems.model.nets.registry import default_model

    p.add_argument("--name", default="livestems", help="JACK client name (default livestems)")
    p.add_argument("--server", default=None, metavar="NAME",
                   help="JACK server name (default: $JACK_DEFAULT_SERVER, else 'default')")
    p.add_argument("--connect", default=None, metavar="SRC",
                   help="feed in_L/in_R from SRC: a client name (its first two audio "
                        "outputs, e.g. 'system' for the sound card's capture ports), "
                        "'PORT_L,PORT_R', or one port for both")
    p.add_argument("--output", default=None, metavar="DEST",
                   help="connect karaoke_L/R to DEST (e.g. 'system' for the speakers)")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help=f"model (default: {default_model()}; $LIVESTEMS_MODEL overrides)")
    p.add_argument("--resample-quality", default="LD", choices=["LD", "LQ", "MQ", "HQ", "VHQ"],
                   help="resampler used when the server's rate is not the model's (48 kHz "
                        "server, 44.1 kHz model). LD (default): a short polyphase filter, "
                        "about 1 ms both ways, flat to 18 kHz, nothing kept above 22 kHz "
                        "(docs/DSP.md has its response and its cost in SDR); HQ: soxr's, "
                        "~-100 dB aliasing and a flat band to 20 kHz but ~44 ms more latency; LQ "
                        "~11 ms. Run the server at the model's rate to add nothing")
    p.add_argument("--key", type=float, default=None, metavar="SEMITONES",
                   help="run the stems through the key shifter, starting at SEMITONES "
                        "(-12..12); the key.shift parameter (MIDI) then changes it live. The "
                        "shifter adds ~30 ms of latency (published); without --key there is "
                        "no shifter and key.shift does nothing")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this long (default: run until stopped)")
    p.add_argument("--view", action="store_true",
                   help="live terminal view: meters, latency, real-time factor, misses, "
                        "xruns; q quits")
    p.add_argument("--rt-priority", type=int, default=0, metavar="N",
                   help="SCHED_FIFO priority (1-99) for our process thread when the server "
                        "runs without real-time scheduling (jackd --no-realtime gives its "
                        "clients none, so any busy thread can delay a cycle into an xrun; a "
                        "real-time server sets the priority itself). Needs root, "
                        "CAP_SYS_NICE or an rtprio limit (e.g. the 'audio' group); without it "
                        "the thread stays normal and --stats says why. Default 0: off (on "
                        "the 2-core test VM it made no measurable difference, docs/LIVE.md)")
    add_safety_option(p)
    p.add_argument("--stats", default=None, metavar="FILE.json",
                   help="write the run's counters (latency, misses, xruns, per-hop times, "
                        "first frame) to this JSON file on exit")


def _safety_value(text: str):
    """`--safety-ms` values: 'auto' or a number of milliseconds."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a number of milliseconds, got {text!r}") from None


def add_safety_option(p) -> None:
    p.add_argument("--safety-ms", type=_safety_value, default="auto", metavar="MS|auto",
                   help="extra latency, 0..500 ms, that the model's worker may run late by "
                        "before a deadline miss (a miss plays the dry input for a moment). "
                        "Default auto: chosen at start-up from the per-hop compute time "
                        "measured on this machine (up to 512 warm-up hops in 1 s): max(0, "
                        "max(4 x p99, 3 x second slowest) - one host block), in whole ms, printed, and fixed while running so the "
                        "published latency stays true. A quiet fast machine gets 0; a busy "
                        "or slow one more latency and no misses. A number sets it: 0 for the "
                        "lowest latency, more if misses remain (docs/LIVE.md)")


def check_safety(args) -> str | None:
    """The engine's own range check, before any model or device is opened."""
    from livestems.stream.core.engine import SAFETY_AUTO, SAFETY_MS_MAX

    if args.safety_ms != SAFETY_AUTO and not 0.0 <= args.safety_ms <= SAFETY_MS_MAX:
        return (f"error: --safety-ms must be 0..{SAFETY_MS_MAX:g} ms, got {args.safety_ms:g} "
                f"(or auto)")
    return None


def _python_only(args) -> list[str]:
    """The given options that only the Python callback has."""
    return [o for o, on in (("--key", getattr(args, "key", None) is not None),
                            ("--rt-priority", bool(getattr(args, "rt_priority", 0)))) if on]


def choose_callback(args) -> tuple[str, str | None]:
    """``("native" | "python", why)`` for ``args.callback`` (``why``: a note for auto's
    fallback to Python, else None); `livestems midi` (no --callback) is always Python."""
    want = getattr(args, "callback", "python")
    if want != "auto":
        return want, None
    refused = _python_only(args)
    if refused:
        return "python", f"{' and '.join(refused)} need(s) the Python callback"
    from livestems.stream.io.backends.jack_native import library_path

    if not library_path().exists():
        return "python", ("the bridge library is not built (`make -C bridge`, or the README's "
                          "set-up command, gives the C callback)")
    return "native", None


def check_jack_args(args) -> str | None:
    """What `jack` and `midi` check before any model or server is opened."""
    if getattr(args, "callback", None) == "native":
        refused = _python_only(args)
        if refused:
            return (f"error: {', '.join(refused)} cannot be used with the C callback "
                    f"(--callback native / --native: no Python in it); drop them or use "
                    f"--callback python")
    if args.seconds is not None and args.seconds <= 0:
        return f"error: --seconds must be > 0, got {args.seconds}"
    return check_safety(args)


def run(args) -> int:
    from livestems.stream.apps.jack_client import serve, serve_native

    if (msg := check_jack_args(args)) is not None:
        print(msg, file=sys.stderr)
        return 2
    callback, why = choose_callback(args)
    if why:
        print(f"note: JACK callback in Python: {why}", flush=True)
    if callback == "native":
        return serve_native(args)
    return serve(args)
