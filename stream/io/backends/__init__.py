"""Live and paced audio backends around the engine: file (paced), PortAudio, JACK (Python and
native callback). Part of ``livestems.stream.io``: the same import rules."""
