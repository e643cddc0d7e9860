"""`livestems devices`: the audio devices PortAudio sees (sound cards, and JACK when it runs)."""

from __future__ import annotations

NAME = "devices"


def add_parser(sub) -> None:
    sub.add_parser(
        NAME,
        help="list audio devices for --input/--output",
        description="List every audio device PortAudio sees, with its host API, channels, "
        "default rate and latency range. A JACK server appears as the 'JACK Audio Connection "
        "Kit' host API only if it was running when livestems started ($JACK_DEFAULT_SERVER "
        "names it). Pass an index or part of a name to --input/--output.",
    )


def run(args) -> int:
    from livestems.stream.io.backends.portaudio import list_devices

    print(list_devices())
    return 0
