"""`livestems jack`'s C callback (its default when the bridge library is built): JACK's process
callback in C, never waiting for Python.

:class:`~livestems.stream.io.backends.jack.JackHost` runs JACK's process callback in Python: each
cycle needs the GIL, so a Python thread that holds it (the model worker between two releases,
the garbage collector, a C extension that does not release it) can make JACK's thread wait
into an xrun. :class:`NativeJackHost` keeps the same client, ports and latency ranges (through
JACK-Client, on the main and notification threads), but hands JACK a C callback (compiled
once with cffi, :func:`_proc_lib`) that copies the port buffers into the engine of the C API
(``liblivestems.so``, ``bridge/``, the library the C++ shim and the plugin use) through its
lock-free C rings, with ``livestems_process``, which never takes the GIL. The engine's worker
is Python, in this same interpreter (the embedded library reuses it).

Threads. JACK's process thread: ``ls_jack_process`` (C: port buffers, MIDI events into a C
ring, ``livestems_process``, counters; no Python, no locks, no allocation).
Notification thread: JACK-Client's Python callbacks (xrun, shutdown, buffer size, sample rate,
latency), which only count and set flags. Main thread: :meth:`NativeJackHost.run` rebuilds the
engine for a new period or rate (a new handle, swapped in with an atomic store; the old one is
destroyed after the process thread has finished two cycles with the new one).

MIDI. The C callback copies ``midi_in``'s events into a single-producer single-consumer ring
(:class:`_MidiRing`) that the Python MIDI controller reads, as with the Python host, and the
host's :class:`~livestems.stream.core.params.ParamSet` drives the mixer of the C API's engine
(a Python :class:`~livestems.bridge.host.BridgeEngine` in this interpreter), so ``--map`` files
work the same. ``midi="capi"`` hands the events to ``livestems_midi`` instead (the C API's
fixed mapping: MIDI channel k drives stem k, CC 7 gain, CC 20 mute, CC 21 solo). Not on this
path (yet): MIDI feedback and ``--key``.

JACK frame times map to the engine's stream as in the
Python host (:class:`~livestems.stream.io.backends.jack.FrameClock`, ported to C:
``ls_jack_frame_step``): a repeated frame time inserts nothing, a confirmed skipped cycle is
fed as silence.

Needs ``make -C bridge`` (``bridge/build/liblivestems.so``) and libjack's headers.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from pathlib import Path

import cffi
import jack

from livestems.dsp.kernels import db_to_gain

from livestems.stream.core.params import ParamSet, stem_params
from .common import AudioBackendError, ServerShutdownError, live_stats
from .jack import CAPTURE, _api, _open_client, port_layout

__all__ = ["NativeJackHost", "library_path"]

_MAX_OUT = 64
_SCRATCH = 4096  # frames per call when feeding a skipped cycle's silence
_PROC_CDEF = """
    typedef struct {
        void *client;
        void *in[2];
        void *out[64];
        uint32_t n_out;
        void *midi_in;
        void *handle;
        uint32_t max_block;
        void *process_fn;
        void *midi_fn;
        uint64_t cycles, errors, silent_cycles, midi_events;
        int64_t first_frame;
        int64_t clk_next, clk_pending;
        uint32_t clk_started, max_gap;
        uint64_t frame_gaps, frame_repeats, frames_filled, frame_slips;
        float *zeros;
        float *scratch[64];
        uint32_t scratch_len;
        uint32_t midi_mode, midi_w, midi_r;
        uint32_t midi_time[256];
        uint8_t midi_len[256];
        uint8_t midi_data[4096];
        uint64_t midi_dropped;
        float peak[64];
        int32_t midi_efd;
    } ls_jack_state;
    int ls_jack_process(uint32_t nframes, void *arg);
    int ls_jack_midi_read(ls_jack_state *s, uint32_t *time, uint8_t *data, uint32_t *len);
    uint32_t ls_jack_frame_step(ls_jack_state *s, uint32_t t, uint32_t frames);
    void ls_jack_set_handle(ls_jack_state *s, void *handle, uint32_t max_block);
    uint64_t ls_jack_cycles(ls_jack_state *s);
"""
_PROC_SRC = r"""
#include <stdint.h>
#include <unistd.h>
#include <jack/jack.h>
#include <jack/midiport.h>

