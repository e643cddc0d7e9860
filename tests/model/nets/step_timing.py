"""Per-hop step time of a preset on this machine (not a test; `livestems bench` comes later).

    .venv/bin/python tests/model/nets/step_timing.py rt-tiny --threads 1 --hops 3000
"""

import argparse
import time

import numpy as np
import torch

from livestems.model.nets.presets import build_preset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("preset", default="rt-tiny", nargs="?")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hops", type=int, default=3000)
    ap.add_argument("--no-jit", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sep = build_preset(a.preset)
    if a.no_jit:
        sep._hop_fn = None
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, sep.hop * 64))).astype(np.float32)
    for i in range(200):  # warm-up: numba, trace, allocator
        sep.step(np.ascontiguousarray(x[:, (i % 64) * sep.hop:(i % 64 + 1) * sep.hop]))
    ts = np.empty(a.hops)
    for i in range(a.hops):
        blk = np.ascontiguousarray(x[:, (i % 64) * sep.hop:(i % 64 + 1) * sep.hop])
        t0 = time.perf_counter()
        sep.step(blk)
        ts[i] = time.perf_counter() - t0
    hop_ms = 1000 * sep.hop / sep.sample_rate
    ms = ts * 1000
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    print(f"{a.preset}: threads {a.threads} jit {not a.no_jit} hop {sep.hop} ({hop_ms:.2f} ms)"
          f" latency {sep.latency_samples} ({1000 * sep.latency_samples / sep.sample_rate:.1f}"
          f" ms); step p50 {p50:.3f} ms p99 {p99:.3f} ms max {ms.max():.3f} ms; "
          f"p99/hop {p99 / hop_ms:.2f}")


if __name__ == "__main__":
    main()
