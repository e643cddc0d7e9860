"""The causal hybrid network: streaming == offline, causality, constant cost, presets, input
checks, trainability. Random weights throughout (the contract holds for any weights)."""

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livestems.model.nets.hybrid import CausalHybridNet, StreamingHybrid
from livestems.model.nets.presets import PRESETS, build_preset, build_preset_net
from livestems.model.nets.protocol import Separator, stream_offline

SOURCES = ["drums", "bass", "other", "vocals"]
# small variants covering every option: look-ahead, attention, 2 LSTM layers, symmetric windows
VARIANTS = {
    "mini": dict(channels=4, n_fft=256, stft_hop=64, synthesis_len=128, residual_depth=1),
    "mini-la2-attn": dict(channels=4, n_fft=256, stft_hop=64, synthesis_len=128, lookahead=2,
                          attn_frames=5, lstm_layers=2, norm_starts=1),
    "mini-sym": dict(channels=4, n_fft=256, stft_hop=64, synthesis_len=256, freq_emb=0,
                     residual_depth=0, lstm_layers=0, attn_frames=3),
}


def _net(name, seed=0):
    if name in PRESETS:
        return build_preset_net(name, seed=seed)
    torch.manual_seed(seed)
    return CausalHybridNet(SOURCES, **VARIANTS[name])


_seps = {}


def _sep(name, stft="dsp"):
    if (name, stft) not in _seps:
        if name in PRESETS:
            _seps[name, stft] = build_preset(name, stft=stft)
        else:
            _seps[name, stft] = StreamingHybrid(_net(name), stft=stft)
    return _seps[name, stft]


def _signal(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100
    x = 0.1 * rng.standard_normal((2, n)) + 0.3 * np.sin(2 * np.pi * 220 * t)
    return x.astype(np.float32)


ALL = list(PRESETS) + list(VARIANTS)


@pytest.mark.parametrize("name", ALL)
def test_declared_geometry(name):
    net = _net(name)
    sep = _sep(name)
    assert isinstance(sep, Separator)
    assert sep.latency_samples == net.istft_latency + net.lookahead * net.stft_hop
    if name in PRESETS:
        p = PRESETS[name]
        assert sum(q.numel() for q in net.parameters()) == p.params
        assert (sep.hop, sep.hop_frames, net.lookahead, sep.latency_samples) == (
            p.hop, p.hop_frames, p.lookahead_frames, p.latency_samples)


def test_rt_tiny_latency_budget():
    sep = _sep("rt-tiny")
    assert sep.latency_samples / 44100 <= 0.012


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=4, deadline=None, derandomize=True)
@given(length=st.integers(1, 6000), seed=st.integers(0, 2 ** 16))
def test_streaming_equals_offline(name, length, seed):
    """Separator step path (numba dsp STFT) vs offline forward (torch STFT), shifted."""
    sep = _sep(name)
    x = _signal(length, seed)
    want = sep.forward(x[None])[0]
    got = stream_offline(sep, x)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["rt-tiny", "mini-la2-attn", "mini-sym"])
