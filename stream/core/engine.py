"""The real-time engine: audio-side push/pull that only copy, a worker that separates hop by hop.

Data flow (DESIGN.md)::

    audio thread                               worker thread
    push(block) -> input ring  ------------->  read one hop -> separator.step -> mixer
                -> dry history ring                  |
    pull(n)     <- wet ring [mix | stems] <----------+
       on underrun: the dry input delayed by the declared latency, spliced without a click

Latency, in samples at the I/O rate, is fixed at construction. When the host runs at the
separator's rate::

    latency_samples = separator.latency_samples + hop + block_size + safety

``hop``: the worker needs a whole hop before it can run. ``block_size``: the host's largest
block; the audio callback pushes block k and pulls in the same call, so the wet ring is
pre-filled with ``hop + block_size`` samples of silence to give the worker one block period of
headroom to compute. ``safety`` (``safety_ms``, default 0) pre-fills that much more: the worker
may then run that much later than one block without a deadline miss, bought with that much
latency. On a quiet machine one block is enough; on a busy or virtual one a worker that is
descheduled for a few milliseconds misses (docs/LIVE.md measures both). ``safety_ms="auto"``
chooses it at construction from the per-hop compute time measured then (:func:`auto_safety_ms`),
and keeps it. Output sample ``q`` is
always the estimate for input sample ``q - latency_samples``, whether it came from the model or
from the dry fallback.

When the host runs at another rate (``io_rate``: a 48 kHz device or JACK server feeding a
44.1 kHz model) the worker converts each chunk it reads with a streaming resampler
(:class:`~livestems.dsp.resample.ResampleStream`, fixed delay, deterministic output count) to
the model's rate, and every output row back. Then, with ``F`` the model rate and ``R`` the
I/O rate::

    model part  D = in-resampler delay + separator.latency_samples + pad   (model samples)
    latency_samples = D * R / F + out-resampler delay + block_size + ceil(R / F) + safety

``pad`` (at least ``hop - 1``) is the model-rate queue that lets the worker run whole hops on
a stream that arrives in chunks of any size; it is rounded up so that ``D * R / F`` is a whole
number of I/O samples, so the published latency is exact, not rounded. ``ceil(R / F)``: the
output count after ``N`` inputs, ``floor(floor(N F / R) R / F)``, may trail ``N`` by that many.

Buses: besides the mix (the stem mixer's smoothed, MIDI-controllable gains) the engine can
render named fixed-gain sums of the stems (``buses={"karaoke": {"vocals": 0.0}}``: every stem
at 1.0 except vocals), computed on the worker so the audio callback still only copies. On a
deadline miss the mix and the buses fall back to the dry input, the stems to silence.

Thread contract: one audio thread calls :meth:`Engine.push` and :meth:`Engine.pull_into`
(never blocks, allocates no buffers, takes no lock, never logs or raises on valid input); the
worker thread is started by :meth:`start`; control threads may set mixer parameters and read
:meth:`stats` at any time. Without :meth:`start`, :meth:`run_pending` does the worker's job on
the caller's thread: that is how files are separated faster than real time.
"""

from __future__ import annotations

import atexit
import math
import sys
import threading
import time
import weakref
from dataclasses import dataclass

import numba
import numpy as np

from livestems.dsp.kernels import mix_stems, sanitize_inplace, smoothing_coeff
from livestems.dsp.resample import LD, QUALITIES, PolyphaseStream, ResampleStream

from .mixer import StemMixer
from .ring import Ring

__all__ = ["Engine", "EngineStats", "auto_safety_ms", "karaoke_buses", "safety_line",
           "safety_text", "SAFETY_AUTO"]

_TIMES_KEPT = 1 << 14  # per-hop compute times kept for percentiles (a power of two)
STREAM_TORCH_THREADS = 1  # torch intra-op threads while streaming (Engine.limit_torch_threads)
SAFETY_MS_MAX = 500.0  # the largest safety margin (Engine(safety_ms=)); the C API's too
SAFETY_AUTO = "auto"  # Engine(safety_ms="auto"): chosen from the warm-up (auto_safety_ms)
AUTO_WARMUP_HOPS = 512  # hops timed at configuration for safety_ms="auto", at most...
AUTO_WARMUP_MAX_S = 1.0  # ...for about this long (at least 32 hops)
AUTO_WARMUP_REST_S = 1e-3  # sleep between timed hops, as the live worker waits for input
AUTO_HEADROOM = 4.0  # the worker's budget: this many times the warm-up p99 per-hop time...
AUTO_STALL_HEADROOM = 3.0  # ...and this many times the second slowest warm-up hop...
AUTO_MIN_BUDGET_MS = 10.0  # ...and never less than this (wake-up, GIL hand-offs; docs/LIVE.md)


