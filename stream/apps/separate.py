"""`livestems separate` for one file: read, separate offline, write one file per stem.

Each input is read (any channel count, any supported rate), resampled to the model's rate with
soxr when it differs, separated in large offline passes (:mod:`.offline`: the same causal
network as the live engine, batched over time, equal to the streaming result), resampled back,
trimmed to the input's exact length (latency removed) and written atomically: stems go to a
hidden temporary folder (``.<track>.<pid>-<random>.partial``) that is renamed into place only
when every file is complete, so an interrupted run never leaves a half-written track folder and
never damages an existing one. A finished folder holds a small manifest (``.livestems.json``:
the input's size and modification time, the model, format and stems) by which a later run
recognises it as complete for that input and skips it (resume after Ctrl-C or a crash);
temporary folders of processes that died are removed when their track is written again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from livestems.stream.io.files import read_audio
from livestems.stream.errors import LivestemsError, OutputError
from .offline import Timer, iter_separated

__all__ = ["separate_file", "SeparateResult", "track_name", "FORMATS", "stem_names",
           "output_target", "output_state", "MANIFEST"]

FORMATS = ("wav", "flac", "stem.mp4")
ACCOMPANIMENT = "accompaniment"
NI_ORDER = ("drums", "bass", "other", "vocals")
#: inside each finished track folder (beside a .stem.mp4: ``.<name>.stem.mp4.livestems.json``)
MANIFEST = ".livestems.json"
_PARTIAL = ".partial"


@dataclass
class SeparateResult:
    """One input's outcome. ``status``: 'done' (written now) or 'skipped' (a complete output
    for this input and these settings was already there). ``audio_s``: the input's duration;
    ``timing``: wall seconds per phase (:class:`~.offline.Timer`)."""

    input: Path
    folder: Path
    files: list[Path]
    sample_rate: int
    frames: int
    notes: list[str] = field(default_factory=list)
    status: str = "done"
    timing: Timer = field(default_factory=Timer)

    @property
    def audio_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


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


def output_target(path: Path, outdir: Path, fmt: str) -> Path:
    """Where ``path``'s stems go: ``outdir/<track>`` (a folder) or ``outdir/<track>.stem.mp4``."""
    name = track_name(Path(path))
    return Path(outdir) / (f"{name}.stem.mp4" if fmt == "stem.mp4" else name)


def _manifest_path(target: Path, fmt: str) -> Path:
    if fmt == "stem.mp4":
        return target.with_name(f".{target.name}.livestems.json")
    return target / MANIFEST


