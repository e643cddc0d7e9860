"""Single-producer / single-consumer multichannel float32 ring buffers for the audio path.

One thread writes, one thread reads; neither ever blocks or allocates. The read and write
positions are monotonically increasing sample counters (Python ints: a store is atomic under the
GIL), and each side publishes its counter only after its copy is complete, so the other side
never sees half-written samples. The copy itself is a numba kernel over the backing array, so a
read or a write creates no numpy views and allocates no buffers.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["Ring", "next_pow2"]


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (and >= 1)."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@numba.njit(cache=True, nogil=True)
def _copy_in(buf, mask, pos, x, start, n):
    # buf [C, cap], x [C, m]; copy x[:, start:start+n] to ring positions pos..pos+n (wrapping)
    channels = buf.shape[0]
    for c in range(channels):
        for i in range(n):
            buf[c, (pos + i) & mask] = x[c, start + i]


@numba.njit(cache=True, nogil=True)
def _copy_out(buf, mask, pos, out, start, n):
    channels = buf.shape[0]
    for c in range(channels):
        for i in range(n):
            out[c, start + i] = buf[c, (pos + i) & mask]


class Ring:
    """SPSC ring of ``channels`` x ``capacity`` float32 samples (capacity a power of two).

    Thread contract: exactly one producer thread calls :meth:`write`; exactly one consumer
    thread calls :meth:`read`, :meth:`peek` and :meth:`skip`. :meth:`readable` and
    :meth:`writable` may be called from either side. :meth:`reset` only when both sides are
    stopped. Blocks are channel-first float32 arrays ``[channels, n]``.
    """

    def __init__(self, channels: int, capacity: int):
        if channels < 1:
            raise ValueError(f"Ring needs at least 1 channel, got {channels}")
        if capacity < 1:
            raise ValueError(f"Ring capacity must be >= 1 sample, got {capacity}")
        self.channels = int(channels)
        self.capacity = next_pow2(capacity)
        self._mask = self.capacity - 1
        self._buf = np.zeros((self.channels, self.capacity), dtype=np.float32)
        self._w = 0  # total samples ever written (producer owns)
        self._r = 0  # total samples ever read (consumer owns)

    # -- either side -----------------------------------------------------------------------
    @property
    def write_count(self) -> int:
        """Samples written since construction or reset (monotonic)."""
        return self._w

    @property
    def read_count(self) -> int:
        """Samples consumed since construction or reset (monotonic)."""
        return self._r

    def readable(self) -> int:
        """Samples available to the consumer now."""
        return self._w - self._r

    def writable(self) -> int:
        """Free space for the producer now, in samples."""
        return self.capacity - (self._w - self._r)

    # -- producer --------------------------------------------------------------------------
    def write(self, x: np.ndarray, start: int = 0, n: int | None = None) -> int:
        """Copy ``x[:, start:start+n]`` in; returns samples written (less if the ring is full).

        ``x``: float32 ``[channels, m]``. Never blocks; a full ring writes what fits.
        """
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(
                f"Ring.write expects float32 [{self.channels}, n], got {x.dtype} {x.shape}"
            )
        if n is None:
            n = x.shape[1] - start
        n = min(n, self.capacity - (self._w - self._r))
        if n > 0:
            _copy_in(self._buf, self._mask, self._w & self._mask, x, start, n)
            self._w += n  # publish after the copy
        return n

    # -- consumer --------------------------------------------------------------------------
    def read(self, out: np.ndarray, start: int = 0, n: int | None = None) -> int:
        """Copy up to ``n`` samples into ``out[:, start:start+n]``; returns samples read."""
        n = self.peek(out, start, n)
        self._r += n
        return n

    def peek(self, out: np.ndarray, start: int = 0, n: int | None = None) -> int:
        """Like :meth:`read` but leaves the samples in the ring."""
        if out.dtype != np.float32 or out.ndim != 2 or out.shape[0] != self.channels:
            raise ValueError(
                f"Ring.read expects a float32 [{self.channels}, n] output, "
                f"got {out.dtype} {out.shape}"
            )
        if n is None:
            n = out.shape[1] - start
        n = min(n, self._w - self._r)
        if n > 0:
            _copy_out(self._buf, self._mask, self._r & self._mask, out, start, n)
        return n

    def skip(self, n: int) -> int:
        """Drop up to ``n`` readable samples; returns samples dropped."""
        n = min(n, self._w - self._r)
        if n > 0:
            self._r += n
        return n

    def reset(self) -> None:
        """Empty the ring. Only while neither side is running."""
        self._buf.fill(0.0)
        self._w = 0
        self._r = 0
