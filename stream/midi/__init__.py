"""MIDI control of the live parameters.

- ``input``: the MIDI byte parser, the audio thread's event ring, python-rtmidi inputs.
- ``mapping``: TOML mapping files (which control moves which parameter, presets); the default
  mapping ships in ``data/default-midi.toml``.
- ``controller``: the control thread: events -> ``ParamSet.set``, soft takeover, learn.

May import: ``livestems.stream.core`` (parameters), ``livestems.stream.errors``,
``livestems.dsp``. Not I/O (the JACK backend hands its ``midi_in`` bytes to ``input``'s ring;
``apps.jack_client`` wires a host to a controller), apps or the CLI.
"""
