"""The real-time side of livestems: the engine, audio and MIDI I/O, the apps, the CLI.

Subpackages, bottom-up; each may import only the ones below it (tools/layers.py holds the
rules, tests/test_layout.py checks them, docs/ARCHITECTURE.md draws them):

- ``core``: what runs per block and its contracts: ``ring`` (lock-free sample rings),
  ``engine`` (audio-side push/pull, the worker that separates hop by hop), ``params`` (typed
  live parameters), ``mixer`` (the stem mixer). Imports only ``livestems.dsp``.
- ``midi``: MIDI bytes -> parameters: ``input`` (parser, event ring, rtmidi ports),
  ``mapping`` (TOML mappings), ``controller`` (the control thread).
- ``io``: audio in and out: ``files``, ``stems_mp4`` (NI stems), ``backends`` (paced file
  playback, PortAudio, JACK in Python and with the C callback of ``livestems.bridge``).
- ``apps``: what a user runs, as functions: ``separate``/``library``/``offline``/
  ``ray_backend`` (files), ``demo``, ``karaoke`` + ``mic``, ``jack_client``, ``live_view``.
- ``bench``: the measurements behind docs/ (speed, latency, DSP kernels, resampler, quality).
- ``cli``: argument parsing and one thin module per command; imported by nothing but
  ``__main__``.

This package's own modules (``errors``: the typed user-facing errors and their exit codes)
import nothing from livestems, so every layer may use them.
"""
