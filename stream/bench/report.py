"""`livestems bench report`: regenerate docs/BENCHMARKS.md and its plots in one run.

Everything in the report is measured in the same process, one model after another, so the
ratios between rows hold even on a noisy shared machine; absolute times hold only on the
machine named at the top of the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from livestems.stream.bench.measure import bench_offline, bench_stream, machine_info, measure_latency

__all__ = ["write_report"]

STREAM_MODELS = ("center", "rt-tiny", "rt-small", "rt-base")
OFFLINE_MODELS = ("center", "rt-tiny", "rt-small")


def _plots(out: Path, streams: list[dict], offline: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, len(streams), figsize=(3.2 * len(streams), 2.8))
    for ax, r in zip(np.atleast_1d(axes), streams):
        t = np.asarray(r["times_ms"])
        ax.hist(t, bins=60, color="#3a7bd5")
        ax.axvline(r["hop_ms"], color="#d1495b", lw=1.5, label="hop duration")
        ax.axvline(r["per_hop_ms"]["p99"], color="#333", lw=1, ls="--", label="p99")
        ax.set_yscale("log")
        ax.set_title(r["model"], fontsize=9)
        ax.set_xlabel("compute per hop (ms)", fontsize=8)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "bench_hop_hist.png", dpi=90)
    plt.close(fig)
    names.append("bench_hop_hist.png")

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for r in streams:
        ax.scatter(r["engine_latency_ms"], r["rtf_p99"], s=40)
        ax.annotate(r["model"], (r["engine_latency_ms"], r["rtf_p99"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.axhline(1.0, color="#d1495b", lw=1, label="real time (p99)")
    ax.axhline(0.7, color="#999", lw=1, ls="--", label="budget 0.7")
    ax.set_xlabel("end-to-end latency, block = hop (ms)")
    ax.set_ylabel("real-time factor at p99")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "bench_latency_rtf.png", dpi=90)
    plt.close(fig)
    names.append("bench_latency_rtf.png")

    names.append(_throughput_plot(out, offline))
    return names


def _throughput_plot(out: Path, offline: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    rows = offline["rows"]
    ax.barh([r["model"] for r in rows], [r["throughput"] for r in rows],
            color=["#3a7bd5" if r["kind"] == "livestems" else "#999" for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel(f"audio seconds per wall second, decode + compute + write "
                  f"({offline['seconds']:g} s file)")
    fig.tight_layout()
    fig.savefig(out / "bench_throughput.png", dpi=90)
    plt.close(fig)
    return "bench_throughput.png"


def _offline_lines(offline: dict, plot: str) -> list[str]:
    """The offline throughput section of docs/BENCHMARKS.md, from :func:`bench_offline`."""
    lines = [
        f"## Offline throughput (`separate` on a {offline['seconds']:g} s file)", "",
        "Ours: `livestems separate`'s offline path (the causal network over long chunks",
        "with carried state through the batched engine, equal to the streaming result:",
        "tests/stream/apps/test_offline.py), one torch thread per file, model load (with the",
        "engine's numba kernels), decode, compute and write timed apart; *2 threads* the same file's",
        "compute on two threads of the engine (blocks in parallel); then four copies of the",
        "file per core through the library runner (one worker process per core; *files on",
        "workers*): *N files compute x* is the audio over the workers' compute seconds per",
        "worker (each file's compute timed in its worker while the others run), *wall x* the",
        "whole run (spawning, model loads, decode, write).",
        "*torch path* is the previous offline path (the network's own `stream` over the",
        "same chunks) measured in the same run on one thread, in memory, interleaved with",
        "the engine (below the table: both, and their CPU time). x = audio seconds per wall",
        "second. Peers: their own offline separation of the same audio in memory, random",
        f"weights at published sizes, {offline['threads']} torch threads. docs/SCALE.md "
        "explains the figures.",
        "",
        "| model | what | params | load s | decode s | compute s | write s | compute x |"
        " wall x (+load) | 2 threads: compute x | N files: compute x | N files: wall x |"
        " torch path: compute x | vs Hybrid Demucs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    hd = next((r for r in offline["rows"] if r["model"] == "hdemucs"), None)
    notes = []
    for r in offline["rows"]:
        ratio = f"{r['throughput'] / hd['throughput']:.1f}x" if hd else "-"
        lib = r.get("library")
        libs = (f"{lib['files']} on {lib['workers']}: {lib['compute_x']:.1f} | "
                f"{lib['wall_x']:.1f}" if lib
                else "- | -")
        eng = r.get("engines")
        two = f"{eng['batched_2_threads']['x']:.1f}" if eng else "-"
        old = f"{eng['torch']['x']:.1f}" if eng else "-"
        if eng:
            notes.append(
                f"- `{r['model']}`, one thread, in memory: batched engine "
                f"{eng['batched']['x']:.1f}x, torch path {eng['torch']['x']:.1f}x: "
                f"**{eng['speedup']:.2f}x faster**; in CPU time {eng['batched']['cpu_x']:.1f}x "
                f"vs {eng['torch']['cpu_x']:.1f}x ({eng['cpu_speedup']:.2f}x).")
        if r["kind"] == "livestems":
            lines.append(f"| {r['model']} | livestems | {r['params'] / 1e6:.2f} M | "
                         f"{r['load_s']:.2f} | {r['decode_s']:.2f} | {r['compute_s']:.2f} | "
                         f"{r['write_s']:.2f} | {r['compute_x']:.1f} | {r['throughput']:.1f} "
                         f"({r['wall_with_load_x']:.1f}) | {two} | {libs} | {old} | {ratio} |")
        else:
            lines.append(f"| {r['model']} | {r['kind']} | {r['params'] / 1e6:.2f} M | - | - | "
                         f"{r['wall_s']:.1f} | - | {r['compute_x']:.2f} | "
                         f"{r['throughput']:.2f} | - | {libs} | - | {ratio} |")
    lines += [""] + notes + (["", ""] if notes else []) + [f"![throughput]({plot})", ""]
    return lines


def write_offline_section(out: str | Path = "docs", *, seconds: float = 60.0, say=print) -> Path:
    """Measure only the offline table and replace its section (and its plot and JSON entry)
    in an existing ``out/BENCHMARKS.md``, leaving the other sections as they were measured."""
    import os

    import torch

    out = Path(out)
    md = out / "BENCHMARKS.md"
    text = md.read_text()
    head = "## Offline throughput"
    if head not in text:
        raise ValueError(f"{md} has no '{head}' section; run `livestems bench report` once")
    torch.set_num_threads(os.cpu_count() or 1)  # the peers on every core, as in the report
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    offline = bench_offline(list(OFFLINE_MODELS), seconds=seconds, progress=say)
    m = machine_info()
    lines = _offline_lines(offline, _throughput_plot(out, offline))
    la = offline["loadavg_1min"]
    lines[0] += (f" [measured {started} on {m['cpu']}, {m['cores']} cores, 1-minute load "
                 f"average {la[0]:.1f} before, {la[1]:.1f} after]")
    a = text.index(head)
    nxt = text.find("\n## ", a + len(head))
    text = text[:a] + "\n".join(lines) + "\n" + (text[nxt + 1:] if nxt >= 0 else "")
    md.write_text(text)
    res = out / "bench_results.json"
    data = json.loads(res.read_text()) if res.exists() else {}
    data["offline"] = offline
    res.write_text(json.dumps(data, indent=2) + "\n")
    return md


def write_report(out: str | Path = "docs", *, seconds: float = 20.0,
                 offline_seconds: float = 60.0, say=print) -> Path:
    """Measure everything and write ``out/BENCHMARKS.md``, ``out/bench_*.png`` and
    ``out/bench_results.json``. Takes several minutes (the peers are slow on a CPU)."""
    from livestems.model.nets.registry import load_separator

    import os

    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # streaming: one thread (see `livestems bench --help`)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    streams = []
    for name in STREAM_MODELS:
        say(f"streaming {name} for {seconds:g} s ...")
        streams.append(bench_stream(load_separator(name), seconds=seconds, model_name=name,
                                    keep_times=True))
    lat = []
    for name in STREAM_MODELS:
        sep = load_separator(name)
        lat.append({"model": name, **measure_latency(sep, block_size=sep.hop)})
    torch.set_num_threads(os.cpu_count() or 1)  # offline: every core, for us and the peers
    offline = bench_offline(list(OFFLINE_MODELS), seconds=offline_seconds, progress=say)
    plots = _plots(out, streams, offline)
    m = machine_info()

    lines = [
        "# Benchmarks",
        "",
        "Regenerate with `livestems bench report` (writes this file, the PNGs beside it and",
        "`bench_results.json`). Every figure below was measured in one run on "
        f"{started}, on: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"torch threads {streams[0]['threads']} streaming, {offline['threads']} offline. "
        "Absolute times hold only on that machine; "
        "compare rows with each other.",
        "",
        "## Streaming (per hop, through the engine, no sleeping)",
        "",
        "`latency` is the separator's declared latency (window geometry + look-ahead);",
        "`end-to-end` adds what the engine needs with host blocks of one hop: the hop the",
        "worker gathers before it can run and one block of compute headroom. RTF = compute",
        "time / hop duration: below 1 keeps up; the p99 decides glitches.",
        "",
        "| model | hop | latency ms | end-to-end ms | p50 ms | p90 | p99 | p99.9 | max | "
        "RTF p50 | RTF p99 | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in streams:
        p = r["per_hop_ms"]
        lines.append(
            f"| {r['model']} | {r['hop']} | {r['latency_ms']:.2f} | {r['engine_latency_ms']:.2f}"
            f" | {p['p50']:.3f} | {p['p90']:.3f} | {p['p99']:.3f} | {p['p999']:.3f} | "
            f"{p['max']:.3f} | {r['rtf_p50']:.3f} | {r['rtf_p99']:.3f} | "
            f"{r['peak_rss_mb']:.0f} |")
    lines += ["", f"![per-hop time histograms]({plots[0]})",
              f"![latency vs RTF]({plots[1]})", "",
              "## Latency, measured with an impulse (`livestems latency`)", "",
              "| model | block | declared | measured on mix | measured on stems | agrees |",
              "|---|---|---|---|---|---|"]
    for r in lat:
        lines.append(f"| {r['model']} | {r['block_size']} | {r['declared_samples']} | "
                     f"{r['measured_mix_samples']} | {r['measured_stems_samples']} | "
                     f"{'yes' if r['agrees'] else 'NO'} |")
    lines += ["", "Random-weight networks are not separators yet, so their impulse response is",
              "not a clean delta; the peak still lands on the declared latency when it says yes.",
              "",
              *_offline_lines(offline, plots[2])]
    (out / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
    for r in streams:
        r.pop("times_ms", None)
    (out / "bench_results.json").write_text(json.dumps(
        {"streaming": streams, "latency": lat, "offline": offline}, indent=2) + "\n")
    return out / "BENCHMARKS.md"
