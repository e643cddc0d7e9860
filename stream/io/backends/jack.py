"""The JACK backend: a JACK client with an input pair, one output pair per stem, mix and karaoke.

Ports (``N`` is the client name, ``--name``)::

    N:in_L, N:in_R                    audio in: the music to separate
    N:<stem>_L, N:<stem>_R            one pair per stem of the model, in the model's order
                                      (vocals/accompaniment for `center`; vocals, drums, bass,
                                      other for a 4-stem model)
    N:mix_L, N:mix_R                  the stem mixer's bus (gains, mute, solo: MIDI-controlled)
    N:karaoke_L, N:karaoke_R          every stem but vocals, at unity
    N:midi_in                         MIDI control input: the process callback copies each
                                      event's bytes into :attr:`JackHost.midi_ring`; the
                                      control thread (:mod:`livestems.stream.midi.controller`) parses and maps them
    N:midi_out                        MIDI feedback (LEDs, motor faders), with midi_feedback

Latency. Every output lags its input by :attr:`Engine.latency_samples` (the model, its hop,
the host block, and the resamplers when the server's rate is not the model's). It is published
as JACK latency ranges from a latency callback, so JACK-aware hosts (Ardour, Carla, ...) align
the stems with everything else: capture latency of each output = the inputs' capture latency
+ ours; playback latency of each input = the outputs' playback latency + ours. JACK-Client 0.5
has no binding for ``jack_port_set_latency_range`` / ``jack_set_latency_callback`` (its cffi
``jack._lib`` only holds the functions it declares), so :class:`_LatencyApi` declares them in
a second cffi FFI over the very same libjack that JACK-Client loaded, and passes JACK-Client's
client and port pointers across as addresses.

Threads. JACK calls :meth:`JackHost._process` on its process thread (real-time when the
server is); it only copies between the port buffers and the engine's rings, with buffers sized
here. Everything else JACK calls (xrun, shutdown, buffer-size, sample-rate, latency callbacks)
runs on JACK's non-real-time notification thread and only counts or sets flags; the
re-configuration they ask for (a new engine for a new rate or a larger block) is done by
:meth:`JackHost.run` on the main thread, while the process thread plays silence.

Parameters. The host owns one :class:`~livestems.stream.core.params.ParamSet` (:attr:`params`)
for its whole life and attaches it to every engine it builds, so MIDI and the CLI keep
controlling the mix across re-configurations. ``guide.level`` sets the vocals' gain in the
karaoke bus; ``key.shift`` drives the separator's ``set_semitones`` when it has one (a
:class:`~livestems.dsp.pitch.KeyShiftedSeparator`, ``--key``).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

import cffi
import jack
import numpy as np

from livestems.dsp.kernels import db_to_gain

from livestems.stream.core.engine import Engine, karaoke_buses
from livestems.stream.midi.input import EventRing
from livestems.stream.core.params import ParamSet, stem_params
from .common import AudioBackendError, ServerShutdownError, live_stats

__all__ = ["JackHost", "FrameClock", "JackMidiInput", "port_layout", "get_latency_range", "CAPTURE",
           "PLAYBACK"]

CAPTURE, PLAYBACK = 0, 1  # jack_latency_callback_mode_t

# CPython hands the GIL between threads every `switchinterval` seconds (default 5 ms). With a
# 256-frame period at 48 kHz (5.3 ms) the process thread could wait a whole period for the
# worker to let go; 0.5 ms bounds that wait well inside the period.
_SWITCH_INTERVAL_S = 0.0005
_XRUN_GRACE_S = 0.1  # JACK reports spurious xruns right after activation (DESIGN.md)
_MAX_GAP_BLOCKS = 16  # skipped cycles we make up for with silence (longer: just count them)
_FRAME_MASK = 0xFFFFFFFF  # jack_nframes_t wraps at 2**32


class FrameClock:
    """Process thread: where each JACK cycle's block goes in the engine's stream.

    The engine counts samples, so every input block must land at its JACK frame time; when
    the server skipped our process call (an xrun), the frames we never saw are fed as silence
    so that output frame ``t`` stays the estimate for input frame ``t - latency``. But a
    frame time that jumps is not always a skipped cycle: when JACK's thread stalls, it may
    report the *next* cycle's frame time on a late call and the same time again on the next
    call (seen on this VM: ``..., T, T + 2P, T + 2P, T + 3P``; the calls carry the audio of
    ``T + P`` and ``T + 2P``). Filling the jump at once would insert ``P`` zeros that nothing
    can take back: ``P`` samples of output dropped, then ``P`` samples of the model run on
    silence one latency later, and the engine a period ahead of JACK for good.

    So a jump is filled only when the next call confirms it: the block of the call that
    jumped is taken as contiguous with the previous one, and if the next call's frame time
    is still ahead of the stream by the same amount, the skip was real and the silence goes
    in then (the one block in between lands up to a skip early: a glitch either way, since
    those frames were lost). If the next call is back on the contiguous time, the jump was a
    misreport and nothing is inserted. A step backwards, or a jump of more than
    ``max_gap`` frames, cannot be made up for: the stream is re-based on JACK's time and the
    event counted in :attr:`slips`.

    Attributes (read racily by the stats):
        gaps: calls whose frame time was not the expected one.
        repeats: jumps taken back by the next call (misreports: nothing inserted).
        filled: frames of silence fed for confirmed skips.
        slips: backward steps and jumps too large to fill (engine and JACK time now differ).
        first_frame: JACK frame time of the first call (the engine's sample 0).
    """

    def __init__(self, max_gap: int):
        self.max_gap = int(max_gap)
        self.first_frame: int | None = None
        self.gaps = self.repeats = self.filled = self.slips = 0
        self._next = 0  # JACK frame time the next call should report (wrapping)
        self._pending = 0  # an unconfirmed jump seen by the previous call (frames)

    def step(self, t: int, frames: int) -> int:
        """Frames of silence to feed the engine before this call's block (``frames`` at
        frame time ``t``). Integer arithmetic only: safe on the process thread."""
        if self.first_frame is None:
            self.first_frame = t
            self._next = t
        d = (t - self._next) & _FRAME_MASK
        if d >= 1 << 31:
            d -= 1 << 32  # signed distance: negative is a step backwards
        fill = pending = 0
        if d == 0:
            if self._pending:
                self.repeats += 1  # the previous jump was a misreport: nothing to undo
        elif d < 0 or d > self.max_gap:
            self.gaps += 1
            self.slips += 1
            self._next = t  # re-base: JACK's time from here on
        else:
            if self._pending and d >= self._pending:
                fill = self._pending  # confirmed by this call: the skip was real
            if d != fill:
                self.gaps += 1  # a new jump (a confirmation is the same one)
            pending = d - fill  # wait for the next call before filling
        self._pending = pending
        self._next = (self._next + fill + frames) & _FRAME_MASK
        self.filled += fill
        return fill



class _LatencyApi:
    """libjack's latency-range API, which JACK-Client does not bind (see module docstring)."""

    _CDEF = """
        typedef struct { uint32_t min; uint32_t max; } jack_latency_range_t;
        typedef void (*JackLatencyCallback)(int mode, void *arg);
        void jack_port_get_latency_range(void *port, int mode, jack_latency_range_t *range);
        void jack_port_set_latency_range(void *port, int mode, jack_latency_range_t *range);
        int jack_set_latency_callback(void *client, JackLatencyCallback cb, void *arg);
        int jack_recompute_total_latencies(void *client);
    """

    def __init__(self):
        self.ffi = cffi.FFI()
        self.ffi.cdef(self._CDEF)
        self.lib = self.ffi.dlopen(jack._libname)  # the same library JACK-Client uses
        self._range = self.ffi.new("jack_latency_range_t *")

    def ptr(self, jack_cdata):
        """JACK-Client's pointer as a pointer of this FFI (same address)."""
        return self.ffi.cast("void *", int(jack._ffi.cast("uintptr_t", jack_cdata)))

    def get(self, port, mode: int) -> tuple[int, int]:
        self.lib.jack_port_get_latency_range(self.ptr(port._ptr), mode, self._range)
        return int(self._range.min), int(self._range.max)

    def set(self, port, mode: int, lo: int, hi: int) -> None:
        self._range.min, self._range.max = lo, hi
        self.lib.jack_port_set_latency_range(self.ptr(port._ptr), mode, self._range)


