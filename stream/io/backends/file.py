"""The file backend: play an array through the engine block by block, as an audio device would.

``paced=True`` plays it in real time against the wall clock, with the engine's worker thread
running, so deadline misses and the real-time factor mean what they mean live. ``paced=False``
runs the worker's job inline after each push (no thread, no sleeping): files are separated as
fast as the CPU allows through exactly the same push / hop / pull path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["play_through"]


def play_through(
    engine,
    x: np.ndarray,
    *,
    paced: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stream ``x`` float32 ``[C, T]`` through ``engine``; aligned ``(mix [C, T], stems [S, C, T])``.

    Feeds ``engine.latency_samples`` of trailing silence so the last input sample comes out,
    then drops the first ``latency_samples`` output samples: output index t is the estimate
    for input sample t. ``progress(n)`` is called with the number of input samples consumed
    after each block.
    """
    channels, total = x.shape
    block = engine.block_size
    lat = engine.latency_samples
    n_out = total + lat
    n_blocks = -(-n_out // block)
    mix = np.zeros((channels, n_blocks * block), dtype=np.float32)
    stems = np.zeros((len(engine.sources), channels, n_blocks * block), dtype=np.float32)
    inbuf = np.zeros((channels, block), dtype=np.float32)
    period = block / engine.sample_rate
    if paced:
        engine.start()
    else:
        engine.limit_torch_threads()
    t0 = time.perf_counter()
    try:
        for k in range(n_blocks):
            a = k * block
            m = max(0, min(block, total - a))
            inbuf[:, :m] = x[:, a : a + m]
            inbuf[:, m:] = 0.0
            if paced:
                # an audio device hands over block k once it has been fully captured
                delay = t0 + (k + 1) * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            engine.push(inbuf)
            if not paced:
                engine.run_pending()
            engine.pull_into(mix[:, a : a + block], stems[:, :, a : a + block])
            if progress is not None and m:
                progress(m)
    finally:
        if paced:
            engine.stop()
    return mix[:, lat : lat + total], stems[:, :, lat : lat + total]
