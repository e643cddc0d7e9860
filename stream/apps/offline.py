"""Offline separation of a whole signal in few large passes: what `separate` computes with.

The streaming engine steps the network one hop (512 samples for ``rt-tiny``) at a time; a
file has no deadline, so here the causal hybrid net runs long chunks of STFT frames through
each layer at once, state carried from chunk to chunk. By default that is the batched engine
:class:`~livestems.model.nets.hybrid.batched.BatchedNet` (channels-first GEMMs and fused numba
kernels, several times faster than the network's own torch code); networks it does not cover
(and ``engine="torch"``) run :meth:`CausalHybridNet.stream` over the same chunks. Either way
the result is the streaming result: the same causal network from the same zero state, only
batched over time (tests/stream/apps/test_offline.py measures the difference against the hop-by-hop
``step`` path in dB). Separators without a batched path (the DSP baseline ``center``,
windowed official models) run their own ``step`` hop by hop with no engine in between
(:func:`~livestems.model.nets.protocol.stream_offline`), which is exact by construction.

Threading: call from one thread per separator. Torch's thread count is the caller's choice
(:func:`set_threads`); the library runner gives each worker process ``cores / workers``. With
more than one torch thread the batched engine runs one file on that many threads of its own
(:class:`~livestems.model.nets.hybrid.batched.BlockRunner`: blocks of :data:`BLOCK_FRAMES` frames
in parallel, equal to the one-thread result), torch on one thread inside each.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["OFFLINE_CHUNK_HOPS", "SEGMENT_SECONDS", "BLOCK_FRAMES", "ENGINES",
           "separate_array", "iter_separated", "set_threads", "Timer", "batched_engine",
           "block_runner", "prepare"]

#: STFT hops per chunk for the batched path (512 hops of 256 samples = 3 s at 44.1 kHz): long
#: enough that the ~100 kernel and GEMM calls per chunk (2-7 us of Python each) cost ~1 %;
#: rt-tiny on one thread ran 45.3x / 48.4x / 50.9x / 51.6x / 46.6x at 64 / 128 / 256 / 512 /
#: 1024 hops once its kernels ran along whole rows (session 11; docs/SCALE.md)
OFFLINE_CHUNK_HOPS = 512

#: audio per segment of :func:`iter_separated`: memory stays that many seconds of stems,
#: whatever the file's length (an hour of stems at once would be ~5 GB)
SEGMENT_SECONDS = 30.0

#: the offline engines of the causal hybrid networks: ``"auto"`` (the batched engine where it
#: covers the network, else ``"torch"``), ``"batched"``, ``"torch"`` (the network's own
#: :meth:`stream`: the reference, and what the benchmark compares against). The environment
#: variable ``LIVESTEMS_OFFLINE_ENGINE`` sets the default.
ENGINES = ("auto", "batched", "torch")


def _default_engine() -> str:
    engine = os.environ.get("LIVESTEMS_OFFLINE_ENGINE", "auto")
    if engine not in ENGINES:
        raise ValueError(f"LIVESTEMS_OFFLINE_ENGINE must be one of {', '.join(ENGINES)}, "
                         f"got {engine!r}")
    return engine


def set_threads(threads: int) -> None:
    """Torch intra-op threads for this process (>= 1)."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(int(threads))


def batched_path(separator) -> str:
    """'batched' when the separator has the chunked offline path, else 'step'."""
    try:
        from livestems.model.nets.hybrid.streaming import StreamingHybrid
    except ImportError:  # pragma: no cover - torch is a dependency
        return "step"
    return "batched" if isinstance(separator, StreamingHybrid) else "step"


def _weights_version(net) -> tuple:
    """Changes whenever a parameter is modified in place (optimiser steps, loading weights)."""
    return tuple(int(p._version) for p in net.parameters())


def batched_engine(separator, frames: int = OFFLINE_CHUNK_HOPS):
    """The separator's :class:`~livestems.model.nets.hybrid.batched.BatchedNet` for chunks of
    ``frames`` STFT frames (built once and kept on the separator, rebuilt after its weights
    change), or None when the engine does not cover its network or it is not on the CPU."""
    if batched_path(separator) != "batched" or separator.device.type != "cpu":
        return None
    from livestems.model.nets.hybrid.batched import BatchedNet, Unsupported

    net = separator.module
    cache = separator.__dict__.setdefault("_offline_engines", {})
    version = _weights_version(net)
    if cache.get("version") != version:
        cache.clear()
        cache["version"] = version
    key = int(frames)
    if key not in cache:
        try:
            cache[key] = BatchedNet(net, frames=key)
        except Unsupported as exc:
            cache[key] = None
            separator.__dict__["offline_engine_error"] = str(exc)
    return cache[key]