def auto_safety_ms(hop_p99_ms: float, hop_max2_ms: float, block_ms: float) -> float:
    """The safety margin (ms) chosen at start-up for ``safety_ms="auto"``.

    The worker has one host block (``block_ms``) plus the margin to finish each hop. The
    rule gives it the larger of 4 times the 99th percentile and 3 times the second largest of
    the per-hop compute times measured at configuration (wall time, hops 1 ms apart on the
    worker's torch threads, so a machine that is busy at start-up measures slower), and at
    least :data:`AUTO_MIN_BUDGET_MS`::

        safety = max(0, max(4 * p99, 3 * second slowest, floor) - block)   whole ms up, <= 500

    The factors cover what a one-second warm-up cannot see: a hop descheduled more than
    once in a row, other work starting later. The floor covers what compute times cannot
    show at all: the worker waking up (it polls every millisecond), taking the GIL, and a
    scheduler slice on a busy or virtual machine. Without it an idle machine measured a
    fast steady hop (p99 1.3 ms), got 1 to 4 ms at 48 kHz / 128 and missed 16 to 1063
    deadlines in 10 minutes (docs/LIVE.md).
    """
    need = max(AUTO_HEADROOM * float(hop_p99_ms), AUTO_STALL_HEADROOM * float(hop_max2_ms),
               AUTO_MIN_BUDGET_MS)
    return float(min(SAFETY_MS_MAX, max(0.0, math.ceil(need - float(block_ms)))))


# Engines whose worker thread runs. The workers are daemon threads (a host must never hang on
# exit because of one); but a daemon thread still inside C++ code (soxr, torch) when the
# interpreter finalizes is killed by a forced unwind, which C++ turns into std::terminate:
# an abort at exit (seen with a plugin host that never destroyed its instance). So the
# interpreter stops every worker first, at the end of its current hop.
_RUNNING: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _stop_running_workers() -> None:
    for eng in list(_RUNNING):
        try:
            eng.stop()
        except Exception:  # noqa: BLE001 - exiting anyway; stop the others
            pass


def karaoke_buses(sources) -> dict:
    """The engine buses every live backend renders: ``karaoke`` = every stem but vocals.

    A model without a ``vocals`` stem gets a karaoke bus equal to the whole mix (nothing to
    remove), which keeps the port layout the same for every model.
    """
    return {"karaoke": {"vocals": 0.0} if "vocals" in sources else {}}


def safety_line(engine) -> str:
    """The one line every live command prints about the safety margin it runs with."""
    return safety_text(engine.safety_ms, engine.warmup_hop_ms if engine.safety_auto else None,
                       1e3 * engine.block_size / engine.sample_rate)


def safety_text(ms: float, warmup: dict | None, block_ms: float) -> str:
    """:func:`safety_line` from its parts: the margin, the warm-up figures it was chosen from
    (None: given by --safety-ms) and the host block in ms."""
    w = warmup
    if w is None:
        return f"safety margin: {ms:g} ms (--safety-ms)"
    return (f"safety margin: {ms:g} ms, chosen at start-up: per-hop compute over "
            f"{w['hops']} warm-up hops p50 {w['p50']:.2f}, p99 {w['p99']:.2f}, 2nd slowest "
            f"{w['max2']:.2f} ms; rule max(0, max({AUTO_HEADROOM:g} x p99, "
            f"{AUTO_STALL_HEADROOM:g} x 2nd slowest, {AUTO_MIN_BUDGET_MS:g}) - block "
            f"{block_ms:.1f} ms); fixed while running (--safety-ms MS to choose)")


@numba.njit(cache=True, nogil=True)
def _splice(out, start, n, offset, decay):
    """Add a decaying per-channel offset to ``out[:, start:start+n]`` (in place).

    After a switch between the wet and the dry path the offset starts as (last sample played
    - first new sample), so the output is continuous; it then decays exponentially, so the
    largest sample-to-sample jump it adds is ``|offset| * (1 - decay)``.
    """
    for c in range(out.shape[0]):
        d = offset[c]
        if d == 0.0:
            continue
        for i in range(start, start + n):
            d *= decay
            out[c, i] += d
        if abs(d) < 1e-9:
            d = 0.0
        offset[c] = d


@numba.njit(cache=True, nogil=True)
def _crossfade(out, dry, start, n, pos, length):
    """Crossfade ``out`` (wet) from ``dry`` over ``length`` samples, ``pos`` already done."""
    for i in range(n):
        k = pos + i
        if k >= length:
            break
        a = (k + 1.0) / length
        for c in range(out.shape[0]):
            out[c, start + i] = a * out[c, start + i] + (1.0 - a) * dry[c, start + i]


@dataclass
class EngineStats:
    """A snapshot of the engine's counters (see :meth:`Engine.stats`)."""

    hops_processed: int
    hops_skipped: int
    deadline_misses: int
    missed_samples: int
    input_overflows: int
    nonfinite_samples: int
    latency_samples: int
    sample_rate: int
    hop: int
    per_hop_ms: dict
    rtf_p50: float
    rtf_p99: float
    worker_error: str | None
    model_rate: int = 0
    resampler_latency_samples: int = 0  # both resamplers, in I/O samples (0: same rate)
    resampler_underruns: int = 0
    #: the output queue's lead over the audio side as each hop's output landed, ms (min over
    #: the run; p1, p50 over the last 16384 hops): a hop that lands with a lead >= 0 is in
    #: time, so the minimum is the part of the safety margin this run never needed
    #: (negative: misses)
    lead_ms: dict | None = None

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate


