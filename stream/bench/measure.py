"""Benchmarks users choose a separator by: per-hop cost, latency (declared and measured), and
offline throughput, each measured in one run on this machine.

- :func:`bench_stream`: S seconds through the engine hop by hop, no sleeping; per-hop compute
  time percentiles and the real-time factor (compute time / hop duration).
- :func:`measure_latency`: an impulse through the whole engine (push, worker, mixer, pull), found
  on the output, compared with the declared latency.
- :func:`bench_offline`: seconds of audio separated per second of wall time for `separate`
  (load, decode, compute and write apart; one file, and one file per core in worker
  processes), beside Hybrid Demucs and Open-Unmix.

Absolute times hold only on the machine that measured them: every report carries the machine.
"""

from __future__ import annotations

import os
import platform
import resource
import time

import numpy as np

from livestems.stream.io.backends.file import play_through
from livestems.stream.core.engine import Engine

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
                 device: str = "cpu", keep_times: bool = False) -> dict:
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
    report = {
        "model": model_name,
        "device": device,
        "sample_rate": rate,
        "hop": int(separator.hop),
        # the separator's declared latency (window geometry and look-ahead: DESIGN.md's
        # `latency_samples`), and end to end through the engine with host blocks of one hop
        # (adds the hop the worker must gather and one block of compute headroom)
        "latency_samples": int(separator.latency_samples),
        "latency_ms": 1000.0 * separator.latency_samples / rate,
        "engine_latency_samples": engine.latency_samples,
        "engine_latency_ms": 1000.0 * engine.latency_samples / rate,
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
    if keep_times:
        report["times_ms"] = engine.hop_times_ms().tolist()
    return report


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


# -- offline throughput ---------------------------------------------------------------------

PEER_HINT = ("install the peers with `make venv` (or: .venv/bin/pip install --no-deps "
             "--target .venv/peers openunmix==1.3.0, and demucs==4.0.1 --no-deps)")


class PeerMissing(RuntimeError):
    """A peer separator's package is not installed; the message says how to install it."""


def _import_openunmix():
    """Import Open-Unmix's model code from ``<venv>/peers`` without its package ``__init__``.

    openunmix's ``__init__`` (model hub download) and its I/O helpers import torchaudio, which
    would pull another torch; the network code we time needs only torch. So the package is
    installed apart (``pip install --target .venv/peers``), entered without running
    ``__init__``, and an empty ``torchaudio`` module satisfies the one import-time reference
    (the torch STFT path we use never calls it).
    """
    import importlib
    import importlib.util
    import sys
    import types
    from pathlib import Path

    if "openunmix.model" in sys.modules:
        return sys.modules["openunmix.model"]
    root = Path(sys.prefix) / "peers" / "openunmix"
    if not root.is_dir():
        raise PeerMissing(f"Open-Unmix is not installed: {PEER_HINT}")
    pkg = types.ModuleType("openunmix")
    pkg.__path__ = [str(root)]
    sys.modules["openunmix"] = pkg
    if importlib.util.find_spec("torchaudio") is None:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    return importlib.import_module("openunmix.model")


def _peer_hdemucs():
    """The demucs package's Hybrid Demucs at the published size, random weights, applied the
    way `demucs` separates a file (split into its training segment, 25% overlap, no shifts)."""
    _import_openunmix()  # demucs.hdemucs imports openunmix.filtering
    try:
        import demucs.apply
        import demucs.hdemucs
    except ImportError as exc:
        raise PeerMissing(f"demucs is not installed ({exc}): {PEER_HINT}") from None
    import torch

    torch.manual_seed(0)
    net = demucs.hdemucs.HDemucs(sources=["drums", "bass", "other", "vocals"]).eval()

    def run(x):
        with torch.no_grad():
            return demucs.apply.apply_model(net, torch.from_numpy(x)[None], shifts=0,
                                            split=True, overlap=0.25, progress=False)[0]

    return run, sum(p.numel() for p in net.parameters())


def _peer_openunmix():
    """Open-Unmix (UMX-HQ size: 4 targets, 512 hidden, 3 unidirectional LSTM layers, one
    Wiener iteration), random weights."""
    umx = _import_openunmix()
    import torch

    torch.manual_seed(0)
    targets = {s: umx.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3,
                                unidirectional=True, max_bin=1487)
               for s in ("vocals", "drums", "bass", "other")}
    sep = umx.Separator(targets, niter=1, sample_rate=44100.0, n_fft=4096, n_hop=1024).eval()

    def run(x):
        with torch.no_grad():
            return sep(torch.from_numpy(x)[None])[0]

    return run, sum(p.numel() for t in targets.values() for p in t.parameters())