_API: _LatencyApi | None = None


def _api() -> _LatencyApi:
    global _API
    if _API is None:
        _API = _LatencyApi()
    return _API


def get_latency_range(port: jack.Port, mode: int) -> tuple[int, int]:
    """``(min, max)`` latency in frames of any JACK port (``mode``: CAPTURE or PLAYBACK)."""
    return _api().get(port, mode)


def port_layout(sources) -> list[str]:
    """Names of the audio output ports for a model with stems ``sources``."""
    names = [f"{s}_{side}" for s in sources for side in ("L", "R")]
    return names + ["mix_L", "mix_R", "karaoke_L", "karaoke_R"]


def _open_client(name: str, servername: str | None) -> jack.Client:
    try:
        return jack.Client(name, servername=servername, no_start_server=True)
    except jack.JackOpenError as exc:
        server = servername or "the default server"
        raise AudioBackendError(
            f"cannot connect to JACK ({server}): no JACK server is running",
            got=str(exc),
            fix=("start one, e.g. `jackd -d alsa -r 48000 -p 256` (a sound card) or "
                 "`jackd --no-realtime -d dummy -r 48000 -p 256` (no hardware)"
                 + (f" with `-n {servername}`" if servername else "")
                 + ", or name a running server with --server"),
        ) from None


