"""Write and read Native Instruments Stems files (.stem.mp4): five AAC tracks plus the NI 'stem' JSON box.

Format, as Traktor writes it and Mixxx (src/track/steminfoimporter.cpp) reads it: an MP4 whose
audio tracks are, in order, the mixture (track 1, the only one enabled, so ordinary players play
it) and the stems drums, bass, other, vocals. The box ``moov/udta/stem`` holds a UTF-8 JSON
document, with no version/flags header:

    {"mastering_dsp": {"compressor": {"enabled": false, "ratio": 3, "output_gain": 0.5,
                                      "release": 0.3, "attack": 0.003, "input_gain": 0.5,
                                      "threshold": 0, "hp_cutoff": 300, "dry_wet": 50},
                       "limiter": {"enabled": false, "release": 0.05, "threshold": 0,
                                   "ceiling": -0.35}},
     "version": 1,
     "stems": [{"name": "Drums", "color": "#009E73"}, ... 4 entries, NI order]}

The compressor/limiter values are those of NI's Stem Creator defaults with both effects disabled
(our stems are not mastered, so players must not apply a master chain to them). Colours are the
NI defaults. ffmpeg's native AAC encoder writes the tracks; ffmpeg puts ``moov`` after ``mdat``
(we never ask for +faststart), and we insert the box by rewriting ``moov`` ourselves; if ``moov``
comes first, every chunk offset (stco/co64) that points past it is shifted by the growth.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping

import numpy as np

from livestems.stream.io.files import atomic_output, require_tool, validate_samples
from livestems.stream.errors import AudioFileError, OutputError

__all__ = [
    "STEM_KEYS",
    "DEFAULT_STEM_NAMES",
    "DEFAULT_STEM_COLORS",
    "AAC_SAMPLE_RATES_HZ",
    "write_stems_mp4",
    "read_stem_metadata",
    "stem_metadata",
]

# NI track order after the mixture.
STEM_KEYS = ("drums", "bass", "other", "vocals")
DEFAULT_STEM_NAMES = {"drums": "Drums", "bass": "Bass", "other": "Other", "vocals": "Vocals"}
DEFAULT_STEM_COLORS = {"drums": "#009E73", "bass": "#D55E00", "other": "#CC79A7", "vocals": "#56B4E9"}

# Sample rates the AAC bitstream can signal (ffmpeg's aac encoder refuses others).
AAC_SAMPLE_RATES_HZ = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000,
                       88200, 96000)

_MASTERING_DSP = {
    "compressor": {"enabled": False, "ratio": 3, "output_gain": 0.5, "release": 0.3, "attack": 0.003,
                   "input_gain": 0.5, "threshold": 0, "hp_cutoff": 300, "dry_wet": 50},
    "limiter": {"enabled": False, "release": 0.05, "threshold": 0, "ceiling": -0.35},
}

_COLOR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")
_BITRATE_RE = re.compile(r"^[1-9][0-9]*k?$")

# Boxes whose payload is a plain sequence of child boxes: the path to every stco/co64 and to udta.
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf"})

# Frames per write to ffmpeg's stdin: bounds the interleaved copy to ~10 MB at 10 channels.
_PIPE_CHUNK_FRAMES = 1 << 18


def stem_metadata(names: Mapping[str, str] | None = None, colors: Mapping[str, str] | None = None) -> dict:
    """The NI ``stem`` JSON document as a dict.

    names, colors: optional mappings from stem key (drums, bass, other, vocals) to display name
    and ``#RRGGBB`` colour; keys left out keep the defaults. Raises ValueError for unknown keys,
    empty names or malformed colours.
    """
    names = _merged("names", DEFAULT_STEM_NAMES, names)
    colors = _merged("colors", DEFAULT_STEM_COLORS, colors)
    for key in STEM_KEYS:
        if not isinstance(names[key], str) or not names[key].strip():
            raise ValueError(f"names[{key!r}] must be a non-empty string, got {names[key]!r}")
        if not isinstance(colors[key], str) or not _COLOR_RE.match(colors[key]):
            raise ValueError(f"colors[{key!r}] must look like '#RRGGBB', got {colors[key]!r}")
    return {
        "mastering_dsp": json.loads(json.dumps(_MASTERING_DSP)),  # deep copy, callers may edit it
        "version": 1,
        "stems": [{"name": names[k], "color": colors[k].upper()} for k in STEM_KEYS],
    }


def _merged(what: str, defaults: dict[str, str], given: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(defaults)
    if given is None:
        return out
    unknown = set(given) - set(STEM_KEYS)
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}; expected a subset of {list(STEM_KEYS)}")
    out.update(given)
    return out


def write_stems_mp4(
    path: str | os.PathLike,
    mixture: np.ndarray,
    stems: Mapping[str, np.ndarray],
    sample_rate: int,
    names: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    bitrate: str = "256k",
    *,
    overwrite: bool = False,
) -> None:
    """Write an NI Stems file that Traktor and Mixxx load.

    mixture: float [2, frames], full scale 1.0 (AAC has headroom, but keep it within ±1).
    stems: exactly the keys drums, bass, other, vocals, each float [2, frames] of the same length.
    sample_rate: Hz, one of AAC_SAMPLE_RATES_HZ (resample otherwise).
    names, colors: optional per-stem display names / '#RRGGBB' colours (see stem_metadata).
    bitrate: AAC bitrate per track, ffmpeg syntax ('256k').

    The file is built beside ``path`` and renamed into place. Raises OutputError (exit code 3)
    if ``path`` exists and overwrite is False, or encoding/writing fails; ToolMissingError
    (exit code 4) without ffmpeg; ValueError for malformed arguments.
    """
    metadata = stem_metadata(names, colors)
    tracks = _validated_tracks(mixture, stems)
    if int(sample_rate) != sample_rate or int(sample_rate) not in AAC_SAMPLE_RATES_HZ:
        raise ValueError(f"sample_rate must be one AAC supports {AAC_SAMPLE_RATES_HZ}, got {sample_rate!r}; "
                         "resample to 44100 or 48000, or write WAV/FLAC instead")
    if not isinstance(bitrate, str) or not _BITRATE_RE.match(bitrate):
        raise ValueError(f"bitrate must look like '256k' or '256000', got {bitrate!r}")
    ffmpeg = require_tool("ffmpeg", "writing .stem.mp4 files")
    payload = json.dumps(metadata, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    final = Path(path)
    with atomic_output(final, overwrite=overwrite) as tmp:
        encoded = tmp.with_name(tmp.name + ".aac.mp4")
        try:
            _encode_tracks(ffmpeg, tracks, int(sample_rate), bitrate, encoded, final)
            _insert_stem_box(encoded, tmp, payload, final)
        finally:
            try:
                os.unlink(encoded)
            except FileNotFoundError:
                pass


def _validated_tracks(mixture, stems: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    if not isinstance(stems, Mapping) or set(stems) != set(STEM_KEYS):
        got = sorted(stems) if isinstance(stems, Mapping) else type(stems).__name__
        raise ValueError(f"stems must have exactly the keys {list(STEM_KEYS)}, got {got}")
    tracks = [validate_samples(mixture, "mixture")] + [validate_samples(stems[k], f"stems[{k!r}]")
                                                         for k in STEM_KEYS]
    labels = ["mixture"] + [f"stems[{k!r}]" for k in STEM_KEYS]
    frames = tracks[0].shape[1]
    for label, track in zip(labels, tracks):
        if track.shape[0] != 2:
            raise ValueError(f"{label} must be stereo [2, frames], got shape {track.shape}; "
                             "duplicate mono with np.repeat(x, 2, axis=0)")
        if track.shape[1] != frames:
            raise ValueError(f"{label} has {track.shape[1]} frames, mixture has {frames}; "
                             "all five tracks must have the same length")
    return tracks


def _encode_tracks(ffmpeg: str, tracks: list[np.ndarray], sample_rate: int, bitrate: str,
                   out: Path, final: Path) -> None:
    """Encode five stereo tracks into one MP4 (5 AAC tracks, NI order) with a single ffmpeg run.

    The tracks travel as one 10-channel float32 stream over stdin, split back into stereo pairs
    inside ffmpeg: no temporary WAVs (which for a long song would be hundreds of MB) and no
    interleaved copy of the whole song in memory.
    """
    n = len(tracks)
    split = f"[0:a]asplit={n}" + "".join(f"[s{i}]" for i in range(n))
    # pan with one source per output channel is a pure channel copy (no gain, no mixing).
    pans = [f"[s{i}]pan=stereo|c0=c{2 * i}|c1=c{2 * i + 1}[t{i}]" for i in range(n)]
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-y",
           "-f", "f32le", "-ar", str(sample_rate), "-ac", str(2 * n), "-i", "pipe:0",
           "-filter_complex", ";".join([split] + pans)]
    for i in range(n):
        cmd += ["-map", f"[t{i}]"]
    # movie_timescale = sample rate makes the edit list exact to the sample, so decoders trim
    # the AAC priming and padding to the original length (the default 1/1000 s rounds it).
    cmd += ["-c:a", "aac", "-b:a", bitrate, "-movie_timescale", str(sample_rate),
            "-map_metadata", "-1", "-f", "mp4", str(out)]

    stacked = np.concatenate(tracks, axis=0)  # [10, frames]; float32 already
    with tempfile.TemporaryFile() as err:
        # stderr to a file, not a pipe: a chatty ffmpeg must never block while we write stdin.
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        except OSError as exc:
            raise OutputError("cannot start ffmpeg", expected="a runnable ffmpeg", got=str(exc),
                              fix="reinstall ffmpeg (apt-get install ffmpeg)", path=final) from exc
        broken = False
        try:
            for start in range(0, stacked.shape[1], _PIPE_CHUNK_FRAMES):
                chunk = stacked[:, start:start + _PIPE_CHUNK_FRAMES]
                proc.stdin.write(np.ascontiguousarray(chunk.T).astype("<f4", copy=False).tobytes())
        except BrokenPipeError:
            broken = True  # ffmpeg exited early; its stderr says why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
            rc = proc.wait()
        if rc != 0 or broken:
            err.seek(0)
            message = err.read().decode("utf-8", "replace").strip().splitlines()
            reason = message[-1] if message else f"exit status {rc}"
            raise OutputError("ffmpeg failed to encode the stems", expected="a finished MP4",
                              got=reason, fix="check free space and permissions of the output folder",
                              path=final)


# ----------------------------------------------------------------------------------------------
# MP4 boxes


@dataclass
class _Box:
    """One MP4 box: leaf boxes keep their payload, containers their parsed children."""

    type: bytes
    payload: bytes = b""
    children: list["_Box"] | None = None
    trailer: bytes = b""  # bytes after the last child too short to be a box (QuickTime's 0 terminator)

    def serialize(self) -> bytes:
        if self.children is None:
            body = self.payload
        else:
            body = b"".join(c.serialize() for c in self.children) + self.trailer
        size = 8 + len(body)
        if size <= 0xFFFFFFFF:
            return struct.pack(">I4s", size, self.type) + body
        return struct.pack(">I4sQ", 1, self.type, size + 8) + body

    def child(self, box_type: bytes) -> "_Box | None":
        for c in self.children or ():
            if c.type == box_type:
                return c
        return None


class _BoxFormatError(ValueError):
    pass


def _parse_boxes(data: bytes) -> tuple[list[_Box], bytes]:
    """Parse a run of sibling boxes; return them and any trailing bytes shorter than a header."""
    boxes: list[_Box] = []
    pos = 0
    while len(data) - pos >= 8:
        size, box_type = struct.unpack_from(">I4s", data, pos)
        if size == 0 and box_type == b"\0\0\0\0":
            break  # QuickTime ends some udta lists with a zero word: keep it as trailer
        header = 8
        if size == 1:
            if len(data) - pos < 16:
                raise _BoxFormatError(f"box {box_type!r} at {pos}: truncated 64-bit size")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = len(data) - pos  # "extends to the end of the enclosing box"
        if size < header or pos + size > len(data):
            raise _BoxFormatError(f"box {box_type!r} at {pos}: size {size} does not fit "
                                  f"in {len(data) - pos} bytes")
        body = data[pos + header:pos + size]
        if box_type in _CONTAINERS:
            children, trailer = _parse_boxes(body)
            boxes.append(_Box(box_type, children=children, trailer=trailer))
        else:
            boxes.append(_Box(box_type, payload=body))
        pos += size
    return boxes, data[pos:]


def _top_level(f: BinaryIO) -> list[tuple[bytes, int, int, int]]:
    """List the file's top-level boxes as (type, offset, size, header_length) without reading them."""
    f.seek(0, os.SEEK_END)
    file_size = f.tell()
    boxes = []
    pos = 0
    while pos < file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise _BoxFormatError(f"{file_size - pos} stray bytes at the end of the file")
        size, box_type = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            if len(head) < 16:
                raise _BoxFormatError(f"box {box_type!r} at {pos}: truncated 64-bit size")
            (size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        elif size == 0:
            size = file_size - pos
        if size < header or pos + size > file_size:
            raise _BoxFormatError(f"box {box_type!r} at {pos}: size {size} runs past the end "
                                  f"({file_size} bytes)")
        boxes.append((box_type, pos, size, header))
        pos += size
    return boxes


def _shift_chunk_offsets(moov: _Box, threshold: int, delta: int) -> None:
    """Add ``delta`` to every stco/co64 entry >= ``threshold`` (the old end of moov)."""
    for trak in moov.children or ():
        if trak.type != b"trak":
            continue
        mdia = trak.child(b"mdia")
        minf = mdia.child(b"minf") if mdia else None
        stbl = minf.child(b"stbl") if minf else None
        for table in (stbl.children if stbl else ()):
            if table.type not in (b"stco", b"co64"):
                continue
            dtype = ">u4" if table.type == b"stco" else ">u8"
            width = np.dtype(dtype).itemsize
            (count,) = struct.unpack_from(">I", table.payload, 4)
            if 8 + count * width > len(table.payload):
                raise _BoxFormatError(f"{table.type!r} declares {count} entries but holds fewer")
            offsets = np.frombuffer(table.payload, dtype=dtype, count=count, offset=8).astype(np.int64)
            offsets[offsets >= threshold] += delta
            if table.type == b"stco" and offsets.size and offsets.max() > 0xFFFFFFFF:
                raise _BoxFormatError("chunk offsets exceed 4 GiB after the move; stco cannot hold them")
            tail = table.payload[8 + count * width:]
            table.payload = table.payload[:8] + offsets.astype(dtype).tobytes() + tail


def _with_stem_box(moov: _Box, payload: bytes) -> None:
    """Put ``payload`` into moov/udta/stem, creating udta if needed, replacing any old stem box."""
    udta = moov.child(b"udta")
    if udta is None:
        udta = _Box(b"udta", children=[])
        moov.children.append(udta)
    udta.children = [c for c in udta.children if c.type != b"stem"]
    # First in udta: readers that scan udta (Mixxx) find it without walking meta/ilst.
    udta.children.insert(0, _Box(b"stem", payload=payload))


def _insert_stem_box(src: Path, dst: Path, payload: bytes, final: Path) -> None:
    """Copy MP4 ``src`` to ``dst`` with the NI stem box added to its moov."""
    try:
        with open(src, "rb") as f:
            top = _top_level(f)
            kinds = [t for t, *_ in top]
            if kinds.count(b"moov") != 1 or b"mdat" not in kinds:
                raise _BoxFormatError(f"expected one moov and an mdat, got top-level boxes {kinds}")
            if b"moof" in kinds:
                raise _BoxFormatError("fragmented MP4 (moof) is not supported")
            _, moov_offset, moov_size, moov_header = top[kinds.index(b"moov")]
            f.seek(moov_offset + moov_header)
            children, trailer = _parse_boxes(f.read(moov_size - moov_header))
            moov = _Box(b"moov", children=children, trailer=trailer)
            _with_stem_box(moov, payload)
            new_moov = moov.serialize()
            delta = len(new_moov) - moov_size
            if delta:
                # Only data after the old moov moves; with moov last (ffmpeg's default) nothing does.
                _shift_chunk_offsets(moov, moov_offset + moov_size, delta)
                new_moov = moov.serialize()
                assert len(new_moov) - moov_size == delta, "offset patch must not change moov size"
            with open(dst, "wb") as out:
                _copy_range(f, out, 0, moov_offset)
                out.write(new_moov)
                f.seek(0, os.SEEK_END)
                end = f.tell()
                _copy_range(f, out, moov_offset + moov_size, end - moov_offset - moov_size)
    except _BoxFormatError as exc:
        raise OutputError("ffmpeg produced an MP4 this writer cannot extend", expected="moov and mdat boxes",
                          got=str(exc), fix="report this with `ffmpeg -version`", path=final) from exc


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int, length: int) -> None:
    src.seek(offset)
    remaining = length
    while remaining > 0:
        block = src.read(min(remaining, 1 << 20))
        if not block:
            raise _BoxFormatError("file shrank while being copied")
        dst.write(block)
        remaining -= len(block)