typedef struct {
    void *client;
    void *in[2];
    void *out[64];
    uint32_t n_out;
    void *midi_in;
    void *handle;               /* livestems_t *, swapped with atomic stores; NULL: silence */
    uint32_t max_block;
    void *process_fn;           /* livestems_process, from liblivestems.so */
    void *midi_fn;              /* livestems_midi */
    uint64_t cycles, errors, silent_cycles, midi_events;
    int64_t first_frame;
    /* JACK frame time -> the engine's stream: the logic of FrameClock (stream/io/backends/
       jack.py), so a repeated frame time inserts nothing and a confirmed skip is filled */
    int64_t clk_next, clk_pending;
    uint32_t clk_started, max_gap;
    uint64_t frame_gaps, frame_repeats, frames_filled, frame_slips;
    float *zeros;               /* scratch_len zeros: the input of a filled gap */
    float *scratch[64];         /* scratch_len floats per output: where a gap's output goes */
    uint32_t scratch_len;
    /* midi_in: mode 0 -> livestems_midi (the C API's fixed mapping); mode 1 -> this
       single-producer single-consumer ring, read by Python's MIDI control thread */
    uint32_t midi_mode, midi_w, midi_r;
    uint32_t midi_time[256];
    uint8_t midi_len[256];
    uint8_t midi_data[4096];    /* 256 slots of 16 bytes */
    uint64_t midi_dropped;      /* events longer than 16 bytes, or the ring full */
    float peak[64];             /* per output: the largest |sample| of the last cycle (meters) */
    int32_t midi_efd;           /* mode 1: an eventfd (non-blocking) written once per cycle that
                                   queued events, so the control thread sleeps until MIDI comes
                                   instead of polling; -1: none */
} ls_jack_state;

/* Python's control thread: the oldest event (1), or none (0). */
int ls_jack_midi_read(ls_jack_state *s, uint32_t *time, uint8_t *data, uint32_t *len) {
    uint32_t r = s->midi_r;
    if (r == __atomic_load_n(&s->midi_w, __ATOMIC_ACQUIRE)) return 0;
    uint32_t k = r & 255u;
    *time = s->midi_time[k];
    *len = s->midi_len[k];
    for (uint32_t i = 0; i < s->midi_len[k]; i++) data[i] = s->midi_data[16u * k + i];
    __atomic_store_n(&s->midi_r, r + 1, __ATOMIC_RELEASE);
    return 1;
}

/* Frames of silence to feed before this cycle's block (see FrameClock in jack.py). */
uint32_t ls_jack_frame_step(ls_jack_state *s, uint32_t t, uint32_t frames) {
    if (!s->clk_started) {
        s->clk_started = 1;
        __atomic_store_n(&s->first_frame, (int64_t)t, __ATOMIC_RELAXED);
        s->clk_next = t;
    }
    int64_t d = ((int64_t)t - s->clk_next) & 0xFFFFFFFFLL;
    if (d >= (1LL << 31)) d -= (1LL << 32);
    int64_t fill = 0, pending = 0;
    if (d == 0) {
        if (s->clk_pending) __atomic_add_fetch(&s->frame_repeats, 1, __ATOMIC_RELAXED);
    } else if (d < 0 || d > (int64_t)s->max_gap) {
        __atomic_add_fetch(&s->frame_gaps, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->frame_slips, 1, __ATOMIC_RELAXED);
        s->clk_next = t;
    } else {
        if (s->clk_pending && d >= s->clk_pending) fill = s->clk_pending;
        if (d != fill) __atomic_add_fetch(&s->frame_gaps, 1, __ATOMIC_RELAXED);
        pending = d - fill;
    }
    s->clk_pending = pending;
    s->clk_next = (s->clk_next + fill + frames) & 0xFFFFFFFFLL;
    __atomic_add_fetch(&s->frames_filled, (uint64_t)fill, __ATOMIC_RELAXED);
    return (uint32_t)fill;
}

typedef int (*ls_process_t)(void *, const float *const *, uint32_t, float *const *, uint32_t,
                            uint32_t);
typedef int (*ls_midi_t)(void *, const uint8_t *, uint32_t);

