"""Compressed stems (Ogg Opus at 48 kHz, as shared/data/train-real) in MUSDB-layout folders:
decoded and resampled once into the cache, then read like WAV stems; mixed training sets."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from livestems.model.training.data import SOURCES, AugmentedStems, StemSegments, cache_dir, scan_musdb

RATE_IN, RATE = 48000, 44100
FREQS = {"vocals": 440.0, "drums": 1200.0, "bass": 110.0, "other": 660.0}


def write_opus_track(folder, seconds=1.5, amp=0.3):
    folder.mkdir(parents=True)
    t = np.arange(int(seconds * RATE_IN)) / RATE_IN
    for name, f in FREQS.items():
        x = amp * np.sin(2 * np.pi * f * t)
        sf.write(folder / f"{name}.opus", np.stack([x, 0.5 * x], 1), RATE_IN, format="OGG",
                 subtype="OPUS")
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVESTEMS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stems"


def peak_hz(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


def test_opus_stems_are_decoded_resampled_and_cached_once(tmp_path, cache):
    root = tmp_path / "real"
    write_opus_track(root / "song")
    rep = scan_musdb(root, sample_rate=RATE)
    assert not rep.skipped and len(rep.tracks) == 1
    tr = rep.tracks[0]
    assert cache_dir() == cache
    assert tr.sample_rate == RATE and tr.channels == 2
    assert abs(tr.frames - 1.5 * RATE) < 0.01 * RATE  # the length at the new rate
    assert all(p.parent == cache and p.suffix == ".wav" for p in tr.files.values())
    mix, stems = StemSegments(rep, RATE, sources=SOURCES)[0]
    for k, name in enumerate(SOURCES):
        x = stems[k].numpy()
        # the tone is where it was played (so the resampling is right), the level is kept
        # (Opus is lossy: a few percent) and the right channel is half the left
        assert peak_hz(x[0, 2000:], RATE) == pytest.approx(FREQS[name], abs=3.0)
        assert np.sqrt(np.mean(x[0, 4000:40000] ** 2)) == pytest.approx(0.3 / np.sqrt(2),
                                                                        rel=0.05)
        assert np.allclose(x[1, 4000:40000], 0.5 * x[0, 4000:40000], atol=0.02)
    assert np.allclose(mix.numpy(), stems.numpy().sum(0), atol=1e-6)

    # a second scan decodes nothing: the cache files are reused as they are
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = scan_musdb(root, sample_rate=RATE).tracks[0]
    assert again.files == tr.files
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert not [p for p in cache.iterdir() if ".part" in p.name]  # nothing half-written

    # an edited stem is decoded again, into a new cache file
    src = root / "song" / "vocals.opus"
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10 ** 9))
    edited = scan_musdb(root, sample_rate=RATE).tracks[0]
    assert edited.files["vocals"] != tr.files["vocals"]
    assert edited.files["drums"] == tr.files["drums"]


def test_a_broken_compressed_stem_skips_its_track_with_the_reason(tmp_path, cache):
    root = tmp_path / "real"
    write_opus_track(root / "good")
    bad = write_opus_track(root / "bad")
    (bad / "bass.opus").write_bytes(b"OggS" + b"\x00" * 100)
    rep = scan_musdb(root, sample_rate=RATE)
    assert [t.name for t in rep.tracks] == ["good"]
    assert rep.skipped[0][0] == "bad" and "bass.opus is not readable audio" in rep.skipped[0][1]


def test_track_weights_set_each_sets_share_of_the_draws(tmp_path, cache):
    real = scan_musdb(write_opus_track(tmp_path / "real" / "a", seconds=3.0),
                      sample_rate=RATE).tracks
    synth = scan_musdb(write_opus_track(tmp_path / "synth" / "b", seconds=3.0, amp=0.1),
                       sample_rate=RATE).tracks
    ds = AugmentedStems(real + synth, RATE // 4, epoch_size=400, seed=1, remix=1.0,
                        gain_range=None, flip_sign=False, flip_channels=False, shift_samples=0,
                        track_weights=[0.8, 0.2])
    loud = []
    for i in range(len(ds)):
        _, stems = ds[i]
        # each source comes from either set (remix): tell them apart by level
        loud += [float(stems[k].abs().max()) > 0.2 for k in range(len(SOURCES))]
    assert np.mean(loud) == pytest.approx(0.8, abs=0.05)
    with pytest.raises(ValueError, match="track_weights must be 2 non-negative"):
        AugmentedStems(real + synth, 100, track_weights=[1.0])


def test_a_silent_opus_stem_reads_as_digital_silence(tmp_path, cache):
    """A song without bass: its bass.opus decodes to ~1e-34, not zeros. Cached as zeros, it
    counts as silent, so validation and eval leave bass out instead of scoring -90 dB."""
    folder = write_opus_track(tmp_path / "real" / "song")
    sf.write(folder / "bass.opus", np.zeros((int(1.5 * RATE_IN), 2)), RATE_IN, format="OGG",
             subtype="OPUS")
    tr = scan_musdb(tmp_path / "real", sample_rate=RATE).tracks[0]
    bass = sf.read(tr.files["bass"])[0]
    assert not np.any(bass)
