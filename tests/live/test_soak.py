"""60 s of music through `livestems jack` at 48 kHz / 256 frames with the default model:
no deadline misses, no xruns after the first 100 ms, and the audio kept flowing."""

import time

import numpy as np
import pytest
from jackio import PlayRecord
from test_jack import CLIENT, _start_livestems, _stop

from livestems.model.demo_song import make_demo_song

SECONDS = 60


@pytest.mark.soak  # off by default (`pytest -m soak`): fails here today, see docs/LIVE.md
def test_sixty_seconds_without_misses_or_xruns(jackd, tmp_path, shipped_default):
    song = make_demo_song(seconds=12.0, sample_rate=48000, seed=5).mixture
    music = np.tile(song, (1, SECONDS // 12))
    proc, stats = _start_livestems(jackd, tmp_path)
    pr = None
    try:
        pr = PlayRecord(jackd.name, music, [f"{CLIENT}:karaoke_L"], music.shape[1],
                        prefix="lssoak")
        pr.connect_to(f"{CLIENT}:in_L", f"{CLIENT}:in_R")
        time.sleep(0.2)
        rec = pr.play(lead_frames=4800)
    finally:
        if pr is not None:
            pr.close()
        st, _ = _stop(proc, stats)
    summary = (f"{st['deadline_misses']} deadline misses ({st['missed_samples']} samples), "
               f"{st['xruns']} xruns ({st['xruns_after_grace']} after 100 ms; the test "
               f"client saw {pr.xruns}), {st['frame_gaps']} skipped cycles, per-hop p99 "
               f"{st['per_hop_ms']['p99']:.3f} ms, max {st['per_hop_ms']['max']:.3f} ms, "
               f"rtf p99 {st['rtf_p99']:.3f}")
    print(summary)
    # audio flowed all along (the fallback would keep it flowing even on misses)
    win = 4800
    rms = np.sqrt(np.mean(rec[0, : rec.shape[1] // win * win].reshape(-1, win) ** 2, axis=1))
    assert (rms[2:] > 1e-4).all(), "silent stretches in the karaoke output"
    assert st["worker_error"] is None
    assert st["deadline_misses"] == 0, summary
    assert st["xruns_after_grace"] == 0, summary
