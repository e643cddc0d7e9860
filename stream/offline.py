"""Offline separation of a whole signal in few large passes: what `separate` computes with.

The streaming engine steps the network one hop (512 samples for ``rt-tiny``) at a time; a
file has no deadline, so here the causal hybrid net runs long chunks of STFT frames through
each layer at once (:meth:`StreamingHybrid.forward`, its torch-STFT path, state carried from
chunk to chunk). The result is the streaming result: the same causal network from the same
zero state, only batched over time (tests/test_offline.py measures the difference against the
hop-by-hop ``step`` path in dB). Separators without such a batched path (the DSP baseline
``center``, windowed official models) run their own ``step`` hop by hop with no engine in
between (:func:`~livestems.model.protocol.stream_offline`), which is exact by construction.

Threading: call from one thread per separator. Torch's thread count is the caller's choice
(:func:`set_threads`); the library runner gives each worker process ``cores / workers``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["OFFLINE_CHUNK_HOPS", "separate_array", "set_threads", "Timer"]

#: STFT hops per chunk for the batched path (256 hops of 256 samples = 1.5 s at 44.1 kHz):
#: long enough that per-layer call overhead is amortised, short enough that the activations of
#: one chunk stay in cache-sized tensors; measured fastest of 64/256/1024/4096 on the 2-core VM
#: with one torch thread (docs/SCALE.md)
OFFLINE_CHUNK_HOPS = 256


def set_threads(threads: int) -> None:
    """Torch intra-op threads for this process (>= 1)."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(int(threads))


def batched_path(separator) -> str:
    """'batched' when the separator has the chunked offline path, else 'step'."""
    try:
        from livestems.model.hybrid.streaming import StreamingHybrid
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
    from livestems.model.protocol import stream_offline

    return stream_offline(separator, x)


@dataclass
class Timer:
    """Wall seconds per phase of one file: ``decode_s`` (read, resample in), ``compute_s``
    (the network), ``write_s`` (resample out, encode, rename)."""

    decode_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    #: wall-clock (epoch) start and end of the compute phase, to measure overlap across workers
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
        if self.name == "compute_s":
            self.timer.compute_span = (self.wall0, time.time())
        return False
