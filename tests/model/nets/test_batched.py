"""The batched offline engine (model/nets/hybrid/batched.py) computes what the network's own
:meth:`CausalHybridNet.stream` computes, chunk by chunk with carried state, up to float32
rounding; where it does not cover a network the offline path falls back to ``stream``."""

import math

import numpy as np
import pytest
import torch

from livestems.model.nets.hybrid.batched import BatchedNet, Unsupported
from livestems.model.nets.hybrid.causal import CausalHybridNet

SOURCES = ["drums", "bass", "other", "vocals"]


def _diff_db(a, b):
    return 10 * np.log10(np.sum((a - b) ** 2) / np.sum(b ** 2) + 1e-30)


def _stream_chunks(net, x, frames):
    """The reference: ``net.stream`` over chunks of ``frames`` hops, state carried."""
    hop = net.stft_hop
    out = []
    with torch.inference_mode():
        state = net.initial_state(1)
        for a in range(0, x.shape[1], frames * hop):
            out.append(net.stream(torch.from_numpy(x[None, :, a:a + frames * hop]), state)[0])
    return torch.cat(out, -1).numpy()


def _batched_chunks(engine, x, frames):
    hop = engine.hop
    return np.concatenate([engine.run(x[:, a:a + frames * hop])
                           for a in range(0, x.shape[1], frames * hop)], axis=-1)


def _signal(net, hops, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(hops * net.stft_hop) / 44100.0
    x = 0.2 * rng.standard_normal((2, t.size)) + 0.3 * np.sin(2 * np.pi * 220 * t)
    return x.astype(np.float32)


@pytest.mark.parametrize("model,frames", [("rt-tiny", 32), ("rt-tiny", 5), ("rt-small", 16)])
def test_batched_equals_stream(model, frames):
    from livestems.model.nets.registry import load_separator

    net = load_separator(model).module
    x = _signal(net, 3 * frames + 2)  # the last chunk is short
    engine = BatchedNet(net, frames=frames)
    got = _batched_chunks(engine, x, frames)
    ref = _stream_chunks(net, x, frames)
    db = _diff_db(got, ref)
    print(f"{model} frames {frames}: batched - stream = {db:.1f} dB")
    assert got.shape == ref.shape
    assert db < -110.0, db
    engine.reset()  # the zero state again: the same result
    np.testing.assert_array_equal(_batched_chunks(engine, x, frames), got)


@pytest.mark.parametrize("model", ["rt-tiny", "rt-small"])
def test_the_engine_writes_into_the_callers_buffer(model):
    """``run(x, out=buf, at=a)`` puts the stems in ``buf[..., a:a + n]`` (what the offline path
    uses to skip a copy), equal to the returned arrays, and leaves the rest alone."""
    from livestems.model.nets.registry import load_separator

    net = load_separator(model).module
    frames = 8
    hop = net.stft_hop
    x = _signal(net, 2 * frames + 3)  # the last chunk is short
    engine = BatchedNet(net, frames=frames)
    want = _batched_chunks(engine, x, frames)
    engine.reset()
    pad = 5
    buf = np.full((4, 2, x.shape[1] + 2 * pad), 7.0, np.float32)
    for a in range(0, x.shape[1], frames * hop):
        got = engine.run(x[:, a:a + frames * hop], out=buf, at=pad + a)
        np.testing.assert_array_equal(got, want[..., a:a + frames * hop])
        assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[..., pad:pad + x.shape[1]], want)
    assert np.all(buf[..., :pad] == 7.0) and np.all(buf[..., pad + x.shape[1]:] == 7.0)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        engine.run(x[:, :frames * hop], out=buf, at=buf.shape[2] - 1)  # runs past the end
    with pytest.raises(ValueError, match="C-contiguous float32"):
        engine.run(x[:, :frames * hop], out=buf[..., ::2], at=0)


@pytest.mark.parametrize("kw", [
    dict(channels=8, residual_depth=2, norm_starts=0, lstm_layers=2, attn_frames=4),
    dict(channels=8, residual_depth=1, lookahead=2, output="mask", consistency=True,
         context=2, freq_emb=0, lstm_layers=0),
], ids=["deep-residual-attention", "lookahead-mask-context2"])
def test_batched_equals_stream_for_other_geometries(kw):
    torch.manual_seed(0)
    net = CausalHybridNet(SOURCES, **kw).eval()
    with torch.no_grad():  # LayerScale at 1e-3 would hide the residual branch's errors
        for name, p in net.named_parameters():
            if ".gains." in name:
                p.fill_(0.3)
    frames = 12
    x = _signal(net, 3 * frames + 5)
    got = _batched_chunks(BatchedNet(net, frames=frames), x, frames)
    ref = _stream_chunks(net, x, frames)
    db = _diff_db(got, ref)
    print(f"{kw}: batched - stream = {db:.1f} dB")
    # random weights with norms everywhere amplify rounding: the torch path against itself,
    # chunked against hop by hop, differs by -99 to -118 dB on such networks
    assert db < -90.0, db


def test_layers_it_does_not_cover_fall_back_to_the_network():
    from livestems.model.nets.registry import load_separator
    from livestems.stream.apps.offline import batched_engine, separate_array

    sep = load_separator("rt-base")  # 1024 channels at the bottleneck: a GPU network
    with pytest.raises(Unsupported):
        BatchedNet(sep.module, frames=8)
    assert batched_engine(sep) is None
    x = _signal(sep.module, 12)
    got = separate_array(sep, x, chunk_hops=4)
    ref = separate_array(sep, x, chunk_hops=4, engine="torch")
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError, match="does not cover"):
        separate_array(sep, x, engine="batched")


