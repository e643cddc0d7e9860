"""The CPU step's fast hop (StreamingHybrid's `_FastHop`: channels-last layouts, every conv one
GEMM on packed weights) against the network's own hop (the generic trace), which
test_causal_streaming checks against the offline forward. Also: it is what the presets and
the trained checkpoint get, the switch that turns it off, and the fallbacks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from livestems.model.nets.hybrid import CausalHybridNet, StreamingHybrid
from livestems.model.nets.hybrid import streaming as streaming_mod
from livestems.model.nets.presets import PRESETS, build_preset, build_preset_net
from livestems.model.nets.protocol import stream_offline

SOURCES = ["drums", "bass", "other", "vocals"]
# (net arguments, hop_frames): every option the fast hop packs (look-ahead delays, local
# attention, 2 LSTM layers, dilated residual convs, no residual, no LSTM, no frequency
# embedding, decoder context 2, symmetric windows) and 1, 2 and 3 frames per step. Channels
# and groups leave several values per norm group: a group of one value normalises to
# rounding noise (x - mean) scaled by 1/sqrt(eps), where any two summation orders disagree.
VARIANTS = {
    "dilated-3frames": (dict(channels=8, n_fft=256, stft_hop=64, synthesis_len=128,
                             residual_depth=2, norm_groups=2, residual_compress=2), 3),
    "la2-attn-2lstm": (dict(channels=8, n_fft=256, stft_hop=64, synthesis_len=128,
                            lookahead=2, attn_frames=5, lstm_layers=2, norm_starts=1,
                            norm_groups=2, residual_compress=2), 2),
    "sym-bare": (dict(channels=8, n_fft=256, stft_hop=64, synthesis_len=256, freq_emb=0,
                      residual_depth=0, lstm_layers=0, attn_frames=3, context=2,
                      norm_groups=2), 1),
}
CHECKPOINT = Path(__file__).resolve().parents[3] / "model/weights/rt-tiny.json"  # trained


@pytest.fixture(autouse=True)
def _one_thread():
    """The step runs on one thread (as the engine's worker does); with two, OpenMP's small
    parallel regions make every path here tens of times slower on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(name):
    """(fast, reference) separators over the same network."""
    if name in PRESETS:
        net, frames = build_preset_net(name), PRESETS[name].hop_frames
    else:
        torch.manual_seed(0)
        args, frames = VARIANTS[name]
        net = CausalHybridNet(SOURCES, **args)
    return (StreamingHybrid(net, hop_frames=frames, fast=True),
            StreamingHybrid(net, hop_frames=frames, fast=False))


def _steps(sep, x):
    return np.concatenate([sep.step(np.ascontiguousarray(x[:, k:k + sep.hop])).copy()
                           for k in range(0, x.shape[1] - sep.hop + 1, sep.hop)], axis=-1)


def _signal(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100
    return (0.1 * rng.standard_normal((2, n)) + 0.3 * np.sin(2 * np.pi * 220 * t)).astype(
        np.float32)


@pytest.mark.parametrize("name", ["rt-tiny", "rt-small", *VARIANTS])
def test_fast_hop_equals_network_hop(name):
    fast, ref = _pair(name)
    assert fast._fast is not None and fast.fast_error is None, fast.fast_error
    assert ref._fast is None and ref._hop_fn is not None
    x = _signal(60 * fast.hop)
    got, want = _steps(fast, x), _steps(ref, x)
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, atol=1e-5 if name in PRESETS else 1e-4, rtol=0)
    # state: same names, reset restarts the stream
    assert fast.state_names() == ref.state_names()
    fast.reset()
    np.testing.assert_array_equal(_steps(fast, x[:, :4 * fast.hop]), got[..., :4 * fast.hop])


def test_trained_checkpoint_fast_equals_reference():
    from livestems.model.nets.checkpoint import load_model
    from livestems.model.evaluation.demo_song import make_demo_song
    from livestems.model.nets.registry import load_separator

    sep = load_separator(str(CHECKPOINT))
    assert sep._fast is not None, sep.fast_error
    ref = StreamingHybrid(load_model(CHECKPOINT), hop_frames=sep.hop_frames, fast=False)
    x = np.ascontiguousarray(make_demo_song(seconds=3, seed=1).mixture, dtype=np.float32)
    got, want = stream_offline(sep, x), stream_offline(ref, x)
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv("LIVESTEMS_FAST_HOP", "0")
    sep = build_preset("rt-tiny")
    assert sep._fast is None and sep._hop_fn is not None


def test_unsupported_network_falls_back_to_the_generic_trace(monkeypatch):
    def refuse(self, net, frames):
        raise streaming_mod._Unsupported("test")

    monkeypatch.setattr(streaming_mod._FastHop, "__init__", refuse)
    fast, ref = _pair("rt-tiny")
    assert fast._fast is None and "test" in fast.fast_error and fast._hop_fn is not None
    x = _signal(8 * fast.hop, 1)
    np.testing.assert_array_equal(_steps(fast, x), _steps(ref, x))


def test_self_check_rejects_a_wrong_hop(monkeypatch):
    # weights packed in the wrong column order: shapes fit, results do not
    monkeypatch.setattr(streaming_mod._FastHop, "_taps_last",
                        staticmethod(lambda w: w.detach().reshape(w.shape[0], -1).clone()))
    sep = build_preset("rt-tiny")
    assert sep._fast is None and sep.fast_error.startswith("self-check")
