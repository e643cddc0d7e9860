"""Shift consistency: how much a separator's output changes when its input is delayed.

A separator that frames its input on a fixed grid (STFT frames, strided convolutions) sees a
delayed song on another grid position, and gives a slightly different answer. Live, the grid
position is wherever playback happened to start, so the same song sounds different each time.
The figure here is the error between the stems of ``x`` and the stems of ``x`` delayed by
``d`` samples, aligned back::

    error_db(d) = 10 log10( sum |y_d[t + d] - y_0[t]|^2 / sum |y_0[t]|^2 )

summed over stems, channels and ``edge <= t < T - edge`` (the edges are left out: the delayed
input starts with ``d`` zeros, and both runs start from a zero state). -inf would be a
separator that is exactly shift-invariant; a -20 dB figure means the stems change by a tenth
of their amplitude. Both runs use the separator's offline ``forward``, which the protocol ties
to its streaming output to 1e-4 (model/nets/protocol.py), in one batch.

:func:`load_song` reads a multitrack folder (the Opus stems of ../shared/data/train-real) as
the mixture of its stems at the separator's rate, for measuring on real music.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["shift_consistency", "load_song", "DEFAULT_SHIFTS", "DEFAULT_SONG"]

#: 1 sample, a prime in between, and half an rt-tiny STFT frame.
DEFAULT_SHIFTS = (1, 37, 128)
#: a validation song of the CC0 training set (never trained on; see its MANIFEST.md)
DEFAULT_SONG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "train-real" / "6.Caesium"


def _error_db(diff: np.ndarray, ref: np.ndarray) -> float:
    num = float(np.sum(np.square(diff, dtype=np.float64)))
    den = float(np.sum(np.square(ref, dtype=np.float64)))
    if den == 0.0:
        return float("-inf") if num == 0.0 else float("inf")
    return float("-inf") if num == 0.0 else float(10.0 * np.log10(num / den))


def shift_consistency(sep, x: np.ndarray, shifts=DEFAULT_SHIFTS, edge_samples: int | None = None,
                      ) -> dict:
    """Error between separating ``x`` and separating ``x`` delayed, for each delay.

    Args:
        sep: a separator (model/nets/protocol.py); its offline ``forward`` is used.
        x: float ``[channels, T]`` at ``sep.sample_rate``.
        shifts: delays in samples (positive ints).
        edge_samples: samples left out at each end (default: one second).

    Returns:
        ``{"shifts": {d: {"error_db": float, "stems_db": {stem: float}}}, "worst_db": float,
        "edge_samples": int, "samples": T, "sample_rate": Hz}``. ``stems_db`` is each stem's
        error against that stem's own energy.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != sep.channels:
        raise ValueError(f"x must be [channels={sep.channels}, T], got {list(x.shape)}")
    shifts = tuple(int(d) for d in shifts)
    if not shifts or min(shifts) < 1:
        raise ValueError(f"shifts must be positive sample counts, got {shifts!r}")
    total = x.shape[1]
    edge = int(sep.sample_rate) if edge_samples is None else int(edge_samples)
    if total <= 2 * edge:
        raise ValueError(f"x has {total} samples; need more than 2 * edge = {2 * edge}")
    dmax = max(shifts)
    batch = np.zeros((1 + len(shifts), x.shape[0], total + dmax), dtype=np.float32)
    batch[0, :, :total] = x
    for i, d in enumerate(shifts):
        batch[1 + i, :, d:d + total] = x
    y = np.asarray(sep.forward(batch))  # [B, S, C, T + dmax]
    ref = y[0, :, :, edge:total - edge]
    out = {}
    for i, d in enumerate(shifts):
        got = y[1 + i, :, :, d + edge:d + total - edge]
        diff = got - ref
        out[d] = {"error_db": _error_db(diff, ref),
                  "stems_db": {s: _error_db(diff[k], ref[k]) for k, s in enumerate(sep.sources)}}
    return {"shifts": out, "worst_db": max(v["error_db"] for v in out.values()),
            "edge_samples": edge, "samples": total, "sample_rate": int(sep.sample_rate)}


def load_song(folder: Path | str = DEFAULT_SONG, sample_rate: int = 44100,
              offset_s: float = 30.0, seconds: float = 30.0) -> tuple[np.ndarray, float]:
    """The mixture (sum of every audio file in ``folder``) at ``sample_rate``, resampled with
    soxr HQ: ``(x float32 [2, n], offset in s)``, ``seconds`` from ``offset_s``, the offset
    moved earlier when the song is too short for it (to 0 at most). Raises
    FileNotFoundError with the path when the folder holds no stems."""
    import soundfile as sf
    import soxr

    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in
                   (".opus", ".ogg", ".flac", ".wav"))
    if not files:
        raise FileNotFoundError(f"no stems (.opus/.ogg/.flac/.wav) in {folder}")
    mix = None
    rate = None
    for f in files:
        info = sf.info(str(f))
        rate = rate or info.samplerate
        if info.samplerate != rate:
            raise ValueError(f"{f}: {info.samplerate} Hz, the other stems are {rate} Hz")
        a = max(0, min(int(offset_s * rate), info.frames - int(seconds * rate)))
        start = a if mix is None else start
        data, _ = sf.read(str(f), start=start, frames=int(seconds * rate),
                          dtype="float32", always_2d=True)
        if data.shape[1] == 1:
            data = np.repeat(data, 2, axis=1)
        data = data[:, :2]
        if mix is None:
            mix = data.astype(np.float64)
        else:
            n = min(len(mix), len(data))
            mix = mix[:n] + data[:n]
    if rate != sample_rate:
        mix = soxr.resample(mix, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mix.T, dtype=np.float32), start / rate
