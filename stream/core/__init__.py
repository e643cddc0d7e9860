"""The real-time core: what runs per audio block, and its contracts.

- ``ring``: single-producer/single-consumer sample rings (numba copies, no locks).
- ``engine``: :class:`~livestems.stream.core.engine.Engine`: the audio side's ``push``/``pull``
  only copy; a worker thread reads hops, runs the separator, mixes, writes the stem rings.
- ``params``: typed live parameters in one float64 array (control threads write, the worker
  reads once per hop).
- ``mixer``: per-stem gain, mute, solo and dry/wet, ramped per sample into the mix bus.

May import: ``livestems.dsp`` and ``livestems.stream.errors``. Never I/O, MIDI, apps, bench or
the CLI (hosts build on the core, not the other way round); separators are passed in, so no
import of ``livestems.model`` either.
"""