@settings(max_examples=6, deadline=None, derandomize=True)
@given(data=st.data())
def test_random_block_partitions_equal_offline(name, data):
    """net.stream over a random partition into whole STFT hops == one offline forward."""
    net = _net(name)
    hop = net.stft_hop
    # at least one hop past the latency, else there is nothing to compare (the examples
    # hypothesis draws depend on the test's path: a move once drew 2 hops of a 3-hop latency)
    n_hops = data.draw(st.integers(net.latency_samples // hop + 1, 40))
    cuts = sorted(data.draw(st.sets(st.integers(1, n_hops - 1), max_size=12))) \
        if n_hops > 1 else []
    x = torch.from_numpy(_signal(n_hops * hop, n_hops))[None]
    with torch.no_grad():
        state = net.initial_state(1)
        parts = [net.stream(x[..., a * hop:b * hop], state)
                 for a, b in zip([0] + cuts, cuts + [n_hops])]
        got = torch.cat(parts, dim=-1)
        want = net(x)
    lat = net.latency_samples
    torch.testing.assert_close(got[..., lat:], want[..., :n_hops * hop - lat],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["rt-tiny", "mini"])
def test_torch_stft_step_path_equals_offline(name):
    """The GPU code path (torch STFT inside the hop), run on the CPU."""
    sep = _sep(name, stft="torch")
    x = _signal(5000, 1)
    np.testing.assert_allclose(stream_offline(sep, x), sep.forward(x[None])[0], atol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_causal_by_perturbation(name):
    """Aligned output up to t is bit-identical when input after t + latency changes, where
    within a hop the slack is up to hop - 1 samples (a hop is computed once it has fully
    arrived; see tests/model/nets/test_center.py). At hop boundaries the slack is zero."""
    sep = _sep(name)
    lat, hop = sep.latency_samples, sep.hop
    x = _signal(30 * hop, 3)
    base = stream_offline(sep, x)
    for t in (17 * hop - lat - 1, 17 * hop - lat + 5):  # hop boundary exactly; mid-hop
        last_seen = t + lat + (hop - 1 - (t + lat) % hop)
        x2 = x.copy()
        x2[:, last_seen + 1:] = _signal(x.shape[1] - last_seen - 1, 9)
        pert = stream_offline(sep, x2)
        np.testing.assert_array_equal(pert[..., :t + 1], base[..., :t + 1])
        assert np.abs(pert[..., last_seen + 1:] - base[..., last_seen + 1:]).max() > 1e-4


def _best_median(sep, x, blocks=6, per_block=25):
    """Smallest of several short-run medians of the step time: other processes on a shared
    machine only ever add time, so this tracks the step's own cost."""
    for _ in range(10):
        sep.step(x)
    medians = []
    for _ in range(blocks):
        ts = []
        for _ in range(per_block):
            t0 = time.perf_counter()
            sep.step(x)
            ts.append(time.perf_counter() - t0)
        medians.append(np.median(ts))
    return min(medians)


def _interleaved_ratio(old, young, x, rounds=6, per_round=25):
    """Per-hop time of an aged stream over that of a fresh one, measured step by step in
    alternation so that whatever else the machine does lands on both alike. Each round starts
    the young stream afresh; the smallest per-round ratio of medians is the steps' own cost
    ratio (other processes only ever add time, and they add it to both)."""
    ratios = []
    for _ in range(rounds):
        young.reset()
        for _ in range(10):
            young.step(x)
            old.step(x)
        t_old, t_young = [], []
        for _ in range(per_round):
            t0 = time.perf_counter()
            young.step(x)
            t1 = time.perf_counter()
            old.step(x)
            t2 = time.perf_counter()
            t_young.append(t1 - t0)
            t_old.append(t2 - t1)
        ratios.append(np.median(t_old) / np.median(t_young))
    return min(ratios), ratios


@pytest.mark.parametrize("name", ["rt-tiny", "rt-small"])
def test_constant_cost_and_state_size(name):
    """State size is fixed; per-hop time late in a stream equals the time at its start."""
    old, young = build_preset(name), build_preset(name)
    old.reset()
    names, nbytes = old.state_names(), old.state_nbytes()
    x = _signal(old.hop, 0)
    for _ in range(1500):  # ~17 s (rt-tiny) / 9 s (rt-small) of stream
        old.step(x)
    assert old.state_names() == names and old.state_nbytes() == nbytes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the engine streams; two threads on two cores only add noise
    try:
        best, ratios = _interleaved_ratio(old, young, x)
    finally:
        torch.set_num_threads(threads)
    assert best < 1.3, ratios


@pytest.mark.soak
def test_ten_minutes_of_stream_costs_the_same():
    sep = _sep("rt-tiny")
    sep.reset()
    x = _signal(sep.hop, 0)
    hops = int(600 * sep.sample_rate / sep.hop)
    times = np.empty(hops)
    for i in range(hops):
        t0 = time.perf_counter()
        sep.step(x)
        times[i] = time.perf_counter() - t0
    early, late = np.median(times[100:1100]), np.median(times[-1000:])
    assert late < 1.2 * early + 1e-4, (early, late)


def test_bad_step_input():
    sep = _sep("mini")
    with pytest.raises(ValueError, match=r"\[channels=2, hop=64\], got \[1, 64\]"):
        sep.step(np.zeros((1, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        sep.step(np.zeros((2, 64)))
    with pytest.raises(ValueError, match=r"forward\(\) expects \[batch, channels=2"):
        sep.forward(np.zeros((1, 3, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="stft_hop"):
        CausalHybridNet(SOURCES, n_fft=1024, stft_hop=32)
    with pytest.raises(TypeError, match="unknown argument"):
        CausalHybridNet(SOURCES, chanels=4)


def test_trainable_offline_forward():
    net = _net("mini-la2-attn")
    net.train()
    x = torch.from_numpy(_signal(2000, 4))[None].requires_grad_(False)
    y = net(x)
    assert y.shape == (1, 4, 2, 2000)
    loss = (y[:, 3] - x).abs().mean()
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["time_encoder.0.conv.conv.weight"].abs().sum() > 0
    assert grads["freq_encoder.0.conv.weight"].abs().sum() > 0
    assert grads["bottleneck.rnn.weight_hh_l1"].abs().sum() > 0
    sep = StreamingHybrid(net.eval(), jit=False)
    assert sep.forward_torch(x).shape == (1, 4, 2, 2000)


def test_rt_tiny_median_step_within_budget():
    """The budget is p99 <= 70 % of the hop on the 2-core machine (measured with
    tests/model/nets/step_timing.py, see docs/MODEL.md); on a shared CI box the test checks the
    step's own cost (best short-run median) against the same bound."""
    sep = _sep("rt-tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cost = _best_median(sep, _signal(sep.hop, 1))
    finally:
        torch.set_num_threads(threads)
    assert cost <= 0.7 * sep.hop / sep.sample_rate, cost
