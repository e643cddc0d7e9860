"""Tests for the audio-file layer: reading every supported shape of input, refusing bad files with
typed errors, and crash-safe writes."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from livestems.stream.io.files import (
    STEM_NAMES,
    AudioData,
    atomic_output,
    read_audio,
    read_stems,
    require_tool,
    write_audio,
)
from livestems.stream.errors import AudioFileError, LivestemsError, OutputError, ToolMissingError

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real"
HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG,
                                  reason="ffmpeg/ffprobe not installed (apt-get install ffmpeg)")


def real_file(name: str) -> Path:
    p = REAL / name
    if not p.exists():
        pytest.skip(f"real evaluation data not present: {p}")
    return p


def noise(channels: int, frames: int, seed: int = 0, scale: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-scale, scale, (channels, frames))).astype(np.float32)


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


# ----------------------------------------------------------------------------------------------
# errors.py


def test_exit_codes_are_distinct_and_nonzero():
    classes = (LivestemsError, AudioFileError, OutputError, ToolMissingError)
    codes = [cls.exit_code for cls in classes]
    assert all(c != 0 for c in codes)
    assert len(set(codes)) == len(codes)
    assert (AudioFileError.exit_code, OutputError.exit_code, ToolMissingError.exit_code) == (2, 3, 4)
    for cls in (AudioFileError, OutputError, ToolMissingError):
        assert issubclass(cls, LivestemsError)


def test_error_message_says_expected_got_and_fix_and_survives_pickle():
    err = AudioFileError("unsupported sample rate", expected="8000..384000 Hz", got="4000 Hz",
                         fix="resample first", path="/x/a.wav")
    text = str(err)
    assert text.startswith("/x/a.wav: unsupported sample rate")
    for part in ("expected 8000..384000 Hz", "got 4000 Hz", "Fix: resample first"):
        assert part in text
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is AudioFileError and str(back) == text and back.exit_code == 2

    tool = ToolMissingError("ffmpeg", needed_for="writing .stem.mp4 files")
    assert "apt-get install ffmpeg" in str(tool)
    assert str(pickle.loads(pickle.dumps(tool))) == str(tool)


def test_require_tool_raises_typed_error_for_absent_program():
    with pytest.raises(ToolMissingError) as info:
        require_tool("livestems-no-such-tool-xyz", "a test")
    assert info.value.exit_code == 4 and "livestems-no-such-tool-xyz" in str(info.value)
    assert require_tool("sh", "a test").endswith("sh")


# ----------------------------------------------------------------------------------------------
# Reading: content and channel handling


def test_wav_round_trip_is_bit_exact_and_keeps_overs(tmp_path):
    x = noise(2, 10_000, scale=1.0)
    x[0, :10] = [1.7, -2.5, 3.0, 1.0, -1.0, 0.0, 1e-8, -1e-8, 0.999, 1.0001]
    p = tmp_path / "a.wav"
    assert write_audio(p, x, 48000) == 0
    a = read_audio(p)
    assert isinstance(a, AudioData)
    assert a.samples.dtype == np.float32 and a.samples.flags.c_contiguous
    assert a.samples.shape == (2, 10_000) and a.sample_rate == 48000 and a.source_channels == 2
    np.testing.assert_array_equal(a.samples, x)
    assert a.notes == [] and a.nonfinite_count == 0 and a.path == p
    assert a.frames == 10_000 and a.duration_s == pytest.approx(10_000 / 48000)


def test_flac_is_24_bit_and_counts_clipped_samples(tmp_path):
    x = noise(2, 5000, seed=1, scale=0.9)
    x[0, 0], x[1, 1], x[1, 2], x[0, 3] = 1.5, -1.2, 1.0, -1.0  # 1.0 cannot be held by PCM_24; -1.0 can
    p = tmp_path / "a.flac"
    assert write_audio(p, x, 44100, fmt="flac") == 3
    assert sf.info(p).subtype == "PCM_24"
    a = read_audio(p)
    expected = np.clip(x, -1.0, 1.0 - 2.0**-23)
    np.testing.assert_allclose(a.samples, expected, atol=2.0**-23)
    assert a.samples[0, 0] > 0.99999 and a.samples[1, 1] == -1.0


def test_mono_is_duplicated_with_a_note(tmp_path):
    x = noise(1, 3000)
    p = tmp_path / "mono.wav"
    write_audio(p, x, 22050)
    a = read_audio(p)
    assert a.samples.shape == (2, 3000) and a.source_channels == 1
    np.testing.assert_array_equal(a.samples[0], x[0])
    np.testing.assert_array_equal(a.samples[1], x[0])
    assert "mono input duplicated to both channels" in a.notes
    assert read_audio(p, channels=1).notes == []


@pytest.mark.parametrize("channels", [3, 4, 6])
def test_multichannel_downmix_even_to_left_odd_to_right(tmp_path, channels):
    x = noise(channels, 2000, seed=channels)
    p = tmp_path / f"c{channels}.wav"
    write_audio(p, x, 48000)
    a = read_audio(p)
    assert a.samples.shape == (2, 2000) and a.source_channels == channels
    np.testing.assert_allclose(a.samples[0], x[0::2].mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(a.samples[1], x[1::2].mean(axis=0), atol=1e-7)
    assert any("downmixed to stereo" in n and "left" in n for n in a.notes)

    mono = read_audio(p, channels=1)
    assert mono.samples.shape == (1, 2000)
    np.testing.assert_allclose(mono.samples[0], x.mean(axis=0), atol=1e-7)


def test_nonfinite_samples_are_zeroed_and_counted(tmp_path):
    x = noise(2, 1000)
    x[0, 5], x[1, 6], x[1, 7] = np.nan, np.inf, -np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x.T, 44100, subtype="FLOAT")  # write_audio refuses NaN, so write it directly
    a = read_audio(p)
    assert a.nonfinite_count == 3
    assert a.samples[0, 5] == 0 and a.samples[1, 6] == 0 and a.samples[1, 7] == 0
    assert np.all(np.isfinite(a.samples))
    good = np.ones_like(x, dtype=bool)
    good[0, 5] = good[1, 6] = good[1, 7] = False
    np.testing.assert_array_equal(a.samples[good], x[good])
    assert any("3 NaN/Inf" in n for n in a.notes)


def test_wrong_extension_with_valid_content_still_loads(tmp_path):
    x = noise(2, 4000)
    flac = tmp_path / "really_flac.flac"
    write_audio(flac, x, 44100, fmt="flac")
    disguised = tmp_path / "really_flac.wav"
    flac.rename(disguised)
    np.testing.assert_allclose(read_audio(disguised).samples, x, atol=2.0**-23)

    wav = tmp_path / "really_wav.wav"
    write_audio(wav, x, 44100)
    other = tmp_path / "really_wav.ogg"
    wav.rename(other)
    np.testing.assert_array_equal(read_audio(other).samples, x)


def test_streaming_wav_with_unknown_length_is_not_called_truncated(tmp_path):
    # What `ffmpeg ... -f wav pipe:` and crashed recorders leave: RIFF and data sizes 0xFFFFFFFF.
    x = noise(2, 1000)
    ints = np.round(x * 32767).astype("<i2")
    pcm = ints.T.tobytes()
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 2, 44100, 44100 * 4, 4, 16)
    unknown = struct.pack("<I", 0xFFFFFFFF)
    data = b"RIFF" + unknown + b"WAVE" + fmt_chunk + b"data" + unknown + pcm
    p = tmp_path / "stream.wav"
    p.write_bytes(data)
    a = read_audio(p)
    assert a.samples.shape == (2, 1000)
    np.testing.assert_array_equal(a.samples, ints / np.float32(32768))  # libsndfile scales by 2**-15


# ----------------------------------------------------------------------------------------------
# Reading: refusals


def _truncated_copy(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _bad_input(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """Build one kind of unusable input; return it and a word the error message must contain."""
    if kind == "missing":
        return tmp_path / "nope.wav", "not found"
    if kind == "directory":
        d = tmp_path / "folder.wav"
        d.mkdir()
        return d, "folder"
    if kind == "empty":
        p = tmp_path / "empty.wav"
        p.touch()
        return p, "0 bytes"
    if kind == "text":
        p = tmp_path / "notes.wav"
        p.write_text("these are my notes, not audio\n" * 20)
        return p, "not"
    if kind == "zero_frames":
        p = tmp_path / "zero.wav"
        sf.write(p, np.zeros((0, 2), np.float32), 44100, subtype="FLOAT")
        return p, "0 frames"
    if kind == "truncated_wav":
        full = tmp_path / "full.wav"
        write_audio(full, noise(2, 20_000), 44100)
        return _truncated_copy(full, tmp_path / "cut.wav", 0.6), "truncated"
    if kind == "truncated_flac":
        full = tmp_path / "full.flac"
        write_audio(full, noise(2, 20_000), 44100, fmt="flac")
        return _truncated_copy(full, tmp_path / "cut.flac", 0.6), "corrupt"
    if kind == "rate_too_low":
        p = tmp_path / "low.wav"
        write_audio(p, noise(2, 1000), 4000)
        return p, "4000 Hz"
    if kind == "rate_too_high":
        p = tmp_path / "high.wav"
        write_audio(p, noise(2, 1000), 768000)
        return p, "768000 Hz"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "zero_frames", "truncated_wav",
                                  "truncated_flac", "rate_too_low", "rate_too_high"])
def test_unusable_inputs_raise_audio_file_error(tmp_path, kind):
    p, word = _bad_input(tmp_path, kind)
    with pytest.raises(AudioFileError) as info:
        read_audio(p)
    err = info.value
    assert err.exit_code == 2
    message = str(err)
    assert str(p) in message and word in message, message
    assert "expected" in message and "got" in message and "Fix:" in message


def test_corrupt_flac_error_keeps_the_libsndfile_cause(tmp_path):
    p, _ = _bad_input(tmp_path, "truncated_flac")
    with pytest.raises(AudioFileError) as info:
        read_audio(p)
    assert isinstance(info.value.__cause__, sf.LibsndfileError)


def test_sample_rate_limits_are_configurable(tmp_path):
    p = tmp_path / "low.wav"
    write_audio(p, noise(2, 100), 4000)
    assert read_audio(p, min_rate=4000).sample_rate == 4000
    with pytest.raises(AudioFileError):
        read_audio(p, min_rate=8000)
    with pytest.raises(AudioFileError):
        read_audio(p, min_rate=1000, max_rate=3999)


def test_stream_index_beyond_a_single_stream_file(tmp_path):
    p = tmp_path / "a.wav"
    write_audio(p, noise(2, 100), 44100)
    with pytest.raises(AudioFileError, match="stream"):
        read_audio(p, stream=1)


# ----------------------------------------------------------------------------------------------
# Reading through ffmpeg


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@needs_ffmpeg
def test_libsndfile_unknown_formats_fall_back_to_ffmpeg(tmp_path):
    x = noise(2, 48000, scale=0.3)
    src = tmp_path / "src.wav"
    write_audio(src, x, 48000)
    adts = tmp_path / "clip.aac"  # raw ADTS AAC: libsndfile does not know it
    _ffmpeg("-i", str(src), "-c:a", "aac", "-b:a", "192k", str(adts))
    a = read_audio(adts)
    assert a.sample_rate == 48000 and a.samples.shape[0] == 2
    assert abs(a.frames - 48000) <= 2048
    assert any("ffmpeg" in n for n in a.notes)


@needs_ffmpeg
def test_m4a_is_decoded_with_exact_length_and_rate(tmp_path):
    t = np.arange(30_000) / 32000
    x = np.stack([0.4 * np.sin(2 * np.pi * 500 * t), 0.4 * np.sin(2 * np.pi * 900 * t)]).astype(np.float32)
    src = tmp_path / "src.wav"
    write_audio(src, x, 32000)
    m4a = tmp_path / "clip.m4a"
    _ffmpeg("-i", str(src), "-c:a", "aac", "-b:a", "256k", "-movie_timescale", "32000", str(m4a))
    a = read_audio(m4a)
    assert a.sample_rate == 32000 and a.samples.shape == (2, 30_000)
    assert snr_db(x, a.samples) > 20


@needs_ffmpeg
def test_truncated_mp4_is_refused(tmp_path):
    x = noise(2, 44100, scale=0.3)
    src = tmp_path / "src.wav"
    write_audio(src, x, 44100)
    fast = tmp_path / "fast.m4a"  # moov first: cutting it loses media data, not the index
    _ffmpeg("-i", str(src), "-c:a", "aac", "-movflags", "+faststart", str(fast))
    slow = tmp_path / "slow.m4a"  # moov last: cutting it loses the index
    _ffmpeg("-i", str(src), "-c:a", "aac", str(slow))
    for full in (fast, slow):
        cut = _truncated_copy(full, tmp_path / f"cut_{full.name}", 0.5)
        with pytest.raises(AudioFileError) as info:
            read_audio(cut)
        assert str(cut) in str(info.value)


def test_mp4_without_ffmpeg_raises_tool_missing(tmp_path, monkeypatch):
    p = tmp_path / "x.stem.mp4"
    p.write_bytes(b"\0\0\0\x08free")
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH that holds no ffmpeg
    with pytest.raises(ToolMissingError) as info:
        read_audio(p)
    assert info.value.exit_code == 4 and "apt-get install ffmpeg" in str(info.value)
    with pytest.raises(ToolMissingError):
        read_stems(p)


# ----------------------------------------------------------------------------------------------
# Real recordings (evaluation data: read only)


def test_real_ogg_reads_as_stereo_44k():
    a = read_audio(real_file("karissa-hobbs-lets-go-fishin.ogg"))
    assert a.sample_rate == 44100 and a.source_channels == 2 and a.samples.shape[0] == 2
    assert 130 < a.duration_s < 136
    assert a.samples.dtype == np.float32 and a.samples.flags.c_contiguous
    assert 0.01 < float(np.sqrt(np.mean(a.samples**2))) < 1.0 and a.nonfinite_count == 0


@needs_ffmpeg
@pytest.mark.parametrize("name", ["music-delta-80s-rock.stem.mp4", "the-easton-ellises-falcon-69.stem.mp4"])
def test_real_stems_read_in_ni_order(name):
    path = real_file(name)
    stems = read_stems(path)
    assert list(stems) == list(STEM_NAMES) and stems.sample_rate == 44100
    lengths = {v.shape for v in stems.values()}
    assert len(lengths) == 1 and lengths.pop()[0] == 2
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in stems.values())
    assert 6.0 < stems["mixture"].shape[1] / 44100 < 7.0

    # The mixture is encoded separately, so it only approximates the sum of the stems; but it
    # does so far better than any single stem does, which pins stream 0 as the mixture.
    total = sum(stems[k] for k in STEM_NAMES[1:])
    mix_vs_sum = snr_db(stems["mixture"], total)
    assert mix_vs_sum > 10
    assert all(snr_db(stems["mixture"], stems[k]) < mix_vs_sum - 6 for k in STEM_NAMES[1:])

    vocals = read_audio(path, stream=4)
    np.testing.assert_array_equal(vocals.samples, stems["vocals"])
    with pytest.raises(AudioFileError, match="stream"):
        read_audio(path, stream=5)  # stream 5 is the cover picture, not audio


@needs_ffmpeg
def test_read_stems_refuses_a_plain_mp4(tmp_path):
    src = tmp_path / "src.wav"
    write_audio(src, noise(2, 4410, scale=0.3), 44100)
    plain = tmp_path / "plain.mp4"
    _ffmpeg("-i", str(src), "-c:a", "aac", str(plain))
    with pytest.raises(AudioFileError, match="5 audio streams"):
        read_stems(plain)


# ----------------------------------------------------------------------------------------------
# Writing: atomicity and refusals


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    p = tmp_path / "out.wav"
    p.write_bytes(b"keep me")
    with pytest.raises(OutputError) as info:
        write_audio(p, noise(2, 100), 44100)
    assert info.value.exit_code == 3 and "already exists" in str(info.value)
    assert p.read_bytes() == b"keep me"
    write_audio(p, noise(2, 100), 44100, overwrite=True)
    assert read_audio(p).frames == 100
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["missing_folder", "parent_is_file", "path_is_folder"])
def test_unwritable_destinations_raise_output_error(tmp_path, where):
    if where == "missing_folder":
        target = tmp_path / "no" / "such" / "out.wav"
    elif where == "parent_is_file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out.wav"
    else:
        target = tmp_path / "dir.wav"
        target.mkdir()
    with pytest.raises(OutputError) as info:
        write_audio(target, noise(2, 100), 44100)
    assert info.value.exit_code == 3 and "Fix:" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_new_files_get_normal_permissions(tmp_path):
    p = tmp_path / "perm.wav"
    write_audio(p, noise(2, 10), 44100)
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failure_inside_atomic_output_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("crash while writing")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_output_created_meanwhile_is_not_clobbered(tmp_path):
    # Another process writes the same name while we encode: without overwrite, ours must lose.
    target = tmp_path / "out.wav"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"ours")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_full_disk_raises_output_error_and_leaves_no_file(tmp_path):
    # A real short write: the file-size limit makes write(2) fail with EFBIG part-way through,
    # as a full disk fails with ENOSPC. Run in a child so the limit cannot touch pytest.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        from livestems.stream.io.files import write_audio
        from livestems.stream.errors import OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        x = np.random.default_rng(0).uniform(-1, 1, (2, 200_000)).astype(np.float32)
        for fmt in ("wav", "flac"):
            try:
                write_audio({str(tmp_path)!r} + "/out." + fmt, x, 44100, fmt=fmt)
            except OutputError as err:
                assert err.exit_code == 3, err
                print("refused", fmt)
            else:
                sys.exit("write succeeded despite the size limit")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.split() == ["refused", "wav", "refused", "flac"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "samples, message",
    [
        (np.zeros((44100, 2), np.float32), "pass samples.T"),
        (np.zeros(100, np.float32), "2-D"),
        (np.zeros((2, 0), np.float32), "0 frames"),
        (np.zeros((2, 10), np.int16), "floating point"),
        (np.array([[0.0, np.nan], [0.0, 0.0]], np.float32), "NaN"),
    ],
)
def test_write_rejects_malformed_samples(tmp_path, samples, message):
    with pytest.raises(ValueError, match=message):
        write_audio(tmp_path / "x.wav", samples, 44100)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_unknown_format_and_bad_rate(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_audio(tmp_path / "x.mp3", noise(2, 10), 44100, fmt="mp3")
    with pytest.raises(ValueError, match="sample_rate"):
        write_audio(tmp_path / "x.wav", noise(2, 10), 0)
