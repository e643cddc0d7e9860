"""Offline separation of a whole signal in few large passes: what `separate` computes with.

The streaming engine steps the network one hop (512 samples for ``rt-tiny``) at a time; a
file has no deadline, so here the causal hybrid net runs long chunks of STFT frames through
each layer at once (:meth:`StreamingHybrid.forward`, its torch-STFT path, state carried from
chunk to chunk). The result is the streaming result: the same causal network from the same
zero state, only batched over time (tests/stream/apps/test_offline.py measures the difference against the
hop-by-hop ``step`` path in dB). Separators without such a batched path (the DSP baseline
``center``, windowed official models) run their own ``step`` hop by hop with no engine in
between (:func:`~livestems.model.nets.protocol.stream_offline`), which is exact by construction.

Threading: call from one thread per separator. Torch's thread count is the caller's choice
(:func:`set_threads`); the library runner gives each worker process ``cores / workers``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["OFFLINE_CHUNK_HOPS", "SEGMENT_SECONDS", "separate_array", "iter_separated",
           "set_threads", "Timer"]

#: STFT hops per chunk for the batched path (256 hops of 256 samples = 1.5 s at 44.1 kHz):
#: long enough that per-layer call overhead is amortised, short enough that the activations of
#: one chunk stay in cache-sized tensors; measured fastest of 64/256/1024/4096 on the 2-core VM
#: with one torch thread (docs/SCALE.md)
OFFLINE_CHUNK_HOPS = 256


#: audio per segment of :func:`iter_separated`: memory stays that many seconds of stems,
#: whatever the file's length (an hour of stems at once would be ~5 GB)
SEGMENT_SECONDS = 30.0


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


def separate_array(separator, x: np.ndarray, *, chunk_hops: int = OFFLINE_CHUNK_HOPS
                   ) -> np.ndarray:
    """Separate a whole signal: float32 ``[channels, T]`` at ``separator.sample_rate`` ->
    stems float32 ``[S, channels, T]``, aligned with the input (latency removed).

    Resets ``separator`` (its streaming state is used by the step fallback)."""
    if x.ndim != 2 or x.shape[0] != separator.channels:
        raise ValueError(f"expected [channels={separator.channels}, time], got {list(x.shape)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if batched_path(separator) == "batched":
        return separator.forward(x[None], chunk_hops=int(chunk_hops))[0]
    from livestems.model.nets.protocol import stream_offline

    return stream_offline(separator, x)


def iter_separated(separator, x: np.ndarray, *, segment_samples: int | None = None,
                   chunk_hops: int = OFFLINE_CHUNK_HOPS) -> Iterator[np.ndarray]:
    """:func:`separate_array` in pieces: float32 ``[channels, T]`` -> successive aligned stem
    blocks float32 ``[S, channels, n]`` whose concatenation is ``separate_array(x)``.

    The network's state is carried from piece to piece (the same chunked computation as
    :meth:`StreamingHybrid.forward`, which it equals), so memory holds about
    ``segment_samples`` of stems (default :data:`SEGMENT_SECONDS`) however long ``x`` is.
    Resets ``separator``."""
    if x.ndim != 2 or x.shape[0] != separator.channels:
        raise ValueError(f"expected [channels={separator.channels}, time], got {list(x.shape)}")
    total, lat = int(x.shape[1]), int(separator.latency_samples)
    seg = int(segment_samples or SEGMENT_SECONDS * separator.sample_rate)
    if batched_path(separator) == "batched":
        raw = _raw_batched(separator, x, seg, chunk_hops)
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


def _padded_pieces(x: np.ndarray, total_in: int, seg: int) -> Iterator[np.ndarray]:
    """``x`` followed by zeros up to ``total_in`` samples, ``seg`` at a time."""
    for a in range(0, total_in, seg):
        n = min(seg, total_in - a)
        piece = np.zeros((x.shape[0], n), dtype=np.float32)
        have = max(0, min(n, x.shape[1] - a))
        piece[:, :have] = x[:, a:a + have]
        yield piece


def _raw_batched(separator, x, seg, chunk_hops) -> Iterator[np.ndarray]:
    """The network's streaming output (latency not removed), ``seg`` input samples at a time,
    through its torch-STFT path in chunks of ``chunk_hops`` hops with carried state."""
    import torch

    net = separator.module
    hop = int(net.stft_hop)
    step = int(chunk_hops) * hop
    seg = max(step, seg // step * step)  # whole chunks per piece
    n = -(-(x.shape[1] + separator.latency_samples) // hop) * hop
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
