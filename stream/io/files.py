"""Audio files in and out: any common format to float32 [channels, frames], and crash-safe WAV/FLAC writes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from livestems.stream.errors import AudioFileError, OutputError, ToolMissingError

__all__ = [
    "AudioData",
    "StemSet",
    "STEM_NAMES",
    "WRITE_FORMATS",
    "read_audio",
    "read_stems",
    "write_audio",
    "atomic_output",
    "require_tool",
    "validate_samples",
]

# Containers libsndfile cannot open; they go straight to ffmpeg. `.stem.mp4` ends in `.mp4`.
FFMPEG_SUFFIXES = frozenset({".mp4", ".m4a"})

DEFAULT_MIN_RATE_HZ = 8000
DEFAULT_MAX_RATE_HZ = 384000

# NI Stems stream order: stream 0 is the mixture, then the four stems.
STEM_NAMES = ("mixture", "drums", "bass", "other", "vocals")

# fmt -> (libsndfile container, subtype). WAV is 32-bit float so stems above 0 dBFS survive
# exactly; FLAC has no float mode, so it is 24-bit PCM and must be clipped.
WRITE_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}

# Largest value PCM_24 can hold, as a float: 1 - 2**-23. libsndfile maps +1.0 to it anyway, but
# clipping here lets us count what was lost.
_PCM24_MAX = 1.0 - 2.0**-23

# A RIFF/AIFF data chunk whose declared size exceeds what the file holds means the file was cut.
# libsndfile logs "data : <declared> (should be <actual>)" and reads what is there.
_CHUNK_SIZE_LOG = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers (ffmpeg to a pipe, crashed recorders) leave these sizes: length unknown,
# not truncated.
_UNKNOWN_CHUNK_SIZES = (0, 0xFFFFFFFF)

# ffmpeg's decoder emits whole AAC frames (1024 samples) and may keep one more than the
# container's edit list says; a shortfall beyond two frames means the media data is missing.
_FFMPEG_LENGTH_SLACK_FRAMES = 2048

# Soundfile error code for "Format not recognised" (libsndfile SF_ERR_UNRECOGNISED_FORMAT).
_SF_ERR_UNRECOGNISED_FORMAT = 1


@dataclass
class AudioData:
    """Decoded audio, ready for the engine.

    samples: float32, C-contiguous, shape [channels, frames] (channels is 2 unless asked
        otherwise), full scale is 1.0; NaN/Inf already replaced by 0.
    sample_rate: frames per second of ``samples`` (the file's own rate; nothing is resampled).
    source_channels: channel count in the file before any duplication or downmix.
    notes: human-readable remarks about what was changed on the way in (mono duplicated,
        downmix, zeroed non-finite samples, decoder fallback); empty when nothing was.
    nonfinite_count: how many NaN/Inf samples were zeroed (counted per channel sample).
    path: the file read.
    """

    samples: np.ndarray
    sample_rate: int
    source_channels: int
    notes: list[str] = field(default_factory=list)
    nonfinite_count: int = 0
    path: Path | None = None

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


class StemSet(dict):
    """The five signals of an NI Stems file: a ``dict`` from name to float32 [2, frames].

    Keys in NI order: ``mixture, drums, bass, other, vocals``; all arrays have the same length.
    Extra attributes: ``sample_rate`` (Hz), ``notes`` (list of str, as in AudioData), ``path``.
    """

    def __init__(self, arrays: dict[str, np.ndarray], sample_rate: int, notes: list[str], path: Path):
        super().__init__(arrays)
        self.sample_rate = sample_rate
        self.notes = notes
        self.path = path


def require_tool(name: str, needed_for: str) -> str:
    """Return the full path of executable ``name`` or raise ToolMissingError (exit code 4)."""
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(name, needed_for=needed_for)
    return found


# ----------------------------------------------------------------------------------------------
# Reading


def read_audio(
    path: str | os.PathLike,
    *,
    channels: int = 2,
    min_rate: int = DEFAULT_MIN_RATE_HZ,
    max_rate: int = DEFAULT_MAX_RATE_HZ,
    stream: int = 0,
) -> AudioData:
    """Read an audio file into float32 [channels, frames] at the file's own sample rate.

    Formats: whatever libsndfile reads (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, ...; detected
    from the content, so a wrong extension is fine); ``.mp4``/``.m4a``/``.stem.mp4`` and, as a
    fallback, anything libsndfile does not recognise, through ffmpeg. ``stream`` picks the
    audio stream of a multi-stream file (NI Stems: 0 mixture, 1 drums, 2 bass, 3 other,
    4 vocals).

    channels: 2 (default) or 1. Mono sources are duplicated to stereo; sources with more than
    two channels are downmixed, even-indexed channels averaged into L and odd-indexed into R;
    for channels=1 all source channels are averaged. Each such change is recorded in ``notes``.
    min_rate, max_rate: accepted sample rates in Hz, inclusive.

    Raises AudioFileError (exit code 2) for a missing path, a directory, an empty file, a file
    that is not audio, corrupt or truncated data, zero frames, an out-of-range sample rate or a
    missing stream; ToolMissingError (exit code 4) when ffmpeg is needed and absent.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels!r}")
    if stream < 0:
        raise ValueError(f"stream must be >= 0, got {stream!r}")
    p = Path(path)
    _check_input_file(p)
    notes: list[str] = []

    if p.suffix.lower() in FFMPEG_SUFFIXES:
        raw, sample_rate = _decode_with_ffmpeg(p, stream, min_rate, max_rate, notes)
    else:
        decoded = _read_with_soundfile(p, stream, min_rate, max_rate, notes)
        if decoded is None:
            # libsndfile did not recognise the content; ffmpeg knows many more containers
            # (AAC, WMA, WebM, ...). Without ffmpeg the file is simply unreadable.
            if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
                raise AudioFileError(
                    "not an audio file that libsndfile recognises",
                    expected="WAV, FLAC, Ogg, MP3, AIFF or (with ffmpeg installed) MP4/M4A",
                    got="unrecognised content",
                    fix="check the file is audio; for other formats install ffmpeg "
                    "(apt-get install ffmpeg) or convert it to WAV",
                    path=p,
                )
            raw, sample_rate = _decode_with_ffmpeg(p, stream, min_rate, max_rate, notes)
            notes.append("decoded with ffmpeg (format not supported by libsndfile)")
        else:
            raw, sample_rate = decoded

    source_channels = raw.shape[0]
    samples = _to_channels(raw, channels, notes)
    nonfinite = _zero_nonfinite(samples, notes)
    return AudioData(
        samples=samples,
        sample_rate=sample_rate,
        source_channels=source_channels,
        notes=notes,
        nonfinite_count=nonfinite,
        path=p,
    )


