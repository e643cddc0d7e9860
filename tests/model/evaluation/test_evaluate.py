"""Evaluation: SDR v4 against museval itself, nSDR, the IRM oracle, scoring rules, the CLI."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from livestems.model.evaluation.evaluate import (EvalTrack, evaluate, ideal_ratio_mask, new_sdr,
                                      score_track, sdr_v4_windows)
from livestems.stream.cli.main import main

FOUR = ("vocals", "drums", "bass", "other")


def museval_metrics():
    """museval.metrics loaded from its file: the package's __init__ imports musdb and pandas,
    which the project does not install (museval itself is a no-deps test oracle)."""
    spec = importlib.util.find_spec("museval")
    if spec is None:
        pytest.skip("museval not installed (pip install --no-deps museval)")
    path = spec.submodule_search_locations[0] + "/metrics.py"
    mspec = importlib.util.spec_from_file_location("museval_metrics", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


def test_sdr_v4_equals_museval_bss_eval_with_512_tap_filters():
    mm = museval_metrics()
    rng = np.random.default_rng(0)
    sr = 4000
    refs = rng.standard_normal((3, 2, int(3.5 * sr)))
    # filtered, leaky, noisy estimates: the distortion filters have work to do
    ests = lfilter([0.8, 0.3, -0.1], [1.0], refs, axis=-1) + 0.3 * refs[[1, 2, 0]]
    ests += 0.2 * rng.standard_normal(refs.shape)
    ests[1, :, sr:2 * sr] = 0.0  # a silent estimate window: NaN for every source
    sdr, *_ = mm.bss_eval(np.moveaxis(refs, 1, 2), np.moveaxis(ests, 1, 2), window=sr, hop=sr,
                          compute_permutation=False, filters_len=512, framewise_filters=False,
                          bsseval_sources_version=False)
    ours = sdr_v4_windows(refs, ests, sr, sr)
    assert ours.shape == sdr.shape == (3, 3)  # the partial last window is dropped
    assert np.array_equal(np.isnan(ours), np.isnan(sdr)) and np.isnan(ours[:, 1]).all()
    np.testing.assert_allclose(ours[:, [0, 2]], sdr[:, [0, 2]], atol=1e-6)


def test_new_sdr_known_values():
    ref = np.ones((2, 2, 100))
    assert new_sdr(ref, 0.5 * ref) == pytest.approx([10 * np.log10(4)] * 2, abs=1e-6)
    assert new_sdr(ref, ref)[0] > 90  # exact estimate: limited only by the 1e-7 floor


def test_irm_sums_to_the_mixture_and_beats_it():
    rng = np.random.default_rng(1)
    t = np.arange(44100) / 44100
    tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2) * 0.5
    noise = lfilter([1.0], [1.0, -0.95], rng.standard_normal((2, t.size)), axis=-1) * 0.05
    est = ideal_ratio_mask(np.stack([tone, noise]), 2048)
    np.testing.assert_allclose(est.sum(0), tone + noise, atol=1e-9)
    irm = new_sdr(np.stack([tone, noise]), est)
    mix = new_sdr(np.stack([tone, noise]), np.stack([tone + noise] * 2))
    assert np.all(irm > mix + 10)


class QuarterSplit:
    """A 4-stem 'model': every stem is a quarter of the input, delayed by its latency."""

    sources = FOUR
    channels, hop, latency_samples, sample_rate = 2, 128, 128, 44100

    def reset(self):
        self._prev = np.zeros((2, self.hop), np.float32)

    def step(self, x):
        out = np.repeat((self._prev * 0.25)[None], 4, axis=0)
        self._prev = x.copy()
        return out

    def forward(self, x):
        return np.repeat(x[:, None] * 0.25, 4, axis=1)


def centred_track(seconds=3.0, sr=44100, seed=0):
    """Vocals dead centre, the band panned hard left and right."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 220 * 2 ** (np.floor(t * 2) % 5 / 12)
    ph = 2 * np.pi * np.cumsum(f0) / sr
    voc = sum(np.sin(k * ph) / k for k in range(1, 10)) * 0.2
    drums = lfilter([1.0], [1.0, -0.5], rng.standard_normal(t.size)) * 0.05 * (np.sin(2 * np.pi * 2 * t) > 0.5)
    bass = 0.2 * np.sin(2 * np.pi * 55 * t)
    other = 0.1 * np.sin(2 * np.pi * 330 * t + 1) + 0.02 * rng.standard_normal(t.size)
    stems = {"vocals": np.stack([voc, voc]), "drums": np.stack([drums, 0 * drums]),
             "bass": np.stack([0.9 * bass, 0.1 * bass]), "other": np.stack([0 * other, other])}
    return EvalTrack("centred", {k: v.astype(np.float32) for k, v in stems.items()}, sr)