def read_stem_metadata(path: str | os.PathLike) -> dict:
    """Return the NI ``stem`` JSON document (moov/udta/stem) of an MP4 as a dict.

    Raises AudioFileError (exit code 2) when the file is missing, is not an MP4, has no stem
    box (a plain MP4 or a stems file written without metadata), or the box is not valid JSON.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            top = _top_level(f)
            moov = next(((off, size, hdr) for t, off, size, hdr in top if t == b"moov"), None)
            if moov is None:
                raise _BoxFormatError(f"no moov box; top-level boxes: {[t for t, *_ in top]}")
            off, size, hdr = moov
            f.seek(off + hdr)
            children, _ = _parse_boxes(f.read(size - hdr))
    except FileNotFoundError as exc:
        raise AudioFileError("file not found", expected="an existing .stem.mp4", got="no such path",
                             fix="check the path and spelling", path=p) from exc
    except (_BoxFormatError, OSError) as exc:
        raise AudioFileError("not a readable MP4 file", expected="an MP4 (.stem.mp4)", got=str(exc),
                             fix="check the file is a complete .stem.mp4", path=p) from exc
    udta = _Box(b"moov", children=children).child(b"udta")
    stem = udta.child(b"stem") if udta else None
    if stem is None:
        raise AudioFileError("no NI stem metadata", expected="a moov/udta/stem box", got="none",
                             fix="this MP4 is not tagged as NI Stems; re-create it with write_stems_mp4",
                             path=p)
    try:
        document = json.loads(stem.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AudioFileError("NI stem metadata is not valid JSON", expected="a UTF-8 JSON object",
                             got=str(exc), fix="re-create the file", path=p) from exc
    if not isinstance(document, dict):
        raise AudioFileError("NI stem metadata is not a JSON object", expected="an object",
                             got=type(document).__name__, fix="re-create the file", path=p)
    return document
