"""What the live backends (JACK, PortAudio) share: their errors and the stats they report."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from livestems.stream.errors import LivestemsError

__all__ = [
    "AudioBackendError",
    "ServerShutdownError",
    "live_stats",
    "write_stats_json",
    "EXIT_BACKEND",
    "EXIT_SHUTDOWN",
]

EXIT_BACKEND = 5
EXIT_SHUTDOWN = 6


class AudioBackendError(LivestemsError):
    """The audio system cannot be used as asked: no JACK server or audio device, a device
    that rejects the rate or block size, a port or device name that does not exist."""

    exit_code = EXIT_BACKEND


class ServerShutdownError(LivestemsError):
    """The audio server (JACK) went away while we were running."""

    exit_code = EXIT_SHUTDOWN


def live_stats(engine, **extra) -> dict:
    """A JSON-able snapshot of the engine's counters plus backend counters in ``extra``."""
    st = engine.stats()
    out = {
        "latency_samples": st.latency_samples,
        "latency_ms": round(st.latency_ms, 3),
        "sample_rate": st.sample_rate,
        "model_rate": st.model_rate,
        "resampler_latency_samples": st.resampler_latency_samples,
        "resampler_underruns": st.resampler_underruns,
        "hop": st.hop,
        "block_size": engine.block_size,
        "safety_samples": engine.safety_samples,
        "safety_ms": engine.safety_ms,
        "hops_processed": st.hops_processed,
        "hops_skipped": st.hops_skipped,
        "deadline_misses": st.deadline_misses,
        "missed_samples": st.missed_samples,
        "input_overflows": st.input_overflows,
        "nonfinite_samples": st.nonfinite_samples,
        "per_hop_ms": {k: round(v, 4) for k, v in st.per_hop_ms.items()},
        "rtf_p50": round(st.rtf_p50, 4),
        "rtf_p99": round(st.rtf_p99, 4),
        "lead_ms": ({k: round(v, 3) for k, v in st.lead_ms.items()} if st.lead_ms else None),
        "worker_error": st.worker_error,
        "sources": list(engine.sources),
    }
    out.update(extra)
    return out


def write_stats_json(path: str | os.PathLike, stats: dict) -> None:
    """Write ``stats`` atomically (a reader never sees half a file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    with os.fdopen(fd, "w") as f:
        json.dump(stats, f, indent=1)
    os.replace(tmp, path)
