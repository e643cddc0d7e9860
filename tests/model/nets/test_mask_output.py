"""Mask output and mixture consistency (CausalHybridNet output="mask", consistency=True): the
stems cannot add to the mix what is not in it, on every path users run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livestems.model.nets.hybrid.causal import CausalHybridNet
from livestems.model.nets.hybrid.streaming import StreamingHybrid
from livestems.model.nets.presets import build_preset, build_preset_net

SOURCES = ["drums", "bass", "other", "vocals"]


def music(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(44100 * seconds)) / 44100
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal(t.size)
    return np.stack([x, 0.7 * x[::-1]]).astype(np.float32)


def test_rt_small_stems_add_up_to_the_input_offline_and_live():
    sep = build_preset("rt-small", seed=3)
    assert sep.fast_error is None  # the CPU fast hop covers masks and the projection
    x = music()
    off = sep.forward(x[None])[0]
    assert np.abs(off.sum(0) - x).max() < 1e-5
    hop, lat = sep.hop, sep.latency_samples
    live = np.concatenate([sep.step(np.ascontiguousarray(x[:, i:i + hop])).copy()
                           for i in range(0, x.shape[1] - hop + 1, hop)], -1)
    n = live.shape[-1]
    # the step path's stems add up to the input, latency samples later
    assert np.abs(live.sum(0)[:, lat:] - x[:, :n - lat]).max() < 1e-5
    assert np.abs(live[..., lat:] - off[..., :n - lat]).max() < 1e-4  # == offline
    # karaoke (all but vocals) plus the vocals is the song, whatever the weights
    karaoke = off[:3].sum(0)
    assert np.abs(karaoke + off[3] - x).max() < 1e-5


def test_mask_shares_split_the_mixture_spectrum():
    torch.manual_seed(0)
    net = CausalHybridNet(SOURCES, channels=4, residual_depth=0, output="mask", lookahead=1)
    state = net.initial_state(1)
    spec = torch.randn(1, 4, 512, 3)
    logits = 5 * torch.randn(1, 16, 512, 3)
    out = net.head(spec, logits, state)
    z = torch.view_as_complex(out.view(1, 4, 2, 2, 512, 3).permute(0, 1, 2, 4, 5, 3)
                              .contiguous())
    mix = torch.view_as_complex(spec.view(1, 2, 2, 512, 3).permute(0, 1, 3, 4, 2).contiguous())
    # look-ahead 1: the output frames are the input's, one frame later (zeros first)
    assert torch.allclose(z.sum(1)[..., 1:], mix[..., :2], atol=1e-5)
    assert torch.all(z[..., 0] == 0)
    assert torch.all(z.abs()[..., 1:] <= mix.abs()[:, None, ..., :2] + 1e-6)  # shares in [0, 1]


def test_direct_output_without_projection_is_what_rt_tiny_ships():
    net = build_preset_net("rt-tiny")
    assert net.output == "cac" and not net.consistency
    assert net.mask_delay is None and net.mix_delay is None
    with pytest.raises(ValueError, match="output must be one of cac, mask"):
        CausalHybridNet(SOURCES, output="masks")


def test_refined_masks_and_compressed_input_stream_as_they_compute_offline():
    """rt-small's per-bin refiner and power-law input: the CPU fast hop covers them, and live
    output is the offline computation, with weights that are not the refiner's zero start."""
    net = build_preset_net("rt-small", seed=5).eval()
    assert net.spec_power == 0.3 and net.refiner is not None
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.refiner.parameters():
            p.normal_(std=0.5)
    sep = StreamingHybrid(net, hop_frames=2)
    assert sep.fast_error is None
    x = music(seed=2)
    with torch.no_grad():
        off = net(torch.from_numpy(x)[None])[0].numpy()
    hop, lat = sep.hop, sep.latency_samples
    live = np.concatenate([sep.step(np.ascontiguousarray(x[:, i:i + hop])).copy()
                           for i in range(0, x.shape[1] - hop + 1, hop)], -1)
    n = live.shape[-1]
    assert np.abs(live[..., lat:] - off[..., :n - lat]).max() < 1e-4
    # the refiner changes the split (it is not dead weight)...
    with torch.no_grad():
        for p in net.refiner[2].parameters():
            p.zero_()
        plain = net(torch.from_numpy(x)[None])[0].numpy()
    assert np.abs(plain - off).max() > 1e-3
    # ...and the stems still add up to the input
    assert np.abs(off.sum(0) - x).max() < 1e-5


def test_power_law_input_compresses_level_range_and_keeps_phase():
    from livestems.model.nets.hybrid.causal import compress_cac

    z = torch.tensor([[3.0, 4.0], [0.003, 0.004]]).reshape(1, 4, 1, 1)  # |z| 5 and 0.005
    out = compress_cac(z, 0.5, dim=1).reshape(2, 2)
    mags = out.norm(dim=1)
    assert torch.allclose(mags, torch.tensor([5 ** 0.5, 0.005 ** 0.5]), rtol=1e-3)
    assert torch.allclose(out / mags[:, None], torch.tensor([[0.6, 0.8], [0.6, 0.8]]))
    assert compress_cac(z, 1.0, dim=1) is z


def test_bad_compression_and_refiner_settings_say_what_is_expected():
    with pytest.raises(ValueError, match=r"spec_power must be in \(0, 1\]"):
        CausalHybridNet(SOURCES, spec_power=1.5)
    with pytest.raises(ValueError, match="refine needs output='mask'"):
        CausalHybridNet(SOURCES, refine=8)