def test_four_stem_model_is_scored_on_four_stems_and_accompaniment():
    track = centred_track()
    rep = evaluate([track], QuarterSplit(), "quarter")
    assert set(rep["sdr"]) == {*FOUR, "accompaniment"}
    assert set(rep["baselines"]) == {"mixture", "center", "oracle_irm2"}
    assert set(rep["baselines"]["center"]["sdr"]) == {"vocals", "accompaniment"}
    assert rep["baselines"]["oracle_irm2"]["n_fft"] == 4096
    # accompaniment = 3/4 of the mixture: its error is the vocals plus a quarter of the band
    acc_true = track.truth("accompaniment")
    err = track.mixture * 0.75 - acc_true
    expect = 10 * np.log10((np.sum(acc_true**2) + 1e-7) / (np.sum(err**2) + 1e-7))
    assert rep["nsdr"]["accompaniment"] == pytest.approx(expect, abs=0.01)
    # the floors and the ceiling are ordered as they must be on a centred-vocal mix
    b = rep["baselines"]
    assert b["center"]["sdr"]["vocals"] > b["mixture"]["sdr"]["vocals"] + 3
    assert b["oracle_irm2"]["sdr"]["vocals"] > b["center"]["sdr"]["vocals"]
    assert all(b["oracle_irm2"]["sdr"][s] > b["mixture"]["sdr"][s] for s in FOUR)


def test_silent_source_windows_are_left_out_like_museval():
    track = centred_track(seconds=4.0)
    track.stems["vocals"][:, : 2 * 44100] = 0.0  # vocals enter after 2 s
    est = {s: track.truth(s) * 0.9 for s in FOUR}
    per = score_track(track, est)
    # only windows 3 and 4 count, and there the SDR of a 0.9-scaled estimate is 20 dB
    assert per["vocals"]["sdr"] == pytest.approx(20.0, abs=1e-6)
    assert per["drums"]["sdr"] == pytest.approx(20.0, abs=1e-6)
    # a track without vocals: museval refuses it; we leave vocals/accompaniment out (NaN)
    track.stems["vocals"][:] = 0.0
    est["accompaniment"] = track.truth("accompaniment")
    per = score_track(track, est)
    assert np.isnan(per["vocals"]["nsdr"]) and np.isnan(per["accompaniment"]["sdr"])


def test_cli_eval_on_real_stems_json(real_dir, capsys):
    files = sorted(str(p) for p in real_dir.glob("*.stem.mp4"))
    assert len(files) == 2
    assert main(["eval", *files, "--json", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["method"] == "center" and len(rep["tracks"]) == 2
    assert set(rep["sdr"]) == {"vocals", "accompaniment"}
    b = rep["baselines"]
    assert rep["sdr"]["vocals"] > b["mixture"]["sdr"]["vocals"]
    assert b["oracle_irm2"]["sdr"]["vocals"] > rep["sdr"]["vocals"] + 5


def test_cli_eval_folder_reports_skips_and_strict_stops(tmp_path, capsys):
    root = tmp_path / "ds"
    track = centred_track(seconds=2.0, seed=3)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for s in FOUR:
            if name == "b" and s == "drums":
                continue
            sf.write(root / name / f"{s}.wav", track.stems[s].T, 44100, subtype="FLOAT")
    assert main(["eval", str(root), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert "skipped b: missing stem file(s) drums.wav" in cap.err
    assert "SDR v4" in cap.out and "oracle_irm2" in cap.out and "1 track(s): a" in cap.out
    assert main(["eval", str(root), "--strict", "--quiet"]) == 2
    assert "drums.wav" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.stem.mp4"), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err


def test_oracle_uses_the_networks_stft_size():
    """The IRM oracle runs at the model's STFT size: 1024 for rt-tiny (its network's n_fft),
    not the 4096 fallback for separators that declare none."""
    from livestems.model.nets.presets import build_preset

    rep = evaluate([centred_track(seconds=2.0)], build_preset("rt-tiny"), "rt-tiny")
    assert rep["baselines"]["oracle_irm2"]["n_fft"] == 1024