PEERS = {"hdemucs": ("Hybrid Demucs (demucs pkg, random)", _peer_hdemucs),
         "umx": ("Open-Unmix (unidirectional, random)", _peer_openunmix)}


def _params(sep) -> int:
    return int(sum(p.numel() for p in sep.module.parameters())) if hasattr(sep, "module") else 0


def _bench_library(name: str, wav, folder, workers: int, say, per_worker: int = 4) -> dict:
    """``per_worker x workers`` copies of ``wav`` through
    :func:`~livestems.stream.apps.library.run_library` on ``workers`` worker processes (one
    torch thread each): wall time from start to summary (spawning, model loads, decode,
    compute, write) and the compute the workers report. Several files per worker, as in a
    library: with one short file each, the workers' staggered starts (each loads its model
    while the other computes) weighed as much as the compute."""
    import io
    import shutil
    from pathlib import Path

    files = int(per_worker) * int(workers)

    from livestems.stream.apps.library import Options, collect_tasks, run_library

    lib = Path(folder) / f"lib-{name}"
    lib.mkdir()
    for i in range(files):
        shutil.copyfile(wav, lib / f"song{i}.wav")
    say(f"library of {files} files, {workers} workers, --model {name} ...")
    tasks, _ = collect_tasks([str(lib)], Path(folder) / f"libout-{name}")
    threads = _threads()
    t0 = time.perf_counter()
    try:
        summary = run_library(tasks, Options(model=name, threads=1), workers=workers, quiet=True,
                              stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        wall = time.perf_counter() - t0
        from livestems.stream.apps.offline import set_threads

        set_threads(threads)  # the planning step set this process to the workers' count
    done = summary.by("done")
    if len(done) != files:
        raise RuntimeError(f"library bench: {len(done)} of {files} files done: "
                           f"{[o.error for o in summary.by('failed')]}")
    audio = sum(o.audio_s for o in done)
    spans = [o.timing["compute_span"] for o in done]
    # from the first compute start to the last compute end, across the workers
    compute_wall = max(b for _, b in spans) - min(a for a, _ in spans)
    compute = [o.timing["compute_s"] for o in done]
    # each file's compute phase, timed in its worker while the other workers run: the
    # library's compute throughput is the audio over the compute seconds per worker (the
    # span below also holds every decode and write between a worker's files)
    return {"files": files, "workers": workers, "audio_s": audio, "wall_s": wall,
            "wall_x": audio / wall, "compute_s": compute,
            "compute_x": audio / (sum(compute) / workers),
            "compute_wall_s": compute_wall, "span_x": audio / compute_wall,
            "load_s": [o.load_s for o in done], "threads_per_worker": 1}


def _bench_engines(sep, x: np.ndarray, repeats: int = 2) -> dict | None:
    """The network's compute alone on ``x`` in memory, in this run: the batched engine on one
    thread, the network's own torch path on one thread (the path `separate` used before the
    engine), interleaved, best of ``repeats``; wall and this process's CPU seconds; then the
    batched engine on one file with 2 threads (wall). None for separators without it."""
    import torch

    from livestems.stream.apps.offline import batched_engine, iter_separated, prepare

    if batched_engine(sep) is None:
        return None

    def timed(engine, threads):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in iter_separated(sep, x, engine=engine):
                pass
            return time.perf_counter() - t0, time.process_time() - c0
        finally:
            torch.set_num_threads(old)

    prepare(sep, 2)
    runs = {"batched": [], "torch": []}
    for _ in range(repeats):
        for engine in runs:
            runs[engine].append(timed(engine, 1))
    two = [timed("batched", 2) for _ in range(repeats)]
    seconds = x.shape[1] / sep.sample_rate
    res = {}
    for engine, v in runs.items():
        res[engine] = {"wall_s": min(w for w, _ in v), "cpu_s": min(c for _, c in v)}
        res[engine]["x"] = seconds / res[engine]["wall_s"]
        res[engine]["cpu_x"] = seconds / res[engine]["cpu_s"]
    res["batched_2_threads"] = {"wall_s": min(w for w, _ in two),
                                "x": seconds / min(w for w, _ in two)}
    res["speedup"] = res["torch"]["wall_s"] / res["batched"]["wall_s"]
    res["cpu_speedup"] = res["torch"]["cpu_s"] / res["batched"]["cpu_s"]
    return res


def bench_offline(models: list[str], *, seconds: float = 60.0, peers=("hdemucs", "umx"),
                  progress=None, library: bool = True) -> dict:
    """Offline throughput (audio seconds per wall second, "x real time") of `separate`.

    Per model, on one ``seconds``-long file in this process on one torch thread (as
    `separate` runs a file by default): model load, decode, compute and write timed apart; ``throughput`` is seconds /
    ``wall_s`` (decode + compute + write, model loaded); ``compute_x`` the network alone.
    With ``library``, also four copies of the file per core through the library runner with
    one worker process per core (``library``: its wall time with spawning, loads and I/O, and
    its compute throughput: the audio over the workers' compute seconds per worker;
    ``span_x`` over the span from the first compute start to the last compute end). Where
    the model has the batched engine, ``engines`` compares it in this run with the network's own torch path (the previous offline path), both on one thread,
    and times it on one file with 2 threads (:func:`_bench_engines`). The peers run their own
    offline separation on the same audio in memory, on the same torch threads. Returns
    ``{"seconds", "threads", "rows",
    "machine", "reference_ms", "loadavg_1min"}`` (the 1-minute load average before and after:
    on a shared machine it says how much else was running).
    """
    import tempfile
    from pathlib import Path

    from livestems.model.evaluation.demo_song import make_demo_song
    from livestems.model.nets.registry import load_separator

    from livestems.stream.io.files import read_audio, write_audio
    from livestems.stream.apps.offline import prepare, set_threads
    from livestems.stream.apps.separate import separate_file

    say = progress or (lambda msg: None)
    rows = []
    song = make_demo_song(seconds=seconds, sample_rate=44100, seed=1)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]  # other work on the machine slows every row alike
    ref = reference_ms()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "song.wav"
        write_audio(wav, song.mixture, 44100, "wav")
        for name in models:
            say(f"separate --model {name} on {seconds:g} s ...")
            threads = _threads()
            set_threads(1)  # as `livestems separate` runs each file by default
            try:
                t0 = time.perf_counter()
                sep = load_separator(name)
                prepare(sep, 1)  # as the library runner loads a model (its numba kernels too)
                load_s = time.perf_counter() - t0
                res = separate_file(wav, Path(tmp) / f"out-{name}", sep, model_id=name)
            finally:
                set_threads(threads)
            tm = res.timing
            wall = tm.decode_s + tm.compute_s + tm.write_s
            row = {"model": name, "kind": "livestems", "params": _params(sep),
                   "load_s": load_s, **tm.as_dict(), "wall_s": wall,
                   "throughput": seconds / wall, "compute_x": seconds / tm.compute_s,
                   "wall_with_load_x": seconds / (wall + load_s)}
            if library and cores > 1:
                row["library"] = _bench_library(name, wav, tmp, cores, say)
            say(f"--model {name}: batched engine vs the torch path, in memory ...")
            engines = _bench_engines(sep, read_audio(wav).samples)
            if engines is not None:
                row["engines"] = engines
            rows.append(row)
        x = read_audio(wav).samples
        for key in peers:
            label, build = PEERS[key]
            say(f"{label} on {seconds:g} s ...")
            run, params = build()
            t0 = time.perf_counter()
            run(x)
            wall = time.perf_counter() - t0
            rows.append({"model": key, "kind": label, "params": int(params), "wall_s": wall,
                         "throughput": seconds / wall, "compute_x": seconds / wall})
    return {"seconds": seconds, "threads": _threads(), "rows": rows, "machine": machine_info(),
            "reference_ms": ref, "loadavg_1min": [load_before, os.getloadavg()[0]]}