def test_the_engine_follows_weight_changes():
    from livestems.model.nets.registry import load_separator
    from livestems.stream.apps.offline import batched_engine, separate_array

    sep = load_separator("rt-tiny")
    x = _signal(sep.module, 40)
    before = separate_array(sep, x, chunk_hops=16)
    eng = batched_engine(sep, 16)
    assert batched_engine(sep, 16) is eng  # kept on the separator
    with torch.no_grad():
        sep.module.time_decoder[-1].upconv.conv.bias.add_(0.01)
    assert batched_engine(sep, 16) is not eng  # rebuilt: its weights were a snapshot
    after = separate_array(sep, x, chunk_hops=16)
    ref = separate_array(sep, x, chunk_hops=16, engine="torch")
    assert np.abs(after - before).max() > 1e-3
    assert _diff_db(after, ref) < -110.0


def test_kernel_gelu_and_sigmoid_match_the_exact_functions():
    from livestems.model.nets.hybrid import batched_kernels as K

    v = np.linspace(-30.0, 30.0, 200_001)
    g = v.astype(np.float32)
    K.gelu_inplace(g)
    exact = 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))
    assert np.abs(g - exact).max() < 2e-6 * np.maximum(1.0, np.abs(v)).max()
    assert np.abs(g - exact)[np.abs(v) < 5].max() < 2e-6
    s = v.astype(np.float32)
    K.sigmoid_inplace(s)
    assert np.abs(s - 1.0 / (1.0 + np.exp(-v))).max() < 3e-7


def test_batched_equals_stream_with_the_mask_refiner():
    """rt-small's compressed spectrum input and per-bin mask refiner (its last layer starts at
    zero: random weights here, so that it changes the masks)."""
    from livestems.model.nets.registry import load_separator

    net = load_separator("rt-small").module
    assert net.spec_power != 1.0 and net.refiner is not None
    torch.manual_seed(3)
    with torch.no_grad():
        for p in net.refiner.parameters():
            p.normal_(0.0, 0.3)
    frames = 16
    x = _signal(net, 3 * frames + 3)
    got = _batched_chunks(BatchedNet(net, frames=frames), x, frames)
    ref = _stream_chunks(net, x, frames)
    db = _diff_db(got, ref)
    print(f"rt-small with a random refiner: batched - stream = {db:.1f} dB")
    assert db < -110.0, db


def test_blocks_warmed_up_by_warmup_frames_are_exact_and_fewer_frames_are_not():
    """Blocks that start from the zero state ``warmup_frames`` frames early equal one long
    run to float rounding; six frames fewer leave a visible error (on the rt-small geometry
    with its residual branches at a large gain, so that every path of the network carries
    weight). The bound is a longest path through the layers, no longer the sum of every
    layer's context (33 frames for rt-small where 18 do)."""
    from livestems.model.nets.hybrid.batched import BlockRunner, warmup_frames
    from livestems.model.nets.presets import build_preset_net

    net = build_preset_net("rt-small").eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".gains." in name:
                p.fill_(0.5)
            elif p.ndim > 1 and not p.abs().max():  # the zero-initialised output layer
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    hop, warm = net.stft_hop, warmup_frames(net)
    assert warm <= 18
    x = (np.random.default_rng(0).standard_normal((2, hop * 160)) * 0.3).astype(np.float32)
    one = BlockRunner(net, threads=1, block=1000, warm=0).run(x)

    def rel_err(w):
        got = BlockRunner(net, threads=1, block=40, warm=w).run(x)
        return float(np.abs(got - one).max() / np.abs(one).max())

    exact, short = rel_err(warm), rel_err(warm - 6)
    print(f"warm-up {warm} frames: max error {exact:.1e}; {warm - 6} frames: {short:.1e}")
    assert exact < 1e-6
    assert short > 1e-5


def test_gemms_run_on_the_calling_thread_and_the_blas_setting_is_restored(monkeypatch):
    """The engine's parallelism is one engine per thread or worker process; a BLAS thread
    pool under each would put twice as many busy threads as cores on the machine. While the
    engine runs, numpy's BLAS is held to one thread; afterwards the user's setting is back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from livestems.model.nets.hybrid import batched
    from livestems.model.nets.registry import load_separator

    def blas_threads():  # numpy's own BLAS (scipy's, also loaded in tests, is not the engine's)
        info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        mine = batched.numpy_blas_paths(info) or [i["filepath"] for i in info]
        return sorted({i["num_threads"] for i in info if i["filepath"] in mine})

    net = load_separator("rt-tiny").module
    engine = BatchedNet(net, frames=8)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        seen = []
        call = batched._Gemm.__call__

        def spy(self, *a, **k):
            seen.append(tuple(blas_threads()))
            return call(self, *a, **k)

        monkeypatch.setattr(batched._Gemm, "__call__", spy)
        engine.run(_signal(net, 8))
        after = blas_threads()
    assert before == [2], before  # (numpy's wheels bring OpenBLAS; 2 is settable anywhere)
    assert seen and set(seen) == {(1,)}, set(seen)
    assert after == before
