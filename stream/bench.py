"""Benchmarks users choose a separator by: per-hop cost, latency (declared and measured), and
offline throughput, each measured in one run on this machine.

- :func:`bench_stream`: S seconds through the engine hop by hop, no sleeping; per-hop compute
  time percentiles and the real-time factor (compute time / hop duration).
- :func:`measure_latency`: an impulse through the whole engine (push, worker, mixer, pull), found
  on the output, compared with the declared latency.
- :func:`bench_offline`: seconds of audio separated per second of wall time for `separate`.

Absolute times hold only on the machine that measured them: every report carries the machine.
"""

from __future__ import annotations

import os
import platform
import resource
import time

import numpy as np

from .backends.file import play_through
from .engine import Engine

__all__ = ["bench_stream", "measure_latency", "machine_info", "reference_ms"]


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def _threads() -> int:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        return 1


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _test_signal(channels: int, frames: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Music-like stereo noise: a centred harmonic tone over decorrelated noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / sample_rate
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)
    x = 0.1 * rng.standard_normal((channels, frames)) + tone
    return x.astype(np.float32)


def reference_ms(repeats: int = 200) -> float:
    """Median time (ms) of a fixed reference computation: a 4096-point complex FFT pair and
    a 256x256 float32 matmul in numpy. Benchmarks divide by it, so a figure compared across runs
    on a loaded or different machine is a ratio, not an absolute time."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(4096).astype(np.complex64)
    m = rng.standard_normal((256, 256)).astype(np.float32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.fft.ifft(np.fft.fft(a))
        m @ m
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def bench_stream(separator, *, seconds: float = 10.0, model_name: str = "?",
                 device: str = "cpu") -> dict:
    """Stream ``seconds`` of audio through an :class:`Engine` hop by hop, as fast as possible.

    Returns the JSON-able report: model, device, sample_rate, hop, latency_samples, latency_ms,
    hop_ms, per_hop_ms {p50, p90, p99, p999, max, mean}, rtf_p50, rtf_p99, peak_rss_mb, threads,
    hops, plus the machine and ``reference_ms`` (see :func:`reference_ms`).
    """
    rate = int(separator.sample_rate)
    engine = Engine(separator, block_size=separator.hop)
    frames = int(seconds * rate) // separator.hop * separator.hop
    x = _test_signal(separator.channels, frames, rate)
    ref = reference_ms()
    t0 = time.perf_counter()
    play_through(engine, x)
    wall = time.perf_counter() - t0
    st = engine.stats()
    hop_ms = 1000.0 * separator.hop / rate
    return {
        "model": model_name,
        "device": device,
        "sample_rate": rate,
        "hop": int(separator.hop),
        "latency_samples": engine.latency_samples,
        "latency_ms": 1000.0 * engine.latency_samples / rate,
        "model_latency_samples": int(separator.latency_samples),
        "hop_ms": hop_ms,
        "per_hop_ms": st.per_hop_ms,
        "rtf_p50": st.rtf_p50,
        "rtf_p99": st.rtf_p99,
        "peak_rss_mb": _peak_rss_mb(),
        "threads": _threads(),
        "hops": st.hops_processed,
        "seconds": frames / rate,
        "wall_s": wall,
        "deadline_misses": st.deadline_misses,
        "reference_ms": ref,
        "machine": machine_info(),
    }


def measure_latency(separator, *, block_size: int | None = None, threaded: bool = True,
                    at: int | None = None) -> dict:
    """Send an impulse through the whole engine and find it on the output.

    The mix bus at unity gains and the stems are searched for the impulse's peak (largest
    absolute sample); its position minus the impulse's position is the measured latency.
    With ``threaded`` the worker thread runs as it does live (the caller waits for output
    instead of pacing to a clock, so no deadline can be missed).
    """
    rate = int(separator.sample_rate)
    engine = Engine(separator, block_size=block_size or separator.hop)
    block = engine.block_size
    declared = engine.latency_samples
    at = int(at if at is not None else 3 * block + 7)  # off the block grid on purpose
    total = (at + declared + 4 * separator.hop) // block * block + 2 * block
    x = np.zeros((separator.channels, total), dtype=np.float32)
    x[:, at] = 1.0
    mix = np.zeros((separator.channels, total), dtype=np.float32)
    stems = np.zeros((len(separator.sources), separator.channels, total), dtype=np.float32)
    if threaded:
        engine.start()
    try:
        for k in range(0, total, block):
            engine.push(np.ascontiguousarray(x[:, k:k + block]))
            if threaded:
                m, s = engine.pull(block, wait_s=10.0)
                mix[:, k:k + block], stems[:, :, k:k + block] = m, s
            else:
                engine.run_pending()
                engine.pull_into(mix[:, k:k + block], stems[:, :, k:k + block])
    finally:
        engine.stop()
    found_mix = int(np.argmax(np.abs(mix[0]))) - at
    found_stems = int(np.argmax(np.abs(stems[:, 0]).sum(axis=0))) - at
    return {
        "sample_rate": rate,
        "block_size": block,
        "declared_samples": declared,
        "declared_ms": 1000.0 * declared / rate,
        "measured_mix_samples": found_mix,
        "measured_stems_samples": found_stems,
        "agrees": found_mix == declared and found_stems == declared,
        "deadline_misses": engine.deadline_misses,
        "threaded": threaded,
    }
