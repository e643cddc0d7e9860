"""Audio in and out: files, NI stems, and the live backends.

- ``files``: any common format -> float32 ``[channels, frames]``; crash-safe WAV/FLAC writes.
- ``stems_mp4``: NI Stems (``.stem.mp4``): reading the mixture, writing five streams.
- ``backends``: hosts that drive a :class:`~livestems.stream.core.engine.Engine` from a clock:
  ``file`` (paced playback of an array), ``portaudio`` (sound cards), ``jack`` (a JACK client,
  callback in Python), ``jack_native`` (the same ports, callback in C through
  ``livestems.bridge``), ``common`` (their errors and stats).

May import: ``livestems.stream.core``, ``livestems.stream.midi``, ``livestems.bridge``,
``livestems.model.nets`` (loading a model by name), ``livestems.dsp``,
``livestems.stream.errors``. Not apps, bench or the CLI.
"""
