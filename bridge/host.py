"""The Python half of liblivestems.so: builds the engine over C rings and runs its worker.

``livestems_create`` (C, ``src/ls_core.c``) calls :func:`create` through cffi with the GIL
taken on the creating thread; :func:`destroy` is called by ``livestems_destroy``. Nothing
here ever runs on the host's audio thread.

:class:`BridgeEngine` is :class:`~livestems.stream.core.engine.Engine` with the three rings that
the audio side touches (input, wet output, dry history) replaced by :class:`CRing`: numpy
views of C memory whose read and write counters are C11 atomics. The engine's worker code
(``run_pending``, resampling, the mixer, the karaoke bus) runs unchanged on them; the audio
side (``Engine.push`` / ``pull_into``) is replaced by its C port, ``livestems_process``. So
latency, the queue pre-fill and the dry fallback are the engine's own, and the bridge gives
the same samples as ``livestems separate`` and the Python JACK app.

Couplings to Engine internals, all listed here so a change to engine.py finds them: the
attributes ``_in``, ``_wet``, ``_dry`` (rings), ``_q`` (the audio side's output position,
read by the worker to skip hops already played dry), ``_decay`` / ``_xfade_len`` (splice
geometry), ``_render`` (the per-hop render, where parameters are applied) and ``_times``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

import numpy as np

from livestems.stream.core.engine import _RUNNING, Engine
from livestems.stream.core.ring import _copy_in, _copy_out

__all__ = ["BridgeEngine", "CRing", "create", "destroy"]

# livestems_status (include/livestems.h)
OK, ERR_CHANNELS, ERR_MODEL, ERR_PYTHON, ERR_CONFIG = 0, -5, -7, -8, -9
FLAG_VERBOSE = 2
FLAG_RT_WORKER = 4
_RT_WORKER_PRIORITY = 5  # below JACK's own threads (typically 70+) when jackd runs real-time
RING_IN, RING_WET, RING_DRY = 0, 1, 2

_LIVE: dict[int, "BridgeEngine"] = {}  # handle address -> engine (keeps it alive)
_LIVE_LOCK = threading.Lock()


class CRing:
    """The :class:`~livestems.stream.core.ring.Ring` interface over a ring that lives in C.

    The samples are a numpy view ``[rows, capacity]`` of the C buffer; the copies are the
    same numba kernels Ring uses. The counters are the C side's atomics: a load is an
    acquire, a store a release, so the C reader never sees a counter before the samples
    it covers. One producer and one consumer, as for Ring; here one of them is C.
    """

    def __init__(self, ffi, lib, h, which: int):
        self._lib, self._h, self._which = lib, h, which
        self.channels = int(lib.ls__ring_rows(h, which))
        self.capacity = int(lib.ls__ring_capacity(h, which))
        self._mask = self.capacity - 1
        n = self.channels * self.capacity
        self.array = np.frombuffer(ffi.buffer(lib.ls__ring_buffer(h, which), 4 * n),
                                   dtype=np.float32).reshape(self.channels, self.capacity)

    @property
    def write_count(self) -> int:
        return self._lib.ls__ring_load(self._h, self._which, 0)

    @property
    def read_count(self) -> int:
        return self._lib.ls__ring_load(self._h, self._which, 1)

    def readable(self) -> int:
        return self.write_count - self.read_count

    def writable(self) -> int:
        return self.capacity - self.readable()

    def write(self, x: np.ndarray, start: int = 0, n: int | None = None) -> int:
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"CRing.write expects float32 [{self.channels}, n], "
                             f"got {x.dtype} {x.shape}")
        w = self.write_count
        if n is None:
            n = x.shape[1] - start
        n = min(n, self.capacity - (w - self.read_count))
        if n > 0:
            _copy_in(self.array, self._mask, w & self._mask, x, start, n)
            self._lib.ls__ring_store(self._h, self._which, 0, w + n)  # publish after the copy
        return n

    def peek(self, out: np.ndarray, start: int = 0, n: int | None = None) -> int:
        if out.dtype != np.float32 or out.ndim != 2 or out.shape[0] != self.channels:
            raise ValueError(f"CRing.read expects a float32 [{self.channels}, n] output, "
                             f"got {out.dtype} {out.shape}")
        r = self.read_count
        if n is None:
            n = out.shape[1] - start
        n = min(n, self.write_count - r)
        if n > 0:
            _copy_out(self.array, self._mask, r & self._mask, out, start, n)
        return n

    def read(self, out: np.ndarray, start: int = 0, n: int | None = None) -> int:
        n = self.peek(out, start, n)
        if n > 0:
            self._lib.ls__ring_store(self._h, self._which, 1, self.read_count + n)
        return n

    def skip(self, n: int) -> int:
        r = self.read_count
        n = min(n, self.write_count - r)
        if n > 0:
            self._lib.ls__ring_store(self._h, self._which, 1, r + n)
        return n

    def reset(self) -> None:
        """Only while the C side cannot run process() (during creation)."""
        self._lib.ls__ring_reset(self._h, self._which)


class BridgeEngine(Engine):
    """An :class:`Engine` whose audio side is ``livestems_process`` (C) on the rings of ``h``.

    Built by :func:`create`; takes the same keyword arguments as Engine.
    """

    def __init__(self, separator, ffi, lib, h, **kwargs):
        self._lib, self._h = lib, h
        self._param_gen = -1  # Engine's warm-up already renders a hop (and syncs parameters)
        self._worst_ns = 0
        super().__init__(separator, **kwargs)
        s = len(self.sources)
        rc = lib.ls__configure(h, s, len(self.bus_names), self._in.capacity,
                               self._wet.capacity, self._dry.capacity, self.latency_samples,
                               self.model_rate, self.hop, self._decay, self._xfade_len)
        if rc != OK:
            raise _CreateError(rc, None)
        for i, name in enumerate(self.sources):
            lib.ls__set_stem_name(h, i, name.encode())
        self._in = CRing(ffi, lib, h, RING_IN)
        self._wet = CRing(ffi, lib, h, RING_WET)
        self._dry = CRing(ffi, lib, h, RING_DRY)
        self.reset()  # pre-fills the C wet ring (the queue) and the C dry ring (the latency)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the audio side's output position lives in C; Engine.reset() assigns 0 to it, which
    # the C side already is at creation, so the setter has nothing to do
    @property
    def _q(self) -> int:
        return self._lib.ls__audio_pos(self._h)

    @_q.setter
    def _q(self, value: int) -> None:
        pass

    def _sync_params(self) -> None:
        """Worker: copy the C parameters into the mixer when the host changed any."""
        lib, h = self._lib, self._h
        gen = lib.ls__param_gen(h)
        if gen == self._param_gen:
            return
        self._param_gen = gen
        for i, stem in enumerate(self.sources):
            self.mixer.set_gain_db(stem, lib.ls__param_value(h, 4 * i))
            self.mixer.set_mute(stem, lib.ls__param_value(h, 4 * i + 1) >= 0.5)
            self.mixer.set_solo(stem, lib.ls__param_value(h, 4 * i + 2) >= 0.5)
        if getattr(self, "hops_processed", 0) == 0:  # set before any audio (a host restoring
            self.mixer.snap()  # its state, or Engine's warm-up): no fade from the defaults

    def _render(self, y2: np.ndarray) -> None:
        self._sync_params()
        super()._render(y2)

    # -- the worker thread ----------------------------------------------------------------
    def start(self) -> "BridgeEngine":
        self.limit_torch_threads()  # as Engine.start: one intra-op thread per hop step
        if self._thread is None:
            _RUNNING.add(self)  # stopped at interpreter exit if the host never destroys us
            self._stop.clear()
            self._thread = threading.Thread(target=self._worker, name="livestems-bridge",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        _RUNNING.discard(self)

    def _worker(self) -> None:
        lib, h = self._lib, self._h
        if lib.ls__cfg_flags(h) & FLAG_RT_WORKER:
            # Linux applies sched_setscheduler(0, ...) to the calling thread only. Without
            # CAP_SYS_NICE / rtprio this fails, and the worker stays a normal thread.
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_RT_WORKER_PRIORITY))
            except (OSError, AttributeError):
                pass
        failed = False
        while not self._stop.is_set():
            try:
                done = self.run_pending()
            except Exception as exc:  # noqa: BLE001 - a bug here must not kill the host
                self.worker_error = f"{type(exc).__name__}: {exc}"
                done = 0
            if self.worker_error is not None and not failed:
                failed = True  # process() plays the dry path; offline waits stop waiting
                lib.ls__set_worker_failed(h)
            if done:
                self._publish()
            else:
                time.sleep(self._poll_s)

    def _publish(self) -> None:
        k = self.hops_processed
        last_ns = int(self._times[(k - 1) % len(self._times)] * 1e9) if k else 0
        self._worst_ns = max(self._worst_ns, last_ns)
        self._lib.ls__publish(self._h, k, self.hops_skipped, self.nonfinite_samples,
                              last_ns, self._worst_ns)


class _CreateError(Exception):
    def __init__(self, code: int, message: str | None):
        super().__init__(message)
        self.code, self.message = code, message


def _configure(ffi, lib, h) -> BridgeEngine:
    from livestems.model.nets.registry import ModelError, load_separator
    from livestems.stream.core.engine import karaoke_buses

    model = ffi.string(lib.ls__cfg_model(h)).decode("utf-8", "replace") or None
    rate = float(lib.ls__cfg_rate(h))
    channels = int(lib.ls__cfg_channels(h))
    # "replace": bytes that are not UTF-8 are a bad quality (ERR_CONFIG), not a Python error
    quality = ffi.string(lib.ls__cfg_quality(h)).decode("utf-8", "replace")
    if quality not in ("HQ", "LQ", "VHQ", "MQ", "QQ", "LD"):
        raise _CreateError(ERR_CONFIG, f"resample_quality must be HQ, LQ, VHQ, MQ, QQ or LD "
                                       f"(low delay), got {quality!r}")
    try:
        sep = load_separator(model)
    except (ModelError, OSError, ValueError) as exc:
        raise _CreateError(ERR_MODEL, f"cannot load model {model or '(default)'}: {exc}") \
            from None
    if sep.channels != channels:
        raise _CreateError(ERR_CHANNELS, f"the model takes {sep.channels} input channels, "
                                         f"the host asked for {channels}; pass "
                                         f"in_channels = {sep.channels}")
    return BridgeEngine(sep, ffi, lib, h, block_size=int(lib.ls__cfg_max_block(h)),
                        io_rate=int(rate), resample_quality=quality,
                        buses=karaoke_buses(sep.sources),
                        safety_ms=float(lib.ls__cfg_safety_ms(h)))


def create(ffi, lib, h) -> int:
    """Called by ``livestems_create``: load the model, size the C rings, start the worker.

    Returns a livestems_status; on error the message is in the handle, and a traceback goes
    to stderr only with LIVESTEMS_FLAG_VERBOSE.
    """
    try:
        eng = _configure(ffi, lib, h)
        with _LIVE_LOCK:
            _LIVE[int(ffi.cast("uintptr_t", h))] = eng
        # CPython hands the GIL over every switchinterval (5 ms by default): long enough
        # for another Python thread of the host to delay the worker by a whole block
        if sys.getswitchinterval() > 0.0005:
            sys.setswitchinterval(0.0005)
        eng.start()
        return OK
    except _CreateError as exc:
        if exc.message:
            lib.ls__set_error(h, exc.message.encode("utf-8", "replace"))
        return exc.code
    except BaseException as exc:  # noqa: BLE001 - becomes an error string for the host
        if lib.ls__cfg_flags(h) & FLAG_VERBOSE:
            traceback.print_exc()
        msg = f"{type(exc).__name__}: {exc}"
        lib.ls__set_error(h, msg.encode("utf-8", "replace"))
        return ERR_PYTHON


def destroy(ffi, lib, h) -> int:
    """Called by ``livestems_destroy``: stop the worker; drop every view of the C memory."""
    with _LIVE_LOCK:
        eng = _LIVE.pop(int(ffi.cast("uintptr_t", h)), None)
    if eng is not None:
        eng.stop()
        eng._in = eng._wet = eng._dry = None  # the C side frees that memory next
    return OK
