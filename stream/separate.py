"""`livestems separate`: files in, one file per stem out, through the real-time engine.

Each input is read (any channel count, any supported rate), resampled to the model's rate with
soxr when it differs, streamed through :class:`~livestems.stream.engine.Engine` hop by hop as
fast as the CPU allows, resampled back, trimmed to the input's exact length (latency removed)
and written atomically: stems go to a hidden temporary folder that is renamed into place only
when every file is complete, so an interrupted run never leaves a half-written track folder and
never damages an existing one.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from .audio_io import read_audio, write_audio
from .backends.file import play_through
from .engine import Engine
from .errors import LivestemsError, OutputError

__all__ = ["separate_file", "SeparateResult", "track_name", "FORMATS", "stem_names"]

FORMATS = ("wav", "flac", "stem.mp4")
ACCOMPANIMENT = "accompaniment"
NI_ORDER = ("drums", "bass", "other", "vocals")
_FILE_BLOCK = 4096  # samples per push when separating files: amortises Python overhead


@dataclass
class SeparateResult:
    input: Path
    folder: Path
    files: list[Path]
    sample_rate: int
    frames: int
    notes: list[str] = field(default_factory=list)
    stats: object = None


def track_name(path: Path) -> str:
    """Folder name for a track: the file name without its audio extension(s)."""
    name = path.name
    for ext in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem or name


def stem_names(sources: tuple[str, ...]) -> list[str]:
    """Stems a model can write: its own, plus ``accompaniment`` when it has vocals."""
    names = list(sources)
    if "vocals" in names and ACCOMPANIMENT not in names and len(names) > 1:
        names.append(ACCOMPANIMENT)
    return names


def _select(requested: list[str] | None, available: list[str]) -> list[str]:
    if not requested:
        return available
    unknown = [s for s in requested if s not in available]
    if unknown:
        raise LivestemsError(
            f"unknown stem(s) {', '.join(unknown)}",
            expected=f"a comma-separated subset of {','.join(available)}",
            got=",".join(requested),
            fix=f"--stems {','.join(available)}",
        )
    return list(dict.fromkeys(requested))


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return x
    y = soxr.resample(np.ascontiguousarray(x.T), rate_in, rate_out, quality="VHQ")
    return np.ascontiguousarray(y.T, dtype=np.float32)


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad the last axis to exactly ``frames`` samples."""
    if x.shape[-1] >= frames:
        return np.ascontiguousarray(x[..., :frames])
    pad = np.zeros(x.shape[:-1] + (frames - x.shape[-1],), dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)


def separate_file(
    path: str | Path,
    outdir: str | Path,
    separator,
    *,
    stems: list[str] | None = None,
    fmt: str = "wav",
    force: bool = False,
    progress: bool = True,
) -> SeparateResult:
    """Separate one file into ``outdir/<track>/<stem>.<ext>`` (or ``outdir/<track>.stem.mp4``).

    Raises :class:`~livestems.stream.errors.LivestemsError` subclasses with fix-it messages;
    an existing output is never touched without ``force``.
    """
    path, outdir = Path(path), Path(outdir)
    if fmt not in FORMATS:
        raise LivestemsError(f"unknown format {fmt!r}", expected=" or ".join(FORMATS), got=fmt)
    available = stem_names(tuple(separator.sources))
    chosen = _select(stems, available)
    name = track_name(path)
    target = outdir / (f"{name}.stem.mp4" if fmt == "stem.mp4" else name)
    if target.exists() and not force:
        raise OutputError(
            "output already exists",
            path=target,
            fix="pass --force to replace it, or choose another -o folder",
        )

    audio = read_audio(path)
    notes = list(audio.notes)
    rate, frames = audio.sample_rate, audio.samples.shape[1]
    x = _resample(audio.samples, rate, separator.sample_rate)
    if rate != separator.sample_rate:
        notes.append(f"resampled {rate} Hz -> {separator.sample_rate} Hz for the model and back")

    engine = Engine(separator, block_size=_FILE_BLOCK)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=x.shape[1] / separator.sample_rate, unit="s", unit_scale=False,
                   desc=name[:30], file=sys.stderr, leave=False,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s "
                              "[{elapsed}<{remaining}, {rate_fmt}]")
    try:
        _, y = play_through(
            engine, x,
            progress=None if bar is None else (lambda n: bar.update(n / separator.sample_rate)),
        )
    finally:
        if bar is not None:
            bar.close()
    failed = engine.stats().worker_error
    if failed:  # the stems after the failure would be silent: write nothing
        raise LivestemsError(f"the model failed during separation: {failed}", path=path,
                             fix="check the model file, or try --model center")
    y = _fit(_resample(y.reshape(-1, y.shape[-1]), separator.sample_rate, rate)
             .reshape(y.shape[0], y.shape[1], -1), frames)
    by_name = {s: y[i] for i, s in enumerate(separator.sources)}
    if ACCOMPANIMENT in available and ACCOMPANIMENT not in by_name:
        by_name[ACCOMPANIMENT] = np.sum(
            [y[i] for i, s in enumerate(separator.sources) if s != "vocals"], axis=0
        ).astype(np.float32)

    outdir.mkdir(parents=True, exist_ok=True)
    if fmt == "stem.mp4":
        files = [_write_stem_mp4(target, audio.samples, by_name, rate, notes, force)]
    else:
        files = _write_folder(target, by_name, chosen, rate, fmt, notes)
    return SeparateResult(path, target, files, rate, frames, notes, engine.stats())


def _write_folder(target: Path, by_name, chosen, rate, fmt, notes) -> list[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        for stem in chosen:
            clipped = write_audio(tmp / f"{stem}.{fmt}", by_name[stem], rate, fmt)
            if clipped:
                notes.append(f"{stem}: {clipped} samples beyond full scale clipped by {fmt}; "
                             "use --format wav (32-bit float) to keep them")
        if target.exists():  # only reached with force: swap, then delete the old one
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target / f"{stem}.{fmt}" for stem in chosen]


def _write_stem_mp4(target: Path, mixture, by_name, rate, notes, force) -> Path:
    from .stems_mp4 import AAC_SAMPLE_RATES_HZ, write_stems_mp4

    if rate not in AAC_SAMPLE_RATES_HZ:  # AAC cannot carry this rate: resample the file
        new_rate = 48000 if rate > 48000 else min(r for r in AAC_SAMPLE_RATES_HZ if r >= rate)
        notes.append(f"stem.mp4 (AAC) cannot store {rate} Hz: written at {new_rate} Hz")
        mixture = _resample(mixture, rate, new_rate)
        by_name = {k: _resample(v, rate, new_rate) for k, v in by_name.items()}
        rate = new_rate

    missing = [s for s in NI_ORDER if s not in by_name]
    four = {}
    for s in NI_ORDER:
        if s in by_name:
            four[s] = by_name[s]
        elif s == "other" and ACCOMPANIMENT in by_name:
            four[s] = by_name[ACCOMPANIMENT]  # a two-stem model: accompaniment in "other"
        else:
            four[s] = np.zeros_like(mixture)
    if missing:
        notes.append(
            "this model has no " + ", ".join(missing) + " stem: written silent"
            + (" (accompaniment goes in the 'other' slot)" if "other" in missing else "")
        )
    names = {s: s for s in NI_ORDER}
    if "other" in missing and ACCOMPANIMENT in by_name:
        names["other"] = ACCOMPANIMENT
    write_stems_mp4(target, mixture, four, rate, names=names, overwrite=force)
    return target
