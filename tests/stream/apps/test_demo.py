"""`livestems demo`, the main job, run as a user runs it (shortened song)."""

import re
import subprocess
import sys

import numpy as np
import soundfile as sf

from livestems.model.nets.registry import DEFAULT_MODEL, load_separator


def _demo(out, *extra):
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "demo", "-o", str(out),
                           "--seconds", "3", *extra], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_demo_separates_with_the_default_model_and_writes_stems_and_plot(tmp_path,
                                                                         shipped_default):
    """As fast as possible (the engine waits for the model: no hop is played dry), so the
    quality figures are the model's own."""
    out = tmp_path / "demo"
    text = _demo(out, "--fast")
    sep = load_separator(None)
    expected = sep.latency_samples + sep.hop + 256
    assert shipped_default == DEFAULT_MODEL == "rt-tiny"
    assert f"model {DEFAULT_MODEL}: stems {', '.join(sep.sources)}" in text
    assert f"latency: {expected} samples = {1000 * expected / sep.sample_rate:.1f} ms" in text
    assert "deadline misses: 0 " in text
    files = {p.name for p in out.iterdir()}
    assert {"input.wav", "karaoke.wav", "spectrograms.png"} | \
        {f"{s}.wav" for s in sep.sources} <= files
    x, rate = sf.read(out / "input.wav", always_2d=True)
    assert rate == sep.sample_rate and x.shape == (3 * rate, 2)
    stems = {}
    for s in sep.sources:
        y, r = sf.read(out / f"{s}.wav", always_2d=True)
        assert r == rate and y.shape == x.shape
        stems[s] = y
    assert (out / "spectrograms.png").stat().st_size > 10_000
    # karaoke is everything but the vocals (vocals muted on the mix bus)
    k, _ = sf.read(out / "karaoke.wav", always_2d=True)
    np.testing.assert_allclose(k, sum(v for s, v in stems.items() if s != "vocals"),
                               atol=2e-4)
    # and it removed vocals: better than the mixture as an accompaniment estimate
    line = next(ln for ln in text.splitlines() if ln.startswith("quality"))
    vals = [float(v) for v in re.findall(r"(-?\d+\.\d+) dB", line)]
    vocals, vocals_floor, acc, acc_floor = vals[:4]
    assert vocals > vocals_floor and acc > acc_floor, line


def test_demo_plays_in_real_time_and_reports_timing(tmp_path, shipped_default):
    text = _demo(tmp_path / "demo")
    assert "playing in real time" in text
    assert re.search(r"played 3 s in 3\.\d\d s wall", text), text
    assert "real-time factor: p50" in text and "deadline misses:" in text
    # the safety margin was chosen at start-up from the warm-up (the default), printed, and
    # is exactly the part of the published latency beyond model + hop + block
    sep = load_separator(None)
    m = re.search(r"safety margin: (\d+) ms, chosen at start-up: per-hop compute over (\d+) "
                  r"warm-up hops p50 [\d.]+, p99 ([\d.]+), 2nd slowest ([\d.]+) ms", text)
    assert m, text
    safety_ms, hops = int(m.group(1)), int(m.group(2))
    assert 32 <= hops <= 512
    lat = sep.latency_samples + sep.hop + 256 + round(safety_ms * 1e-3 * sep.sample_rate)
    assert f"latency: {lat} samples" in text, text
    assert f"+ safety {lat - sep.latency_samples - sep.hop - 256})" in text


def test_demo_runs_twice_in_the_same_folder(tmp_path):
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "livestems.stream", "demo", "-o",
                               str(tmp_path), "--seconds", "1", "--fast"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
