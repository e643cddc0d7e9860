"""The JACK client app behind `livestems jack` and `livestems midi`: the separator on a JACK
server, per-stem ports, MIDI control of the mix, the live view.

:func:`serve` runs :class:`~livestems.stream.io.backends.jack.JackHost` (the process callback in
Python), :func:`serve_native` :class:`~livestems.stream.io.backends.jack_native.NativeJackHost`
(the callback in C); both take the options the CLI parsed (``livestems.stream.cli.jack``,
``livestems.stream.cli.midi``), already checked there, and run until stopped.
:func:`start_midi` builds the MIDI controller for a host; :class:`MidiView` is the live view
with the parameters and MIDI learn.
"""

from __future__ import annotations

import os
import select
import signal
import sys

from livestems.dsp.warmup import warmup
from livestems.stream.apps.live_view import LiveView
from livestems.stream.core.engine import safety_line, safety_text
from livestems.stream.io.backends.common import write_stats_json

_KEYS = "123456789abcdefghijkmnoprstuvwxyz"  # l and q are commands in the view


def serve(args, *, midi_feedback: bool = False) -> int:
    """Run the JACK client until stopped; MIDI control from ``args.map`` unless 'none'
    (``livestems midi`` adds its own options to ``args``, see livestems.stream.cli.midi)."""
    from livestems.model.nets.registry import load_separator
    from livestems.stream.io.backends.jack import JackHost

    # a service manager (or a test) stops us with SIGTERM: treat it like Ctrl-C, so the
    # client is closed and --stats written
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    warmup()
    sep = load_separator(args.model)
    if getattr(args, "key", None) is not None:
        from livestems.dsp.pitch import KeyShiftedSeparator, check_semitones

        try:
            semis = check_semitones(args.key)
        except ValueError as exc:
            print(f"error: --key: {exc}", file=sys.stderr)
            return 2
        sep = KeyShiftedSeparator(sep, semis)
    host = JackHost(sep, name=args.name, servername=args.server,
                    resample_quality=args.resample_quality, midi_feedback=midi_feedback,
                    rt_priority=args.rt_priority, safety_ms=args.safety_ms)
    ctl = None
    try:
        eng = host.engine
        if getattr(args, "map", None) != "none":
            ctl = start_midi(host, args)  # checks the mapping before audio starts
        host.activate()
        if ctl is not None:
            ctl.start()
        if args.connect:
            for a, b in host.connect_input(args.connect):
                print(f"connected {a} -> {b}")
        if args.output:
            for a, b in host.connect_output(args.output):
                print(f"connected {a} -> {b}")
        title = (f"livestems jack: client {host.name} at {eng.sample_rate} Hz, "
                 f"{eng.block_size}-frame periods; model {eng.model_rate} Hz, stems "
                 f"{', '.join(eng.sources)}")
        print(title)
        print(f"latency {eng.latency_samples} samples = {1000 * eng.latency_samples / eng.sample_rate:.2f} ms"
              f" (published on the output ports; resamplers {eng.resampler_latency_samples}"
              f", safety margin {eng.safety_samples})")
        print(safety_line(eng))
        print("ports: " + " ".join(p.name for p in host.inports + host.outports)
              + f" {host.midi_in.name}" + (f" {host.midi_out.name}" if host.midi_out else ""),
              flush=True)
        try:
            if args.view:
                if ctl is not None:
                    view = MidiView(title, host.stats, host.levels, ctl)
                else:
                    view = LiveView(title, host.stats, host.levels)
                with view:
                    host.run(args.seconds, tick=view.tick)
            else:
                host.run(args.seconds)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM is how a live client is normally stopped
            pass
    finally:
        if ctl is not None:
            ctl.stop()
        st = host.stats()
        if ctl is not None:
            st["midi"] = ctl.stats()
            st["params"] = host.params.snapshot()
        if hasattr(sep, "semitones"):
            st["key_semitones"] = sep.semitones
        host.close()
        if args.stats:
            write_stats_json(args.stats, st)
    print(f"done: {st['hops_processed']} hops, {st['deadline_misses']} deadline misses, "
          f"{st['xruns']} xruns ({st['xruns_after_grace']} after the first 100 ms), per-hop "
          f"p99 {st['per_hop_ms']['p99']:.3f} ms"
          + (f"; model error: {st['worker_error']}" if st["worker_error"] else ""))
    return 0


