"""Shift consistency (model/evaluation/consistency.py) and `livestems bench --shift`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from livestems.model.evaluation.consistency import load_song, shift_consistency
from livestems.model.nets.registry import load_separator

sys.path.insert(0, str(Path(__file__).parents[2]))
from separators import SplitDelay  # noqa: E402  (tests/separators.py: real small separators)


def _noise(seconds=3.0, rate=44100, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((2, int(seconds * rate)))
            ).astype(np.float32)


def test_shift_invariant_separator_measures_exactly_zero_error():
    """A filter with no frame grid (one-pole low-pass from a zero state) gives identical
    stems for a delayed input: -inf dB for every shift."""
    r = shift_consistency(SplitDelay(), _noise(), shifts=(1, 37, 128))
    assert set(r["shifts"]) == {1, 37, 128}
    assert all(v["error_db"] == float("-inf") for v in r["shifts"].values()), r


def test_framed_separator_depends_on_the_grid_position_but_not_on_whole_hops():
    """`center` frames with a 256-sample hop: a shift by a whole hop is exact (the same
    frames, later), a shift off the grid changes the stems (a finite error)."""
    sep = load_separator("center")
    r = shift_consistency(sep, _noise(), shifts=(37, sep.hop))
    assert r["shifts"][sep.hop]["error_db"] == float("-inf")
    assert -60.0 < r["shifts"][37]["error_db"] < -10.0, r
    assert r["worst_db"] == r["shifts"][37]["error_db"]
    assert set(r["shifts"][37]["stems_db"]) == set(sep.sources)


def test_bad_arguments_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="channels=2"):
        shift_consistency(SplitDelay(), np.zeros((1, 100000), np.float32))
    with pytest.raises(ValueError, match="positive"):
        shift_consistency(SplitDelay(), _noise(), shifts=(0,))
    with pytest.raises(ValueError, match="2 \\* edge"):
        shift_consistency(SplitDelay(), _noise(1.0))


def test_bench_shift_reports_json_from_a_stems_folder(tmp_path):
    """`bench --shift --json` on a folder of stems (the mixture is their sum, resampled from
    48 kHz to the model's rate)."""
    song = tmp_path / "song"
    song.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        sf.write(song / f"{name}.wav", 0.1 * rng.standard_normal((48000 * 6, 2)), 48000)
    x, offset_s = load_song(song, 44100, offset_s=1.0, seconds=4.0)
    assert x.shape == (2, 4 * 44100) and x.dtype == np.float32 and offset_s == 1.0
    assert load_song(song, 44100, offset_s=30.0, seconds=4.0)[1] == 2.0  # moved to fit
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "bench", "--shift",
                           "--model", "center", "--seconds", "2", "--shift-song", str(song),
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)["shift_consistency"]
    assert rep["model"] == "center" and set(rep["shifts"]) == {"1", "37", "128"}
    assert rep["offset_s"] == 2.0 and rep["samples"] == 4 * 44100  # 6 s song: 2 + 2 edges
    assert all(-80 < v["error_db"] < 0 for v in rep["shifts"].values()), rep
    bad = subprocess.run([sys.executable, "-m", "livestems.stream", "bench", "--shift",
                          "--model", "center", "--shift-song", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no stems" in bad.stderr
