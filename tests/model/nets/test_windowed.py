"""WindowedHybrid: an offline net over a sliding window; the Separator contract holds."""

import numpy as np
import pytest
import torch

from livestems.model.nets.hybrid import HDemucsNet, WindowedHybrid
from livestems.model.nets.protocol import stream_offline

SOURCES = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def sep():
    torch.manual_seed(0)
    net = HDemucsNet(SOURCES, channels=8, nfft=256, depth=5, dconv_lstm=3, dconv_attn=3,
                     norm_starts=3)
    return WindowedHybrid(net, hop=512, context=2048, lookahead=1024)


def _x(n, seed=0):
    return (np.random.default_rng(seed).standard_normal((2, n)) * 0.1).astype(np.float32)


def test_latency_is_lookahead_plus_hop(sep):
    assert sep.latency_samples == 1024 + 512
    assert sep.window == 2048 + 2 * 512 + 1024


@pytest.mark.parametrize("length", [1, 511, 7000])
def test_streaming_equals_offline(sep, length):
    x = _x(length, length)
    np.testing.assert_allclose(stream_offline(sep, x), sep.forward(x[None])[0], atol=1e-4)


def test_causal_by_perturbation(sep):
    lat, hop = sep.latency_samples, sep.hop
    x = _x(12 * hop)
    base = stream_offline(sep, x)
    for t in (7 * hop - lat - 1, 7 * hop - lat + 100):
        last_seen = t + lat + (hop - 1 - (t + lat) % hop)
        x2 = x.copy()
        x2[:, last_seen + 1:] = _x(x.shape[1] - last_seen - 1, 5)
        pert = stream_offline(sep, x2)
        np.testing.assert_array_equal(pert[..., :t + 1], base[..., :t + 1])
        assert np.abs(pert[..., last_seen + 1:] - base[..., last_seen + 1:]).max() > 0


def test_crossfade_sums_to_one(sep):
    np.testing.assert_allclose(sep.fade[:sep.hop] + sep.fade[sep.hop:], 1.0, atol=1e-6)


def test_bad_input(sep):
    with pytest.raises(ValueError, match=r"\[channels=2, hop=512\], got \[2, 100\]"):
        sep.step(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="hop must be a positive integer"):
        WindowedHybrid(sep.module, hop=0)
