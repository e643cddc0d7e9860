"""Key shift (`livestems karaoke --key`): pitch, published latency, clicks, cost; and the CLI on
a real JACK server through PortAudio."""

import subprocess
import sys
import time

import numpy as np
import pytest

from livestems.dsp.pitch import (granular_shift, hann_grain_window, max_step_bound,
                                 semitones_to_ratio, shifter_geometry)
from livestems.model.nets.protocol import stream_offline
from livestems.model.nets.registry import load_separator
from livestems.stream.core.engine import Engine
from livestems.dsp.pitch import KeyShiftedSeparator

SR = 44100


def _peak_hz(y, sr):
    """Spectral peak of ``y`` in Hz: Hann window, 8x zero padding, parabolic interpolation."""
    n = len(y)
    spec = np.abs(np.fft.rfft(y * np.hanning(n), 8 * n))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-30)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / (8 * n)


class _Shifter:
    """The bare kernel on one row, with its state (what KeyShiftedSeparator runs per block)."""

    def __init__(self, grain, ratio):
        self.window = hann_grain_window(grain)
        self.center, self.search, hist_len = shifter_geometry(grain)
        self.hist = np.zeros((1, hist_len), np.float32)
        self.guide = np.zeros(hist_len, np.float32)
        self.pos = np.zeros(1, np.int64)
        self.ratio = np.full(2, ratio)
        self.offset = np.zeros(2, np.int64)
        self.target = np.zeros(grain // 8)
        self.index = np.zeros(grain // 8, np.int64)

    def run(self, x, ratio):
        out = np.empty_like(x)
        granular_shift(x, out, self.hist, self.guide, self.pos, self.ratio, self.offset, ratio,
                       self.window, self.center, self.search, self.target, self.index)
        return out


@pytest.mark.parametrize("freq_hz", [110.0, 440.0, 1234.5])
@pytest.mark.parametrize("semitones", [-12, -5, -1, 2, 7, 12])
def test_sine_comes_out_at_the_shifted_frequency(freq_hz, semitones):
    """A sine at f leaves at f * 2^(k/12), within 1% (measured: within 0.05%), in blocks of 256."""
    r = semitones_to_ratio(semitones)
    x = (0.5 * np.sin(2 * np.pi * freq_hz * np.arange(SR) / SR)).astype(np.float32)[None]
    sh = _Shifter(1764, r)
    y = np.concatenate([sh.run(np.ascontiguousarray(x[:, i:i + 256]), r)
                        for i in range(0, x.shape[1], 256)], axis=1)
    got = _peak_hz(y[0, SR // 4:], SR)
    assert abs(got / (freq_hz * r) - 1) < 0.01, (got, freq_hz * r)
    # one line, not a comb of grain-rate lines: the level is kept
    assert 0.9 < y[0, SR // 4:].std() / x[0].std() < 1.1


def _through_engine(sep, x, block=256):
    eng = Engine(sep, block_size=block)
    lat = eng.latency_samples
    n = x.shape[1]
    mix = np.zeros((2, n), np.float32)
    stems = np.zeros((len(sep.sources), 2, n), np.float32)
    for i in range(0, n, block):
        eng.push(np.ascontiguousarray(x[:, i:i + block]))
        eng.run_pending()
        eng.pull_into(mix[:, i:i + block], stems[:, :, i:i + block])
    assert eng.deadline_misses == 0
    return lat, mix, stems


@pytest.mark.parametrize("semitones", [0, 2, -3, 12])
def test_published_latency_includes_the_shifter_and_an_impulse_lands_there(semitones):
    """The engine publishes model + hop + block + shifter delay; an impulse (L only, so
    `center` keeps it in the accompaniment) comes out there: exactly at key 0 (the shifter is
    then a delay), and at other keys within the grain offset + smear bound of dsp.pitch."""
    base = Engine(load_separator("center"), block_size=256).latency_samples
    sep = KeyShiftedSeparator(load_separator("center"), semitones)
    lat, mix, stems = _through_engine(sep, np.zeros((2, 1), np.float32))
    assert lat == base + sep.delay_samples == base + 1325
    x = np.zeros((2, 30000), np.float32)
    x[0, 9001] = 1.0
    lat, mix, stems = _through_engine(KeyShiftedSeparator(load_separator("center"), semitones), x)
    y = stems[1, 0]  # accompaniment L
    peak = int(np.argmax(np.abs(y)))
    r = semitones_to_ratio(semitones)
    half = sep.grain_samples // 2
    tol = sep.search_samples + half * abs(r - 1) + 2
    print(f"key {semitones:+d}: peak at {peak - 9001} samples, published {lat}, "
          f"bound +/-{tol:.0f}")
    if semitones == 0:
        assert peak == 9001 + lat and abs(y[peak] - 1.0) < 1e-3
    else:
        assert abs(peak - (9001 + lat)) <= tol
    # nothing arrives before the earliest the bound allows (causal, nothing early)
    assert np.abs(y[:int(9001 + lat - tol)]).max() < 1e-3


def test_key_changes_make_no_click():
    """A 110 Hz sine while the key jumps between -12 and +12 every 37 ms: the largest sample
    step stays under dsp.pitch.max_step_bound (0.018 at amplitude 0.5, against up to 1.0 for a
    read position that jumped), and the pitch follows the last key set."""
    amp, f = 0.5, 110.0
    n = SR * 2
    x = (amp * np.sin(2 * np.pi * f * np.arange(n) / SR)).astype(np.float32)[None]
    sh = _Shifter(1764, 1.0)
    rng = np.random.default_rng(3)
    keys = rng.choice([-12, -7, -1, 0, 3, 5, 12], size=n // 1632 + 1)
    keys[-10:] = 5  # the last 10 changes all ask for +5: steady state at the end
    out = []
    for i in range(0, n, 256):
        k = keys[i // 1632]
        out.append(sh.run(np.ascontiguousarray(x[:, i:i + 256]), semitones_to_ratio(k)))
    y = np.concatenate(out, axis=1)[0]
    bound = max_step_bound(amp, f, 2.0, 1764, SR)
    step = float(np.abs(np.diff(y)).max())
    print(f"largest step {step:.4f}, bound {bound:.4f}")
    assert step <= bound
    tail = y[-6000:]
    assert abs(_peak_hz(tail, SR) / (f * semitones_to_ratio(5)) - 1) < 0.01


def test_set_semitones_validates_and_stream_equals_offline():
    with pytest.raises(ValueError, match=r"-12\.\.\+12 semitones, got \+13"):
        KeyShiftedSeparator(load_separator("center"), 13)
    with pytest.raises(ValueError, match="unknown stem 'drums'"):
        KeyShiftedSeparator(load_separator("center"), 2, shift_sources=["drums"])

    class Linear:  # a separator whose streaming output equals its offline output exactly
        sample_rate, channels, sources, hop, latency_samples = 44100, 2, ("vocals", "acc"), 256, 300

        def reset(self):
            self.buf = np.zeros((2, 300), np.float32)

        def step(self, x):
            z = np.concatenate([self.buf, x], 1)
            self.buf = z[:, 256:]
            return np.stack([0.25 * z[:, :256], 0.75 * z[:, :256]])

        def forward(self, x):
            return np.stack([0.25 * x, 0.75 * x], 1)

    x = (np.random.default_rng(0).standard_normal((2, 20000)) * 0.1).astype(np.float32)
    for shift in (None, ["acc"]):
        sep = KeyShiftedSeparator(Linear(), 3, shift_sources=shift)
        np.testing.assert_allclose(stream_offline(sep, x), sep.forward(x[None])[0], atol=1e-6)


def test_shifter_cost_per_hop():
    """The shifter's share of the worker's hop (center: 2 stems x 2 channels), 256 samples."""
    sep = KeyShiftedSeparator(load_separator("center"), 2)
    y = (np.random.default_rng(0).standard_normal((2, 2, 256)) * 0.1).astype(np.float32)
    times = []
    for _ in range(2000):
        t0 = time.perf_counter()
        sep._shift_block(y, sep._out, sep._xs, sep._ys, sep._xd, sep._yd)
        times.append(time.perf_counter() - t0)
    t = np.array(times[100:]) * 1e3
    hop_ms = 1000 * 256 / SR
    print(f"shifter per 256-sample hop: p50 {np.percentile(t, 50):.3f} ms, "
          f"p99 {np.percentile(t, 99):.3f} ms (hop {hop_ms:.2f} ms)")
    assert np.percentile(t, 50) < 0.25 * hop_ms


def test_karaoke_key_through_portaudio_publishes_the_latency_and_an_impulse_lands_there(
        jackd_44k):
    """`livestems karaoke --key 2` on JACK through PortAudio at 44.1 kHz: the banner's latency
    includes the shifter (model + hop + block + 1325), and an impulse played into
    PortAudio:in_0 comes out of PortAudio:out_0 at that latency plus PortAudio's own period."""
    from jackio import PlayRecord, wait_for_ports

    pa_in, pa_out = ["PortAudio:in_0", "PortAudio:in_1"], ["PortAudio:out_0", "PortAudio:out_1"]
    # --safety-ms 0: the margin chosen at start-up (at least 10 ms - one block) is tested in
    # tests/stream/core/test_engine_safety.py; here the shifter's share of the latency is
    proc = subprocess.Popen([sys.executable, "-m", "livestems.stream", "karaoke", "--no-view",
                             "--block", "256", "--key", "2", "--safety-ms", "0"],
                            env=jackd_44k.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = []
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("latency "):
                break
        lat = int(banner[-1].split()[1])
        assert any("key +2 semitones: the shifter adds 1325 samples" in b for b in banner), banner
        assert lat == 256 + 256 + 256 + 1325, lat
        wait_for_ports(jackd_44k.name, pa_in + pa_out)
        sig = np.zeros((2, 20000), np.float32)
        sig[0, 5000] = 1.0  # L only: `center` keeps it in the accompaniment
        for attempt in range(3):
            pr = PlayRecord(jackd_44k.name, sig, pa_out, 20000 + lat + 1024,
                            prefix=f"lskey{attempt}")
            try:
                for port in pa_in:
                    for src in pr.recorder.get_all_connections(port):
                        pr.recorder.disconnect(src, port)
                pr.connect_to(*pa_in)
                time.sleep(0.2)
                rec = pr.play()
            finally:
                pr.close()
            if pr.disturbed == 0:
                break
    finally:
        proc.send_signal(2)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    peak = int(np.argmax(np.abs(rec[0])))
    want = 5000 + lat + jackd_44k.period
    tol = 441 + 882 * (semitones_to_ratio(2) - 1) + 2
    print(f"impulse at {peak - 5000} samples; published {lat} + PortAudio's {jackd_44k.period}")
    assert abs(peak - want) <= tol
    assert np.abs(rec[0, :int(want - tol)]).max() < 1e-3


def test_karaoke_help_explains_the_trade_offs():
    r = subprocess.run([sys.executable, "-m", "livestems.stream", "karaoke", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    for words in ("--key", "adds", "latency", "artefacts", "--mic", "one block"):
        assert words in text, words