def read_stems(path: str | os.PathLike) -> StemSet:
    """Read all five streams of an NI Stems ``.stem.mp4``.

    Returns a StemSet (a dict) mapping ``mixture, drums, bass, other, vocals`` to float32
    [2, frames] arrays, all trimmed to the shortest stream; ``.sample_rate`` holds the rate in
    Hz. Raises AudioFileError (exit code 2) when the file has fewer than five audio streams or
    the streams disagree on sample rate; ToolMissingError (exit code 4) without ffmpeg.
    """
    p = Path(path)
    _check_input_file(p)
    probe = _probe(p)
    streams = probe["audio_streams"]
    if len(streams) < len(STEM_NAMES):
        raise AudioFileError(
            "not an NI Stems file",
            expected=f"{len(STEM_NAMES)} audio streams ({', '.join(STEM_NAMES)})",
            got=f"{len(streams)} audio stream(s)",
            fix="use read_audio() for a plain mixture file",
            path=p,
        )
    rates = {int(s.get("sample_rate", 0)) for s in streams[: len(STEM_NAMES)]}
    if len(rates) != 1:
        raise AudioFileError(
            "stem streams have different sample rates",
            expected="one sample rate for all five streams",
            got=", ".join(str(r) for r in sorted(rates)),
            fix="re-export the stems file at a single sample rate",
            path=p,
        )

    notes: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    sample_rate = rates.pop()
    for index, name in enumerate(STEM_NAMES):
        stream_notes: list[str] = []
        raw, sample_rate = _decode_with_ffmpeg(p, index, DEFAULT_MIN_RATE_HZ, DEFAULT_MAX_RATE_HZ,
                                               stream_notes, probe=probe)
        samples = _to_channels(raw, 2, stream_notes)
        _zero_nonfinite(samples, stream_notes)
        notes.extend(f"{name}: {n}" for n in stream_notes)
        arrays[name] = samples

    shortest = min(a.shape[1] for a in arrays.values())
    longest = max(a.shape[1] for a in arrays.values())
    if longest != shortest:
        notes.append(f"streams trimmed to the shortest ({shortest} of up to {longest} frames)")
        arrays = {k: np.ascontiguousarray(a[:, :shortest]) for k, a in arrays.items()}
    return StemSet(arrays, sample_rate, notes, p)