class Engine:
    """Runs a separator on a live stream. Sizes are fixed here; nothing allocates later.

    Args:
        separator: any object following :mod:`livestems.model.nets.protocol`.
        block_size: the largest block the host will push or pull (samples). Default: ``hop``.
        crossfade_ms: length of the dry-to-wet crossfade when the model catches up again, and
            time constant of the click-free splice when it misses a deadline.
        smoothing_ms: gain smoothing of the stem mixer.
        ring_seconds: capacity of the input and wet rings; only matters when the worker stalls.
        io_rate: the host's sample rate in Hz (default: the separator's). When it differs,
            push/pull run at ``io_rate`` and the worker resamples both ways (see the module
            docstring for the latency this adds).
        resample_quality: the resamplers' recipe. 'LD' (default): our low-delay polyphase
            filter (:class:`~livestems.dsp.resample.PolyphaseStream`, about 1 ms both ways
            at 48 <-> 44.1 kHz, passband to ~18 kHz, docs/DSP.md); or a soxr recipe: 'HQ'
            keeps aliasing near -100 dB but adds ~40 ms, 'LQ' adds ~11 ms.
        buses: ``{name: {stem: linear gain}}``, extra stem sums rendered on the worker;
            stems not named have gain 1.0. Read them with ``pull_into(..., buses_out=...)``.
        safety_ms: extra latency (0..500 ms) the worker may run late by without a deadline
            miss (see the module docstring). Default 0. ``"auto"`` (the live commands'
            default): time the worker's step over up to 512 hops (1 s) now, at configuration
            (:attr:`warmup_hop_ms`), and take :func:`auto_safety_ms` of them; fixed
            from then on, so :attr:`latency_samples` stays exact.
    """

    def __init__(
        self,
        separator,
        *,
        block_size: int | None = None,
        crossfade_ms: float = 2.0,
        smoothing_ms: float = 10.0,
        ring_seconds: float = 2.0,
        io_rate: int | None = None,
        resample_quality: str = LD,
        buses: dict | None = None,
        safety_ms: float = 0.0,
    ):
        self.separator = sep = separator
        self.model_rate = int(sep.sample_rate)
        if io_rate is not None and (isinstance(io_rate, bool) or int(io_rate) != io_rate
                                    or not 1000 <= io_rate <= 768000):
            raise ValueError(f"io_rate must be a sample rate in Hz (1000..768000), got {io_rate!r}")
        self.sample_rate = int(io_rate or self.model_rate)  # the rate of push/pull
        self.channels = c = int(sep.channels)
        self.sources = tuple(sep.sources)
        self.hop = hop = int(sep.hop)
        self.block_size = int(block_size or hop)
        self.safety_auto = safety_ms == SAFETY_AUTO
        if not self.safety_auto and (isinstance(safety_ms, (bool, str))
                                     or not 0.0 <= float(safety_ms) <= SAFETY_MS_MAX):
            raise ValueError(f"safety_ms must be 0..{SAFETY_MS_MAX:g} ms or 'auto', got "
                             f"{safety_ms!r}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1 sample, got {block_size}")
        if resample_quality != LD and resample_quality not in QUALITIES:
            raise ValueError(f"resample_quality must be {LD} or one of {', '.join(QUALITIES)}, "
                             f"got {resample_quality!r}")
        s = len(self.sources)
        self.bus_names = tuple(buses or ())
        self._bus_gains = np.ones((len(self.bus_names), s), dtype=np.float64)
        for b, name in enumerate(self.bus_names):
            for stem, g in dict(buses[name]).items():
                if stem not in self.sources:
                    raise ValueError(f"bus {name!r}: unknown stem {stem!r}; this model's "
                                     f"stems are {', '.join(self.sources)}")
                self._bus_gains[b, self.sources.index(stem)] = float(g)
        nbus = len(self.bus_names)
        # wet ring rows: [mix C | stem 0 C | ... | stem S-1 C | bus 0 C | ... | bus B-1 C]
        self._rows = rows = c * (1 + s + nbus)
        self._stem_rows = slice(c, c + s * c)
        self._bus_rows = slice(c + s * c, rows)
        self.mixer = StemMixer(self.sources, self.model_rate, smoothing_ms)
        self.mixer.snap()

        # worker buffers
        self._hop_in = np.zeros((c, hop), dtype=np.float32)
        self._hop_out = np.zeros((rows, hop), dtype=np.float32)
        self._zeros_hop = np.zeros((rows, hop), dtype=np.float32)
        # bus gains ramp like the mixer's (one-pole, smoothing_ms), so a guide-vocal level
        # change from MIDI does not click
        self._bus_now = self._bus_gains.copy()
        self._bus_coeff = float(smoothing_coeff(float(smoothing_ms), float(self.model_rate)))
        self._times = np.zeros(_TIMES_KEPT, dtype=np.float64)
        self._leads = np.zeros(_TIMES_KEPT, dtype=np.int64)  # I/O samples, see _note_lead
        self._lead_n = 0
        self._lead_min = 0  # over the whole run (the ring above keeps the last hops)
        self.stall_hook = None  # test hook: callable run by the worker before each step
        self.nonfinite_samples = 0  # reset() zeroes it again after the warm-up hop
        self.hops_processed = 0
        self.worker_error: str | None = None

        # the safety margin: as given, or chosen from the per-hop compute time measured now
        self.warmup_hop_ms: dict | None = None
        if self.safety_auto:
            self.warmup_hop_ms = self._time_hops(AUTO_WARMUP_HOPS)
            w = self.warmup_hop_ms
            safety_ms = auto_safety_ms(w["p99"], w["max2"], 1e3 * self.block_size / self.sample_rate)
        self.safety_ms = float(safety_ms)
        self.safety_samples = int(round(self.safety_ms * 1e-3 * self.sample_rate))

        self.resample_quality = resample_quality
        self.resampling = self.sample_rate != self.model_rate
        self._src_in = self._src_out = None
        self.resampler_latency_samples = 0
        if self.resampling:
            self._setup_resampling(resample_quality)
        else:
            self.queue_samples = hop + self.block_size + self.safety_samples
            self.latency_samples = int(sep.latency_samples) + self.queue_samples

        cap = max(int(ring_seconds * self.sample_rate), 4 * (hop + self.block_size))
        self._in = Ring(c, cap)
        self._wet = Ring(rows, cap + self.queue_samples)
        self._dry = Ring(c, self.latency_samples + 2 * self.block_size + hop)

        # audio-side buffers
        nb = self.block_size
        self._pull_wet = np.zeros((rows, nb), dtype=np.float32)
        self._pull_dry = np.zeros((c, nb), dtype=np.float32)
        self._pull_fb = np.zeros((rows, nb), dtype=np.float32)
        self._push_buf = np.zeros((c, nb), dtype=np.float32)
        self._push_zeros = np.zeros((c, nb), dtype=np.float32)
        self._owed = 0  # input frames dropped on overflow, still to be written as silence
        self._last = np.zeros(rows, dtype=np.float64)
        self._offset = np.zeros(rows, dtype=np.float64)
        self._decay = math.exp(-1.0 / max(1.0, crossfade_ms * 1e-3 * self.sample_rate))
        self._xfade_len = max(1, int(round(crossfade_ms * 1e-3 * self.sample_rate)))

        self._thread: threading.Thread | None = None
        self._running = False
        self._poll_s = min(1e-3, 0.25 * hop / self.model_rate)
        self._warm_up()
        self.reset()

    def _time_hops(self, hops: int) -> dict:
        """Configuration: per-hop compute time (ms percentiles) of ``hops`` hops of noise,
        1 ms apart (fewer, at least 32, once ``AUTO_WARMUP_MAX_S`` have passed), through
        the worker's own step (separator + stems, mix, buses), on this thread, with
        the worker's torch threads. The separator is reset afterwards (by :meth:`reset`)."""
        self.limit_torch_threads()
        rng = np.random.default_rng(0)
        noise = (0.1 * rng.standard_normal((self.channels, self.hop * (hops + 2)))
                 ).astype(np.float32)
        hop, t = self.hop, np.zeros(hops + 2)
        start = time.perf_counter()
        for k in range(hops + 2):  # (the first two: compilation, caches; not counted)
            self._hop_in[...] = noise[:, k * hop:(k + 1) * hop]
            # rest between hops like the live worker, which sleeps until a hop's input is in:
            # a thread that wakes up competes with the machine's other work as it will live,
            # where back-to-back hops would keep the core and look faster than they will be
            time.sleep(AUTO_WARMUP_REST_S)
            t0 = time.perf_counter()
            try:
                y = self.separator.step(self._hop_in)
                self._render(np.ascontiguousarray(y, dtype=np.float32).reshape(-1, hop))
            except Exception as exc:
                raise RuntimeError(f"the separator failed while timing its warm-up hops "
                                   f"(safety_ms='auto'): {type(exc).__name__}: {exc}") from exc
            t[k] = time.perf_counter() - t0
            if k >= 33 and time.perf_counter() - start > AUTO_WARMUP_MAX_S:
                hops = k - 1
                break
        t = t[2:hops + 2] * 1000.0
        out = {q: float(np.percentile(t, v)) for q, v in (("p50", 50), ("p90", 90), ("p99", 99))}
        out.update(max=float(t.max()), max2=float(np.sort(t)[-2]), hops=int(hops))
        return out

    def _setup_low_delay(self, m_max: int, lag: int) -> None:
        """:meth:`_setup_resampling` with the low-delay resamplers (:class:`PolyphaseStream`).

        Their delays may be fractional, in steps of ``1 / (F/g)`` I/O samples (``g`` the gcd
        of the rates), so instead of padding the model-rate queue to a whole number of I/O
        samples (up to ``F/g - 1`` model samples: 3.3 ms at 48 kHz), the output resampler's
        delay is lengthened by the fraction that makes the total whole::

            (F/g) * latency = dq_in + (separator latency + hop - 1) * (R/g) + dq_out
                              + (F/g) * (block + lag + safety)
        """
        sep, c, hop = self.separator, self.channels, self.hop
        big_r, big_f = self.sample_rate, self.model_rate
        g = math.gcd(big_r, big_f)
        rr, fr = big_r // g, big_f // g
        self._src_in = PolyphaseStream(big_r, big_f, c, max_block=self._chunk_max)
        pad = hop - 1
        self._pad_model = pad
        before_q = self._src_in.delay_q + (int(sep.latency_samples) + pad) * rr
        dq_out = PolyphaseStream.min_delay_q(big_f, big_r)
        dq_out += (-(before_q + dq_out)) % fr
        self._src_out = PolyphaseStream(big_f, big_r, self._rows, max_block=m_max,
                                        delay_q=dq_out)
        self._exact_latency = True
        self.queue_samples = self.block_size + lag + self.safety_samples
        self.latency_samples = (before_q + dq_out) // fr + self.queue_samples
        self.resampler_latency_samples = int(round((self._src_in.delay_q + dq_out) / fr))

    def _setup_resampling(self, quality: str) -> None:
        """Size the resamplers, the model-rate queues and the latency (see module docstring)."""
        sep, c, hop = self.separator, self.channels, self.hop
        big_r, big_f = self.sample_rate, self.model_rate
        # the worker reads at most this many I/O samples per resampler call
        self._chunk_max = max(self.block_size, -(-hop * big_r // big_f), 1024)
        m_max = -(-self._chunk_max * big_f // big_r) + 1
        lag = -(-big_r // big_f)
        self.resample_quality = quality
        if quality == LD:
            self._setup_low_delay(m_max, lag)
        else:
            self._src_in = ResampleStream(big_r, big_f, c, quality=quality,
                                          max_block=self._chunk_max)
            self._src_out = ResampleStream(big_f, big_r, self._rows, quality=quality,
                                           max_block=m_max)
            base = self._src_in.latency_samples + int(sep.latency_samples)
            step = big_f // math.gcd(big_r, big_f)  # D must be a multiple of this: D*R/F exact
            pad = hop - 1
            if step <= 4 * 4096:  # otherwise the pad would cost more than a rounding error
                pad += (-(base + pad)) % step
            self._pad_model = pad
            d_model = base + pad
            self._exact_latency = (d_model * big_r) % big_f == 0
            self.queue_samples = self.block_size + lag + self.safety_samples
            d_io = int(round(d_model * big_r / big_f))
            self.latency_samples = d_io + self._src_out.latency_samples + self.queue_samples
            self.resampler_latency_samples = (
                int(round(self._src_in.latency_samples * big_r / big_f))
                + self._src_out.latency_samples)
        pad = self._pad_model
        self._m_in = Ring(c, 4 * (m_max + hop))
        self._m_out = Ring(self._rows, 4 * (m_max + hop) + pad)
        self._chunk = np.zeros((c, self._chunk_max), dtype=np.float32)
        self._m_buf = np.zeros((self._rows, m_max), dtype=np.float32)

    def _warm_up(self) -> None:
        """Compile every kernel and run one hop through the separator now, at configuration,
        so that no JIT compilation or first-call cost lands on the audio or worker path."""
        self._wet.write(self._zeros_hop)
        self._wet.read(self._hop_out)
        _splice(self._pull_wet, 0, 1, self._offset, self._decay)
        _crossfade(self._pull_wet, self._pull_fb, 0, 1, 0, self._xfade_len)
        sanitize_inplace(self._hop_in)
        y = self.separator.step(self._hop_in)
        self._render(np.ascontiguousarray(y, dtype=np.float32).reshape(-1, self.hop))
        self.mixer.snap()
        if self.resampling:
            self._m_in.write(self._hop_in)
            self._m_in.read(self._hop_in)
            self._m_out.write(self._hop_out)
            self._m_out.read(self._m_buf, 0, 1)
            self._src_in.process(self._chunk[:, :1])
            self._wet.write(self._src_out.process(self._m_buf[:, :1]))
            self._wet.skip(self._wet.readable())

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to silence and zero counters. Only while the worker is stopped."""
        if self._running:
            raise RuntimeError("stop() the engine before reset()")
        self.separator.reset()
        self._in.reset()
        self._wet.reset()
        self._dry.reset()
        self._bus_now[:] = self._bus_gains  # start at the set levels, no ramp from 1.0
        pre = np.zeros((self._wet.channels, self.queue_samples), dtype=np.float32)
        self._wet.write(pre)
        self._dry.write(np.zeros((self.channels, self.latency_samples), dtype=np.float32))
        if self.resampling:
            self._src_in.reset()
            self._src_out.reset()
            self._m_in.reset()
            self._m_out.reset()
            self._m_out.write(np.zeros((self._rows, self._pad_model), dtype=np.float32))
        self._q = 0  # output position of the next pulled sample (audio side)
        self._wet_mode = True
        self._xfade_pos = self._xfade_len
        self._last.fill(0.0)
        self._offset.fill(0.0)
        self.hops_processed = 0
        self.hops_skipped = 0
        self.deadline_misses = 0
        self.missed_samples = 0
        self.input_overflows = 0
        self._owed = 0
        self.nonfinite_samples = 0
        self.worker_error: str | None = None
        self._times.fill(0.0)
        self._lead_n = 0
        self._lead_min = 0

    def start(self) -> "Engine":
        """Start the worker thread (idempotent). Call :func:`warmup` before, not after."""
        self.limit_torch_threads()
        if self._thread is None:
            _RUNNING.add(self)
            self._running = True
            self._thread = threading.Thread(target=self._worker, name="livestems-worker",
                                            daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def limit_torch_threads(threads: int | None = None) -> None:
        """One torch intra-op thread for the hop-by-hop step (process-wide, if torch is in
        use). A hop's tensors are tiny: a second thread adds a hand-off per op and, when the
        other core is busy (the audio thread, the host, anything), waits for it, which is
        what blows the p99 up (docs/MODEL.md). Called by :meth:`start` and by the file
        backend before it runs hops itself. ``livestems bench --threads N`` sets the module's
        ``STREAM_TORCH_THREADS`` to measure other counts."""
        threads = threads or STREAM_TORCH_THREADS
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def stop(self) -> None:
        """Stop the worker thread and wait for it."""
        self._running = False
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        _RUNNING.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- audio side ------------------------------------------------------------------------
    def push(self, block: np.ndarray) -> None:
        """Audio thread: copy ``block`` float32 ``[channels, n]`` (n <= block_size) in."""
        n = block.shape[1]
        if block.dtype != np.float32 or block.shape[0] != self.channels or n > self.block_size:
            raise ValueError(
                f"push() expects float32 [{self.channels}, n <= {self.block_size}], "
                f"got {block.dtype} {list(block.shape)}; push smaller blocks or build the "
                f"Engine with a larger block_size"
            )
        # Frames dropped while the worker stalled are owed to the input ring as silence, in
        # their place: the worker maps input frames to output positions by counting them, so
        # a plain drop would make every later hop look already played (never wet again).
        while self._owed:
            k = min(self._owed, self.block_size)
            got = self._in.write(self._push_zeros[:, :k])
            self._owed -= got
            if got < k:
                break
        if self._owed:  # still no room: this block is dropped (owed) too
            self._owed += n
            self.input_overflows += n
        else:
            written = self._in.write(block)
            if written < n:  # the worker has stalled for longer than the ring: drop, count
                self.input_overflows += n - written
                self._owed += n - written
        self._dry.write(block)

    def pull_into(self, mix_out: np.ndarray, stems_out: np.ndarray | None = None,
                  buses_out: np.ndarray | None = None) -> bool:
        """Audio thread: fill ``mix_out`` ``[C, n]`` (and ``stems_out`` ``[S, C, n]``, and
        ``buses_out`` ``[B, C, n]`` in the order of :attr:`bus_names`).

        Never blocks. Returns True if the block came from the model, False if (part of) it is
        the dry fallback (a deadline miss, counted). The fallback is the dry input delayed by
        the declared latency on the mix and the buses, and silence on the stems, spliced
        without a click.
        """
        n = mix_out.shape[1]
        if n > self.block_size:
            raise ValueError(f"pull of {n} samples exceeds block_size {self.block_size}")
        c = self.channels
        wet, fb = self._pull_wet, self._pull_fb
        self._dry.read(self._pull_dry, 0, n)  # always consumed: keeps the dry path aligned
        # the fallback the listener gets on a miss: dry input on the mix rows, silent stems
        fb[:c, :n] = self._pull_dry[:, :n]
        fb[self._stem_rows, :n] = 0.0
        for b in range(len(self.bus_names)):
            fb[self._bus_rows.start + b * c: self._bus_rows.start + (b + 1) * c, :n] = \
                self._pull_dry[:, :n]
        behind = self._q - self._wet.read_count
        if behind > 0:  # the worker delivered these too late: they were played dry
            self._wet.skip(behind)
        avail = self._wet.readable() if self._wet.read_count == self._q else 0
        if avail >= n:
            self._wet.read(wet, 0, n)
            if not self._wet_mode:  # the model caught up: crossfade from the fallback
                self._wet_mode = True
                self._xfade_pos = 0
            self._fade_in(0, n)
            used_model = True
        else:
            m = avail if self._wet_mode else 0
            if m:
                self._wet.read(wet, 0, m)
                self._fade_in(0, m)
            if self._wet_mode:  # switching to the fallback at sample m: start from here
                for k in range(wet.shape[0]):
                    prev = wet[k, m - 1] if m else self._last[k]
                    self._offset[k] = prev - fb[k, m]
                self._wet_mode = False
            _splice(fb, m, n - m, self._offset, self._decay)
            wet[:, m:n] = fb[:, m:n]
            self.deadline_misses += 1
            self.missed_samples += n - m
            used_model = False
        self._q += n
        self._last[:] = wet[:, n - 1]
        mix_out[:, :n] = wet[:c, :n]
        if stems_out is not None:
            stems_out[:, :, :n] = wet[self._stem_rows, :n].reshape(stems_out.shape[0], c, n)
        if buses_out is not None and self.bus_names:
            buses_out[:, :, :n] = wet[self._bus_rows, :n].reshape(buses_out.shape[0], c, n)
        return used_model

    def _fade_in(self, a: int, b: int) -> None:
        """Crossfade wet rows [a, b) of the pull buffer from the (spliced) fallback."""
        if self._xfade_pos < self._xfade_len:
            _splice(self._pull_fb, a, b - a, self._offset, self._decay)
            _crossfade(self._pull_wet, self._pull_fb, a, b - a, self._xfade_pos, self._xfade_len)
            self._xfade_pos += b - a
            if self._xfade_pos >= self._xfade_len:
                self._offset.fill(0.0)

    def pull(self, n: int, wait_s: float = 0.0):
        """Convenience for non-audio callers: returns ``(mix [C, n], stems [S, C, n])``.

        With ``wait_s > 0`` it polls up to that long for the worker to deliver (file
        processing and tests); audio callbacks use :meth:`pull_into` with no waiting.
        """
        if wait_s > 0:
            deadline = time.perf_counter() + wait_s
            while (self._wet.read_count + self._wet.readable() < self._q + n
                   and time.perf_counter() < deadline):
                time.sleep(self._poll_s)
        mix = np.empty((self.channels, n), dtype=np.float32)
        stems = np.empty((len(self.sources), self.channels, n), dtype=np.float32)
        self.pull_into(mix, stems)
        return mix, stems

    def set_bus_gain(self, bus: str, stem: str, gain: float) -> None:
        """Control thread: linear gain of ``stem`` in ``bus`` (takes effect at the next hop)."""
        if bus not in self.bus_names:
            raise ValueError(f"unknown bus {bus!r}; buses: {', '.join(self.bus_names) or 'none'}")
        self._bus_gains[self.bus_names.index(bus), self.mixer.index(stem)] = float(gain)

    # -- worker side -----------------------------------------------------------------------
    def _render(self, y2: np.ndarray) -> None:
        """Worker: stems ``[S*C, hop]`` -> ``self._hop_out`` rows (mix, stems, buses)."""
        out, c, hop = self._hop_out, self.channels, self.hop
        stems = out[self._stem_rows]
        stems[...] = y2
        self.nonfinite_samples += sanitize_inplace(stems)
        s3 = stems.reshape(len(self.sources), c, hop)
        self.mixer.mix(s3, out[:c])
        for b in range(len(self.bus_names)):
            r0 = self._bus_rows.start + b * c
            mix_stems(s3, self._bus_now[b], self._bus_gains[b], self._bus_coeff,
                      out[r0:r0 + c])

    def _step_hop(self) -> bool:
        """Worker: run ``self._hop_in`` through the separator and render ``self._hop_out``.

        Returns False if the separator failed (raised, or returned the wrong shape): the error
        is kept in :attr:`worker_error` (reported once), pending input is dropped, and from
        then on nothing is written, so :meth:`pull_into` plays the dry path.
        """
        hop, c = self.hop, self.channels
        t0 = time.perf_counter()
        try:
            self.nonfinite_samples += sanitize_inplace(self._hop_in)
            if self.stall_hook is not None:
                self.stall_hook(self)
            y = self.separator.step(self._hop_in)
            if getattr(y, "shape", None) != (len(self.sources), c, hop):
                raise ValueError(
                    f"separator returned shape {list(getattr(y, 'shape', []))}, expected "
                    f"[{len(self.sources)}, {c}, {hop}]"
                )
            self._render(y.reshape(-1, hop))
        except Exception as exc:  # noqa: BLE001 - reported once; audio goes on dry
            self.worker_error = f"{type(exc).__name__}: {exc}"
            self._in.skip(self._in.readable())
            return False
        self._times[self.hops_processed & (_TIMES_KEPT - 1)] = time.perf_counter() - t0
        self.hops_processed += 1
        return True

    def run_pending(self) -> int:
        """Process every whole hop waiting in the input ring; returns hops done.

        Called by the worker thread, or directly (without :meth:`start`) to run the engine
        synchronously.
        """
        if self.resampling:
            return self._run_pending_resampled()
        done = 0
        hop, out = self.hop, self._hop_out
        if self.worker_error is not None:
            self._in.skip(self._in.readable())
            return 0
        while self._in.readable() >= hop and self._wet.writable() >= hop:
            self._in.read(self._hop_in)
            # the next sample this hop writes will be played at output position `pos`
            pos = self._wet.write_count
            if pos + hop <= self._q:
                # already played dry: skip the model so the worker catches up with the clock
                self._wet.write(self._zeros_hop)
                self.hops_skipped += 1
                done += 1
                continue
            if not self._step_hop():
                return done
            self._note_lead()
            self._wet.write(out)
            done += 1
        return done

    def _run_pending_resampled(self) -> int:
        """:meth:`run_pending` when the host rate differs from the model rate.

        I/O-rate chunks -> input resampler -> model-rate queue -> whole hops through the model
        -> model-rate output queue (pre-filled with ``pad`` zeros) -> exactly as many samples
        as the chunk produced -> output resampler -> wet ring at the I/O rate.
        """
        done = 0
        hop, out = self.hop, self._hop_out
        src_in, src_out = self._src_in, self._src_out
        if self.worker_error is not None:
            self._in.skip(self._in.readable())
            return 0
        while True:
            n = min(self._in.readable(), self._chunk_max)
            if n == 0:
                break
            m = src_in.output_count(n)
            if self._wet.writable() < src_out.max_out:
                break
            k_out = src_out.output_count(m)
            # the whole chunk's output would be played dry already: skip the model
            late = self._wet.write_count + k_out <= self._q
            self._in.read(self._chunk, 0, n)
            self._m_in.write(src_in.process(self._chunk[:, :n]))
            while self._m_in.readable() >= hop:
                self._m_in.read(self._hop_in)
                if late:
                    self._m_out.write(self._zeros_hop)
                    self.hops_skipped += 1
                    done += 1
                    continue
                if not self._step_hop():
                    return done
                self._m_out.write(out)
                done += 1
            got = self._m_out.read(self._m_buf, 0, m)
            assert got == m, "model-rate output queue ran dry: pad too small"
            rows = src_out.process(self._m_buf[:, :m])
            if not late:
                self._note_lead()
            self._wet.write(rows)
        return done

    def _note_lead(self) -> None:
        """Worker, right before output lands in the wet ring: how many samples the audio
        side will still play before it reaches them (>= 0: in time)."""
        lead = self._wet.write_count - self._q
        self._leads[self._lead_n & (_TIMES_KEPT - 1)] = lead
        if lead < self._lead_min or not self._lead_n:
            self._lead_min = lead
        self._lead_n += 1

    def _worker(self) -> None:
        while self._running:
            if self.run_pending() == 0:
                time.sleep(self._poll_s)

    # -- reporting -------------------------------------------------------------------------
    def hop_times_ms(self) -> np.ndarray:
        """Per-hop compute times (ms) of the last hops processed (up to 16384), a copy."""
        k = min(self.hops_processed, _TIMES_KEPT)
        return self._times[:k] * 1000.0

    def stats(self) -> EngineStats:
        """Counters and per-hop compute-time percentiles (ms) over the last hops."""
        k = min(self.hops_processed, _TIMES_KEPT)
        hop_ms = 1000.0 * self.hop / self.model_rate
        if k:
            t = np.sort(self._times[:k]) * 1000.0
            pct = {
                name: float(np.percentile(t, q))
                for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))
            }
            pct["max"] = float(t[-1])
            pct["mean"] = float(t.mean())
        else:
            pct = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0}
        return EngineStats(
            hops_processed=self.hops_processed,
            hops_skipped=self.hops_skipped,
            deadline_misses=self.deadline_misses,
            missed_samples=self.missed_samples,
            input_overflows=self.input_overflows,
            nonfinite_samples=self.nonfinite_samples,
            latency_samples=self.latency_samples,
            sample_rate=self.sample_rate,
            hop=self.hop,
            per_hop_ms=pct,
            rtf_p50=pct["p50"] / hop_ms,
            rtf_p99=pct["p99"] / hop_ms,
            worker_error=self.worker_error,
            model_rate=self.model_rate,
            resampler_latency_samples=self.resampler_latency_samples,
            resampler_underruns=(self._src_in.underruns + self._src_out.underruns
                                 if self.resampling else 0),
            lead_ms=self._lead_percentiles(),
        )

    def _lead_percentiles(self) -> dict | None:
        k = min(self._lead_n, _TIMES_KEPT)
        if not k:
            return None
        ms = np.sort(self._leads[:k]) * (1000.0 / self.sample_rate)
        # min: the whole run's; p1, p50: the last _TIMES_KEPT outputs' (3 minutes at 11.6 ms
        # hops: the minimum of that window alone hid the misses of a long soak's first minutes)
        return {"min": self._lead_min * (1000.0 / self.sample_rate),
                "p1": float(np.percentile(ms, 1)),
                "p50": float(np.percentile(ms, 50)), "outputs": int(self._lead_n)}