#: STFT frames per block when one file runs on several threads (:class:`BlockRunner`): each
#: block recomputes ``warmup_frames`` (17 for ``rt-tiny``) frames before it, 7 % of 256, but
#: a smaller block stays in cache: on an idle 2-core machine 256 ran rt-tiny at 93-96x and
#: rt-small at 49x against 88x and 47x for 512, 81-84x for 128 and 384 (docs/SCALE.md)
BLOCK_FRAMES = 256


def block_runner(separator, threads: int, block: int | None = None):
    """The separator's :class:`~livestems.model.nets.hybrid.batched.BlockRunner` on ``threads``
    threads (kept on the separator like :func:`batched_engine`), or None where the batched
    engine does not cover it."""
    if batched_engine(separator) is None:
        return None
    from livestems.model.nets.hybrid.batched import BlockRunner

    block = int(block or BLOCK_FRAMES)
    cache = separator.__dict__["_offline_engines"]
    key = ("blocks", int(threads), block)
    if key not in cache:
        cache[key] = BlockRunner(separator.module, threads=threads, block=block)
    return cache[key]


def prepare(separator, threads: int | None = None) -> None:
    """Build the separator's offline engine now and run it once on a few frames of silence,
    so its numba kernels are compiled (first run on a machine) or loaded from numba's cache
    here rather than during the first file's compute (part of loading the model)."""
    eng = batched_engine(separator)
    if eng is None:
        return
    import torch

    hop = eng.hop
    eng.reset()
    eng.run(np.zeros((eng.C, 2 * hop), np.float32))
    eng.reset()
    threads = threads or torch.get_num_threads()
    if threads > 1:
        runner = block_runner(separator, threads)
        runner.reset()
        runner.run(np.zeros((eng.C, 3 * hop), np.float32))
        runner.reset()


def _engine_for(separator, chunk_hops: int, engine: str | None):
    engine = engine or _default_engine()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "torch":
        return None
    eng = batched_engine(separator, chunk_hops)
    if eng is None and engine == "batched":
        why = separator.__dict__.get("offline_engine_error", "not a causal hybrid net on the CPU")
        raise ValueError(f"the batched offline engine does not cover this separator: {why}")
    return eng


