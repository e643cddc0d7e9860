"""The applications: what a user runs, as functions with their options as arguments.

- ``separate``, ``library``, ``offline``, ``ray_backend``: files and folders to stems (one
  file; a library on local workers or Ray; the batched offline pass they compute with).
- ``demo``: the main job: a synthetic song through the live engine, karaoke and stems out.
- ``karaoke`` and ``mic``: live karaoke from a sound card, the microphone chain (pyo).
- ``jack_client``: the JACK client of `livestems jack` / `livestems midi`, with MIDI control.
- ``live_view``: the terminal view (meters, latency, misses).

May import: ``livestems.stream.io``, ``livestems.stream.midi``, ``livestems.stream.core``,
``livestems.stream.errors``, ``livestems.model.nets`` and ``livestems.model.evaluation`` (the
demo song and its scores), ``livestems.dsp``. Not bench or the CLI.
"""