def _check_input_file(p: Path) -> None:
    fix_path = "check the path and spelling"
    if not p.exists():
        raise AudioFileError("file not found", expected="an existing audio file", got="no such path",
                             fix=fix_path, path=p)
    if p.is_dir():
        raise AudioFileError("is a folder", expected="an audio file", got="a directory",
                             fix="pass the audio files inside it, e.g. DIR/*.wav", path=p)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise AudioFileError("cannot stat file", expected="a readable file", got=str(exc),
                             fix="check permissions", path=p) from exc
    if size == 0:
        raise AudioFileError("file is empty", expected="audio data", got="0 bytes",
                             fix="re-export or re-download the file", path=p)
    if not os.access(p, os.R_OK):
        raise AudioFileError("file is not readable", expected="read permission", got="permission denied",
                             fix=f"chmod a+r '{p}'", path=p)


def _check_rate(sample_rate: int, min_rate: int, max_rate: int, p: Path) -> None:
    if not (min_rate <= sample_rate <= max_rate):
        raise AudioFileError(
            "unsupported sample rate",
            expected=f"{min_rate}..{max_rate} Hz",
            got=f"{sample_rate} Hz",
            fix=f"resample first, e.g. ffmpeg -i '{p}' -ar 44100 out.wav",
            path=p,
        )


def _check_nonempty(frames: int, p: Path) -> None:
    if frames <= 0:
        raise AudioFileError("no audio frames", expected="at least one frame", got="0 frames",
                             fix="re-export the file with audio in it", path=p)


def _read_with_soundfile(p: Path, stream: int, min_rate: int, max_rate: int, notes: list[str]):
    """Return (float32 [C, T], sample_rate), or None when libsndfile does not know the format."""
    try:
        with sf.SoundFile(p) as f:
            sample_rate = int(f.samplerate)
            declared_frames = int(f.frames)
            log = f.extra_info
            container = f.format
            if stream != 0:
                raise AudioFileError("audio stream not found", expected="stream index < 1",
                                     got=f"stream {stream}", fix="omit stream= for single-stream files",
                                     path=p)
            _check_rate(sample_rate, min_rate, max_rate, p)
            _check_nonempty(declared_frames, p)
            data = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        if exc.code == _SF_ERR_UNRECOGNISED_FORMAT:
            return None
        raise AudioFileError(
            "corrupt or unreadable audio",
            expected="a complete, valid audio file",
            got=f"libsndfile: {exc.error_string}",
            fix="re-export or re-download the file",
            path=p,
        ) from exc
    except (sf.SoundFileError, OSError) as exc:
        raise AudioFileError("cannot read audio", expected="a readable audio file", got=str(exc),
                             fix="re-export or re-download the file", path=p) from exc

    for match in _CHUNK_SIZE_LOG.finditer(log):
        declared_bytes, actual_bytes = int(match.group(2)), int(match.group(3))
        if declared_bytes not in _UNKNOWN_CHUNK_SIZES and declared_bytes > actual_bytes:
            raise AudioFileError(
                "file is truncated",
                expected=f"{declared_bytes} bytes of audio data (from the header)",
                got=f"{actual_bytes} bytes",
                fix=f"re-export or re-download it; to keep what is there: ffmpeg -i '{p}' salvaged.wav",
                path=p,
            )
    read_frames = data.shape[0]
    _check_nonempty(read_frames, p)
    if read_frames < declared_frames:
        # MP3 has no exact length field (VBR files without a Xing header give an estimate), so
        # a shortfall there is worth a note, not an error. Elsewhere the length is exact.
        if container == "MP3":
            notes.append(f"decoded {read_frames} frames, header estimated {declared_frames}: "
                         "the file may be truncated")
        else:
            raise AudioFileError("file is truncated", expected=f"{declared_frames} frames",
                                 got=f"{read_frames} frames", fix="re-export or re-download the file",
                                 path=p)
    return np.ascontiguousarray(data.T), sample_rate