def _identity(path: Path) -> dict:
    st = Path(path).stat()
    return {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def output_state(path: Path, target: Path, *, fmt: str, stems: list[str], model_id: str
                 ) -> tuple[str, str]:
    """``('absent' | 'complete' | 'conflict', why)`` for ``target`` made from ``path``.

    Complete: the manifest livestems wrote with it names this input (same size and
    modification time), the same model and format, every requested stem, and those files are
    there. Anything else at ``target`` (another input, other settings, a folder made by hand)
    is a conflict that only ``--force`` replaces.
    """
    if not target.exists():
        return "absent", ""
    try:
        man = json.loads(_manifest_path(target, fmt).read_text())
    except (OSError, ValueError):
        return "conflict", "it was not written by livestems (no manifest)"
    try:
        ident = _identity(path)
    except OSError:
        return "conflict", "the input cannot be read"
    if {k: man.get(k) for k in ident} != ident:
        return "conflict", "it was made from a different version of this input"
    if man.get("model") != model_id or man.get("format") != fmt:
        return "conflict", (f"it was made with model {man.get('model')!r}, format "
                            f"{man.get('format')!r}")
    missing = [s for s in stems if s not in man.get("stems", [])]
    if fmt != "stem.mp4":
        missing += [s for s in stems if s not in missing and not (target / f"{s}.{fmt}").is_file()]
    if missing:
        return "conflict", f"it lacks the stem(s) {', '.join(missing)}"
    return "complete", ""


def separate_file(
    path: str | Path,
    outdir: str | Path,
    separator,
    *,
    stems: list[str] | None = None,
    fmt: str = "wav",
    force: bool = False,
    model_id: str = "?",
) -> SeparateResult:
    """Separate one file into ``outdir/<track>/<stem>.<ext>`` (or ``outdir/<track>.stem.mp4``).

    An output already complete for this input, model, format and stems is skipped
    (``status='skipped'``) unless ``force``; any other existing output raises
    :class:`~livestems.stream.errors.OutputError` (exit code 3) unless ``force``, and with
    ``force`` is replaced only once the new one is complete. ``model_id`` names the model in
    the manifest (the ``--model`` value). Raises :class:`LivestemsError` subclasses with fix-it
    messages.
    """
    path, outdir = Path(path), Path(outdir)
    if fmt not in FORMATS:
        raise LivestemsError(f"unknown format {fmt!r}", expected=" or ".join(FORMATS), got=fmt)
    available = stem_names(tuple(separator.sources))
    chosen = _select(stems, available)
    target = output_target(path, outdir, fmt)
    timer = Timer()
    if not force and path.is_file():  # a missing input is read_audio's clear error
        state, why = output_state(path, target, fmt=fmt, stems=chosen, model_id=model_id)
        if state == "complete":
            return SeparateResult(path, target, [], 0, 0, status="skipped", timing=timer)
        if state == "conflict":
            raise OutputError(f"output already exists and {why}", path=target,
                              fix="pass --force to replace it, or choose another -o folder")

    with timer.phase("decode_s"):
        ident = _identity(path) if path.is_file() else None
        audio = read_audio(path)
        notes = list(audio.notes)
        rate, frames = audio.sample_rate, audio.samples.shape[1]
        x = _resample(audio.samples, rate, separator.sample_rate)
    if rate != separator.sample_rate:
        notes.append(f"resampled {rate} Hz -> {separator.sample_rate} Hz for the model and back")

    manifest = {"livestems_manifest": 1, "input": str(path), **(ident or {}),
                "model": model_id, "format": fmt, "stems": chosen, "sample_rate": rate,
                "frames": frames}
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder: {exc.strerror or exc}",
                          path=outdir, fix="choose a writable -o folder") from exc
    # the folder writer is done with each block before the next: one buffer for them all
    blocks = _model_blocks(separator, x, path, notes, timer, reuse=fmt != "stem.mp4")
    if fmt == "stem.mp4":  # one ffmpeg encode of whole signals
        with timer.phase("write_s"):
            y = np.concatenate(list(blocks), axis=-1)
            y = _fit(_resample(y.reshape(-1, y.shape[-1]), separator.sample_rate, rate)
                     .reshape(y.shape[0], y.shape[1], -1), frames)
            by_name = _with_accompaniment({s: y[i] for i, s in enumerate(separator.sources)},
                                          available)
            _write_manifest(_manifest_path(target, fmt), manifest)
            files = [_write_stem_mp4(target, audio.samples, by_name, rate, notes, force)]
    else:  # stem files written piece by piece: memory stays a segment's worth
        files = _write_folder(target, separator, blocks, chosen, rate, frames, fmt, notes,
                              manifest, timer)
    return SeparateResult(path, target, files, rate, frames, notes, "done", timer)


def _write_manifest(dest: Path, manifest: dict) -> None:
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write output: {exc.strerror or exc}", path=dest,
                          fix="check the folder is writable and has free space") from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(target: Path) -> list[Path]:
    """Remove ``target``'s temporary folders left by processes that no longer run (a crash or
    SIGKILL mid-write); returns what was removed. Folders of live processes are kept."""
    removed = []
    prefix = f".{target.name}."
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not (p.name.startswith(prefix) and p.name.endswith(_PARTIAL)):
            continue
        tag = p.name[len(prefix):-len(_PARTIAL)]
        pid = tag.split("-", 1)[0]
        if "." in tag or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _model_blocks(separator, x, path, notes, timer, reuse=False):
    """The model's aligned stems, segment by segment (:func:`~.offline.iter_separated`), with
    the time spent counted as compute and non-finite output zeroed (and noted)."""
    it = iter_separated(separator, x, reuse=reuse)
    bad = 0
    while True:
        with timer.phase("compute_s"):
            try:
                y = next(it, None)
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - any model failure: write nothing
                raise LivestemsError(f"the model failed during separation: "
                                     f"{type(exc).__name__}: {exc}", path=path,
                                     fix="check the model file, or try --model center") from exc
        if y is None:
            break
        n_bad = int(np.size(y) - np.count_nonzero(np.isfinite(y)))
        if n_bad:
            y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
            bad += n_bad
        yield y
    if bad:
        notes.append(f"the model produced {bad} NaN/Inf samples: replaced by 0")


