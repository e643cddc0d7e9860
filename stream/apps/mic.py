"""The karaoke microphone chain: gate -> compressor -> reverb (pyo), run inside our audio callback.

pyo normally runs its own audio server (PortAudio or JACK) on its own thread; two audio servers
in one process would fight over the device and the clock. Instead the pyo ``Server`` is booted
with ``audio='manual'``: it opens no device and starts no thread, and each
``Server.process()`` computes exactly one block, synchronously, on the calling thread. Our
PortAudio callback copies the mic block into pyo's input buffer, calls ``process()``, and adds
pyo's output buffer into the output block. Both buffers are pyo's own C arrays
(``getInputAddr``/``getOutputAddr``), wrapped once as numpy views.

Modes measured (256-frame blocks, 48 kHz, this chain, 2 shared cores; see docs/LIVE.md):
``manual`` + ``process()`` and ``embedded`` + its C callback through ctypes cost the same
(both run ``Server_process_buffers``); ``manual`` is a plain C method call with no argument
conversion, so it is what we use. ``offline``/``offline_nb`` render whole durations to a sound
file (``offline_nb`` on a thread of pyo's own), so they cannot process one live block.
``Server.setCallback`` only adds a Python call per block inside pyo's own audio thread.

What pyo does per block (pyo's ``servermodule.c``, ``Server_process_buffers``): a
variable-length array on the C stack for the mix, ``PyGILState_Ensure`` (we already hold
the GIL: a counter), each object's C process function over buffers it allocated at
construction; no heap allocation, no Python objects. Measured here: RSS flat over 100 000
blocks, no tracemalloc growth over 2000 blocks, no thread started. The callback's own work
is numba copies into preallocated arrays.

Latency: the chain adds 2 samples (a one-sample look-ahead in the gate and in the compressor,
so they react within their rise time instead of delaying the signal by pyo's default 5 ms; the
price: the gate opens only once its detector has seen the level, ~13 ms into a -10 dBFS tone,
so the very start of a phrase is softened); the mic reaches the output in the same callback,
so its latency is the device's own buffering (one block each way). It is not aligned with the
separated music, which is late by the engine's latency: the singer hears themself now.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from livestems.dsp.kernels import db_to_gain, deinterleave, interleave

__all__ = ["MicChain", "parse_mic_channels"]


def parse_mic_channels(spec: str) -> tuple[int, ...]:
    """``"3"`` or ``"3,4"`` (1-based channels of the input device) -> 0-based ``(2,)``/``(2, 3)``.

    Channels 1 and 2 carry the music, so a mic must be on channel 3 or higher.
    """
    try:
        chans = tuple(int(p) for p in str(spec).split(",") if p.strip())
    except ValueError:
        chans = ()
    if not 1 <= len(chans) <= 2 or min(chans) < 3 or len(set(chans)) != len(chans):
        raise ValueError(f"--mic expects one or two input channel numbers >= 3 (channels 1-2 "
                         f"carry the music), e.g. 3 or 3,4; got {spec!r}")
    return tuple(c - 1 for c in chans)


def _pyo():
    os.environ.setdefault("PYO_GUI_WX", "0")  # else importing pyo prints a wxPython banner
    import pyo

    return pyo


class MicChain:
    """Gate -> compressor -> reverb on a mono or stereo mic, one fixed-size block per call.

    Args:
        sample_rate: Hz, the stream's rate.
        block_size: frames per :meth:`process` call (pyo's fixed buffer size).
        channels: mic channels, 1 (mono, sent to both outputs) or 2.
        gate_db: gate threshold in dBFS: quieter input is muted (stage noise, spill).
        comp_threshold_db, comp_ratio: compressor threshold (dBFS) and ratio.
        reverb_size: 0..1 room size; reverb_mix: 0 dry .. 1 wet.
        level_db: level of the mic in the output.

    Threads: construct and :meth:`close` on a control thread; :meth:`process` on the audio
    thread only; :meth:`set_level_db` from any thread (pyo's setters take the GIL, and pyo reads
    the value at the next block).
    """

    def __init__(self, sample_rate: int, block_size: int, *, channels: int = 1,
                 gate_db: float = -45.0, comp_threshold_db: float = -18.0,
                 comp_ratio: float = 3.0, reverb_size: float = 0.7, reverb_mix: float = 0.25,
                 level_db: float = 0.0):
        if channels not in (1, 2):
            raise ValueError(f"a mic has 1 or 2 channels, got {channels}")
        if not 16 <= block_size <= 8192:
            raise ValueError(f"the mic chain needs a fixed block of 16..8192 frames, got "
                             f"{block_size}; pass --block N (not 0)")
        pyo = _pyo()
        self.sample_rate, self.block_size = int(sample_rate), int(block_size)
        self.channels = channels
        self.server = s = pyo.Server(sr=self.sample_rate, nchnls=2, ichnls=channels,
                                     buffersize=self.block_size, duplex=1, audio="manual",
                                     midi="none", verbosity=1)
        s.boot()
        src = pyo.Input(chnl=[0, 0] if channels == 1 else [0, 1])
        # look-ahead: one sample. pyo reads its look-ahead line before writing it, so 0 ms
        # (or anything under a sample) means a whole 25 ms buffer of delay, not none
        ahead_ms = 1.5e3 / self.sample_rate
        self._gate = pyo.Gate(src, thresh=gate_db, risetime=0.002, falltime=0.08,
                              lookahead=ahead_ms)
        self._comp = pyo.Compress(self._gate, thresh=comp_threshold_db, ratio=comp_ratio,
                                  risetime=0.005, falltime=0.1, lookahead=ahead_ms, knee=0.5)
        self._verb = pyo.Freeverb(self._comp, size=reverb_size, damp=0.5, bal=reverb_mix,
                                  mul=db_to_gain(level_db))
        self._verb.out()
        self._src = src
        s.start()
        self._process = s._server.process  # the C method; the Python wrapper adds a frame
        nb = self.block_size
        self._in = np.ctypeslib.as_array(
            (ctypes.c_float * (channels * nb)).from_address(int(s.getInputAddr(), 16)))
        self._out = np.ctypeslib.as_array(
            (ctypes.c_float * (2 * nb)).from_address(int(s.getOutputAddr(), 16)))
        self._wet = np.zeros((2, nb), np.float32)
        # pyo fades the server in over its first blocks: run them now, not on air
        zeros = np.zeros((channels, nb), np.float32)
        for _ in range(64):
            self.process(zeros, self._wet.copy())
        self._closed = False

    def set_level_db(self, level_db: float) -> None:
        """Any thread: the mic's level in the output (dB)."""
        self._verb.mul = db_to_gain(level_db)

    def process(self, mic: np.ndarray, out: np.ndarray) -> None:
        """Audio thread: add the processed ``mic`` float32 ``[channels, block_size]`` into
        ``out`` float32 ``[2, block_size]``. No allocation; pyo's work is synchronous."""
        interleave(mic, self._in)
        self._process()
        deinterleave(self._out, self._wet)
        out += self._wet

    def close(self) -> None:
        """Stop pyo's server (after the audio stream has stopped)."""
        if not getattr(self, "_closed", True):
            self._closed = True
            self.server.stop()
            self.server.shutdown()
