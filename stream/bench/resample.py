"""The figures docs/DSP.md quotes for the live resamplers: response and SDR cost on real music.

    python -m livestems.stream.bench.resample [--model NAME] [--seconds 30] [--song FOLDER]

1. Response of each recipe (LD, our low-delay polyphase filter; soxr HQ and LQ) both ways
   between 48 and 44.1 kHz (:func:`livestems.dsp.resample.measure_response`).
2. SDR cost on real music: the stems of a multitrack song recorded at 48 kHz (default the
   validation song 6.Caesium of ../shared/data/train-real), mixed, run through the engine at a
   48 kHz I/O rate (so through both resamplers, around a 44.1 kHz model) with each recipe,
   offline (no deadlines), and scored against the true 48 kHz stems (whole-segment energy
   ratio, the MDX "new SDR"); stems silent in the song are left out. Also the difference
   between the LD and the HQ outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from livestems.dsp.resample import LD, measure_response

__all__ = ["response_rows", "sdr_rows", "main"]


def response_rows(qualities=(LD, "HQ", "LQ")) -> list[dict]:
    rows = []
    for q in qualities:
        for a, b in ((48000, 44100), (44100, 48000)):
            r = measure_response(a, b, q)
            rows.append({k: v for k, v in r.items() if not isinstance(v, np.ndarray)})
    return rows


def _read_stems(folder: Path, names, offset_s: float, seconds: float) -> dict:
    import soundfile as sf

    out = {}
    for name in names:
        f = folder / f"{name}.opus"
        if not f.exists():
            continue
        info = sf.info(str(f))
        if info.samplerate != 48000:
            raise ValueError(f"{f}: {info.samplerate} Hz; this report needs 48 kHz stems")
        x, _ = sf.read(str(f), start=int(offset_s * 48000), frames=int(seconds * 48000),
                       dtype="float32", always_2d=True)
        out[name] = np.ascontiguousarray(x.T)
    n = min(v.shape[1] for v in out.values())
    return {k: v[:, :n] for k, v in out.items()}


def _sdr(ref: np.ndarray, est: np.ndarray) -> float:
    num = float(np.sum(ref.astype(np.float64) ** 2))
    den = float(np.sum((ref.astype(np.float64) - est) ** 2))
    return 10.0 * np.log10(num / den)


def sdr_rows(model: str | None, song: Path, offset_s: float = 30.0, seconds: float = 30.0,
             qualities=(LD, "HQ")) -> dict:
    from livestems.model.nets.registry import default_model, load_separator

    from livestems.stream.io.backends.file import play_through
    from livestems.stream.core.engine import Engine

    sep = load_separator(model)
    stems = _read_stems(song, sep.sources, offset_s, seconds)
    mix = sum(stems.values()).astype(np.float32)
    edge = 48000  # one second left out at each end
    est = {}
    for q in qualities:
        eng = Engine(sep, block_size=256, io_rate=48000, resample_quality=q)
        _, y = play_through(eng, mix)
        est[q] = {s: y[i] for i, s in enumerate(sep.sources)}
        est[q]["_latency_samples"] = eng.latency_samples
    table = {}
    for s, ref in stems.items():
        if float(np.abs(ref).max()) < 1e-4:
            continue  # silent in this song: no SDR
        table[s] = {q: _sdr(ref[:, edge:-edge], est[q][s][:, edge:-edge]) for q in qualities}
    ld, hq = est[qualities[0]], est[qualities[1]]
    diff = {s: 10 * np.log10(np.sum((ld[s] - hq[s])[:, edge:-edge] ** 2.0)
                             / np.sum(hq[s][:, edge:-edge] ** 2.0)) for s in sep.sources
            if s in table}
    return {"model": model or default_model(), "song": str(song), "offset_s": offset_s,
            "seconds": mix.shape[1] / 48000, "sdr_db": table, "ld_vs_hq_db": diff,
            "latency_samples": {q: est[q]["_latency_samples"] for q in qualities}}


def main(argv=None) -> int:
    from livestems.model.evaluation.consistency import DEFAULT_SONG

    p = argparse.ArgumentParser(prog="python -m livestems.stream.bench.resample",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--song", default=str(DEFAULT_SONG))
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    print("| recipe | direction | ripple to 18 kHz (dB) | -3 dB at (Hz) | above 22.05 kHz "
          "(dB) | worst in-band spur (dB) | delay (output samples) |")
    print("|---|---|---|---|---|---|---|")
    for r in response_rows():
        stop = "n/a" if r["stopband_db"] == float("-inf") else f"{r['stopband_db']:.1f}"
        print(f"| {r['quality']} | {r['in_rate'] / 1000:g} -> {r['out_rate'] / 1000:g} kHz | "
              f"{r['passband_ripple_db']:.3f} | {r['minus3db_hz']:.0f} | {stop} | "
              f"{r['worst_spur_db']:.1f} | {r['delay_out_samples']:.2f} |", flush=True)
    res = sdr_rows(args.model, Path(args.song), seconds=args.seconds)
    print(f"\nSDR (dB, whole {res['seconds']:.0f} s from {res['offset_s']:g} s, 1 s edges left "
          f"out) of {res['model']} at a 48 kHz I/O rate, {res['song']}:")
    print("| stem | LD | HQ | LD - HQ | LD output vs HQ output (dB) |")
    print("|---|---|---|---|---|")
    for s, v in res["sdr_db"].items():
        print(f"| {s} | {v['LD']:.2f} | {v['HQ']:.2f} | {v['LD'] - v['HQ']:+.2f} | "
              f"{res['ld_vs_hq_db'][s]:.1f} |")
    print(f"latency (48 kHz, 256 blocks): {res['latency_samples']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
