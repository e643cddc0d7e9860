"""Tests for the NI Stems writer: track layout seen by ffprobe, decoded audio versus what was
written, the 'stem' metadata box and the MP4 box structure around it."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from livestems.stream.io.files import read_audio, read_stems, write_audio
from livestems.stream.errors import AudioFileError, OutputError, ToolMissingError
from livestems.stream.io.stems_mp4 import (
    DEFAULT_STEM_COLORS,
    STEM_KEYS,
    _insert_stem_box,
    read_stem_metadata,
    stem_metadata,
    write_stems_mp4,
)

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="ffmpeg/ffprobe not installed (apt-get install ffmpeg)")

SR = 44100
FRAMES = SR + 777  # not a multiple of the 1024-sample AAC frame, to check exact length

# One tone per channel per track, all frequencies distinct: decoded tracks correlate only with
# their own source, so a swapped track or channel shows up.
TONES_HZ = {"mixture": (220, 330), "drums": (440, 1250), "bass": (110, 165), "other": (660, 990),
            "vocals": (880, 1760)}


def tone_track(name: str, frames: int = FRAMES, sr: int = SR) -> np.ndarray:
    t = np.arange(frames) / sr
    left, right = TONES_HZ[name]
    return (0.3 * np.sin(2 * np.pi * np.array([[left], [right]]) * t)).astype(np.float32)


def tone_set(frames: int = FRAMES, sr: int = SR) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return tone_track("mixture", frames, sr), {k: tone_track(k, frames, sr) for k in STEM_KEYS}


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def best_lag(ref: np.ndarray, est: np.ndarray, max_lag: int = 2048) -> int:
    """Lag (samples) that maximises the cross-correlation of est against ref (est[t + lag] ~ ref[t])."""
    n = min(ref.shape[-1], est.shape[-1])
    spectrum = np.fft.rfft(est[..., :n], 2 * n) * np.conj(np.fft.rfft(ref[..., :n], 2 * n))
    xcorr = np.fft.irfft(spectrum.sum(axis=0), 2 * n)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    return int(lags[np.argmax(xcorr[lags])])


def ffprobe_streams(path: Path) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=index,codec_type,codec_name,sample_rate,channels,duration_ts,time_base"
                          ":stream_disposition=default", "-of", "json", str(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out)["streams"]


CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf"}


def walk_boxes(data: bytes, start: int, end: int, path: str, found: dict[str, list[tuple[int, int]]]) -> None:
    """Independent box walker: sizes of siblings must tile [start, end) exactly."""
    pos = start
    while pos < end:
        assert end - pos >= 8, f"{end - pos} stray bytes in {path or 'file'} at {pos}"
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        assert size >= header and pos + size <= end, f"{kind!r} at {pos} size {size} overruns {path}"
        child = f"{path}/{kind.decode('latin-1')}" if path else kind.decode("latin-1")
        found.setdefault(child, []).append((pos + header, pos + size))
        if kind in CONTAINERS:
            walk_boxes(data, pos + header, pos + size, child, found)
        pos += size
    assert pos == end, f"children of {path} end at {pos}, parent ends at {end}"


def box_map(path: Path) -> tuple[bytes, dict[str, list[tuple[int, int]]]]:
    data = path.read_bytes()
    found: dict[str, list[tuple[int, int]]] = {}
    walk_boxes(data, 0, len(data), "", found)
    return data, found


def chunk_offsets(data: bytes, found: dict) -> list[int]:
    offsets = []
    for start, _ in found.get("moov/trak/mdia/minf/stbl/stco", []):
        (count,) = struct.unpack_from(">I", data, start + 4)
        offsets += list(struct.unpack_from(f">{count}I", data, start + 8))
    for start, _ in found.get("moov/trak/mdia/minf/stbl/co64", []):
        (count,) = struct.unpack_from(">I", data, start + 4)
        offsets += list(struct.unpack_from(f">{count}Q", data, start + 8))
    return offsets


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, np.ndarray, dict[str, np.ndarray]]:
    mixture, stems = tone_set()
    path = tmp_path_factory.mktemp("stems") / "song.stem.mp4"
    write_stems_mp4(path, mixture, stems, SR, names={"vocals": "Vox", "other": "Keys & Guitar"},
                    colors={"drums": "#ff0000"})
    return path, mixture, stems


def test_ffprobe_sees_five_aac_tracks_with_the_mixture_first(written):
    path, _, _ = written
    streams = ffprobe_streams(path)
    assert [s["codec_type"] for s in streams] == ["audio"] * 5
    for s in streams:
        assert s["codec_name"] == "aac" and s["channels"] == 2 and int(s["sample_rate"]) == SR
        num, den = (int(v) for v in s["time_base"].split("/"))
        assert int(s["duration_ts"]) * num * SR // den == FRAMES  # edit list trims priming and padding
    # Only the mixture is the default track, so a plain player plays the mix.
    assert [s["disposition"]["default"] for s in streams] == [1, 0, 0, 0, 0]


def test_each_decoded_track_matches_what_was_written(written):
    path, mixture, stems = written
    sources = {"mixture": mixture, **stems}
    decoded = read_stems(path)
    assert list(decoded) == ["mixture", *STEM_KEYS]
    for name, ref in sources.items():
        est = decoded[name]
        assert est.shape == (2, FRAMES)
        lag = best_lag(ref, est)
        assert lag == 0, f"{name}: decoded track is shifted by {lag} samples"
        assert snr_db(ref, est) > 20, name
        # and it is not any other track: the tones are distinct, so cross-SNR is near 0 dB or below
        for other_name, other in sources.items():
            if other_name != name:
                assert snr_db(other, est) < 3, (name, other_name)
        # channels not swapped
        assert snr_db(ref[::-1], est) < 3
    np.testing.assert_array_equal(read_audio(path, stream=3).samples, decoded["other"])


def test_metadata_round_trips_with_names_and_colors(written):
    path, _, _ = written
    meta = read_stem_metadata(path)
    assert meta["version"] == 1
    assert [s["name"] for s in meta["stems"]] == ["Drums", "Bass", "Keys & Guitar", "Vox"]
    expected_colors = ["#FF0000"] + [DEFAULT_STEM_COLORS[k] for k in ("bass", "other", "vocals")]
    assert [s["color"] for s in meta["stems"]] == expected_colors
    dsp = meta["mastering_dsp"]
    assert dsp["compressor"]["enabled"] is False and dsp["limiter"]["enabled"] is False
    assert meta == stem_metadata({"vocals": "Vox", "other": "Keys & Guitar"}, {"drums": "#ff0000"})


def test_box_structure_adds_up_and_offsets_point_into_mdat(written):
    path, _, _ = written
    data, found = box_map(path)  # asserts that every container's children tile it exactly
    assert [k for k in found if "/" not in k][:1] == ["ftyp"]
    assert len(found["moov"]) == 1 and len(found["mdat"]) == 1
    assert len(found["moov/udta/stem"]) == 1
    start, end = found["moov/udta/stem"][0]
    assert json.loads(data[start:end]) == read_stem_metadata(path)
    assert len(found["moov/trak"]) == 5
    mdat_start, mdat_end = found["mdat"][0]
    offsets = chunk_offsets(data, found)
    assert offsets and all(mdat_start <= o < mdat_end for o in offsets)


def test_moov_before_mdat_has_its_chunk_offsets_shifted(tmp_path):
    # ffmpeg with +faststart puts moov first: growing moov moves mdat, so stco must follow.
    src = tmp_path / "src.wav"
    write_audio(src, tone_track("vocals"), SR)
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-c:a", "aac",
                    "-movflags", "+faststart", str(fast)], check=True)
    data, found = box_map(fast)
    assert found["moov"][0][0] < found["mdat"][0][0]
    before = read_audio(fast).samples
    old_offsets = chunk_offsets(data, found)

    tagged = tmp_path / "tagged.mp4"
    payload = json.dumps(stem_metadata()).encode()
    _insert_stem_box(fast, tagged, payload, tagged)
    new_data, new_found = box_map(tagged)
    growth = len(new_data) - len(data)
    assert growth > len(payload)
    assert chunk_offsets(new_data, new_found) == [o + growth for o in old_offsets]
    np.testing.assert_array_equal(read_audio(tagged).samples, before)  # same AAC bits found again
    assert read_stem_metadata(tagged)["version"] == 1

    # A second insertion replaces the box instead of adding another.
    again = tmp_path / "again.mp4"
    _insert_stem_box(tagged, again, b'{"version": 1, "stems": []}', again)
    _, again_found = box_map(again)
    assert len(again_found["moov/udta/stem"]) == 1
    assert read_stem_metadata(again) == {"version": 1, "stems": []}
    np.testing.assert_array_equal(read_audio(again).samples, before)


def test_real_stems_survive_a_rewrite(tmp_path):
    src = REAL / "the-easton-ellises-falcon-69.stem.mp4"
    if not src.exists():
        pytest.skip(f"real evaluation data not present: {src}")
    original = read_stems(src)
    frames = 2 * original.sample_rate
    stems = {k: original[k][:, :frames] for k in STEM_KEYS}
    out = tmp_path / "falcon.stem.mp4"
    write_stems_mp4(out, original["mixture"][:, :frames], stems, original.sample_rate)
    again = read_stems(out)
    assert again["mixture"].shape == (2, frames)
    for name in ("mixture", *STEM_KEYS):
        ref = original[name][:, :frames]
        assert best_lag(ref, again[name]) == 0, name
        assert snr_db(ref, again[name]) > 20, name  # a second AAC generation of real music
    assert [s["name"] for s in read_stem_metadata(out)["stems"]] == ["Drums", "Bass", "Other", "Vocals"]


def test_files_without_a_stem_box_are_reported(tmp_path):
    musdb = REAL / "music-delta-80s-rock.stem.mp4"  # MUSDB excerpts carry no NI metadata box
    if musdb.exists():
        with pytest.raises(AudioFileError, match="no NI stem metadata"):
            read_stem_metadata(musdb)
    wav = tmp_path / "a.wav"
    write_audio(wav, tone_track("bass"), SR)
    with pytest.raises(AudioFileError, match="not a readable MP4"):
        read_stem_metadata(wav)
    with pytest.raises(AudioFileError, match="not found"):
        read_stem_metadata(tmp_path / "missing.stem.mp4")


def test_existing_output_is_refused_and_kept(tmp_path):
    mixture, stems = tone_set(frames=4096)
    path = tmp_path / "x.stem.mp4"
    path.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists") as info:
        write_stems_mp4(path, mixture, stems, SR)
    assert info.value.exit_code == 3 and path.read_bytes() == b"precious"
    write_stems_mp4(path, mixture, stems, SR, overwrite=True)
    assert len(ffprobe_streams(path)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.stem.mp4"]


def test_missing_ffmpeg_raises_tool_missing(tmp_path, monkeypatch):
    mixture, stems = tone_set(frames=1024)
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH with no ffmpeg on it
    with pytest.raises(ToolMissingError) as info:
        write_stems_mp4(tmp_path / "x.stem.mp4", mixture, stems, SR)
    assert info.value.exit_code == 4 and "apt-get install ffmpeg" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_encoder_failure_on_a_full_disk_leaves_nothing(tmp_path):
    # ffmpeg inherits the file-size limit and fails part-way, as on a full disk.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        from livestems.stream.io.stems_mp4 import STEM_KEYS, write_stems_mp4
        from livestems.stream.errors import OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, resource.RLIM_INFINITY))
        x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 5 * 44100)).astype(np.float32)
        try:
            write_stems_mp4({str(tmp_path / 'big.stem.mp4')!r}, x, {{k: x for k in STEM_KEYS}}, 44100)
        except OutputError as err:
            assert err.exit_code == 3, err
            print("refused")
        else:
            sys.exit("write succeeded despite the size limit")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.strip() == "refused"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m, s: (m, {k: v for k, v in s.items() if k != "vocals"}), "exactly the keys"),
        (lambda m, s: (m, {**s, "piano": s["bass"]}), "exactly the keys"),
        (lambda m, s: (m[:1], s), "stereo"),
        (lambda m, s: (m, {**s, "bass": s["bass"][:, :-1]}), "same length"),
        (lambda m, s: (m.T, s), "samples.T"),
    ],
)
def test_malformed_tracks_are_rejected(tmp_path, change, message):
    mixture, stems = change(*tone_set(frames=2048))
    with pytest.raises(ValueError, match=message):
        write_stems_mp4(tmp_path / "x.stem.mp4", mixture, stems, SR)
    assert list(tmp_path.iterdir()) == []


def test_bad_rate_names_colors_and_bitrate_are_rejected(tmp_path):
    mixture, stems = tone_set(frames=2048)
    out = tmp_path / "x.stem.mp4"
    with pytest.raises(ValueError, match="AAC"):
        write_stems_mp4(out, mixture, stems, 192000)
    with pytest.raises(ValueError, match="#RRGGBB"):
        write_stems_mp4(out, mixture, stems, SR, colors={"bass": "red"})
    with pytest.raises(ValueError, match="unknown keys"):
        write_stems_mp4(out, mixture, stems, SR, names={"guitar": "Gtr"})
    with pytest.raises(ValueError, match="non-empty"):
        write_stems_mp4(out, mixture, stems, SR, names={"bass": " "})
    with pytest.raises(ValueError, match="bitrate"):
        write_stems_mp4(out, mixture, stems, SR, bitrate="lots")
    assert list(tmp_path.iterdir()) == []
