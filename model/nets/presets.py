"""Presets of the causal hybrid network, sized to compute budgets, and how to build them.

Each preset is a set of :class:`~livestems.model.nets.hybrid.causal.CausalHybridNet` constructor
arguments plus its declared geometry (hop, look-ahead, latency, parameter count), which
``livestems models`` lists without building the network; a test checks the declarations
against the built networks.

- ``rt-tiny``: real time on 2 CPU cores with margin: STFT 1024/256, latency 256 = 5.8 ms at
  44.1 kHz, no look-ahead; it steps two STFT frames per call (hop 512 = 11.6 ms), because per
  call overhead, not arithmetic, dominates a model this small (docs/MODEL.md has numbers).
- ``rt-small``: 1.5 times rt-tiny's width, one frame of look-ahead (latency 512 = 11.6 ms at
  44.1 kHz), two frames per call like rt-tiny; its spectrogram branch gives softmax masks over
  the mixture spectrum and the stems are projected to sum to the input (mixture consistency:
  it cannot add to the mix what is not there). The branch reads the spectrum power-law
  compressed (magnitude ** 0.3, phase kept), and a per-bin refiner (16 wide) adds single-bin
  detail to the masks. Sized so that the per-hop p99 stays within
  half the hop on one thread of the 2-core machine (docs/MODEL.md).
- ``rt-base``: GPU: 32 channels, n_fft 2048, two LSTM layers, attention over 16 frames, one
  frame of look-ahead (hop 512, latency 1024 = 23.2 ms).

Untrained presets have seeded random weights (the training task produces checkpoints); the
listing says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Preset", "PRESETS", "build_preset_net", "build_preset"]

SOURCES = ("drums", "bass", "other", "vocals")


@dataclass(frozen=True)
class Preset:
    name: str
    args: dict = field(hash=False)
    params: int  # declared; tests/model/test_presets.py checks it
    hop: int  # samples per step
    hop_frames: int  # STFT frames per step (StreamingHybrid's hop_frames)
    lookahead_frames: int
    latency_samples: int
    target: str

    def describe(self, sample_rate: int = 44100) -> str:
        ms = 1000.0 * self.latency_samples / sample_rate
        return (f"causal hybrid net ({self.target}), {self.params / 1e6:.2f} M params, "
                f"hop {self.hop}, look-ahead {self.lookahead_frames} frame(s), latency "
                f"{self.latency_samples} samples = {ms:.1f} ms at {sample_rate} Hz; "
                "untrained (random weights) unless a checkpoint is given")


PRESETS: dict[str, Preset] = {
    "rt-tiny": Preset("rt-tiny", dict(channels=8, residual_depth=1, norm_starts=2),
                      params=223020, hop=512, hop_frames=2, lookahead_frames=0,
                      latency_samples=256,
                      target="2-core CPU real time"),
    "rt-small": Preset("rt-small", dict(channels=12, residual_depth=1, norm_starts=2,
                                        lookahead=1, output="mask", consistency=True,
                                        spec_power=0.3, refine=16),
                       params=496678, hop=512, hop_frames=2, lookahead_frames=1,
                       latency_samples=512,
                       target="2-core CPU real time, masks"),
    "rt-base": Preset("rt-base", dict(channels=32, n_fft=2048, stft_hop=512,
                                      synthesis_len=1024, lstm_layers=2, attn_frames=16,
                                      lookahead=1, norm_starts=2),
                      params=15560904, hop=512, hop_frames=1, lookahead_frames=1,
                      latency_samples=1024,
                      target="GPU"),
}


def build_preset_net(name: str, seed: int = 0):
    """The preset's :class:`CausalHybridNet` with seeded random weights."""
    import torch

    from .hybrid.causal import CausalHybridNet

    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CausalHybridNet(list(SOURCES), **PRESETS[name].args)


def build_preset(name: str, device: str = "cpu", seed: int = 0, **options):
    """A ready :class:`~livestems.model.nets.hybrid.streaming.StreamingHybrid` for preset ``name``
    (``options`` go to StreamingHybrid, e.g. ``stft='torch'``)."""
    from .hybrid.streaming import StreamingHybrid

    options.setdefault("hop_frames", PRESETS[name].hop_frames)
    return StreamingHybrid(build_preset_net(name, seed), device=device, **options)
