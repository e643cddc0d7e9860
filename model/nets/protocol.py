"""The separator protocol every model implements, and checks shared by all separators.

A separator turns a multichannel stream into ``S`` stems, hop by hop or offline:

- ``sample_rate`` (Hz), ``channels``, ``sources`` (stem names, in output order), ``hop``
  (samples per :meth:`step`), ``latency_samples`` (how far the streaming output lags the input).
- ``reset()``: forget all streaming state, as if freshly constructed.
- ``step(x) -> y``: ``x`` float32 ``[channels, hop]``, ``y`` float32 ``[S, channels, hop]``.
  ``y[..., j]`` of the whole stream estimates the stems of input sample ``j - latency_samples``.
  May return a view of an internal buffer, valid until the next call.
- ``forward(x) -> y``: offline, ``x`` float ``[B, channels, T]``, ``y`` ``[B, S, channels, T]``
  aligned with the input (no latency).

Contract (tested for every separator): streaming output equals offline output shifted by
``latency_samples`` to 1e-4, for any input length and any partition into blocks; and changing
input after sample ``t + latency_samples`` never changes streaming output up to ``t``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Separator", "check_step_input", "check_forward_input", "stream_offline"]


@runtime_checkable
class Separator(Protocol):
    sample_rate: int
    channels: int
    sources: tuple[str, ...]
    hop: int
    latency_samples: int

    def reset(self) -> None: ...

    def step(self, x: np.ndarray) -> np.ndarray: ...

    def forward(self, x: np.ndarray) -> np.ndarray: ...


def check_step_input(sep: Separator, x: np.ndarray) -> None:
    """Raise ValueError unless ``x`` is float32 ``[sep.channels, sep.hop]``."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        got = getattr(x, "dtype", type(x).__name__)
        raise ValueError(f"step() expects a float32 numpy array, got {got}")
    if x.shape != (sep.channels, sep.hop):
        raise ValueError(
            f"step() expects shape [channels={sep.channels}, hop={sep.hop}], got {list(x.shape)}"
        )


def check_forward_input(sep: Separator, x: np.ndarray) -> np.ndarray:
    """Validate an offline batch ``[B, channels, T]``; returns it as float32."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1] != sep.channels:
        raise ValueError(
            f"forward() expects [batch, channels={sep.channels}, time], got {list(x.shape)}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"forward() expects floating-point samples, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def stream_offline(sep: Separator, x: np.ndarray) -> np.ndarray:
    """Run ``x`` ``[channels, T]`` through ``sep.step`` hop by hop; aligned ``[S, channels, T]``.

    Resets the separator first. Pads the end with zeros so the last input sample's output
    comes out, then drops the first ``latency_samples`` output samples. This is the reference
    use of the streaming path (no engine, no threads), used by tests and tools.
    """
    sep.reset()
    channels, total = x.shape
    lat = sep.latency_samples
    n_hops = -(-(total + lat) // sep.hop)
    padded = np.zeros((channels, n_hops * sep.hop), dtype=np.float32)
    padded[:, :total] = x
    out = np.empty((len(sep.sources), channels, n_hops * sep.hop), dtype=np.float32)
    for k in range(n_hops):
        sl = slice(k * sep.hop, (k + 1) * sep.hop)
        out[:, :, sl] = sep.step(np.ascontiguousarray(padded[:, sl]))
    return out[:, :, lat : lat + total]
