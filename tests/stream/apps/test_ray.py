"""`livestems separate --ray`: the same per-file function on Ray actors, the same outputs.

Starts a real local Ray instance (``--ray auto`` with no cluster around starts one on this
machine's CPUs: 2 on the CI VM) in a real `livestems` process. Ray is in the test extra
(pyproject.toml), so CI runs this; without it the import below fails, by design.
"""

import subprocess
import sys

import numpy as np
import soundfile as sf
from signals import music_like

import ray  # noqa: F401 - the test extra installs it; a missing ray must fail, not skip


def run_cli(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_ray_outputs_equal_the_local_ones_and_a_bad_file_is_reported(tmp_path):
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    names = ["a.wav", "sub/b.wav", "c.flac"]
    for i, n in enumerate(names):
        sf.write(lib / n, music_like(1.5 + i, seed=i).T, 44100,
                 subtype="FLOAT" if n.endswith(".wav") else "PCM_24")
    (lib / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(500))
    local = run_cli("separate", lib, "-o", tmp_path / "local", "--model", "rt-tiny",
                    "--workers", "1")
    assert local.returncode == 2, local.stderr
    remote = run_cli("separate", lib, "-o", tmp_path / "ray", "--model", "rt-tiny",
                     "--ray", "auto", "--workers", "2")
    assert remote.returncode == 2, remote.stderr  # the bad file's code; the run went on
    for proc in (local, remote):
        assert "summary: 3 done, 0 skipped (already complete), 1 failed" in proc.stdout, \
            proc.stdout
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and "broken.wav" in errors[0], proc.stderr
    # the Ray actors ran in other processes than the driver
    assert remote.stdout.count(" -> ") == 3
    for n in names:
        track = n.rsplit(".", 1)[0]
        for stem in ("drums", "bass", "other", "vocals", "accompaniment"):
            a, ra = sf.read(tmp_path / "local" / track / f"{stem}.wav", dtype="float32")
            b, rb = sf.read(tmp_path / "ray" / track / f"{stem}.wav", dtype="float32")
            assert ra == rb and a.shape == b.shape
            np.testing.assert_array_equal(a, b)  # same function, same thread count: exact
    # a rerun on the cluster skips everything that is complete
    again = run_cli("separate", lib, "-o", tmp_path / "ray", "--model", "rt-tiny",
                    "--ray", "auto", "--workers", "2")
    assert "summary: 0 done, 3 skipped (already complete), 1 failed" in again.stdout