/* JACK's process thread: copies only (the engine's rings are C memory with C11 atomics). */
int ls_jack_process(uint32_t nframes, void *arg) {
    ls_jack_state *s = (ls_jack_state *)arg;
    jack_nframes_t t = jack_last_frame_time((jack_client_t *)s->client);
    float *out[64];
    for (uint32_t i = 0; i < s->n_out; i++)
        out[i] = (float *)jack_port_get_buffer((jack_port_t *)s->out[i], nframes);
    const float *in[2] = {(const float *)jack_port_get_buffer((jack_port_t *)s->in[0], nframes),
                          (const float *)jack_port_get_buffer((jack_port_t *)s->in[1], nframes)};
    void *h = __atomic_load_n(&s->handle, __ATOMIC_ACQUIRE);
    uint32_t max_block = __atomic_load_n(&s->max_block, __ATOMIC_ACQUIRE);
    if (h && s->midi_in) {
        void *mb = jack_port_get_buffer((jack_port_t *)s->midi_in, nframes);
        uint32_t count = jack_midi_get_event_count(mb), queued = 0;
        for (uint32_t i = 0; i < count; i++) {
            jack_midi_event_t ev;
            if (jack_midi_event_get(&ev, mb, i) != 0) continue;
            __atomic_add_fetch(&s->midi_events, 1, __ATOMIC_RELAXED);
            if (!s->midi_mode) {
                ((ls_midi_t)s->midi_fn)(h, ev.buffer, (uint32_t)ev.size);
                continue;
            }
            uint32_t w = s->midi_w;
            if (ev.size > 16 || w - __atomic_load_n(&s->midi_r, __ATOMIC_ACQUIRE) >= 256u) {
                __atomic_add_fetch(&s->midi_dropped, 1, __ATOMIC_RELAXED);
                continue;
            }
            uint32_t k = w & 255u;
            s->midi_time[k] = t + ev.time;
            s->midi_len[k] = (uint8_t)ev.size;
            for (uint32_t j = 0; j < ev.size; j++) s->midi_data[16u * k + j] = ev.buffer[j];
            __atomic_store_n(&s->midi_w, w + 1, __ATOMIC_RELEASE);
            queued++;
        }
        if (queued && s->midi_efd >= 0) {
            /* one non-blocking write, only in a cycle that brought MIDI: no lock, no
               allocation; a full counter (never, in practice) just fails */
            uint64_t one = 1;
            ssize_t r = write(s->midi_efd, &one, sizeof one);
            (void)r;
        }
    }
    if (!h || nframes > max_block) {  /* no engine, or one for a smaller period: silence */
        for (uint32_t i = 0; i < s->n_out; i++)
            for (uint32_t k = 0; k < nframes; k++) out[i][k] = 0.0f;
        __atomic_add_fetch(&s->silent_cycles, 1, __ATOMIC_RELAXED);
    } else {
        uint32_t gap = ls_jack_frame_step(s, t, nframes);
        uint32_t chunk = max_block < s->scratch_len ? max_block : s->scratch_len;
        const float *zin[2] = {s->zeros, s->zeros};
        while (gap > 0) {  /* a confirmed skipped cycle: the frames we never saw, as silence */
            uint32_t k = gap < chunk ? gap : chunk;
            ((ls_process_t)s->process_fn)(h, zin, 2, s->scratch, s->n_out, k);
            gap -= k;
        }
        if (((ls_process_t)s->process_fn)(h, in, 2, out, s->n_out, nframes) != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    for (uint32_t i = 0; i < s->n_out; i++) {
        float m = 0.0f;
        for (uint32_t k = 0; k < nframes; k++) {
            float v = out[i][k] < 0.0f ? -out[i][k] : out[i][k];
            if (v > m) m = v;
        }
        s->peak[i] = m;  /* a racy read is fine for a meter */
    }
    __atomic_add_fetch(&s->cycles, 1, __ATOMIC_RELEASE);
    return 0;
}

void ls_jack_set_handle(ls_jack_state *s, void *handle, uint32_t max_block) {
    __atomic_store_n(&s->max_block, max_block, __ATOMIC_RELEASE);
    __atomic_store_n(&s->handle, handle, __ATOMIC_RELEASE);
}

uint64_t ls_jack_cycles(ls_jack_state *s) {
    return __atomic_load_n(&s->cycles, __ATOMIC_ACQUIRE);
}
"""

_CAPI_CDEF = """
    typedef struct livestems livestems_t;
    typedef struct livestems_config {
        uint32_t struct_size; uint32_t api_version; const char *model; double sample_rate;
        uint32_t max_block; uint32_t in_channels; uint32_t flags;
        const char *resample_quality; double safety_ms;
    } livestems_config_t;
    typedef struct livestems_stats {
        uint32_t struct_size; uint32_t latency_samples; double sample_rate;
        uint32_t model_rate; uint32_t hop; uint64_t process_calls; uint64_t frames_processed;
        uint64_t deadline_misses; uint64_t missed_frames; uint64_t input_overflows;
        uint64_t hops_processed; uint64_t hops_skipped; uint64_t nonfinite_samples;
        double last_hop_ms; double worst_hop_ms; int32_t worker_failed;
    } livestems_stats_t;
    uint32_t livestems_api_version(void);
    const char *livestems_last_error(void);
    int livestems_create(const livestems_config_t *config, livestems_t **out);
    int livestems_destroy(livestems_t *h);
    int livestems_process(livestems_t *h, const float *const *in, uint32_t n_in,
                          float *const *out, uint32_t n_out, uint32_t nframes);
    int livestems_midi(livestems_t *h, const uint8_t *msg, uint32_t size);
    int livestems_latency_samples(livestems_t *h, uint32_t *out);
    int livestems_output_count(livestems_t *h, uint32_t *out);
    int livestems_output_name(livestems_t *h, uint32_t index, char *buf, size_t size);
    int livestems_stats(livestems_t *h, livestems_stats_t *out);
    int jack_set_process_callback(void *client, void *cb, void *arg);
"""
_API_VERSION = 1
_FLAG_RT_WORKER = 4


def library_path() -> Path:
    """Where ``make -C bridge`` puts liblivestems.so."""
    import livestems.bridge

    return Path(livestems.bridge.__file__).resolve().parent / "build" / "liblivestems.so"


_PROC = None
_PROC_LOCK = threading.Lock()


def _proc_lib():
    """The compiled C process callback (cffi, built once per version of its source into
    bridge/build/native-jack/)."""
    global _PROC
    with _PROC_LOCK:
        if _PROC is None:
            import hashlib
            import importlib

            digest = hashlib.sha1((_PROC_CDEF + _PROC_SRC).encode()).hexdigest()[:12]
            name = f"_ls_jackproc_{digest}"
            out = library_path().parent / "native-jack"
            out.mkdir(parents=True, exist_ok=True)
            if str(out) not in sys.path:
                sys.path.insert(0, str(out))
            try:
                _PROC = importlib.import_module(name)
            except ImportError:
                import os
                import tempfile

                ffi = cffi.FFI()
                ffi.cdef(_PROC_CDEF)
                ffi.set_source(name, _PROC_SRC, libraries=["jack"], extra_compile_args=["-O2"])
                try:
                    # built aside, then renamed into place: another process building or
                    # importing it at the same time never sees half a file
                    with tempfile.TemporaryDirectory(dir=out) as tmp:
                        built = Path(ffi.compile(tmpdir=tmp, verbose=False))
                        os.replace(built, out / built.name)
                except Exception as exc:  # a compiler or libjack's headers are missing
                    raise AudioBackendError(
                        "cannot build the native JACK callback",
                        got=f"{type(exc).__name__}: {exc}",
                        fix="install a C compiler and libjack's headers (Debian: apt-get "
                            "install build-essential libjack-jackd2-dev), or run without "
                            "--native") from None
                importlib.invalidate_caches()
                _PROC = importlib.import_module(name)
    return _PROC


class NativeJackHost:
    """A JACK client with the ports of ``livestems jack`` whose process callback is C.

    Args:
        model: model name or path (None: the default), loaded by the C API's engine.
        name, servername: JACK client name and server.
        resample_quality: "LD" (default), "HQ", "LQ"... (the engine's recipes).
        safety_ms: the safety margin in ms, or "auto" (measured here, see :class:`Engine`).

    Use :meth:`activate`, :meth:`run`, :meth:`close`, as :class:`JackHost`.
    """

    def __init__(self, model: str | None = None, *, name: str = "livestems",
                 servername: str | None = None, resample_quality: str = "LD",
                 safety_ms: float | str = "auto", midi: str = "python"):
        if midi not in ("python", "capi"):
            raise ValueError(f"midi must be 'python' or 'capi', got {midi!r}")
        lib_file = library_path()
        if not lib_file.exists():
            raise AudioBackendError(
                "the C callback of livestems jack (--callback native) needs the C library "
                "of bridge/", expected=str(lib_file), got="not built",
                fix="run `make -C bridge` once (Debian packages: see README), or use "
                    "--callback python")
        self.model = model
        self.resample_quality = resample_quality
        self._proc = _proc_lib()
        self.capi_ffi = cffi.FFI()
        self.capi_ffi.cdef(_CAPI_CDEF)
        self.capi = self.capi_ffi.dlopen(str(lib_file))
        _clear_capsule_version_tag()
        if self.capi.livestems_api_version() != _API_VERSION:
            raise AudioBackendError("liblivestems.so has another API version",
                                    expected=str(_API_VERSION),
                                    got=str(self.capi.livestems_api_version()),
                                    fix="rebuild it: make -C bridge")
        self._jlib = self.capi_ffi.dlopen(jack._libname)
        self.client = _open_client(name, servername)
        self.name = self.client.name
        try:
            self._choose_safety(model, safety_ms)
        except BaseException:
            self.client.close()
            raise
        self.xruns = 0
        self.shutdown_reason: str | None = None
        self.shutdown_event = threading.Event()
        self._want: tuple[int, int] | None = None
        self._handle = None
        self._old_stats = {"deadline_misses": 0, "hops_processed": 0}
        self._closed = False
        self.latency_samples = 0
        self.midi_out = None  # (no MIDI feedback on this path)
        self.graph_changes = 0
        try:
            h = self._create(self.client.samplerate, self.client.blocksize)
            n = self.capi_ffi.new("uint32_t *")
            self.capi.livestems_output_count(h, n)
            buf = self.capi_ffi.new("char[64]")
            names = []
            for i in range(n[0]):
                self.capi.livestems_output_name(h, i, buf, 64)
                names.append(self.capi_ffi.string(buf).decode())
            self.sources = tuple(p[:-2] for p in names[:-4:2])
            if names != port_layout(self.sources) or len(names) > _MAX_OUT:
                raise AudioBackendError("unexpected outputs from the C API", got=str(names))
            self.inports = [self.client.inports.register(p) for p in ("in_L", "in_R")]
            self.outports = [self.client.outports.register(p) for p in names]
            self.midi_in = self.client.midi_inports.register("midi_in")
            self.params = ParamSet(stem_params(self.sources))
            if "vocals" in self.sources:
                self.params.watch("guide.level", self._apply_guide)
            pffi, plib = self._proc.ffi, self._proc.lib
            self._state = st = pffi.new("ls_jack_state *")
            st.midi_efd = -1  # (zeroed memory would name stdin)
            st.client = pffi.cast("void *", _addr(self.client._ptr))
            ins = getattr(st, "in")  # (a Python keyword)
            ins[0] = pffi.cast("void *", _addr(self.inports[0]._ptr))
            ins[1] = pffi.cast("void *", _addr(self.inports[1]._ptr))
            for i, p in enumerate(self.outports):
                st.out[i] = pffi.cast("void *", _addr(p._ptr))
            st.n_out = len(self.outports)
            st.midi_in = pffi.cast("void *", _addr(self.midi_in._ptr))
            st.process_fn = pffi.cast("void *", int(self.capi_ffi.cast(
                "uintptr_t", self.capi_ffi.addressof(self.capi, "livestems_process"))))
            st.midi_fn = pffi.cast("void *", int(self.capi_ffi.cast(
                "uintptr_t", self.capi_ffi.addressof(self.capi, "livestems_midi"))))
            st.first_frame = -1
            st.midi_mode = 1 if midi == "python" else 0
            self.midi_ring = _MidiRing(self._proc, st)
            st.scratch_len = _SCRATCH
            self._scratch = [pffi.new("float[]", _SCRATCH) for _ in range(len(self.outports))]
            self._zeros = pffi.new("float[]", _SCRATCH)
            st.zeros = self._zeros
            for i, buf in enumerate(self._scratch):
                st.scratch[i] = buf
            self._install(h, self.client.blocksize)
            cb = int(pffi.cast("uintptr_t", pffi.addressof(plib, "ls_jack_process")))
            rc = self._jlib.jack_set_process_callback(
                self.capi_ffi.cast("void *", _addr(self.client._ptr)),
                self.capi_ffi.cast("void *", cb),
                self.capi_ffi.cast("void *", int(pffi.cast("uintptr_t", st))))
            if rc:
                raise AudioBackendError(f"jack_set_process_callback failed (code {rc})")
            self.client.set_xrun_callback(self._on_xrun)
            self.client.set_shutdown_callback(self._on_shutdown)
            self.client.set_blocksize_callback(self._on_change)
            self.client.set_samplerate_callback(self._on_change)
            self.client.set_port_registration_callback(self._on_graph_change)
            self.client.set_port_connect_callback(self._on_graph_change)
            api = _api()
            self._latency_cb = api.ffi.callback("void(int, void *)", self._on_latency)
            rc = api.lib.jack_set_latency_callback(api.ptr(self.client._ptr),
                                                   self._latency_cb, api.ffi.NULL)
            if rc:
                raise AudioBackendError(f"jack_set_latency_callback failed (code {rc})")
        except BaseException:
            self.client.close()
            if self._handle is not None:
                self.capi.livestems_destroy(self._handle)
            raise

    # -- main thread -----------------------------------------------------------------------
    def _choose_safety(self, model, safety_ms) -> None:
        """The margin in ms: as given, or ``"auto"``: a Python engine on this machine times the
        worker's hop (the C API's engine runs the same code in this interpreter) and
        :func:`~livestems.stream.core.engine.auto_safety_ms` takes the server's own period, as
        :class:`JackHost` does. (Timing it against a fixed 256-sample block at the model's
        rate gave 1 ms where ``livestems jack`` chose 4 at 48 kHz / 128: the worker's deadline
        is one JACK period, here 2.7 ms, not 5.8.)"""
        if safety_ms != "auto":
            self.safety_ms, self.warmup_hop_ms = float(safety_ms), None
            return
        from livestems.model.nets.registry import load_separator
        from livestems.stream.core.engine import Engine, auto_safety_ms

        sep = load_separator(model)
        probe = Engine(sep, block_size=int(self.client.blocksize), safety_ms="auto")
        w = probe.warmup_hop_ms
        del probe, sep
        self.warmup_hop_ms = w
        self.safety_ms = auto_safety_ms(
            w["p99"], w["max2"], 1e3 * self.client.blocksize / self.client.samplerate)

    def _create(self, rate: int, block: int):
        cfg = self.capi_ffi.new("livestems_config_t *")
        keep = []
        cfg.struct_size = self.capi_ffi.sizeof("livestems_config_t")
        cfg.api_version = _API_VERSION
        if self.model:
            keep.append(self.capi_ffi.new("char[]", self.model.encode()))
            cfg.model = keep[-1]
        cfg.sample_rate = float(rate)
        cfg.max_block = int(block)
        cfg.in_channels = 2
        # The worker goes SCHED_FIFO (priority 5, under JACK's own threads) only beside a
        # real-time server. Under `jackd --no-realtime` JACK's threads are ordinary ones: a
        # real-time worker would hold them off for a whole hop of compute (1-2 ms, most of
        # a 128-frame period), and the soak counted several times the xruns of a server beside it.
        cfg.flags = _FLAG_RT_WORKER if self.client.realtime else 0
        keep.append(self.capi_ffi.new("char[]", self.resample_quality.encode()))
        cfg.resample_quality = keep[-1]
        cfg.safety_ms = self.safety_ms
        out = self.capi_ffi.new("livestems_t **")
        if self.capi.livestems_create(cfg, out) != 0:
            msg = self.capi_ffi.string(self.capi.livestems_last_error()).decode(errors="replace")
            raise AudioBackendError(f"the C API could not create the engine: {msg}")
        return out[0]

    def _install(self, h, block: int) -> None:
        lat = self.capi_ffi.new("uint32_t *")
        self.capi.livestems_latency_samples(h, lat)
        old = self._handle
        self._handle = h
        self._state.max_gap = 16 * int(block)  # as JackHost: longer gaps are only counted
        self._proc.lib.ls_jack_set_handle(self._state, self._proc.ffi.cast("void *", int(
            self.capi_ffi.cast("uintptr_t", h))), int(block))
        self.latency_samples = int(lat[0])
        self.block_size = int(block)
        eng = self._bridge_engine(h)
        eng.mixer.attach(self.params)  # MIDI mappings and the CLI drive this engine's mixer
        self._apply_guide(self.params.get("guide.level"), eng)
        if old is not None:
            c0 = self._proc.lib.ls_jack_cycles(self._state)
            deadline = time.monotonic() + 2.0
            while (self._proc.lib.ls_jack_cycles(self._state) < c0 + 2
                   and time.monotonic() < deadline and not self.shutdown_event.is_set()):
                time.sleep(0.001)
            st = self._c_stats(old)
            self._old_stats["deadline_misses"] += st["deadline_misses"]
            self._old_stats["hops_processed"] += st["hops_processed"]
            self.capi.livestems_destroy(old)

    def _bridge_engine(self, h):
        """The Python engine behind handle ``h`` (the embedded library runs it in this
        interpreter: bridge/host.py keeps it by handle address)."""
        from livestems.bridge import host as bridge_host

        eng = bridge_host._LIVE.get(int(self.capi_ffi.cast("uintptr_t", h)))
        if eng is None:
            raise AudioBackendError("the C API's engine is not in this interpreter",
                                    fix="rebuild bridge/ (make -C bridge) with this venv")
        return eng

    def _apply_guide(self, level_db: float, eng=None) -> None:
        """Control thread (``guide.level``) or main thread (a new engine)."""
        if "vocals" not in self.sources:
            return
        eng = eng or (self._bridge_engine(self._handle) if self._handle is not None else None)
        if eng is not None:
            eng.set_bus_gain("karaoke", "vocals", float(db_to_gain(level_db)))

    def send_midi(self, data: bytes) -> bool:
        return False  # no midi_out on this path

    def activate(self) -> "NativeJackHost":
        self.client.activate()
        return self

    def connect_input(self, source: str):
        from .jack import JackHost

        return JackHost.connect_input(self, source)

    def connect_output(self, dest: str, ports=("karaoke_L", "karaoke_R")):
        from .jack import JackHost

        return JackHost.connect_output(self, dest, ports)

    def _resolve(self, spec, *, is_output):
        from .jack import JackHost

        return JackHost._resolve(self, spec, is_output=is_output)

    def poll(self) -> None:
        """Main thread: a new engine for a new period or rate (asked by JACK's thread)."""
        want = self._want
        if want is None or self.shutdown_event.is_set():
            return
        self._want = None
        rate, block = want
        if rate == self._rate_now() and block <= self.block_size:
            return
        self._install(self._create(rate, block), block)
        _api().lib.jack_recompute_total_latencies(_api().ptr(self.client._ptr))

    def _rate_now(self) -> int:
        st = self._c_stats(self._handle)
        return int(st["sample_rate"])

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
            if tick is not None and tick() is False:
                return
            if end is not None and time.monotonic() >= end:
                return

    def _c_stats(self, h) -> dict:
        st = self.capi_ffi.new("livestems_stats_t *")
        st.struct_size = self.capi_ffi.sizeof("livestems_stats_t")
        if self.capi.livestems_stats(h, st) != 0:
            return {}
        return {k: getattr(st, k) for k in (
            "latency_samples", "sample_rate", "model_rate", "hop", "process_calls",
            "frames_processed", "deadline_misses", "missed_frames", "input_overflows",
            "hops_processed", "hops_skipped", "nonfinite_samples", "last_hop_ms",
            "worst_hop_ms", "worker_failed")}

    def stats(self) -> dict:
        """The Python host's counters (:func:`live_stats` of the engine behind the handle)
        with the audio side's from C (misses, calls) and this path's own."""
        c = self._c_stats(self._handle)
        eng = self._bridge_engine(self._handle)
        s = self._state
        out = live_stats(
            eng, backend="jack-native", client=self.name, xruns=self.xruns,
            resample_quality=self.resample_quality, safety_ms=self.safety_ms,
            warmup_hop_ms=self.warmup_hop_ms, cycles=int(s.cycles), errors=int(s.errors),
            silent_cycles=int(s.silent_cycles), midi_events=int(s.midi_events),
            midi_dropped=int(s.midi_dropped), frame_gaps=int(s.frame_gaps),
            frame_repeats=int(s.frame_repeats), frames_filled=int(s.frames_filled),
            frame_slips=int(s.frame_slips),
            first_frame=None if s.first_frame < 0 else int(s.first_frame),
            ports=[p.name for p in self.outports], shutdown_reason=self.shutdown_reason,
            process_calls=c.get("process_calls", 0), worst_hop_ms=c.get("worst_hop_ms", 0.0))
        # the audio side is C: its miss counters are the C API's (engines before a rebuild
        # included)
        out["deadline_misses"] = c.get("deadline_misses", 0) + self._old_stats["deadline_misses"]
        out["missed_samples"] = c.get("missed_frames", 0)
        out["hops_processed"] = c.get("hops_processed", 0) + self._old_stats["hops_processed"]
        if c.get("worker_failed") and out["worker_error"] is None:
            out["worker_error"] = "the model failed"
        return out

    def levels(self) -> dict[str, float]:
        """Peak level of the last cycle per output pair (racy read; for meters only)."""
        p = [float(self._state.peak[i]) for i in range(len(self.outports))]
        out = {s: max(p[2 * i], p[2 * i + 1]) for i, s in enumerate(self.sources)}
        k = 2 * len(self.sources)
        out["mix"], out["karaoke"] = max(p[k], p[k + 1]), max(p[k + 2], p[k + 3])
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.shutdown_event.is_set():
            try:
                self.client.deactivate()
            except jack.JackError:
                pass
            self.client.close()
        if self._handle is not None:
            self._proc.lib.ls_jack_set_handle(self._state, self._proc.ffi.NULL, 0)
            self.capi.livestems_destroy(self._handle)
            self._handle = None
        self.midi_ring.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- JACK's notification thread --------------------------------------------------------
    def _on_xrun(self, delayed_usecs: float) -> None:
        self.xruns += 1

    def _on_shutdown(self, status, reason: str) -> None:
        self.shutdown_reason = reason
        self.shutdown_event.set()

    def _on_graph_change(self, *_args) -> None:
        self.graph_changes += 1

    def _on_change(self, *_args) -> None:
        self._want = (self.client.samplerate, self.client.blocksize)

    def _on_latency(self, mode: int, arg) -> None:
        try:
            api = _api()
            ours = self.latency_samples
            ports_in, ports_out = self.inports, self.outports
            src, dst = (ports_in, ports_out) if mode == CAPTURE else (ports_out, ports_in)
            ranges = [api.get(p, mode) for p in src]
            lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
            for p in dst:
                api.set(p, mode, lo + ours, hi + ours)
        except Exception as exc:  # noqa: BLE001 - a C callback must not raise
            self.latency_error = f"{type(exc).__name__}: {exc}"


class _MidiRing:
    """Control-thread side of the C callback's MIDI ring: the ``get`` of
    :class:`~livestems.stream.midi.input.EventRing` (what :class:`JackMidiInput` reads), and
    :meth:`wait`, which sleeps until a cycle queued events (an eventfd the C callback writes
    once per such cycle), so the control thread does not poll the ring a thousand times a
    second beside the audio (where ``os.eventfd`` is missing, ``wait`` is absent and the
    controller polls)."""

    def __init__(self, proc, state):
        self._lib, self._ffi, self._st = proc.lib, proc.ffi, state
        self._t = proc.ffi.new("uint32_t *")
        self._n = proc.ffi.new("uint32_t *")
        self._buf = proc.ffi.new("uint8_t[16]")
        self._efd = -1
        if hasattr(os, "eventfd"):
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            state.midi_efd = self._efd
        else:
            self.wait = None  # (instance attribute: the controller polls)

    def wait(self, timeout: float) -> bool:
        """Up to ``timeout`` seconds until the callback has queued events since the last
        wait; True when it has (the events are then read with :meth:`get`)."""
        if self._efd < 0:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self._efd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        """After the process callback can no longer run (the client closed)."""
        if self._efd >= 0:
            self._st.midi_efd = -1
            os.close(self._efd)
            self._efd = -1

    @property
    def dropped(self) -> int:
        return int(self._st.midi_dropped)

    def get(self):
        """``(frame, bytes)`` of the oldest event, or None."""
        if not self._lib.ls_jack_midi_read(self._st, self._t, self._buf, self._n):
            return None
        return int(self._t[0]), bytes(self._ffi.buffer(self._buf, self._n[0]))


def _clear_capsule_version_tag() -> None:
    """Before the first call into liblivestems.so from a running Python (< 3.12).

    cffi's embedding start-up (``_cffi_carefully_make_gil``) borrows
    ``PyCapsule_Type.tp_version_tag`` as a spin lock and asserts that it is 0 or its own mark;
    but CPython gives the type a version tag as soon as an attribute of a capsule type is
    looked up through the method cache (seen here: the assertion aborted ``livestems jack
    --native`` started from the CLI). ``PyType_Modified`` is CPython's own way to drop a
    type's version tag (it sets it to 0 and invalidates the cache entries); done right before
    the first call, the start-up finds the lock free."""
    if sys.version_info >= (3, 12):
        return  # cffi uses PyCapsule_Type.tp_as_buffer there, which stays NULL
    import ctypes
    import datetime

    capsule_type = type(datetime.datetime_CAPI)
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(capsule_type))


def _addr(cdata) -> int:
    """Address of a JACK-Client pointer (its own FFI's cdata)."""
    return int(jack._ffi.cast("uintptr_t", cdata))

