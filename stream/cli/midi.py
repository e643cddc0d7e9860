"""`livestems midi`: the JACK client mixed from a MIDI controller: mappings, learn, feedback."""

from __future__ import annotations

import os
import sys

NAME = "midi"


def add_parser(sub) -> None:
    from livestems.stream.cli.jack import add_jack_arguments

    p = sub.add_parser(
        NAME,
        help="mix the stems live from a MIDI controller (mappings, learn, presets)",
        description=(
            "Run the JACK client (as `livestems jack`) with its mix bus driven from a MIDI "
            "controller: faders for stem levels, buttons for mute and solo, knobs for the "
            "guide vocal, key shift and the separation's dry/wet, program changes for mix "
            "presets. Mapping files are TOML (docs/MIDI.md); without --map the generic "
            "4-fader mapping shipped with livestems is used. Absolute controls use soft "
            "takeover: a fader does nothing until it reaches the current value. MIDI comes "
            "in on the client's own midi_in port (connect your controller to it, or name it "
            "with --midi-connect) or, with --midi-api, through python-rtmidi."),
        epilog=("examples:\n"
                "  livestems midi --list-params\n"
                "  livestems midi --map my.toml --check\n"
                "  livestems midi --map my.toml --midi-connect nanoKONTROL --view\n"
                "  livestems midi --map my.toml --learn vocals.gain   (then move a fader)\n"
                "  livestems midi --map my.toml --learn drums.gain --as relative"),
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    add_jack_arguments(p)
    p.add_argument("--map", default=None, metavar="FILE.toml",
                   help="mapping file (default: the generic 4-fader mapping shipped with "
                        "livestems). --learn writes into it (created if missing)")
    p.add_argument("--learn", default=None, metavar="PARAM",
                   help="bind the next control moved to PARAM (see --list-params) and write "
                        "it to --map, keeping the file's comments and other entries; in "
                        "--view, press l then the parameter's key instead")
    p.add_argument("--as", dest="learn_as", default=None,
                   choices=["absolute", "relative", "toggle", "momentary"],
                   help="what --learn binds: relative for an endless encoder (two's "
                        "complement), momentary for a button held down (default: absolute "
                        "for faders and knobs, toggle for buttons)")
    p.add_argument("--midi-connect", action="append", default=[], metavar="SRC",
                   help="MIDI source to connect and keep connected (reconnected when it comes "
                        "back): a JACK port, a client name, or part of a port name; repeatable")
    p.add_argument("--midi-api", default="jack-port", choices=["jack-port", "jack", "alsa"],
                   help="jack-port (default): the client's own midi_in port, read in the "
                        "process callback, sample-accurate, one JACK client. jack or alsa: "
                        "a python-rtmidi input (its own JACK client, or the ALSA sequencer, "
                        "which needs /dev/snd/seq) on --midi-connect or --midi-virtual")
    p.add_argument("--midi-virtual", default=None, metavar="PORT",
                   help="with --midi-api jack/alsa: open a virtual input port named PORT for "
                        "sources to connect to")
    p.add_argument("--feedback", action="store_true",
                   help="register midi_out and echo state to the controller: mute/solo LEDs, "
                        "motor faders, LED rings (controls with feedback = true in the map, "
                        "or [midi] feedback = true)")
    p.add_argument("--check", action="store_true",
                   help="check the mapping against the model's parameters, print it, exit")
    p.add_argument("--list-params", action="store_true",
                   help="list the model's parameters (name, unit, range, default) and exit")
    p.add_argument("--list-ports", action="store_true",
                   help="list the MIDI sources (JACK, and ALSA where available) and exit")


def run(args) -> int:
    from livestems.model.nets.registry import load_separator
    from livestems.stream.cli.jack import check_jack_args
    from livestems.stream.core.params import ParamSet, stem_params
    from livestems.stream.midi.mapping import load_mapping

    if args.server:  # rtmidi's JACK client finds the server through the environment
        os.environ["JACK_DEFAULT_SERVER"] = args.server
    if args.midi_virtual and args.midi_api == "jack-port":
        print("error: --midi-virtual needs --midi-api jack or alsa (jack-port is the "
              "client's own midi_in)", file=sys.stderr)
        return 2
    if args.learn and not args.map:
        print("error: --learn needs --map FILE.toml to write the learned control to (the file "
              "is created if missing)", file=sys.stderr)
        return 2
    if args.list_ports:
        return _list_ports(args)
    if args.list_params or args.check or args.learn:
        sep = load_separator(args.model)
        params = ParamSet(stem_params(sep.sources))
        if args.learn and args.learn not in params:
            print(f"error: --learn: unknown parameter {args.learn!r}; parameters: "
                  f"{', '.join(params.names)}", file=sys.stderr)
            return 2
        if args.list_params:
            print(f"parameters of model {args.model or 'default'} (stems "
                  f"{', '.join(sep.sources)}):")
            for p in params:
                print(f"  {p.name:22s} {p.unit:9s} {p.lo:g}..{p.hi:g}, default "
                      f"{p.format(p.default)}, curve {p.curve}: {p.doc}")
            return 0
        if args.check:
            m = load_mapping(args.map, params)
            print(f"{m.path}: OK")
            for b in m.bindings:
                print(f"  line {b.line:3d}: {b.describe():28s} -> {b.param} ({b.mode}"
                      + ("" if b.active else ", inactive: no such stem in this model") + ")")
            for pr in m.presets:
                print(f"  line {pr.line:3d}: preset {pr.name!r}"
                      + (f" on program {pr.program}" if pr.program is not None else "")
                      + ": " + ", ".join(f"{k}={v:g}" for k, v in pr.values.items()))
            return 0
    if (msg := check_jack_args(args)) is not None:
        print(msg, file=sys.stderr)
        return 2
    from livestems.stream.apps.jack_client import serve

    return serve(args, midi_feedback=args.feedback)


def _list_ports(args) -> int:
    import jack

    from livestems.stream.midi.input import MidiPortError, list_rtmidi_ports

    try:
        c = jack.Client("livestems-list", servername=args.server, no_start_server=True)
    except jack.JackOpenError:
        print("JACK: no server running")
    else:
        ports = [p.name for p in c.get_ports(is_midi=True, is_output=True)]
        c.close()
        print("JACK MIDI sources:" + "".join(f"\n  {n}" for n in ports) if ports
              else "JACK MIDI sources: (none)")
    try:
        alsa = list_rtmidi_ports("alsa")
        print("ALSA MIDI sources:" + "".join(f"\n  {n}" for n in alsa) if alsa
              else "ALSA MIDI sources: (none)")
    except MidiPortError as exc:
        print(f"ALSA: {exc}")
    return 0