def _probe(p: Path) -> dict:
    """ffprobe the file: {'format_name': str, 'audio_streams': [stream dicts in file order]}."""
    ffprobe = require_tool("ffprobe", "reading MP4/M4A/.stem.mp4 files")
    cmd = [ffprobe, "-v", "error", "-show_entries",
           "format=format_name:stream=index,codec_type,codec_name,sample_rate,channels,"
           "duration_ts,time_base", "-of", "json", str(p)]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AudioFileError(
            "not an audio file ffmpeg can read",
            expected="a valid audio or MP4 file",
            got=_last_line(proc.stderr) or f"ffprobe exit status {proc.returncode}",
            fix="check the file is complete audio; re-export or re-download it",
            path=p,
        )
    info = json.loads(proc.stdout or b"{}")
    audio = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    return {"format_name": info.get("format", {}).get("format_name", ""), "audio_streams": audio}


def _decode_with_ffmpeg(p: Path, stream: int, min_rate: int, max_rate: int, notes: list[str],
                        probe: dict | None = None):
    """Decode audio stream ``stream`` (counting audio streams only) to float32 [C, T] at its own rate."""
    probe = probe or _probe(p)
    streams = probe["audio_streams"]
    if not streams:
        raise AudioFileError("no audio stream", expected="at least one audio stream",
                             got="none (video or data only)", fix="pass an audio file", path=p)
    if stream >= len(streams):
        raise AudioFileError("audio stream not found", expected=f"stream index < {len(streams)}",
                             got=f"stream {stream}", fix=f"pick a stream in 0..{len(streams) - 1}", path=p)
    info = streams[stream]
    try:
        sample_rate = int(info["sample_rate"])
        n_channels = int(info["channels"])
    except (KeyError, ValueError) as exc:
        raise AudioFileError("audio stream without sample rate or channel count",
                             expected="a decodable stream",
                             got=json.dumps(info), fix="re-export the file", path=p) from exc
    _check_rate(sample_rate, min_rate, max_rate, p)
    if n_channels < 1:
        raise AudioFileError("audio stream has no channels", expected=">= 1 channel", got="0",
                             fix="re-export the file", path=p)

    ffmpeg = require_tool("ffmpeg", "reading MP4/M4A/.stem.mp4 files")
    # Raw float32 at the stream's own rate and channel count: no resampling or remixing by
    # ffmpeg, so the downmix rule is ours and the sample rate is the one ffprobe reported.
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(p), "-map", f"0:a:{stream}",
           "-f", "f32le", "-c:a", "pcm_f32le", "-ac", str(n_channels), "-ar", str(sample_rate), "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AudioFileError("ffmpeg could not decode the audio", expected="a valid audio stream",
                             got=_last_line(proc.stderr) or f"ffmpeg exit status {proc.returncode}",
                             fix="re-export or re-download the file", path=p)
    flat = np.frombuffer(proc.stdout, dtype="<f4")
    frames = flat.size // n_channels
    _check_nonempty(frames, p)
    samples = flat[: frames * n_channels].reshape(frames, n_channels).T

    expected = _stream_frames(info, sample_rate)
    if expected is not None:
        if frames > expected:
            # The AAC decoder outputs whole 1024-sample frames past the edit list's end.
            samples = samples[:, :expected]
        elif frames + _FFMPEG_LENGTH_SLACK_FRAMES < expected:
            message = f"decoded {frames} frames, container declares {expected}"
            if "mp4" in probe["format_name"] or "mov" in probe["format_name"]:
                # MP4 sample tables give an exact length, so a shortfall means missing media data.
                raise AudioFileError("file is truncated", expected=f"{expected} frames",
                                     got=f"{frames} frames", fix="re-export or re-download the file", path=p)
            notes.append(message + ": the file may be truncated")
    # Copy out of the read-only pipe buffer: callers zero NaN/Inf in place.
    return np.array(samples, dtype=np.float32, order="C", copy=True), sample_rate


