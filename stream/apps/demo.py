"""`livestems demo`: the main job on the embedded default, with nothing downloaded.

Synthesises a short song with known stems, plays it through the real-time engine as a live
input would arrive (paced to the audio clock, worker thread running, 256-sample host blocks),
writes the karaoke mix and the stems, draws their spectrograms, and prints the latency, the
real-time factor, the deadline misses and the separation quality against the known stems.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from livestems.dsp.warmup import warmup
from livestems.model.evaluation.demo_song import make_demo_song
from livestems.model.nets.registry import default_model, load_separator

from livestems.stream.io.files import write_audio
from livestems.stream.io.backends.file import play_through
from livestems.stream.core.engine import Engine, safety_line

__all__ = ["run_demo", "sdr_db"]


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Whole-signal SDR in dB (the MDX "new SDR": energy ratio, no projection)."""
    num = float(np.sum(reference.astype(np.float64) ** 2)) + 1e-10
    den = float(np.sum((reference.astype(np.float64) - estimate) ** 2)) + 1e-10
    return 10.0 * np.log10(num / den)


def _spectrogram_png(path: Path, tracks: dict[str, np.ndarray], sample_rate: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tracks), 1, figsize=(10, 2.2 * len(tracks)), sharex=True)
    for ax, (title, x) in zip(axes, tracks.items()):
        mono = x.mean(axis=0)
        ax.specgram(mono + 1e-9, NFFT=2048, Fs=sample_rate, noverlap=1536, cmap="magma",
                    vmin=-120, vmax=-20)
        ax.set_ylim(0, 8000)
        ax.set_ylabel("Hz")
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def run_demo(outdir: str | Path = "demo-out", *, seconds: float = 12.0, model: str | None = None,
             block_size: int = 256, paced: bool = True, seed: int = 0,
             safety_ms: float | str = "auto", out=sys.stdout) -> dict:
    """Run the demo; returns the figures it printed (for tests and scripts)."""
    outdir = Path(outdir)
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    t_setup = time.perf_counter()
    warmup()
    sep = load_separator(model)
    song = make_demo_song(seconds=seconds, sample_rate=sep.sample_rate, seed=seed)
    if not paced and safety_ms == "auto":
        safety_ms = 0.0  # nothing to be late for: the engine waits for the model
    engine = Engine(sep, block_size=block_size, safety_ms=safety_ms)
    if "vocals" in sep.sources:
        engine.mixer.set_mute("vocals")  # the mix bus is the karaoke mix
        engine.mixer.snap()
    rate = sep.sample_rate
    say(f"livestems demo: {seconds:g} s synthetic song, {song.tempo_bpm:g} bpm in {song.key} "
        f"(drums, bass, keys and a sung lead; seed {seed})")
    say(f"model {model or default_model()}: stems {', '.join(sep.sources)}; {rate} Hz; "
        f"hop {sep.hop}; host blocks of {block_size}")
    say(f"latency: {engine.latency_samples} samples = {1000 * engine.latency_samples / rate:.1f}"
        f" ms (model {sep.latency_samples} + hop {sep.hop} + block {block_size} + safety "
        f"{engine.safety_samples})")
    say(safety_line(engine))
    say(f"setup {time.perf_counter() - t_setup:.2f} s; playing "
        f"{'in real time' if paced else 'as fast as possible'}...")
    t0 = time.perf_counter()
    mix, stems = play_through(engine, song.mixture, paced=paced)
    wall = time.perf_counter() - t0
    st = engine.stats()

    outdir.mkdir(parents=True, exist_ok=True)
    files = {"input": song.mixture, "karaoke": mix}
    files.update({s: stems[i] for i, s in enumerate(sep.sources)})
    for name, x in files.items():
        write_audio(outdir / f"{name}.wav", x, rate, "wav", overwrite=True)
    png = outdir / "spectrograms.png"
    _spectrogram_png(png, {f"{k}": v for k, v in files.items()}, rate)

    truth_vocals = song.stems["vocals"]
    truth_acc = song.mixture - truth_vocals
    result = {
        "latency_samples": engine.latency_samples,
        "latency_ms": 1000 * engine.latency_samples / rate,
        "rtf_p50": st.rtf_p50,
        "rtf_p99": st.rtf_p99,
        "per_hop_ms": st.per_hop_ms,
        "deadline_misses": st.deadline_misses,
        "safety_ms": engine.safety_ms,
        "safety_auto": engine.safety_auto,
        "warmup_hop_ms": engine.warmup_hop_ms,
        "hops": st.hops_processed,
        "wall_s": wall,
        "outdir": str(outdir),
    }
    say(f"played {seconds:g} s in {wall:.2f} s wall; {st.hops_processed} hops; per-hop compute "
        f"p50 {st.per_hop_ms['p50']:.3f} ms, p99 {st.per_hop_ms['p99']:.3f} ms, max "
        f"{st.per_hop_ms['max']:.3f} ms (hop = {1000 * sep.hop / rate:.2f} ms)")
    say(f"real-time factor: p50 {st.rtf_p50:.3f}, p99 {st.rtf_p99:.3f} (below 1 keeps up)")
    say(f"deadline misses: {st.deadline_misses} ({st.missed_samples} samples played dry)")
    if "vocals" in sep.sources:
        est_v = stems[list(sep.sources).index("vocals")]
        est_a = mix if "accompaniment" not in sep.sources else \
            stems[list(sep.sources).index("accompaniment")]
        result["sdr"] = {
            "vocals": sdr_db(truth_vocals, est_v),
            "accompaniment": sdr_db(truth_acc, est_a),
            "vocals_floor_mixture": sdr_db(truth_vocals, song.mixture),
            "accompaniment_floor_mixture": sdr_db(truth_acc, song.mixture),
        }
        r = result["sdr"]
        say(f"quality (SDR, whole-signal energy ratio, vs the song's true stems): vocals "
            f"{r['vocals']:.1f} dB (mixture as estimate: {r['vocals_floor_mixture']:.1f} dB), "
            f"accompaniment {r['accompaniment']:.1f} dB "
            f"(mixture: {r['accompaniment_floor_mixture']:.1f} dB)")
    say(f"wrote {', '.join(f'{k}.wav' for k in files)} and {png.name} to {outdir}/")
    return result