def serve_native(args) -> int:
    """`livestems jack` with the C callback (the default when the bridge library is built):
    :class:`~livestems.stream.io.backends.jack_native.NativeJackHost`."""
    from livestems.stream.io.backends.jack_native import NativeJackHost

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    warmup()
    host = NativeJackHost(args.model, name=args.name, servername=args.server,
                          resample_quality=args.resample_quality, safety_ms=args.safety_ms)
    ctl = None
    try:
        if args.map != "none":
            ctl = start_midi(host, args)  # checks the mapping before audio starts
        host.activate()
        if ctl is not None:
            ctl.start()
        if args.connect:
            for a, b in host.connect_input(args.connect):
                print(f"connected {a} -> {b}")
        if args.output:
            for a, b in host.connect_output(args.output):
                print(f"connected {a} -> {b}")
        st = host.stats()
        print(f"livestems jack: client {host.name} at {int(st['sample_rate'])} Hz, "
              f"{host.block_size}-frame periods; model {st['model_rate']} Hz, stems "
              f"{', '.join(host.sources)}; process callback in C (no GIL)")
        print(f"latency {host.latency_samples} samples = "
              f"{1000 * host.latency_samples / st['sample_rate']:.2f} ms (published on the "
              f"output ports, safety margin included)")
        print(safety_text(host.safety_ms, host.warmup_hop_ms,
                          1e3 * host.block_size / st["sample_rate"]))
        print("ports: " + " ".join(p.name for p in host.inports + host.outports)
              + f" {host.midi_in.name}", flush=True)
        try:
            if args.view:
                title = f"livestems jack (C callback): client {host.name}"
                view = (MidiView(title, host.stats, host.levels, ctl) if ctl is not None
                        else LiveView(title, host.stats, host.levels))
                with view:
                    host.run(args.seconds, tick=view.tick)
            else:
                host.run(args.seconds)
        except KeyboardInterrupt:
            pass
    finally:
        if ctl is not None:
            ctl.stop()
        st = host.stats()
        if ctl is not None:
            st["midi"] = ctl.stats()
            st["params"] = host.params.snapshot()
        host.close()
        if args.stats:
            write_stats_json(args.stats, st)
    print(f"done: {st['hops_processed']} hops, {st['deadline_misses']} deadline misses, "
          f"{st['xruns']} xruns, {st['cycles']} cycles in C"
          + ("; model error" if st["worker_error"] else ""))
    return 0


def start_midi(host, args):
    """Load the mapping for ``host``'s parameters and build its :class:`MidiController`
    (not started). Called by `livestems jack` and `livestems midi`."""
    from livestems.stream.io.backends.common import AudioBackendError
    from livestems.stream.io.backends.jack import JackMidiInput
    from livestems.stream.midi.controller import MidiController
    from livestems.stream.midi.input import MidiPortError, RtMidiInput
    from livestems.stream.midi.mapping import MappingError, load_mapping

    path = getattr(args, "map", None)
    learn = getattr(args, "learn", None)
    if learn and path and not os.path.exists(path):
        from livestems.stream.midi.mapping import Mapping

        mapping = Mapping(path=path)  # written when the control is learned
    else:
        mapping = load_mapping(path, host.params)
    api = getattr(args, "midi_api", "jack-port")
    connect = getattr(args, "midi_connect", []) or []
    if api == "jack-port":
        sources = [JackMidiInput(host, connect)]
    else:
        if len(connect) > 1:
            raise MappingError("--midi-api jack/alsa reads one source: give one "
                               "--midi-connect or --midi-virtual")
        virtual = getattr(args, "midi_virtual", None)
        if not connect and not virtual:
            virtual = "midi_in"
        try:
            sources = [RtMidiInput(api, connect=connect[0] if connect else None,
                                   virtual=None if connect else virtual,
                                   client_name=f"{host.name}-midi")]
        except MidiPortError as exc:
            raise AudioBackendError(str(exc), fix="list sources with `livestems midi "
                                                  "--list-ports`") from None
    ctl = MidiController(host.params, mapping, map_path=path if learn or path else None,
                         sources=sources,
                         send=host.send_midi if host.midi_out is not None else None)
    active = sum(b.active for b in mapping.bindings)
    print(f"MIDI: {mapping.path or 'new mapping'}: {active} controls active"
          + (f", {len(mapping.bindings) - active} inactive (stems this model lacks)"
             if active < len(mapping.bindings) else "")
          + f", {len(mapping.presets)} presets; input "
          + (f"{host.name}:midi_in" if api == "jack-port" else sources[0].port_name)
          + (f", keeping {', '.join(connect)} connected" if connect else ""), flush=True)
    if learn:
        ctl.learn(learn, getattr(args, "learn_as", None))
    return ctl


class MidiView(LiveView):
    """The live view plus the parameters, MIDI notices, and learn: press l, then the
    key shown next to a parameter, then move a control."""

    def __init__(self, title, stats, levels, controller, **kw):
        super().__init__(title, stats, levels, **kw)
        self.ctl = controller
        self._arm = False

    def _poll_keys(self) -> None:
        try:
            fd = self.keys.fileno()
            while select.select([fd], [], [], 0)[0]:
                ch = os.read(fd, 1)
                if not ch:
                    break
                c = ch.decode("latin-1")
                if self._arm:
                    self._arm = False
                    names = self.ctl.params.names
                    k = _KEYS.find(c)
                    if 0 <= k < len(names):
                        self.ctl.learn(names[k])
                    continue
                if c in "qQ":
                    self.quit = True
                    break
                if c == "l":
                    self._arm = True
        except (OSError, ValueError, AttributeError):
            pass

    def render(self) -> str:
        base = super().render()
        ps = self.ctl.params
        lines = ["  parameters (l + key: learn; the next control moved is bound)"]
        row = []
        for k, p in enumerate(ps):
            key = _KEYS[k] if k < len(_KEYS) else " "
            row.append(f"[{key}] {p.name:20s} {p.format(ps.values[k]):>10s}")
            if len(row) == 2:
                lines.append("  " + "   ".join(row))
                row = []
        if row:
            lines.append("  " + "   ".join(row))
        if self._arm:
            lines.append("  learn: press the key of a parameter")
        elif self.ctl.learning:
            lines.append(f"  learning {self.ctl.learning}: move a control")
        lines += [f"  {n}" for n in list(self.ctl.recent)[-4:]]
        extra = "\x1b[K\n".join(lines) + "\x1b[K\n"
        return base.replace("  press q to quit", extra + "  press q to quit")
