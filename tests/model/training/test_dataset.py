"""MUSDB-layout loading: validation of bad tracks, segments, Demucs-style augmentation.

Stems here are made so that every sample says where it came from: source k, channel c,
track j hold ``(k + 1) * (c + 1) * (1 + j) * 1e-3 + n * 1e-8`` at sample n (all positive). An
augmented item can then be decoded into (track, offset, gain, channel swap, sign flip) and
checked against the promised augmentation, not against the implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from livestems.model.training.data import (SOURCES, AugmentedStems, DatasetError, StemSegments,
                                  read_source, scan_musdb)

SR = 8000
N = 3 * SR


def signal(k: int, j: int, n: int = N) -> np.ndarray:
    """[n, 2] (soundfile layout) ramp of source k, track j."""
    t = np.arange(n) * 1e-8
    return np.stack([(k + 1) * (c + 1) * (1 + j) * 1e-3 + t for c in range(2)], axis=1)


def write_track(folder, j, n=N, rate=SR, skip=(), lengths=None):
    folder.mkdir(parents=True)
    for k, s in enumerate(SOURCES):
        if s in skip:
            continue
        m = (lengths or {}).get(s, n)
        sf.write(folder / f"{s}.wav", signal(k, j, m), rate, subtype="FLOAT")
    sf.write(folder / "mixture.wav", sum(signal(k, j, n) for k in range(4)), rate, subtype="FLOAT")


@pytest.fixture
def good(tmp_path):
    root = tmp_path / "musdb"
    for j in range(3):
        write_track(root / "train" / f"t{j}", j)
    return root


def test_bad_tracks_are_skipped_with_reasons_or_stop_strict(good):
    write_track(good / "train" / "x_missing", 5, skip=("bass",))
    write_track(good / "train" / "x_lengths", 6, lengths={"drums": N - 10})
    write_track(good / "train" / "x_rate", 7, rate=SR * 2)
    (good / "train" / "x_notaudio").mkdir()
    for s in SOURCES:
        (good / "train" / "x_notaudio" / f"{s}.wav").write_bytes(b"not a wav file at all")
    rep = scan_musdb(good, sample_rate=SR)
    assert [t.name for t in rep.tracks] == ["train/t0", "train/t1", "train/t2"]
    why = dict(rep.skipped)
    assert "missing stem file(s) bass.wav" in why["train/x_missing"]
    assert "different lengths" in why["train/x_lengths"] and str(N - 10) in why["train/x_lengths"]
    assert f"sample rate {2 * SR} Hz, expected {SR} Hz" in why["train/x_rate"]
    assert "not readable audio" in why["train/x_notaudio"]
    assert "4 skipped" in rep.summary()
    with pytest.raises(DatasetError, match="x_lengths.*different lengths.*Fix"):
        scan_musdb(good, sample_rate=SR, strict=True)


def test_no_usable_tracks_and_missing_folder_are_clear_errors(tmp_path, good):
    with pytest.raises(DatasetError, match="not a folder"):
        scan_musdb(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no usable tracks.*sample rate 8000 Hz, expected 44100"):
        scan_musdb(good)
    with pytest.raises(DatasetError, match="subset folder.*test"):
        scan_musdb(good, sample_rate=SR, subsets=("test",))


def test_segments_cover_tracks_in_order_and_mixture_is_the_sum(good):
    ds = StemSegments(good, segment_samples=SR, stride_samples=SR, sample_rate=SR)
    assert len(ds) == 3 * 3
    mix, stems = ds[4]  # track 1, second segment
    assert mix.dtype == torch.float32 and stems.shape == (4, 2, SR)
    expect = np.stack([signal(k, 1)[SR:2 * SR].T for k in range(4)]).astype(np.float32)
    assert np.array_equal(stems.numpy(), expect)
    assert torch.allclose(mix, stems.sum(0))
    # a stride that does not divide the track gives a last, zero-padded segment
    ds2 = StemSegments(good, segment_samples=2 * SR, stride_samples=2 * SR, sample_rate=SR)
    assert len(ds2) == 3 * 2
    _, tail = ds2[1]
    assert tail[:, :, SR:].abs().max() == 0 and tail[:, :, :SR].abs().min() > 0


def test_accompaniment_is_the_sum_of_the_other_stems(good):
    rep = scan_musdb(good, ("vocals", "accompaniment"), sample_rate=SR)
    acc = read_source(rep.tracks[0], "accompaniment", 100, 50)
    expect = sum(signal(k, 0)[100:150].T for k in (1, 2, 3))
    np.testing.assert_allclose(acc, expect, rtol=1e-6)


def decode(x: np.ndarray, k: int):
    """(track, offset, gain, swapped, flipped) that explain segment x [2, T] of source k."""
    flipped = x[0, 0] < 0
    x = -x if flipped else x
    swapped = x[0, 0] > x[1, 0]
    if swapped:
        x = x[::-1]
    # per channel c: g * ((k+1)(c+1)(1+j)1e-3 + n 1e-8); slope gives g, then j, then n
    slope, icpt = np.polyfit(np.arange(x.shape[1]), x[0], 1)  # least squares: float32-proof
    g = slope / 1e-8
    base = icpt / g
    j = round(base / ((k + 1) * 1e-3)) - 1
    n0 = round((base - (k + 1) * (1 + j) * 1e-3) / 1e-8)
    return j, n0, g, swapped, flipped


def test_augmentation_is_what_it_promises(good):
    T, shift = SR // 2, SR // 4
    ds = AugmentedStems(good, T, epoch_size=48, seed=3, shift_samples=shift, sample_rate=SR,
                        remix=0.5)
    seen = {"swap": set(), "flip": set(), "remix": 0, "same": 0}
    gains = []
    for i in range(len(ds)):
        mix, stems = ds[i]
        assert torch.allclose(mix, stems.sum(0))
        decoded = [decode(stems[k].numpy().astype(np.float64), k) for k in range(4)]
        for k, (j, n0, g, sw, fl) in enumerate(decoded):
            assert 0 <= j < 3 and -1 <= n0 <= N - T + 1
            assert 0.25 - 1e-3 <= g <= 1.25 + 1e-3
            gains.append(g)
            seen["swap"].add(sw)
            seen["flip"].add(fl)
        tracks = {d[0] for d in decoded}
        offsets = [d[1] for d in decoded]
        if len(tracks) == 1 and max(offsets) - min(offsets) <= shift + 1:
            seen["same"] += 1
        else:
            seen["remix"] += 1
    assert seen["swap"] == {True, False} and seen["flip"] == {True, False}
    assert seen["remix"] > 0 and seen["same"] > 0
    assert np.std(gains) > 0.15


def test_augmentation_is_deterministic_per_seed_epoch_and_index(good):
    ds = AugmentedStems(good, SR // 2, epoch_size=8, seed=1, sample_rate=SR)
    a = [ds[i][1] for i in (5, 2)]
    b = [ds[i][1] for i in (2, 5)][::-1]  # order of access does not matter (DataLoader workers)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ds.set_epoch(1)
    assert not torch.equal(ds[5][1], a[0])
    ds.set_epoch(0)
    assert torch.equal(ds[5][1], a[0])
    other = AugmentedStems(good, SR // 2, epoch_size=8, seed=2, sample_rate=SR)
    assert not torch.equal(other[5][1], a[0])
    with pytest.raises(IndexError):
        ds[8]


def test_no_augmentation_reads_aligned_stems_of_one_track(good):
    ds = AugmentedStems(good, SR // 2, epoch_size=16, seed=0, remix=0.0, shift_samples=0,
                        gain_range=None, flip_channels=False, flip_sign=False, sample_rate=SR)
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    for mix, stems in loader:
        assert stems.shape == (4, 4, 2, SR // 2)
        for b in range(4):
            d = [decode(stems[b, k].numpy().astype(np.float64), k) for k in range(4)]
            offsets = [x[1] for x in d]  # decoded from float32: +-1 sample of rounding
            assert len({x[0] for x in d}) == 1 and max(offsets) - min(offsets) <= 1
            assert all(abs(x[2] - 1) < 1e-3 for x in d)