def _stream_frames(info: dict, sample_rate: int) -> int | None:
    """The stream's declared length in frames at ``sample_rate``, or None if not declared."""
    try:
        duration_ts = int(info["duration_ts"])
        num, den = (int(v) for v in info["time_base"].split("/"))
    except (KeyError, ValueError):
        return None
    if duration_ts <= 0 or num <= 0 or den <= 0:
        return None
    return (duration_ts * num * sample_rate + den // 2) // den


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _to_channels(raw: np.ndarray, channels: int, notes: list[str]) -> np.ndarray:
    """float32 [C_in, T] -> C-contiguous float32 [channels, T], recording any change in notes."""
    c_in = raw.shape[0]
    if c_in == channels:
        return np.ascontiguousarray(raw, dtype=np.float32)
    if channels == 1:
        notes.append(f"{c_in} channels averaged to mono")
        return np.ascontiguousarray(raw.mean(axis=0, keepdims=True, dtype=np.float64), dtype=np.float32)
    if c_in == 1:
        notes.append("mono input duplicated to both channels")
        return np.ascontiguousarray(np.repeat(raw, 2, axis=0), dtype=np.float32)
    # More than two channels: no layout is trusted (5.1 orders differ between containers), so
    # the rule is simple and stated: even-indexed channels average into L, odd-indexed into R.
    left = raw[0::2].mean(axis=0, dtype=np.float64)
    right = raw[1::2].mean(axis=0, dtype=np.float64)
    notes.append(f"{c_in} channels downmixed to stereo: channels {list(range(0, c_in, 2))} averaged "
                 f"to left, {list(range(1, c_in, 2))} to right")
    return np.ascontiguousarray(np.stack([left, right]), dtype=np.float32)


def _zero_nonfinite(samples: np.ndarray, notes: list[str]) -> int:
    """Replace NaN/Inf in place by 0 and return how many there were."""
    bad = ~np.isfinite(samples)
    count = int(np.count_nonzero(bad))
    if count:
        samples[bad] = 0.0
        notes.append(f"{count} NaN/Inf samples replaced by 0")
    return count


# ----------------------------------------------------------------------------------------------
# Writing


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it to ``path`` atomically.

    The temporary file lives in the same folder (so the final rename never crosses file
    systems) and is removed if the body raises, so a crash or a full disk never leaves a half
    file under the final name. With overwrite=False an existing ``path`` raises OutputError
    (exit code 3) before any work and again, race-free, at commit time. OSError in the body or
    at commit becomes OutputError; other exceptions propagate unchanged.
    """
    final = Path(path)
    folder = final.parent
    if final.is_dir():
        raise OutputError("output path is a folder", expected="a file path", got="a directory",
                          fix="pass a file name inside the folder", path=final)
    if not overwrite and final.exists():
        raise _exists_error(final)
    if not folder.is_dir():
        raise OutputError("output folder does not exist", expected="an existing folder",
                          got=f"no folder '{folder}'", fix=f"mkdir -p '{folder}'", path=final)

    tmp = folder / f".{final.name}.{secrets.token_hex(4)}.part"
    try:
        # O_EXCL: never clobber another writer's temp; mode 0o666 so the umask applies as for
        # any new file (mkstemp would leave the output private, 0o600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
    except OSError as exc:
        raise _write_error(final, exc) from exc

    try:
        yield tmp
        _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, final)
        else:
            _link_no_overwrite(tmp, final)
        _fsync_dir(folder)
    except OSError as exc:
        _remove_quietly(tmp)
        if isinstance(exc, FileExistsError):
            raise _exists_error(final) from exc
        raise _write_error(final, exc) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


def _link_no_overwrite(tmp: Path, final: Path) -> None:
    # os.link fails atomically with FileExistsError if `final` appeared meanwhile; os.replace
    # would silently overwrite it. Some file systems (FAT, some network mounts) have no hard
    # links: there, fall back to check-then-replace.
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:
        if final.exists():
            raise FileExistsError(str(final)) from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable; not every platform or file system allows it, and the data is
    # already safe under one name or the other, so failure here is not an error.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)


def _exists_error(final: Path) -> OutputError:
    return OutputError("output already exists", expected="no file at the output path", got="an existing file",
                       fix="delete it, choose another output folder, or pass --overwrite", path=final)


def _write_error(final: Path, exc: BaseException) -> OutputError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return OutputError("cannot write output", expected="a writable folder with free space",
                       got=reason, fix="check free space and permissions of the output folder", path=final)


def write_audio(
    path: str | os.PathLike,
    samples: np.ndarray,
    sample_rate: int,
    fmt: str = "wav",
    *,
    overwrite: bool = False,
) -> int:
    """Write float [channels, frames] audio to ``path`` atomically; return the clipped-sample count.

    fmt: ``"wav"`` writes 32-bit float, bit-exact, no clipping (stems may exceed 0 dBFS);
    ``"flac"`` writes 24-bit PCM, so samples are clipped to [-1, 1 - 2**-23] and the number of
    samples that were outside is returned (always 0 for WAV).
    sample_rate: Hz, a positive int.

    Raises OutputError (exit code 3) if ``path`` exists and overwrite is False, or on any write
    failure (missing folder, permission, full disk); no partial or temporary file is left.
    Raises ValueError for a wrong shape, NaN/Inf samples, or an unknown fmt (caller bugs).
    """
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(WRITE_FORMATS)}, got {fmt!r}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    data = validate_samples(samples, "samples")
    container, subtype = WRITE_FORMATS[fmt]

    clipped = 0
    if fmt == "flac":
        over = (data > _PCM24_MAX) | (data < -1.0)
        clipped = int(np.count_nonzero(over))
        if clipped:
            data = np.clip(data, -1.0, _PCM24_MAX)

    final = Path(path)
    frames = data.shape[1]
    with atomic_output(final, overwrite=overwrite) as tmp:
        try:
            sf.write(tmp, data.T, int(sample_rate), format=container, subtype=subtype)
            # libsndfile can report success on a short write to some file systems; the header
            # it rewrites on close must show every frame.
            written = sf.info(tmp).frames
        except sf.SoundFileError as exc:
            raise OSError(getattr(exc, "error_string", None) or str(exc)) from exc
        if written != frames:
            raise OSError(f"short write: {written} of {frames} frames")
    return clipped


def validate_samples(samples, name: str) -> np.ndarray:
    """Check caller audio of shape [channels, frames] (finite floats, 1..64 channels, >= 1 frame)
    and return it as float32 (no copy when it already is). Raises ValueError naming ``name``."""
    arr = np.asarray(samples)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [channels, frames], got shape {arr.shape}")
    channels, frames = arr.shape
    if channels > 64 and frames <= 64:
        raise ValueError(f"{name} must be [channels, frames], got shape {arr.shape}: "
                         "looks like [frames, channels]; pass samples.T")
    if not 1 <= channels <= 64:
        raise ValueError(f"{name} must have 1..64 channels, got {channels} (shape {arr.shape})")
    if frames == 0:
        raise ValueError(f"{name} has 0 frames; expected at least one")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be floating point (full scale 1.0), got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN/Inf samples; expected finite audio "
                         "(sanitise the separator output before writing)")
    return arr
