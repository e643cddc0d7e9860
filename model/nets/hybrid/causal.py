"""The causal-limited, reduced-context Hybrid Demucs network: streams hop by hop.

Same family and layer plan as the offline model (:mod:`.plan`): a spectrogram branch of
frequency-strided convs on complex-as-channels STFT frames with a frequency embedding, a
waveform branch of strided convs whose total stride equals the STFT hop, merged where the
frequency axis reaches one bin, compressed residual branches in the encoders, GLU "rewrite"
convs, U-Net skips, and the two branch outputs summed per source. What changes, so that a hop
costs the same forever and the latency is bounded:

- every time-axis conv has left context only (:mod:`.causal_blocks`), norms are per frame,
  and there is no whole-segment input normalisation;
- STFT framing is causal: frame ``j`` ends at sample ``(j + 1) * stft_hop - 1`` (zeros before
  the stream), with an asymmetric low-latency window pair from :mod:`livestems.dsp.windows`
  (long analysis window, short synthesis window), so the inverse STFT adds only
  ``synthesis_len - stft_hop`` samples of latency;
- the bottleneck is a unidirectional LSTM (state carried across hops), optionally followed by
  local attention over the last ``attn_frames`` frames, instead of BiLSTM + global attention;
- ``lookahead`` frames: the decoder works ``lookahead`` frames behind the encoder (every skip
  connection goes through a delay line), so the bottleneck has seen that much future.

Latency (samples): ``synthesis_len - stft_hop + lookahead * stft_hop``; the waveform branch is
delayed by the inverse STFT's part so the branches line up.

Two entry points share all the code: :meth:`CausalHybridNet.stream` (new samples in, delayed
stems out, state dict carried; what ``step`` runs) and :meth:`CausalHybridNet.forward`
(offline, aligned, autograd: what training uses; it is ``stream`` from the zero state).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from livestems.dsp.windows import (asymmetric_pair, check_reconstruction, sqrt_hann,
                                   synthesis_support)

from .blocks import FreqEmbedding
from .causal_blocks import (CausalConv1d, CausalConvTranspose1d, CausalResidual,
                            CausalRewrite2d, Delay, FrameNorm, RecurrentBottleneck, State,
                            Stateful, freq_conv)
from .plan import plan_layers

__all__ = ["CausalHybridNet", "CAUSAL_DEFAULTS"]

#: constructor defaults of :class:`CausalHybridNet` (the rt-tiny geometry, 16 channels)
CAUSAL_DEFAULTS = dict(
    audio_channels=2, channels=16, growth=2.0, n_fft=1024, stft_hop=256, synthesis_len=512,
    kernel_size=8, stride=4, context=1, norm_starts=0, norm_groups=4, residual_depth=2,
    residual_compress=4, residual_init=1e-3, lstm_layers=1, attn_frames=0, attn_heads=4,
    lookahead=0, freq_emb=0.2, emb_scale=10.0, samplerate=44100, output="cac",
    consistency=False, spec_power=1.0, refine=0,
)

#: what the spectrogram branch's last layer means (``output``)
OUTPUTS = ("cac", "mask")


#: added to |z|^2 before the power of :func:`compress_cac` (finite gradient at silence)
COMPRESS_EPS = 1e-8


def compress_cac(spec: torch.Tensor, power: float, dim: int) -> torch.Tensor:
    """Power-law compression of a complex-as-channels spectrum: the (re, im) pairs are
    interleaved along ``dim`` (channel ``2c`` real, ``2c + 1`` imaginary); each pair is
    scaled by ``(re^2 + im^2 + eps) ** ((power - 1) / 2)``. ``power == 1``: ``spec`` itself."""
    if power == 1.0:
        return spec
    shape = list(spec.shape)
    pairs = spec.unflatten(dim, (shape[dim] // 2, 2))
    mag2 = (pairs * pairs).sum(dim=dim + 1, keepdim=True)
    return (pairs * (mag2 + COMPRESS_EPS) ** (0.5 * (power - 1.0))).flatten(dim, dim + 1)


def _n_bins_path(n_bins: int, kernel: int, stride: int) -> int:
    """How many frequency layers it takes to reach one bin."""
    layers = 0
    while n_bins > 1:
        n_bins = 1 if n_bins <= kernel else n_bins // stride
        layers += 1
    return layers


class _Norm(nn.Module):
    def __init__(self, groups, channels, on):
        super().__init__()
        self.norm = FrameNorm(groups, channels) if on else None

    def forward(self, x):
        return x if self.norm is None else self.norm(x)


class _TimeEncoder(nn.Module):
    """Causal strided conv + norm + GELU + residual + 1x1 rewrite/GLU (or bare conv)."""

    def __init__(self, chin, chout, stride, norm, groups, residual, bare):
        super().__init__()
        self.conv = CausalConv1d(chin, chout, 2 * stride, stride)
        self.bare = bare
        if bare:
            return
        self.norm_conv = _Norm(groups, chout, norm)
        self.residual = CausalResidual(chout, **residual) if residual else None
        self.rewrite = nn.Conv1d(chout, 2 * chout, 1)
        self.norm_rewrite = _Norm(groups, 2 * chout, norm)

    def forward(self, x, state):
        y = self.conv(x, state)
        if self.bare:
            return y
        y = F.gelu(self.norm_conv(y))
        if self.residual is not None:
            y = self.residual(y, state)
        return F.glu(self.norm_rewrite(self.rewrite(y)), dim=1)


class _FreqEncoder(nn.Module):
    """Frequency-strided conv (+ merge injection) + norm + GELU + per-bin causal residual +
    1x1 rewrite/GLU. ``[B, C, F, T]`` -> ``[B, C', F', T]``."""

    def __init__(self, chin, chout, kernel, stride, pad, norm, groups, residual, bins_out):
        super().__init__()
        self.conv = nn.Conv2d(chin, chout, (kernel, 1), (stride, 1),
                              (kernel // 4 if pad else 0, 0))
        self.norm_conv = _Norm(groups, chout, norm)
        self.residual = (CausalResidual(chout, batch_mult=bins_out, **residual)
                         if residual else None)
        self.rewrite = nn.Conv2d(chout, 2 * chout, 1)
        self.norm_rewrite = _Norm(groups, 2 * chout, norm)

    def forward(self, x, state, inject=None):
        y = freq_conv(self.conv, x)
        if inject is not None:
            y = y + inject[:, :, None]
        y = F.gelu(self.norm_conv(y))
        if self.residual is not None:
            b, c, f, t = y.shape
            flat = y.permute(0, 2, 1, 3).reshape(b * f, c, t)
            y = self.residual(flat, state).view(b, f, c, t).permute(0, 2, 1, 3)
        return F.glu(self.norm_rewrite(freq_conv(self.rewrite, y)), dim=1)


class _FreqDecoder(nn.Module):
    """Skip add + causal rewrite/GLU + frequency-transposed conv + norm (+ GELU)."""

    def __init__(self, chin, chout, kernel, stride, pad, norm, groups, context, last, bins_in):
        super().__init__()
        self.rewrite = CausalRewrite2d(chin, 2 * chin, context)
        self.rewrite.bins = bins_in
        self.norm_rewrite = _Norm(groups, 2 * chin, norm)
        self.upconv = nn.ConvTranspose2d(chin, chout, (kernel, 1), (stride, 1))
        self.norm_out = _Norm(groups, chout, norm) if not last else _Norm(1, chout, False)
        self.pad, self.last = (kernel // 4 if pad else 0), last

    def forward(self, x, skip, state):
        y = F.glu(self.norm_rewrite(self.rewrite(x + skip, state)), dim=1)
        z = self.norm_out(freq_conv(self.upconv, y))
        if self.pad:
            z = z[:, :, self.pad:-self.pad]
        return (z if self.last else F.gelu(z)), y


class _TimeDecoder(nn.Module):
    """Skip add + causal rewrite/GLU + causal transposed conv + norm (+ GELU); bare: only the
    transposed conv + norm (the split from the merged branch)."""

    def __init__(self, chin, chout, stride, norm, groups, context, last, bare):
        super().__init__()
        self.bare, self.last = bare, last
        if not bare:
            self.rewrite = CausalConv1d(chin, 2 * chin, 1 + context)
            self.norm_rewrite = _Norm(groups, 2 * chin, norm)
        self.upconv = CausalConvTranspose1d(chin, chout, stride)
        self.norm_out = _Norm(groups, chout, norm and not last)

    def forward(self, x, skip, state):
        if not self.bare:
            x = F.glu(self.norm_rewrite(self.rewrite(x + skip, state)), dim=1)
        z = self.norm_out(self.upconv(x, state))
        return z if self.last else F.gelu(z)


class CausalHybridNet(nn.Module):
    """Causal Hybrid Demucs. Offline: ``forward(x [B, C, T]) -> [B, S, C, T]`` aligned.

    Args:
        sources: stem names, output order.
        audio_channels: C.
        channels: width of the first layer; ``growth`` times more per layer.
        n_fft, stft_hop: STFT frame and hop in samples; ``n_fft // 2`` bins (Nyquist
            dropped) are strided down by ``stride`` to one bin. The waveform branch's strides
            multiply to ``stft_hop`` (the last waveform layer takes what is left).
        synthesis_len: support of the short synthesis window (latency ``synthesis_len -
            stft_hop``); ``n_fft`` for symmetric sqrt-Hann windows.
        kernel_size, stride: frequency-axis conv geometry (as the official model).
        context: past frames of the decoders' rewrite convs.
        norm_starts, norm_groups: per-frame group norm from this depth on.
        residual_depth, residual_compress, residual_init: encoder residual branches.
        lstm_layers: unidirectional LSTM layers in the bottleneck (0: none).
        attn_frames: local attention window in frames (0: none); attn_heads its heads.
        lookahead: frames of look-ahead (each adds ``stft_hop`` samples of latency).
        freq_emb, emb_scale: frequency embedding weight (0: none) and its lr scale.
        samplerate: Hz the model is built for (metadata; the geometry is in samples).
        output: what the spectrogram branch's last layer gives per source, channel and bin:
            ``"cac"`` the stem's complex spectrum directly (unbounded, as Hybrid Demucs);
            ``"mask"`` mask logits: a softmax across sources gives each stem a share in
            [0, 1] of the mixture's complex spectrum (the shares sum to 1, so the branch
            alone splits the mixture without adding anything to it). The second of each
            pair of output channels is unused in this mode.
        consistency: project the summed branches so the stems add up to the input exactly
            (mixture consistency: the mean of the residual ``input - sum of stems`` is
            added to every stem, the input delayed by the latency).
        spec_power: power-law compression of the spectrum the spectrogram branch reads:
            each complex bin ``z`` becomes ``z * |z| ** (spec_power - 1)`` (phase kept,
            magnitude raised to ``spec_power``). 1 (default): the scaled spectrum as is;
            0.3 squeezes music's 60-80 dB of per-bin range into ~20 dB, so quiet partials
            reach the first convs at a usable level. Only the input changes: masks still
            apply to the uncompressed mixture.
        refine: with masks, the hidden width of a per-bin mask refiner (0: none): a two-layer
            1x1 network over the decoder's mask logits and the (compressed) mixture spectrum
            of the same bin, added to the logits. The decoders see the spectrum four bins to
            a position or coarser; the refiner gives the masks single-bin detail (harmonics
            a few bins apart) for little compute. Its last layer starts at zero.
    """

    def __init__(self, sources, **kwargs):
        super().__init__()
        unknown = set(kwargs) - set(CAUSAL_DEFAULTS)
        if unknown:
            raise TypeError(f"CausalHybridNet: unknown argument(s) {sorted(unknown)}")
        cfg = {**CAUSAL_DEFAULTS, **kwargs}
        self.config = {"sources": list(sources), **cfg}
        self.sources = list(sources)
        self.audio_channels = C = int(cfg["audio_channels"])
        self.n_fft, self.stft_hop = int(cfg["n_fft"]), int(cfg["stft_hop"])
        self.samplerate = int(cfg["samplerate"])
        self.lookahead = int(cfg["lookahead"])
        self.output = str(cfg["output"])
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        self.consistency = bool(cfg["consistency"])
        self.spec_power = float(cfg["spec_power"])
        if not 0.0 < self.spec_power <= 1.0:
            raise ValueError(f"spec_power must be in (0, 1], got {self.spec_power}")
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0 frames, got {self.lookahead}")
        n_bins = self.n_fft // 2
        n_freq = _n_bins_path(n_bins, cfg["kernel_size"], cfg["stride"])
        rest = self.stft_hop / cfg["stride"] ** (n_freq - 1)
        if rest != int(rest) or rest < 1:
            raise ValueError(
                f"stft_hop={self.stft_hop} is not stride**{n_freq - 1} times an integer: the "
                f"waveform branch (strides of {cfg['stride']}) cannot reach the STFT hop in "
                f"{n_freq} layers; use e.g. stft_hop={cfg['stride'] ** n_freq}")
        time_strides = [cfg["stride"]] * (n_freq - 1) + [int(rest)]
        self.specs = plan_layers(
            audio_channels=C, n_sources=len(self.sources), channels=cfg["channels"],
            channels_time=None, growth=cfg["growth"], n_bins=n_bins, depth=n_freq, cac=True,
            kernel_size=cfg["kernel_size"], stride=cfg["stride"], time_stride=2,
            norm_starts=cfg["norm_starts"], dconv_lstm=10 ** 6, dconv_attn=10 ** 6,
            time_strides=time_strides)

        # windows: analysis/synthesis pair and its overlap-add gain (same as the dsp path)
        if cfg["synthesis_len"] == self.n_fft:
            ana = syn = sqrt_hann(self.n_fft)
        else:
            ana, syn = asymmetric_pair(self.n_fft, self.stft_hop, int(cfg["synthesis_len"]))
        gain = check_reconstruction(ana, syn, self.stft_hop)
        self.analysis_window = np.asarray(ana, dtype=np.float32)
        self.synthesis_window = np.asarray(syn, dtype=np.float32)
        support = synthesis_support(syn, self.stft_hop)  # as StreamISTFT computes it
        self.synthesis_support = support
        self.istft_latency = support - self.stft_hop
        self.latency_samples = self.istft_latency + self.lookahead * self.stft_hop
        # spectra are scaled to unit-ish magnitude for the network and back afterwards
        self.spec_scale = float(1.0 / math.sqrt(float(np.sum(ana.astype(np.float64) ** 2))))
        self.register_buffer("ana_window", torch.from_numpy(self.analysis_window),
                             persistent=False)
        syn_eff = (syn.astype(np.float64) / gain)[self.n_fft - support:]
        self.register_buffer("syn_window", torch.from_numpy(syn_eff.astype(np.float32)),
                             persistent=False)

        residual = dict(depth=cfg["residual_depth"], compress=cfg["residual_compress"],
                        init=cfg["residual_init"]) if cfg["residual_depth"] else None
        groups = cfg["norm_groups"]
        self.freq_encoder, self.time_encoder = nn.ModuleList(), nn.ModuleList()
        self.freq_decoder, self.time_decoder = nn.ModuleList(), nn.ModuleList()
        self.freq_skip_delay, self.time_skip_delay = nn.ModuleList(), nn.ModuleList()
        cum = 1
        for sp in self.specs:
            self.freq_encoder.append(_FreqEncoder(
                sp.chin_z, sp.chout_z, sp.kernel, sp.stride, sp.pad, sp.norm, groups, residual,
                sp.freqs_out))
            self.time_encoder.append(_TimeEncoder(
                sp.chin_t, sp.chout_t, sp.time_stride, sp.norm, groups, residual, sp.merge))
            self.freq_decoder.insert(0, _FreqDecoder(
                sp.chout_z, sp.dec_chout_z, sp.kernel, sp.stride, sp.pad, sp.norm, groups,
                cfg["context"], sp.index == 0, sp.freqs_out))
            self.time_decoder.insert(0, _TimeDecoder(
                sp.chout_t, sp.dec_chout_t, sp.time_stride, sp.norm, groups, cfg["context"],
                sp.index == 0, sp.merge))
            cum *= sp.time_stride
            per_frame = self.stft_hop // cum  # waveform-branch steps per STFT frame here
            self.freq_skip_delay.insert(0, Delay((sp.chout_z, sp.freqs_out), self.lookahead))
            self.time_skip_delay.insert(
                0, Delay((sp.chout_t,), 0 if sp.merge else self.lookahead * per_frame))
        width = self.specs[-1].chout_z
        self.bottleneck = RecurrentBottleneck(width, cfg["lstm_layers"], cfg["attn_frames"],
                                              cfg["attn_heads"])
        self.time_out_delay = Delay((len(self.sources) * C,), self.istft_latency)
        self.freq_embedding = None
        if cfg["freq_emb"]:
            sp0 = self.specs[0]
            self.freq_embedding = FreqEmbedding(sp0.freqs_out, sp0.chout_z,
                                                scale=cfg["emb_scale"], smooth=True)
            self.freq_emb_weight = float(cfg["freq_emb"])
        if self.output == "mask":
            # start from the masks' even split: the waveform branch's last layer starts at zero
            # (random, it adds noise 4x the error of an even split to every stem, measured on
            # real stems), so training starts from a separation no worse than the mixture's
            last = self.time_decoder[-1].upconv.conv
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # mask output: the mixture spectrum, delayed to the decoders' frames
        self.mask_delay = (Delay((2 * C, n_bins), self.lookahead)
                           if self.output == "mask" else None)
        self.refiner = None
        if int(cfg["refine"]):
            if self.output != "mask":
                raise ValueError("refine needs output='mask'")
            width, s_c = int(cfg["refine"]), len(self.sources) * C
            self.refiner = nn.Sequential(nn.Conv2d(2 * s_c + 2 * C, width, 1), nn.GELU(),
                                         nn.Conv2d(width, s_c, 1))
            nn.init.zeros_(self.refiner[2].weight)
            nn.init.zeros_(self.refiner[2].bias)
        # mixture consistency: the input, delayed to the stems' samples
        self.mix_delay = Delay((C,), self.latency_samples) if self.consistency else None
        # the torch STFT path's own context (used by forward() and the GPU step)
        self.stft_context = Delay((C,), self.n_fft - self.stft_hop)
        self._stateful = []
        for name, mod in self.named_modules():
            if isinstance(mod, Stateful):
                mod.key = name
                self._stateful.append(mod)

    # -- state -------------------------------------------------------------------------------

    def initial_state(self, batch: int = 1, device=None, dtype=torch.float32) -> State:
        """Zero context for ``batch`` streams: ``{layer name: tensor}``, fixed sizes."""
        device = device or self.ana_window.device
        state: State = {}
        for mod in self._stateful:
            for suffix, t in mod.initial_state(batch, device, dtype).items():
                state[mod.key + suffix] = t
        overlap = self.synthesis_support - self.stft_hop
        state["istft_tail"] = torch.zeros(batch, len(self.sources) * self.audio_channels,
                                          overlap, device=device, dtype=dtype)
        return state

    # -- the network on (waveform, spectrum) -------------------------------------------------

    def core(self, xt: torch.Tensor, spec: torch.Tensor, state: State):
        """Encoders, bottleneck, decoders on new frames.

        Args:
            xt: waveform ``[B, C, n * stft_hop]`` (the new samples).
            spec: complex-as-channels spectrum ``[B, 2C, n_fft // 2, n]`` of the ``n`` STFT
                frames those samples completed, already scaled by ``spec_scale``.
            state: carried context, updated in place.

        Returns:
            ``(wave [B, S*C, n * stft_hop], spec_out [B, S*C*2, n_fft // 2, n])``: the
            waveform branch ``lookahead`` frames late (not yet aligned with the inverse STFT),
            and the spectrogram branch's CaC output for frames ``j - lookahead``.
        """
        x = compress_cac(spec, self.spec_power, dim=1)
        skips, skips_t = [], []
        for idx, (enc, tenc) in enumerate(zip(self.freq_encoder, self.time_encoder)):
            xt = tenc(xt, state)
            inject = xt if tenc.bare else None
            if not tenc.bare:
                skips_t.append(xt)
            x = enc(x, state, inject)
            if idx == 0 and self.freq_embedding is not None:
                x = x + self.freq_emb_weight * self.freq_embedding(x.shape[-2])
            skips.append(x)
        y = self.bottleneck(x[:, :, 0], state)[:, :, None]
        # decoders start from the bottleneck output (the official model starts from zeros
        # and relies on its BiLSTM inside the residual branches; ours has no such layer)
        n_dec = len(self.freq_decoder)
        xt = None
        for i, (dec, tdec) in enumerate(zip(self.freq_decoder, self.time_decoder)):
            skip = self.freq_skip_delay[i](skips[n_dec - 1 - i], state)
            y, pre = dec(y, skip, state)
            if tdec.bare:
                xt = tdec(pre[:, :, 0], None, state)
            else:
                skip_t = self.time_skip_delay[i](skips_t[n_dec - 1 - i], state)
                xt = tdec(xt, skip_t, state)
        return xt, y

    def head(self, spec: torch.Tensor, out: torch.Tensor, state: State) -> torch.Tensor:
        """The spectrogram branch's output as the stems' scaled CaC spectra ``[B, 2*S*C, F,
        n]``: ``out`` itself (``output="cac"``) or, with masks, each source's softmax share of
        the mixture spectrum ``spec`` (the frames ``core`` received, delayed by the
        look-ahead to the frames ``out`` is for)."""
        if self.mask_delay is None:
            return out
        spec = self.mask_delay(spec, state)
        b, _, f, n = out.shape
        s, c = len(self.sources), self.audio_channels
        logits = out.view(b, s, c, 2, f, n)[:, :, :, 0]
        if self.refiner is not None:
            feat = torch.cat([out, compress_cac(spec, self.spec_power, dim=1)], dim=1)
            logits = logits + self.refiner(feat).view(b, s, c, f, n)
        share = torch.softmax(logits, dim=1)
        return (share[:, :, :, None] * spec.view(b, 1, c, 2, f, n)).reshape(b, 2 * s * c, f, n)

    def project(self, x: torch.Tensor, out: torch.Tensor, state: State) -> torch.Tensor:
        """Mixture consistency: ``out [B, S, C, n]`` moved so its sum over sources is the new
        input ``x [B, C, n]`` delayed by the latency (``out`` itself when off)."""
        if self.mix_delay is None:
            return out
        mix = self.mix_delay(x, state)
        return out + (mix[:, None] - out.sum(dim=1, keepdim=True)) / len(self.sources)

    # -- torch STFT path (offline training, GPU streaming) -----------------------------------

    def _stft(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """``[B, C, n * hop]`` new samples -> scaled CaC ``[B, 2C, n_fft // 2, n]``."""
        full = torch.cat([state[self.stft_context.key], x], dim=-1)
        state[self.stft_context.key] = full[..., full.shape[-1] - (self.n_fft - self.stft_hop):]
        frames = full.unfold(-1, self.n_fft, self.stft_hop) * self.ana_window  # [B,C,n,N]
        z = torch.fft.rfft(frames, dim=-1)[..., :-1] * self.spec_scale  # [B, C, n, F]
        return torch.view_as_real(z).permute(0, 1, 4, 3, 2).flatten(1, 2)

    def _istft(self, spec: torch.Tensor, state: State) -> torch.Tensor:
        """Scaled CaC ``[B, 2K, n_fft // 2, n]`` -> ``[B, K, n * hop]`` (overlap-added, the
        inverse STFT's latency behind)."""
        b, k2, f, n = spec.shape
        z = torch.view_as_complex(
            spec.view(b, k2 // 2, 2, f, n).permute(0, 1, 4, 3, 2).contiguous())
        z = F.pad(z, (0, 1)) / self.spec_scale  # Nyquist bin back as zero
        frames = torch.fft.irfft(z, n=self.n_fft, dim=-1)[..., self.n_fft - self.synthesis_support:]
        frames = frames * self.syn_window  # [B, K, n, M]
        hop, m = self.stft_hop, self.synthesis_support
        r = m // hop
        parts = frames.reshape(b, k2 // 2, n, r, hop)
        acc = sum(F.pad(parts[:, :, :, i], (0, 0, i, r - 1 - i)) for i in range(r))
        acc = acc.flatten(2)  # [B, K, (n + r - 1) * hop]
        tail = state["istft_tail"]
        acc = torch.cat([acc[..., :tail.shape[-1]] + tail, acc[..., tail.shape[-1]:]], dim=-1)
        state["istft_tail"] = acc[..., n * hop:]
        return acc[..., :n * hop]

    def stream(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """New samples ``[B, C, n * stft_hop]`` -> stems ``[B, S, C, n * stft_hop]``, each
        output sample estimating input ``latency_samples`` earlier; ``state`` updated."""
        spec = self._stft(x, state)
        wave, spec_out = self.core(x, spec, state)
        spec_out = self.head(spec, spec_out, state)
        out = self._istft(spec_out, state) + self.time_out_delay(wave, state)
        out = out.view(x.shape[0], len(self.sources), self.audio_channels, -1)
        return self.project(x, out, state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline, differentiable: ``[B, C, T]`` -> aligned stems ``[B, S, C, T]``.

        Runs :meth:`stream` once from the zero state over the input followed by
        ``latency_samples`` (rounded up to a hop) of silence, then drops the latency.
        """
        total = x.shape[-1]
        lat = self.latency_samples
        n = -(-(total + lat) // self.stft_hop)
        xp = F.pad(x, (0, n * self.stft_hop - total))
        y = self.stream(xp, self.initial_state(x.shape[0], x.device, x.dtype))
        return y[..., lat:lat + total]
