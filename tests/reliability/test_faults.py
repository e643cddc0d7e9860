"""Injected faults: a separator that stalls, raises, returns NaN or the wrong shape (through the
engine's ``stall_hook`` and small separators), and a disk that fills up while `separate`
writes. Audio keeps flowing on the dry path, the fault is reported once, nothing is half
written.

No assertion depends on timing: the stall is an Event the test releases, and waits are upper
bounds (``pull(wait_s=...)``), never measurements.
"""

import resource
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
from livestems.stream.core.engine import Engine
from separators import SplitDelay

HOP, BLOCK = 64, 256
RATE = 44100


def _smooth(seconds=0.5):
    """A low sine: the dry/wet splice adds at most |x[t] - x[t-1]|, which stays small here."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.5 * np.sin(2 * np.pi * 110 * t)
    return np.stack([x, 0.8 * x]).astype(np.float32)


class Faulty(SplitDelay):
    """SplitDelay that misbehaves from hop ``after`` on (hops counted from reset())."""

    def __init__(self, fault, after=10, **kw):
        self.fault, self.after = fault, after
        super().__init__(hop=HOP, latency=0, **kw)

    def reset(self):
        super().reset()
        self.calls = 0
        self.nan_hops = 0

    def step(self, x):
        self.calls += 1
        y = super().step(x)
        if self.calls <= self.after:
            return y
        if self.fault == "raise":
            raise RuntimeError("model fell over")
        if self.fault == "nan":
            if self.calls % 3:
                return y
            self.nan_hops += 1
            return np.full_like(y, np.nan)
        if self.fault == "inf_some":
            y[0, 0, :5] = np.inf
            self.nan_hops += 1
            return y
        if self.fault == "short":
            return y[..., :-1]
        if self.fault == "transposed":
            return np.ascontiguousarray(y.transpose(1, 0, 2)[:, :, :HOP // 2])
        if self.fault == "none":
            return None
        if self.fault == "list":
            return y.tolist()
        raise AssertionError(self.fault)


def _run_inline(engine, x):
    """push / run_pending / pull_into block by block; returns (mix, stems, used_model list)."""
    c, total = x.shape
    lat = engine.latency_samples
    n_out = total + lat
    n_blocks = -(-n_out // BLOCK)
    xp = np.zeros((c, n_blocks * BLOCK), np.float32)
    xp[:, :total] = x
    mix = np.zeros_like(xp)
    stems = np.zeros((len(engine.sources), c, xp.shape[1]), np.float32)
    used = []
    for k in range(n_blocks):
        a = k * BLOCK
        engine.push(np.ascontiguousarray(xp[:, a:a + BLOCK]))
        engine.run_pending()
        used.append(engine.pull_into(mix[:, a:a + BLOCK], stems[:, :, a:a + BLOCK]))
    return mix, stems, used


def _delayed(x, lat, n):
    out = np.zeros((x.shape[0], n), np.float32)
    m = min(n - lat, x.shape[1])
    out[:, lat:lat + m] = x[:, :m]
    return out


def _assert_flows_and_is_click_free(mix, x, lat):
    want = _delayed(x, lat, mix.shape[1])
    assert np.isfinite(mix).all()
    np.testing.assert_allclose(mix, want, atol=0.02)  # the dry path is the delayed input
    jump = np.abs(np.diff(mix, axis=1)).max()
    assert jump <= 1.5 * np.abs(np.diff(x, axis=1)).max() + 1e-6


@pytest.mark.parametrize("fault", ["raise", "short", "transposed", "none", "list"])
def test_failing_separator_falls_back_to_dry_and_reports_once(fault):
    sep = Faulty(fault, after=10)
    engine = Engine(sep, block_size=BLOCK)
    x = _smooth()
    mix, stems, used = _run_inline(engine, x)
    st = engine.stats()
    assert st.worker_error is not None
    if fault == "raise":
        assert st.worker_error == "RuntimeError: model fell over"
    else:
        assert "shape" in st.worker_error and "expected [2, 2, 64]" in st.worker_error
    assert sep.calls == 11  # reported once: the separator is never called again
    assert st.hops_processed == 10
    assert not all(used) and not any(used[-5:])
    _assert_flows_and_is_click_free(mix, x, engine.latency_samples)
    # stems fade to silence once the fallback starts (spliced: ~2 ms decay, no click)
    first_dry = used.index(False) * BLOCK
    np.testing.assert_allclose(stems[:, :, first_dry + 8 * BLOCK:], 0.0, atol=1e-6)
    assert np.abs(np.diff(stems, axis=-1)).max() < 0.02


def test_stall_hook_raising_is_a_worker_error():
    sep = Faulty("raise", after=10**9)
    engine = Engine(sep, block_size=BLOCK)
    calls = []

    def hook(_engine):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("injected")

    engine.stall_hook = hook
    mix, _, _ = _run_inline(engine, _smooth())
    assert engine.stats().worker_error == "OSError: injected"
    assert len(calls) == 5 and sep.calls == 4
    _assert_flows_and_is_click_free(mix, _smooth(), engine.latency_samples)


@pytest.mark.parametrize("fault", ["nan", "inf_some"])
def test_nonfinite_separator_output_is_zeroed_and_counted(fault):
    sep = Faulty(fault, after=4)
    engine = Engine(sep, block_size=BLOCK)
    mix, stems, used = _run_inline(engine, _smooth())
    st = engine.stats()
    assert st.worker_error is None and all(used)
    per_hop = 2 * 2 * HOP if fault == "nan" else 5
    assert sep.nan_hops > 0 and st.nonfinite_samples == sep.nan_hops * per_hop
    assert np.isfinite(mix).all() and np.isfinite(stems).all()


def test_stalled_worker_plays_dry_then_recovers():
    """The worker blocks inside stall_hook until released; the audio side goes on."""
    sep = SplitDelay(hop=HOP, latency=0)
    engine = Engine(sep, block_size=BLOCK)
    lat = engine.latency_samples  # hop + block: pulling block k needs hops 1 .. 4k - 1
    stalled = range(10, 30)  # blocks pulled while the worker is stuck
    stall_at = 4 * (stalled.start - 1) + 1  # a hop no block before the stall needs
    entered, release = threading.Event(), threading.Event()
    calls = []

    def hook(_engine):
        calls.append(1)
        if len(calls) == stall_at:
            entered.set()
            release.wait(60)

    engine.stall_hook = hook
    x = _smooth(1.0)
    n_blocks = x.shape[1] // BLOCK
    mix = np.zeros((2, n_blocks * BLOCK), np.float32)
    stems = np.zeros((2, 2, n_blocks * BLOCK), np.float32)
    used = []
    engine.start()
    try:
        for k in range(n_blocks):
            a = k * BLOCK
            engine.push(np.ascontiguousarray(x[:, a:a + BLOCK]))
            if k == stalled.start:
                assert entered.wait(60), "the worker never reached the hook"
            if k == stalled.stop:
                release.set()
            if k in stalled:  # as an audio callback: no waiting
                used.append(engine.pull_into(mix[:, a:a + BLOCK], stems[:, :, a:a + BLOCK]))
            else:  # give the worker time (an upper bound, not a measurement)
                misses = engine.deadline_misses
                mix[:, a:a + BLOCK], stems[:, :, a:a + BLOCK] = engine.pull(BLOCK, wait_s=20.0)
                used.append(engine.deadline_misses == misses)
    finally:
        release.set()
        engine.stop()
    st = engine.stats()
    assert st.worker_error is None
    assert all(used[:stalled.start]), used
    assert not any(used[k] for k in stalled), used
    assert st.deadline_misses >= len(stalled) and st.hops_skipped > 0
    quiet = stems[:, :, (stalled.start + 8) * BLOCK:stalled.stop * BLOCK]
    np.testing.assert_allclose(quiet, 0.0, atol=1e-6)  # stems faded out during the stall
    assert all(used[-4:]), used  # the model is back
    assert np.abs(stems[:, :, -4 * BLOCK:]).max() > 0.1
    _assert_flows_and_is_click_free(mix, x, lat)


def test_separate_file_reports_a_model_that_fails_mid_file(tmp_path):
    from livestems.stream.errors import LivestemsError
    from livestems.stream.apps.separate import separate_file

    sf.write(tmp_path / "s.wav", _smooth(0.5).T, RATE, subtype="FLOAT")
    sep = Faulty("raise", after=10)
    with pytest.raises(LivestemsError, match="model fell over"):
        separate_file(tmp_path / "s.wav", tmp_path / "out", sep)
    assert not (tmp_path / "out" / "s").exists()


# ----------------------------------------------------------------------------------------------
# disk full while `separate` writes


def _fsize_limit(limit_bytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def _separate(*args, limit_bytes=None):
    return subprocess.run([sys.executable, "-m", "livestems.stream", "separate", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=None if limit_bytes is None else _fsize_limit(limit_bytes))


def test_full_disk_is_a_clear_error_and_leaves_old_output_intact(tmp_path):
    x = _smooth(0.5)
    song, other = tmp_path / "song.wav", tmp_path / "other.wav"
    sf.write(song, x.T, RATE, subtype="FLOAT")
    sf.write(other, x.T, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    proc = _separate(song, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    before = {p.name: p.read_bytes() for p in (out / "song").iterdir()}
    # each stem is ~176 kB of 32-bit float; the process may not write a file beyond 64 kB
    proc = _separate(song, other, "-o", out, "-q", "--force", limit_bytes=64 * 1024)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 3, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2 and all("cannot write output" in e for e in errors), proc.stderr
    assert "free space" in proc.stderr
    assert {p.name: p.read_bytes() for p in (out / "song").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["song"]  # no other/, no temp folders
