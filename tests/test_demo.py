"""`livestems demo`, the main job, run as a user runs it (shortened song, real-time paced)."""

import subprocess
import sys

import numpy as np
import soundfile as sf


def test_demo_runs_live_and_writes_karaoke_stems_and_plot(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "demo", "-o", str(out),
                           "--seconds", "3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "latency: 768 samples = 17.4 ms" in text
    assert "real-time factor" in text and "deadline misses:" in text
    files = {p.name for p in out.iterdir()}
    assert {"input.wav", "karaoke.wav", "vocals.wav", "accompaniment.wav",
            "spectrograms.png"} <= files
    x, rate = sf.read(out / "input.wav", always_2d=True)
    assert rate == 44100 and x.shape == (3 * 44100, 2)
    for name in ("karaoke.wav", "vocals.wav", "accompaniment.wav"):
        y, r = sf.read(out / name, always_2d=True)
        assert r == rate and y.shape == x.shape
    assert (out / "spectrograms.png").stat().st_size > 10_000
    # karaoke is the accompaniment (vocals muted on the mix bus)
    k, _ = sf.read(out / "karaoke.wav", always_2d=True)
    a, _ = sf.read(out / "accompaniment.wav", always_2d=True)
    np.testing.assert_allclose(k, a, atol=1e-4)
    # and it removed vocals: better than the mixture as an accompaniment estimate
    line = next(ln for ln in text.splitlines() if ln.startswith("quality"))
    vals = [float(w) for w in line.replace("(", " ").replace(")", " ").split() if
            w.replace(".", "").replace("-", "").isdigit()]
    vocals, vocals_floor, acc, acc_floor = vals[:4]
    assert vocals > vocals_floor and acc > acc_floor, line


def test_demo_runs_twice_in_the_same_folder(tmp_path):
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "livestems.stream", "demo", "-o",
                               str(tmp_path), "--seconds", "1", "--fast"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