class JackHost:
    """Runs an :class:`Engine` as a JACK client (see the module docstring for the ports).

    Args:
        separator: the model (any :mod:`livestems.model.nets.protocol` separator, stereo).
        name: JACK client name (port names are ``name:port``).
        servername: JACK server to join (default: ``$JACK_DEFAULT_SERVER`` or ``default``).
        resample_quality: resampler recipe when the server's rate differs from the model's:
            "LD" (low delay, default) or a soxr recipe (:class:`Engine`).
        crossfade_ms: dry/wet splice time on deadline misses (see :class:`Engine`).
        midi_feedback: also register ``midi_out`` and send what :meth:`send_midi` queues.
        rt_priority: SCHED_FIFO priority for the process thread (see :meth:`_promote`).
        safety_ms: extra latency the model's worker may run late by, ms or ``"auto"``
            (:class:`Engine`).

    Use :meth:`activate`, then :meth:`run` (or your own loop calling :meth:`poll`), then
    :meth:`close`. Raises :class:`AudioBackendError` when there is no server.
    """

    def __init__(self, separator, *, name: str = "livestems", servername: str | None = None,
                 resample_quality: str = "LD", crossfade_ms: float = 2.0,
                 midi_feedback: bool = False, rt_priority: int | None = None,
                 safety_ms: float | str = 0.0):
        if separator.channels != 2:
            raise AudioBackendError("the JACK client is stereo", expected="a 2-channel model",
                                    got=f"{separator.channels} channels")
        self.separator = separator
        self.resample_quality = resample_quality
        self.crossfade_ms = crossfade_ms
        self.safety_ms = safety_ms  # ms, or "auto": measured by the first engine, then kept
        self.client = _open_client(name, servername)
        self.name = self.client.name
        self.servername = servername
        self.sources = tuple(separator.sources)
        self.xruns = 0
        self.xruns_after_grace = 0
        self.max_xrun_delay_us = 0.0
        self.midi_events = 0
        self.shutdown_reason: str | None = None
        self.shutdown_event = threading.Event()
        self._reconfigure: tuple[int, int] | None = None
        self._activated_at: float | None = None
        # SCHED_FIFO priority for our process thread under a non-real-time server (see
        # _promote); None or 0: leave it a normal thread
        self._rt_request = rt_priority
        self.rt_priority = 0  # what the process thread got (0: normal scheduling)
        self.rt_error: str | None = None
        self._promoted = False
        self._closed = False
        self._error_shown = False
        self.params = ParamSet(stem_params(self.sources))
        if "vocals" in self.sources:
            self.params.watch("guide.level", self._apply_guide)
        if hasattr(separator, "set_semitones"):  # a KeyShiftedSeparator (dsp/pitch.py)
            self.params.set("key.shift", separator.semitones)
            self.params.watch("key.shift", separator.set_semitones)
        self.midi_ring = EventRing(1024)
        self.midi_out = None
        self.midi_out_ring = EventRing(256)
        self.midi_out_dropped = 0
        self.graph_changes = 0  # bumped by JACK when ports come, go, connect or disconnect
        try:
            self.inports = [self.client.inports.register(p) for p in ("in_L", "in_R")]
            self.outports = [self.client.outports.register(p) for p in port_layout(self.sources)]
            self.midi_in = self.client.midi_inports.register("midi_in")
            if midi_feedback:
                self.midi_out = self.client.midi_outports.register("midi_out")
            self._engine: Engine | None = None
            self._install(self._build(self.client.samplerate, self.client.blocksize))
            self.client.set_process_callback(self._process)
            self.client.set_xrun_callback(self._on_xrun)
            self.client.set_shutdown_callback(self._on_shutdown)
            self.client.set_blocksize_callback(self._on_blocksize)
            self.client.set_samplerate_callback(self._on_samplerate)
            self.client.set_port_registration_callback(self._on_graph_change)
            self.client.set_port_connect_callback(self._on_graph_change)
            api = _api()
            self._latency_cb = api.ffi.callback("void(int, void *)", self._on_latency)
            rc = api.lib.jack_set_latency_callback(api.ptr(self.client._ptr), self._latency_cb,
                                                   api.ffi.NULL)
            if rc:
                raise AudioBackendError(f"jack_set_latency_callback failed (code {rc})")
        except BaseException:
            self.client.close()
            raise

    # -- configuration (main thread) -------------------------------------------------------
    def _build(self, rate: int, blocksize: int) -> Engine:
        """A new engine for ``rate`` / ``blocksize`` and its callback buffers, warmed up."""
        eng = Engine(self.separator, block_size=blocksize, io_rate=rate,
                     resample_quality=self.resample_quality, crossfade_ms=self.crossfade_ms,
                     buses=karaoke_buses(self.sources), safety_ms=self.safety_ms)
        s = len(self.sources)
        eng._cb = (  # the process callback's buffers, kept with the engine they fit
            np.zeros((2, blocksize), np.float32),
            np.zeros((2, blocksize), np.float32),
            np.zeros((s, 2, blocksize), np.float32),
            np.zeros((1, 2, blocksize), np.float32),
        )
        if self.safety_ms == "auto":  # measured once; later engines keep the same margin
            self.safety_ms = eng.safety_ms
        eng._clock = FrameClock(_MAX_GAP_BLOCKS * blocksize)  # JACK time -> engine stream
        # one block through every path now, so no first-call cost lands on the audio thread
        inbuf, mix, stems, buses = eng._cb
        eng.push(inbuf)
        eng.run_pending()
        eng.pull_into(mix, stems, buses)
        eng.push(inbuf[:, : blocksize // 2 or 1])
        eng.pull_into(mix[:, : blocksize // 2 or 1], stems[:, :, : blocksize // 2 or 1],
                      buses[:, :, : blocksize // 2 or 1])
        eng.reset()
        eng.mixer.attach(self.params)  # the host's parameters, current values, no ramp
        eng.mixer.snap()
        self._apply_guide(self.params.get("guide.level"), eng)
        return eng

    def _apply_guide(self, level_db: float, eng: Engine | None = None) -> None:
        """Control thread (a ``guide.level`` change) or main thread (a new engine)."""
        eng = eng or self._engine
        if eng is not None and "vocals" in self.sources:
            eng.set_bus_gain("karaoke", "vocals", float(db_to_gain(level_db)))

    def send_midi(self, data: bytes) -> bool:
        """Control thread: queue one MIDI message for ``midi_out`` (False: dropped)."""
        return self.midi_out is not None and self.midi_out_ring.put_message(data)

    def _install(self, eng: Engine) -> None:
        inbuf, mix, stems, buses = eng._cb
        # output port k <- this row of the callback buffers
        self._rows = [stems[i, ch] for i in range(len(self.sources)) for ch in (0, 1)]
        self._rows += [mix[0], mix[1], buses[0, 0], buses[0, 1]]
        self._blocksize = eng.block_size
        self._engine = eng

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def latency_samples(self) -> int:
        return self._engine.latency_samples

    def activate(self) -> "JackHost":
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        # everything built so far lives for the whole run: move it out of the collector's
        # view so a full collection (which can run inside the process callback) stays short
        gc.collect()
        gc.freeze()
        self._engine.start()
        self._activated_at = time.monotonic()
        self.client.activate()
        return self

    def connect_input(self, source: str) -> list[tuple[str, str]]:
        """Connect ``source`` to in_L/in_R; returns the connections made.

        ``source``: a client name (its first two audio outputs, e.g. ``system`` for the
        capture ports), ``PORT_L,PORT_R``, or one port (fed to both inputs).
        """
        outs = self._resolve(source, is_output=True)
        pairs = [(outs[0].name, self.inports[0].name),
                 (outs[min(1, len(outs) - 1)].name, self.inports[1].name)]
        for a, b in pairs:
            self.client.connect(a, b)
        return pairs

    def connect_output(self, dest: str, ports: tuple[str, str] = ("karaoke_L", "karaoke_R")):
        """Connect our ``ports`` pair to ``dest`` (a client name or ``PORT_L,PORT_R``)."""
        ins = self._resolve(dest, is_output=False)
        mine = {p.shortname: p for p in self.outports}
        pairs = [(mine[ports[0]].name, ins[0].name),
                 (mine[ports[1]].name, ins[min(1, len(ins) - 1)].name)]
        for a, b in pairs:
            self.client.connect(a, b)
        return pairs

    def _resolve(self, spec: str, *, is_output: bool) -> list[jack.Port]:
        kind = "output" if is_output else "input"
        names = [s.strip() for s in spec.split(",") if s.strip()]
        found = []
        for n in names:
            if ":" in n:
                ports = [p for p in self.client.get_ports(is_audio=True, is_output=is_output,
                                                          is_input=not is_output)
                         if p.name == n]
            else:  # a client name: its audio ports of the right direction, in order
                ports = [p for p in self.client.get_ports(is_audio=True, is_output=is_output,
                                                          is_input=not is_output)
                         if p.name.split(":", 1)[0] == n][:2]
            if not ports:
                have = [p.name for p in self.client.get_ports(
                    is_audio=True, is_output=is_output, is_input=not is_output)
                        if not p.name.startswith(self.name + ":")]
                raise AudioBackendError(
                    f"no JACK audio {kind} port or client named {n!r}",
                    expected=f"one of: {', '.join(have) or '(none)'}",
                    got=n,
                    fix="check the name with `jack_lsp`; a client name picks its first two "
                        "ports",
                )
            found += ports
        return found

    def poll(self) -> None:
        """Main thread: carry out a re-configuration the notification thread asked for."""
        req = self._reconfigure
        if req is None or self.shutdown_event.is_set():
            return
        rate, blocksize = req
        old = self._engine
        eng = self._build(rate, blocksize)
        self._engine = None  # the process thread plays silence from here...
        old.stop()
        self._install(eng)  # ...to here
        eng.start()
        self._reconfigure = None
        _api().lib.jack_recompute_total_latencies(_api().ptr(self.client._ptr))

    def run(self, seconds: float | None = None, tick=None, tick_s: float = 0.1) -> None:
        """Main thread: serve until ``seconds`` pass, ``tick()`` returns False, or the server
        shuts down (then :class:`ServerShutdownError`)."""
        end = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.shutdown_event.wait(tick_s):
                raise ServerShutdownError(
                    "the JACK server shut down while livestems was running",
                    got=self.shutdown_reason or "no reason given",
                    fix="restart jackd, then livestems jack")
            self.poll()
            err = self._engine.worker_error if self._engine is not None else None
            if err is not None and not self._error_shown and tick is None:
                self._error_shown = True  # once; the view shows it on its own screen
                print(f"model error, playing the dry input from now on: {err}",
                      file=sys.stderr, flush=True)
            if tick is not None and tick() is False:
                return
            if end is not None and time.monotonic() >= end:
                return

    def levels(self) -> dict[str, float]:
        """Peak level of the last block per output pair (racy read; for meters only)."""
        eng = self._engine
        if eng is None:
            return {}
        _, mix, stems, buses = eng._cb
        out = {s: float(np.abs(stems[i]).max()) for i, s in enumerate(self.sources)}
        out["mix"] = float(np.abs(mix).max())
        out["karaoke"] = float(np.abs(buses[0]).max())
        return out

    def stats(self) -> dict:
        eng = self._engine
        clock = eng._clock
        return live_stats(
            eng, backend="jack", client=self.name, xruns=self.xruns,
            xruns_after_grace=self.xruns_after_grace,
            max_xrun_delay_us=round(self.max_xrun_delay_us, 1), midi_events=self.midi_events,
            midi_dropped=self.midi_ring.dropped, midi_out_dropped=self.midi_out_dropped,
            frame_gaps=clock.gaps, frame_repeats=clock.repeats, frames_filled=clock.filled,
            frame_slips=clock.slips, first_frame=clock.first_frame,
            process_thread_rt_priority=self.rt_priority, process_thread_rt_error=self.rt_error,
            ports=[p.name for p in self.outports],
            shutdown_reason=self.shutdown_reason,
        )

    def close(self) -> None:
        """Deactivate and close (also after a server shutdown); idempotent."""
        if self._closed:
            return
        self._closed = True
        gc.unfreeze()  # let the collector reclaim the client, engine and resamplers again
        eng = self._engine
        if eng is not None:
            eng.stop()
        if self.shutdown_event.is_set():
            return  # the server is gone: closing the client can block in libjack; we exit
        try:
            self.client.deactivate()
        except jack.JackError:
            pass
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- JACK's process thread -------------------------------------------------------------
    def _process(self, frames: int) -> None:
        """JACK process thread: copy in -> engine -> copy out. No locks, no logging, no
        raising, no buffers allocated (numpy makes small view objects around JACK's port
        buffers; that is CPython object churn, not audio-sized memory)."""
        if not self._promoted:
            self._promote()
        eng = self._engine
        outs = self.outports
        if eng is None or frames > self._blocksize:  # re-configuring: silence until ready
            for p in outs:
                p.get_array()[:] = 0.0
            return
        t = self.client.last_frame_time
        rows = self._cycle(eng, t, frames, self.inports[0].get_array(),
                           self.inports[1].get_array())
        if frames == eng.block_size:
            for k in range(len(outs)):
                outs[k].get_array()[:] = rows[k]
        else:
            for k in range(len(outs)):
                outs[k].get_array()[:] = rows[k][:frames]
        if self.midi_in.number_of_connections:
            ring = self.midi_ring
            for offset, buf in self.midi_in.incoming_midi_events():
                self.midi_events += 1
                ring.put(t + offset, buf)  # copies the bytes; parsed on the control thread
        out = self.midi_out
        if out is not None:
            out.clear_buffer()  # every cycle: the port's buffer is ours to reset
            ring = self.midi_out_ring
            while ring.readable():
                _, data = ring.get()
                try:
                    out.write_midi_event(0, data)
                except jack.JackError:  # the buffer is full this cycle: drop, count
                    self.midi_out_dropped += 1

    def _cycle(self, eng: Engine, t: int, frames: int, in_l, in_r) -> list:
        """Process thread: one cycle of ``frames`` (<= the engine's block) at JACK frame time
        ``t``: silence for confirmed skipped cycles (:class:`FrameClock`), the inputs
        ``in_l``/``in_r`` (float32 ``[frames]``) in, one block out. Returns the output rows
        (float32 ``[>= frames]`` each, in :func:`port_layout` order), valid until the next
        call. Copies only."""
        inbuf, mix, stems, buses = eng._cb
        gap = eng._clock.step(t, frames)
        if gap:
            inbuf[:] = 0.0
            while gap > 0:
                k = min(gap, eng.block_size)
                eng.push(inbuf[:, :k])
                eng.pull_into(mix[:, :k], stems[:, :, :k], buses[:, :, :k])
                gap -= k
        if frames == eng.block_size:
            inbuf[0] = in_l
            inbuf[1] = in_r
            eng.push(inbuf)
            eng.pull_into(mix, stems, buses)
        else:  # a smaller block than configured (allowed: latency stays the same)
            inbuf[0, :frames] = in_l
            inbuf[1, :frames] = in_r
            eng.push(inbuf[:, :frames])
            eng.pull_into(mix[:, :frames], stems[:, :, :frames], buses[:, :, :frames])
        return self._rows

    def _promote(self) -> None:
        """Process thread, first cycle only: ask for SCHED_FIFO for this thread.

        A real-time jackd gives its clients' process threads real-time priority itself; a
        ``--no-realtime`` server gives none, and then any busy thread of the machine (our own
        model worker included) can delay a cycle past its deadline: an xrun. Linux applies
        ``sched_setscheduler(0, ...)`` to the calling thread only. Without the right (root,
        CAP_SYS_NICE or an rtprio limit) the call fails and the thread stays as it was; the
        reason is kept in :attr:`rt_error` and shown in the stats. One system call, once."""
        self._promoted = True
        want = self._rt_request or 0
        if want <= 0 or self.client.realtime:  # a real-time server has set it already
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(want)))
            self.rt_priority = int(want)
        except (OSError, AttributeError, ValueError) as exc:
            self.rt_error = f"{type(exc).__name__}: {exc}"

    # -- JACK's notification thread --------------------------------------------------------
    def _on_xrun(self, delayed_usecs: float) -> None:
        """Notification thread: count it (and separately once past the start-up grace)."""
        self.xruns += 1
        self.max_xrun_delay_us = max(self.max_xrun_delay_us, float(delayed_usecs))
        if self._activated_at is not None and \
                time.monotonic() - self._activated_at > _XRUN_GRACE_S:
            self.xruns_after_grace += 1

    def _on_graph_change(self, *args) -> None:
        """Notification thread: a port came or went, or a connection changed (the MIDI
        source watcher re-checks only then)."""
        self.graph_changes += 1

    def _on_shutdown(self, status, reason: str) -> None:
        """JACK's thread, like a signal handler: record why and wake the main thread."""
        self.shutdown_reason = reason
        self.shutdown_event.set()

    def _on_blocksize(self, blocksize: int) -> None:
        """Notification thread: a smaller block fits the engine; a larger one needs a new
        engine, built by :meth:`poll` on the main thread."""
        eng = self._engine
        if eng is not None and blocksize <= eng.block_size and self._reconfigure is None:
            return
        self._reconfigure = (self.client.samplerate, blocksize)

    def _on_samplerate(self, rate: int) -> None:
        """Notification thread: a new rate needs new resamplers and latency: ask :meth:`poll`."""
        eng = self._engine
        if eng is not None and rate == eng.sample_rate and self._reconfigure is None:
            return
        self._reconfigure = (rate, self.client.blocksize)
        # the frames still in flight are at the old rate: no silence gap logic needed, the
        # process callback plays silence while _engine is None

    def _on_latency(self, mode: int, arg) -> None:
        """Notification thread: publish our latency added to our neighbours' ranges."""
        try:
            api = _api()
            eng = self._engine
            ours = self._published_latency(eng)
            if mode == CAPTURE:
                lo, hi = self._combine(self.inports, CAPTURE)
                for p in self.outports:
                    api.set(p, CAPTURE, lo + ours, hi + ours)
            else:
                lo, hi = self._combine(self.outports, PLAYBACK)
                for p in self.inports:
                    api.set(p, PLAYBACK, lo + ours, hi + ours)
        except Exception as exc:  # noqa: BLE001 - a C callback must not raise
            self.latency_error = f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _published_latency(eng) -> int:
        return 0 if eng is None else eng.latency_samples  # None: mid re-configuration

    @staticmethod
    def _combine(ports, mode) -> tuple[int, int]:
        ranges = [_api().get(p, mode) for p in ports]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)


class JackMidiInput:
    """Control-thread side of :attr:`JackHost.midi_ring`: a MIDI source for
    :class:`~livestems.stream.midi.controller.MidiController` that also keeps ``midi_in`` connected.

    Args:
        host: the running :class:`JackHost`.
        connect: sources to keep connected: a full port name, a client name (all its MIDI
            outputs) or text contained in a port name (case insensitive).

    Sources connected by hand (a patchbay, ``jack_connect``) are remembered too. When a
    remembered source's port disappears, :meth:`check` reports that control was lost (the
    audio goes on) and reconnects the port when it comes back; a source disconnected by hand
    while its port still exists is forgotten.
    """

    def __init__(self, host: "JackHost", connect=()):
        self.host = host
        self.patterns = [c for c in connect if c]
        self.remembered: set[str] = set()
        self.lost: set[str] = set()
        self.last_frame = -1
        self._seen_changes = -1
        self._last_full = 0.0
        #: ``wait(timeout) -> bool`` when the host's ring can wake the control thread (the C
        #: callback's eventfd), else None: the controller then polls
        self.wait = getattr(host.midi_ring, "wait", None)

    def _sources(self) -> list[str]:
        own = self.host.name + ":"
        return [p.name for p in self.host.client.get_ports(is_midi=True, is_output=True)
                if not p.name.startswith(own)]

    def resolve(self, pattern: str, sources=None) -> list[str]:
        """The MIDI output ports ``pattern`` names (see the class docstring)."""
        sources = self._sources() if sources is None else sources
        if pattern in sources:
            return [pattern]
        by_client = [s for s in sources if s.split(":", 1)[0] == pattern]
        return by_client or [s for s in sources if pattern.lower() in s.lower()]

    def read(self) -> list[bytes]:
        out = []
        while True:
            item = self.host.midi_ring.get()
            if item is None:
                return out
            self.last_frame = item[0]
            out.append(item[1])

    def check(self) -> list[str]:
        """Connect what should be connected; report ports lost and restored. Cheap unless
        the JACK graph changed (or every 2 s, in case a notification was missed)."""
        changes, now = self.host.graph_changes, time.monotonic()
        if changes == self._seen_changes and now - self._last_full < 2.0:
            return []
        self._seen_changes, self._last_full = changes, now
        client, port = self.host.client, self.host.midi_in
        notes = []
        sources = set(self._sources())
        current = {p.name for p in client.get_all_connections(port)}
        for pattern in self.patterns:
            self.remembered.update(self.resolve(pattern, sources))
        for name in sorted(current - self.remembered):
            self.remembered.add(name)  # connected by hand
        for name in sorted(self.remembered):
            if name in current:
                if name in self.lost:
                    self.lost.discard(name)
                    notes.append(f"MIDI control restored: {name} is back")
            elif name in sources:
                if name in self.lost or any(name in self.resolve(p, sources)
                                            for p in self.patterns):
                    try:
                        client.connect(name, port)
                    except jack.JackError as exc:
                        notes.append(f"cannot connect {name} -> {port.name}: {exc}")
                        continue
                    if name in self.lost:
                        self.lost.discard(name)
                        notes.append(f"MIDI control restored: {name} reconnected")
                else:  # disconnected by hand while it still exists: forget it
                    self.remembered.discard(name)
            elif name not in self.lost:
                self.lost.add(name)
                notes.append(f"MIDI control lost: {name} disappeared; audio continues; "
                             f"reconnecting when it returns")
        return notes