def separate_array(separator, x: np.ndarray, *, chunk_hops: int = OFFLINE_CHUNK_HOPS,
                   engine: str | None = None) -> np.ndarray:
    """Separate a whole signal: float32 ``[channels, T]`` at ``separator.sample_rate`` ->
    stems float32 ``[S, channels, T]``, aligned with the input (latency removed); with the
    batched engine a view of the buffer it wrote, a little longer (not C-contiguous).

    Resets ``separator`` (its streaming state is used by the step fallback)."""
    if x.ndim != 2 or x.shape[0] != separator.channels:
        raise ValueError(f"expected [channels={separator.channels}, time], got {list(x.shape)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if batched_path(separator) == "batched":
        # one segment holding the whole signal and the latency's tail: the stems are a view
        # of the buffer the engine wrote (no copy of them)
        step = int(chunk_hops) * int(separator.module.stft_hop)
        whole = x.shape[1] + int(separator.latency_samples) + step
        ys = list(iter_separated(separator, x, segment_samples=whole, chunk_hops=chunk_hops,
                                 engine=engine))
        if len(ys) == 1:
            return ys[0]
        shape = (len(separator.sources), separator.channels, 0)
        return np.concatenate(ys, axis=-1) if ys else np.zeros(shape, np.float32)
    from livestems.model.nets.protocol import stream_offline

    return stream_offline(separator, x)


def iter_separated(separator, x: np.ndarray, *, segment_samples: int | None = None,
                   chunk_hops: int = OFFLINE_CHUNK_HOPS, engine: str | None = None,
                   reuse: bool = False) -> Iterator[np.ndarray]:
    """:func:`separate_array` in pieces: float32 ``[channels, T]`` -> successive aligned stem
    blocks float32 ``[S, channels, n]`` whose concatenation is ``separate_array(x)``.

    The network's state is carried from piece to piece (the same chunked computation), so
    memory holds about ``segment_samples`` of stems (default :data:`SEGMENT_SECONDS`) however
    long ``x`` is. ``engine``: one of :data:`ENGINES` (default ``"auto"``). ``reuse``: with
    the one-thread batched engine, every block is a view of one buffer that the next block
    overwrites, for a consumer that is done with each block before it asks for the next (a
    file writer): no fresh memory to fault in per segment (2-3 % of the compute here).
    Resets ``separator``."""
    if x.ndim != 2 or x.shape[0] != separator.channels:
        raise ValueError(f"expected [channels={separator.channels}, time], got {list(x.shape)}")
    total, lat = int(x.shape[1]), int(separator.latency_samples)
    seg = int(segment_samples or SEGMENT_SECONDS * separator.sample_rate)
    if batched_path(separator) == "batched":
        raw = _raw_batched(separator, x, seg, chunk_hops, engine, reuse)
    else:
        raw = _raw_step(separator, x, seg)
    skip, left = lat, total  # output sample j estimates input j - latency
    for y in raw:
        if skip:
            cut = min(skip, y.shape[-1])
            y, skip = y[..., cut:], skip - cut
        if left <= 0 or not y.shape[-1]:
            continue
        y = y[..., :left]
        left -= y.shape[-1]
        yield y
        if left <= 0:
            break


def _input_cols(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """Columns ``a .. b`` of ``x`` followed by zeros: a view where ``x`` has them all."""
    if b <= x.shape[1]:
        return x[:, a:b]
    piece = np.zeros((x.shape[0], b - a), dtype=np.float32)
    if a < x.shape[1]:
        piece[:, :x.shape[1] - a] = x[:, a:]
    return piece


def _padded_pieces(x: np.ndarray, total_in: int, seg: int) -> Iterator[np.ndarray]:
    """``x`` followed by zeros up to ``total_in`` samples, ``seg`` at a time."""
    for a in range(0, total_in, seg):
        yield _input_cols(x, a, min(total_in, a + seg))


def _raw_batched(separator, x, seg, chunk_hops, engine=None, reuse=False
                 ) -> Iterator[np.ndarray]:
    """The network's streaming output (latency not removed), ``seg`` input samples at a time,
    in chunks of ``chunk_hops`` hops with carried state: through the batched engine, or the
    network's torch-STFT path (:meth:`CausalHybridNet.stream`)."""
    import torch

    net = separator.module
    hop = int(net.stft_hop)
    step = int(chunk_hops) * hop
    seg = max(step, seg // step * step)  # whole chunks per piece
    n = -(-(x.shape[1] + separator.latency_samples) // hop) * hop
    eng = _engine_for(separator, int(chunk_hops), engine)
    threads = torch.get_num_threads()
    if eng is not None and threads > 1:
        # one file on several threads: blocks in parallel, torch one thread in each
        runner = block_runner(separator, threads)
        runner.reset()
        for piece in _padded_pieces(x, n, seg):
            torch.set_num_threads(1)
            try:
                y = runner.run(piece)
            finally:
                torch.set_num_threads(threads)
            yield y
        return
    if eng is not None:
        eng.reset()
        S, C = len(separator.sources), x.shape[0]
        flat = np.empty(S * C * min(n, seg), np.float32) if reuse else None
        for p0 in range(0, n, seg):
            p1 = min(n, p0 + seg)
            # the engine writes straight into it
            out = (np.empty((S, C, p1 - p0), np.float32) if flat is None
                   else flat[:S * C * (p1 - p0)].reshape(S, C, p1 - p0))
            for a in range(p0, p1, step):
                eng.run(_input_cols(x, a, min(p1, a + step)), out=out, at=a - p0)
            yield out
        return
    with torch.inference_mode():
        state = net.initial_state(1, separator.device)
        for piece in _padded_pieces(x, n, seg):
            outs = []
            for a in range(0, piece.shape[1], step):
                xt = torch.from_numpy(piece[None, :, a:a + step]).to(separator.device)
                outs.append(net.stream(xt, state)[0].cpu().numpy())
            yield np.concatenate(outs, axis=-1)


def _raw_step(separator, x, seg) -> Iterator[np.ndarray]:
    """``separator.step`` hop by hop (its streaming output), ``seg`` input samples at a time."""
    separator.reset()
    hop = int(separator.hop)
    seg = max(hop, seg // hop * hop)
    n = -(-(x.shape[1] + separator.latency_samples) // hop) * hop
    for piece in _padded_pieces(x, n, seg):
        out = np.empty((len(separator.sources), piece.shape[0], piece.shape[1]), np.float32)
        for a in range(0, piece.shape[1], hop):
            out[..., a:a + hop] = separator.step(np.ascontiguousarray(piece[:, a:a + hop]))
        yield out


@dataclass
class Timer:
    """Wall seconds per phase of one file: ``decode_s`` (read, resample in), ``compute_s``
    (the network), ``write_s`` (resample out, encode, rename)."""

    decode_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    #: wall-clock (epoch) start of the first compute phase and end of the last, to measure
    #: how the workers' compute overlapped
    compute_span: tuple[float, float] = (0.0, 0.0)

    def phase(self, name: str):
        return _Phase(self, name)

    def as_dict(self) -> dict:
        return {"decode_s": self.decode_s, "compute_s": self.compute_s,
                "write_s": self.write_s, "compute_span": list(self.compute_span)}


class _Phase:
    def __init__(self, timer: Timer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.t0, self.wall0 = time.perf_counter(), time.time()
        return self

    def __exit__(self, *exc):
        setattr(self.timer, self.name,
                getattr(self.timer, self.name) + time.perf_counter() - self.t0)
        if self.name == "compute_s":  # from the first compute phase's start to the last end
            start = self.timer.compute_span[0] or self.wall0
            self.timer.compute_span = (start, time.time())
        return False
