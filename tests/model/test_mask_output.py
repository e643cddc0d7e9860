"""Mask output and mixture consistency (CausalHybridNet output="mask", consistency=True): the
stems cannot add to the mix what is not in it, on every path users run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livestems.model.hybrid.causal import CausalHybridNet
from livestems.model.hybrid.streaming import StreamingHybrid
from livestems.model.presets import build_preset, build_preset_net

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
