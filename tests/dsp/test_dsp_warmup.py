"""warmup() compiles every kernel the engine calls, so later calls never compile."""

import os
import subprocess
import sys

import numpy as np
import pytest

from livestems.dsp import kernels as K
from livestems.dsp.stft import StreamISTFT, StreamSTFT
from livestems.dsp.warmup import dispatchers, warmup
from livestems.dsp.windows import asymmetric_pair

# helpers inlined into the entry points; numba never dispatches to them from Python
INLINED = {
    "stft._push_samples",
    "stft._window_frame",
    "stft._ola_frame",
    "fft._cfft_bitreversed",
    "fft._radix2_stage",
    "fft._radix4_stage",
}


def engine_like_calls():
    """What the engine does at run time: odd block sizes, slices of bigger buffers, etc."""
    rng = np.random.default_rng(0)
    host = np.zeros(4096, np.float32)
    buf = np.zeros((2, 2048), np.float32)
    for n_fft, hop in ((4096, 1024), (1024, 256), (1536, 384)):
        a, s = asymmetric_pair(n_fft, hop, 2 * hop)
        stft = StreamSTFT(n_fft, hop, 2, a, pad_start=n_fft - hop, max_block=2048)
        istft = StreamISTFT(n_fft, hop, 2, a, s, max_frames=stft.max_frames)
        for n in (hop, 1, 2048, 300):
            buf[:, :n] = rng.standard_normal((2, n))
            istft.process(stft.process(buf[:, :n]))
        istft.process(np.zeros((2, 2, n_fft // 2 + 1), np.complex64))
    stems = np.zeros((4, 2, 1024), np.float32)
    out = np.zeros((2, 1024), np.float32)
    K.mix_stems(stems[:, :, :512], np.ones(4), np.zeros(4), K.smoothing_coeff(10, 48000), out[:, :512])
    K.mix_stems(stems, np.ones(4), np.zeros(4), 0.01, out)
    K.ramp_gain_inplace(out, K.db_to_gain(-6.0), K.db_to_gain(0), 0.01)
    K.peak_meter(out[:, :100], np.zeros(2), 1.0, 0.001)
    K.rms_meter(out, np.zeros(2), 0.01, 0.001)
    K.sanitize_inplace(out[:, :256])
    K.sanitize_inplace(host)
    K.deinterleave(host[:2048], buf[:, :1024])
    K.interleave(out, host[:2048])
    K.gain_to_db(0.5)


def test_warmup_covers_every_kernel_and_later_calls_compile_nothing():
    compiled = warmup()
    for name, count in compiled.items():
        if name not in INLINED:
            assert count >= 1, f"{name} was not compiled by warmup()"
    before = {name: len(d.signatures) for name, d in dispatchers().items()}
    engine_like_calls()
    after = {name: len(d.signatures) for name, d in dispatchers().items()}
    new = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert not new, f"compiled after warm-up (would stall the audio path): {new}"
    assert set(INLINED) <= set(compiled)


@pytest.mark.slow
def test_cache_makes_second_process_warmup_fast(tmp_path):
    """cache=True: a second process loads the machine code the first one compiled."""
    code = (
        "import time; t = time.perf_counter(); from livestems.dsp.warmup import warmup; "
        "warmup(); print(time.perf_counter() - t)"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # empty cache: the first run compiles

    def run():
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
        return float(out.stdout.strip())

    cold = run()
    warm = run()
    assert any(tmp_path.rglob("*.nbi")), "no numba cache index written"
    assert warm < cold / 3, f"cold {cold:.2f} s, warm {warm:.2f} s: the cache was not used"
