"""Micro-benchmark of the hop-by-hop STFT -> ISTFT path (``livestems bench dsp``).

Per hop, each path takes ``hop`` new stereo samples, computes the newest analysis frame and
returns the ``hop`` output samples that just became final, which is what the engine's worker
does. We time that round trip hop by hop (p50/p90/p99 in microseconds) for:

- ``livestems``: :class:`StreamSTFT` + :class:`StreamISTFT` (numba framing/OLA + numba FFT).
- ``livestems-npfft``: the same kernels with ``numpy.fft`` (``fft='numpy'``).
- ``torch.stft/istft``: ``torch.stft(center=False)`` on the last ``n_fft`` samples, then
  ``torch.istft`` over the last ``n_fft/hop`` frames, keeping the one hop they fully cover.
- ``torch.fft+OLA``: ``torch.fft.rfft/irfft`` on one frame and an overlap-add buffer in torch,
  the cheapest way to stream with torch.
- ``scipy ShortTimeFFT``: ``ShortTimeFFT.stft`` for the newest slice and ``ShortTimeFFT.istft``
  over the last ``n_fft/hop`` slices.

All use a sqrt-Hann window on both sides and have the same latency (``n_fft - hop``); every path's
output is checked against the delayed input, so a fast but wrong path cannot win.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from livestems.dsp.stft import StreamISTFT, StreamSTFT
from livestems.dsp.warmup import warmup
from livestems.dsp.windows import sqrt_hann

__all__ = ["main", "run_benchmark"]

DEFAULT_CONFIGS = ((4096, 1024), (1024, 256))


def _path_livestems(n_fft, hop, channels, fft):
    w = sqrt_hann(n_fft)
    a = StreamSTFT(n_fft, hop, channels, w, pad_start=n_fft - hop, max_block=hop, fft=fft)
    s = StreamISTFT(n_fft, hop, channels, w, w, max_frames=1, fft=fft)

    def step(x):
        return s.process(a.process(x))

    return step


def _path_torch_stft_istft(n_fft, hop, channels):
    import torch

    w = torch.from_numpy(sqrt_hann(n_fft))
    r = n_fft // hop
    buf = torch.zeros(channels, n_fft)
    frames = torch.zeros(channels, n_fft // 2 + 1, r, dtype=torch.complex64)
    lo = n_fft // 2 - hop  # the fully overlapped hop, in istft(center=True) output coordinates

    def step(x):
        buf[:, :-hop] = buf[:, hop:].clone()
        buf[:, -hop:] = torch.from_numpy(x)
        spec = torch.stft(buf, n_fft, hop, window=w, center=False, return_complex=True)
        frames[:, :, :-1] = frames[:, :, 1:].clone()
        frames[:, :, -1:] = spec
        y = torch.istft(frames, n_fft, hop, window=w, center=True)
        return y[:, lo : lo + hop].numpy()

    return step


def _path_torch_fft_ola(n_fft, hop, channels):
    import torch

    w = torch.from_numpy(sqrt_hann(n_fft))
    syn = w / float((sqrt_hann(n_fft).astype(np.float64) ** 2).reshape(-1, hop).sum(axis=0).mean())
    buf = torch.zeros(channels, n_fft)
    acc = torch.zeros(channels, n_fft)

    def step(x):
        buf[:, :-hop] = buf[:, hop:].clone()
        buf[:, -hop:] = torch.from_numpy(x)
        spec = torch.fft.rfft(buf * w, dim=-1)
        frame = torch.fft.irfft(spec, n=n_fft, dim=-1) * syn
        acc[:, :-hop] = acc[:, hop:].clone()
        acc[:, -hop:] = 0.0
        acc.add_(frame)
        return acc[:, :hop].numpy().copy()

    return step


def _path_scipy(n_fft, hop, channels):
    from scipy.signal import ShortTimeFFT

    sft = ShortTimeFFT(sqrt_hann(n_fft).astype(np.float64), hop, fs=1.0, mfft=n_fft)
    # istft insists on at least p_num(n_fft/2) slices, one more than the n_fft/hop we need.
    q = max(n_fft // hop, sft.p_num(sft.m_num - sft.m_num_mid))
    q_newest = sft.m_num_mid // hop  # slice whose window covers buf[0:n_fft] exactly
    buf = np.zeros((channels, n_fft))
    cols = np.zeros((channels, sft.f_pts, q), dtype=complex)
    # With columns as slices p_min .. p_min + q - 1, the newest window starts at k0; the hop
    # [k0, k0 + hop) is covered by every slice that overlaps it. istft wants >= n_fft/2
    # samples, the extra ones are dropped.
    k0 = (sft.p_min + q - 1) * hop - sft.m_num_mid
    k1 = k0 + max(hop, n_fft - sft.m_num_mid)

    def step(x):
        buf[:, :-hop] = buf[:, hop:]
        buf[:, -hop:] = x
        cols[:, :, :-1] = cols[:, :, 1:]
        cols[:, :, -1:] = sft.stft(buf, p0=q_newest, p1=q_newest + 1)
        y = sft.istft(cols, k0=k0, k1=k1)
        return y[:, :hop]

    return step


def _time_path(step, x, hop, warm_hops):
    hops = x.shape[1] // hop
    out = np.zeros_like(x[:, : hops * hop])
    times = np.zeros(hops, dtype=np.int64)
    for j in range(hops):
        block = np.ascontiguousarray(x[:, j * hop : (j + 1) * hop])
        t0 = time.perf_counter_ns()
        y = step(block)
        times[j] = time.perf_counter_ns() - t0
        out[:, j * hop : (j + 1) * hop] = y
    return times[warm_hops:] / 1e3, out


def run_benchmark(configs=DEFAULT_CONFIGS, hops: int = 1000, channels: int = 2, paths=None, seed: int = 0):
    """Time every path on every (n_fft, hop) config; returns a list of result dicts.

    Each dict: n_fft, hop, channels, path, hops (timed), p50_us, p90_us, p99_us, mean_us,
    max_err (max |output - input delayed by n_fft - hop|).
    """
    warmup()
    builders = {
        "livestems": lambda n, h, c: _path_livestems(n, h, c, "auto"),
        "livestems-npfft": lambda n, h, c: _path_livestems(n, h, c, "numpy"),
        "torch.stft/istft": _path_torch_stft_istft,
        "torch.fft+OLA": _path_torch_fft_ola,
        "scipy ShortTimeFFT": _path_scipy,
    }
    names = list(builders) if paths is None else list(paths)
    rng = np.random.default_rng(seed)
    results = []
    for n_fft, hop in configs:
        warm_hops = 2 * (n_fft // hop) + 10
        x = rng.uniform(-0.5, 0.5, (channels, (hops + warm_hops) * hop)).astype(np.float32)
        latency = n_fft - hop
        for name in names:
            step = builders[name](n_fft, hop, channels)
            times, y = _time_path(step, x, hop, warm_hops)
            err = float(np.abs(y[:, latency:] - x[:, : y.shape[1] - latency]).max())
            results.append(
                {
                    "n_fft": n_fft,
                    "hop": hop,
                    "channels": channels,
                    "path": name,
                    "hops": int(times.size),
                    "p50_us": float(np.percentile(times, 50)),
                    "p90_us": float(np.percentile(times, 90)),
                    "p99_us": float(np.percentile(times, 99)),
                    "mean_us": float(times.mean()),
                    "max_err": err,
                }
            )
    return results


def _machine() -> dict:
    import os

    import numba
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _parse_configs(text: str):
    configs = []
    for item in text.split(","):
        n_fft, _, hop = item.partition(":")
        configs.append((int(n_fft), int(hop)))
    return configs


def main(argv=None) -> int:
    """Entry point of ``livestems bench dsp``; prints a table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(
        prog="livestems bench dsp",
        description="Per-hop time of streaming STFT analysis + synthesis, ours vs torch and scipy.",
    )
    parser.add_argument(
        "--configs",
        default=",".join(f"{n}:{h}" for n, h in DEFAULT_CONFIGS),
        help="comma-separated n_fft:hop pairs (default: %(default)s)",
    )
    parser.add_argument("--hops", type=int, default=1000, help="timed hops per path (default: %(default)s)")
    parser.add_argument("--channels", type=int, default=2, help="audio channels (default: %(default)s)")
    parser.add_argument("--paths", default=None, help="comma-separated subset of paths to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        configs = _parse_configs(args.configs)
    except ValueError:
        parser.error(f"--configs must look like 4096:1024,1024:256, got {args.configs!r}")
    paths = None if args.paths is None else [p.strip() for p in args.paths.split(",")]
    results = run_benchmark(configs, hops=args.hops, channels=args.channels, paths=paths)
    if args.json:
        json.dump({"machine": _machine(), "results": results}, sys.stdout, indent=2)
        print()
        return 0
    m = _machine()
    print(f"hop-by-hop STFT->ISTFT, {args.channels} ch, {args.hops} hops; {m['cores']} cores, torch threads {m['torch_threads']}")
    print(f"{'n_fft/hop':>10} {'path':<20} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'max err':>9}")
    for r in results:
        print(
            f"{r['n_fft']:>5}/{r['hop']:<4} {r['path']:<20} {r['p50_us']:9.1f} {r['p90_us']:9.1f} "
            f"{r['p99_us']:9.1f} {r['max_err']:9.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