def _with_accompaniment(by_name: dict, available: list[str]) -> dict:
    if ACCOMPANIMENT in available and ACCOMPANIMENT not in by_name:
        by_name[ACCOMPANIMENT] = np.sum(
            [v for s, v in by_name.items() if s != "vocals"], axis=0).astype(np.float32)
    return by_name


_PCM24_MAX = 1.0 - 2.0**-23  # the largest 24-bit FLAC sample, as a float


def _write_folder(target: Path, separator, blocks, chosen, rate, frames, fmt, notes, manifest,
                  timer) -> list[Path]:
    """Stream ``blocks`` (aligned stems at the model's rate) into ``target/<stem>.<fmt>``:
    resampled back to ``rate`` and cut or padded to exactly ``frames``, in a hidden temporary
    folder renamed into place once everything, manifest included, is written."""
    import soundfile as sf

    from livestems.stream.io.files import WRITE_FORMATS

    remove_stale_partials(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{_PARTIAL}")
    container, subtype = WRITE_FORMATS[fmt]
    files, clipped = {}, dict.fromkeys(chosen, 0)
    sources = list(separator.sources)
    n_src, channels = len(sources), separator.channels
    resampler = None
    if rate != separator.sample_rate:
        resampler = soxr.ResampleStream(separator.sample_rate, rate, n_src * channels,
                                        dtype="float32", quality="VHQ")
    left = frames

    def emit(y):  # y [S, C, n] at the output rate
        nonlocal left
        y = y[..., :left]
        left -= y.shape[-1]
        by_name = _with_accompaniment({s: y[i] for i, s in enumerate(sources)}, chosen)
        for stem in chosen:
            data = by_name[stem]
            if fmt == "flac":
                over = (data > _PCM24_MAX) | (data < -1.0)
                if over.any():
                    clipped[stem] += int(np.count_nonzero(over))
                    data = np.clip(data, -1.0, _PCM24_MAX)
            files[stem].write(np.ascontiguousarray(data.T))

    try:
        tmp.mkdir()
        for stem in chosen:
            files[stem] = sf.SoundFile(tmp / f"{stem}.{fmt}", "w", samplerate=int(rate),
                                       channels=channels, format=container, subtype=subtype)
        for y in blocks:
            with timer.phase("write_s"):
                if resampler is not None:
                    z = resampler.resample_chunk(np.ascontiguousarray(
                        y.reshape(n_src * channels, -1).T))
                    y = np.ascontiguousarray(z.T).reshape(n_src, channels, -1)
                if left > 0 and y.shape[-1]:
                    emit(y)
        with timer.phase("write_s"):
            if resampler is not None and left > 0:
                z = resampler.resample_chunk(np.zeros((0, n_src * channels), np.float32),
                                             last=True)
                emit(np.ascontiguousarray(z.T).reshape(n_src, channels, -1))
            if left > 0:  # resampling may end a few samples short: pad to the exact length
                emit(np.zeros((n_src, channels, left), np.float32))
            for stem in chosen:
                files.pop(stem).close()
                if sf.info(tmp / f"{stem}.{fmt}").frames != frames:
                    raise OSError(f"short write of {stem}.{fmt}")
            for stem, n in clipped.items():
                if n:
                    notes.append(f"{stem}: {n} samples beyond full scale clipped by {fmt}; "
                                 "use --format wav (32-bit float) to keep them")
            _write_manifest(tmp / MANIFEST, manifest)
            if target.exists():  # only reached with force: swap, then delete the old one
                old = target.with_name(f".{target.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
    except (OSError, sf.SoundFileError) as exc:
        _close_all(files)
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or getattr(exc, "error_string", None) or exc
        raise OutputError("cannot write output", expected="a writable folder with free space",
                          got=str(reason), path=target,
                          fix="check free space and permissions of the output folder") from exc
    except BaseException:
        _close_all(files)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target / f"{stem}.{fmt}" for stem in chosen]


def _close_all(files: dict) -> None:
    for f in files.values():
        try:
            f.close()
        except Exception:  # noqa: BLE001 - closing a file whose write failed; it is removed
            pass


def _write_stem_mp4(target: Path, mixture, by_name, rate, notes, force) -> Path:
    from livestems.stream.io.stems_mp4 import AAC_SAMPLE_RATES_HZ, write_stems_mp4

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
