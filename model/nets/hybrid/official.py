"""The offline Hybrid Demucs network (HDemucs, Défossez 2021) in its published configuration.

Constructor arguments and their meanings are those of the ``demucs`` package's ``HDemucs``, so
an official checkpoint's config maps one to one (see :mod:`livestems.model.nets.import_demucs`);
the implementation is ours. Offline only: the input normalisation, group norms, BiLSTM and
attention all see the whole segment. :class:`~livestems.model.nets.hybrid.windowed.WindowedHybrid`
streams it over a sliding window.

Data flow of :meth:`HDemucsNet.forward` (``x`` ``[B, C, T]`` samples):

- spectrogram branch: STFT (``nfft``, hop ``nfft // 4``, normalised Hann), padded so frame
  count is ``ceil(T / hop)``; Nyquist bin dropped; complex as channels (``[B, 2C, F, T']``,
  re/im interleaved per channel); normalised by its global mean/std;
- waveform branch: ``x`` normalised by its mean/std;
- encoders, merge, decoders (see :mod:`.plan`), outputs de-normalised; spectrogram output
  back to complex and inverse-STFT'd; the two branches summed per source.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import DecoderLayer, EncoderLayer, FreqEmbedding
from .plan import plan_layers

__all__ = ["HDemucsNet", "OFFICIAL_DEFAULTS"]

#: HDemucs constructor defaults (the demucs 4.0.1 signature); our constructor takes the same.
OFFICIAL_DEFAULTS = dict(
    audio_channels=2, channels=48, channels_time=None, growth=2, nfft=4096, wiener_iters=0,
    end_iters=0, wiener_residual=False, cac=True, depth=6, rewrite=True, hybrid=True,
    hybrid_old=False, multi_freqs=None, multi_freqs_depth=2, freq_emb=0.2, emb_scale=10,
    emb_smooth=True, kernel_size=8, time_stride=2, stride=4, context=1, context_enc=0,
    norm_starts=4, norm_groups=4, dconv_mode=1, dconv_depth=2, dconv_comp=4, dconv_attn=4,
    dconv_lstm=4, dconv_init=1e-4, rescale=0.1, samplerate=44100, segment=40,
)


def _reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the last axis; inputs too short to reflect get zeros first (on the right,
    then the left), as the official model does, so any length works."""
    length = x.shape[-1]
    widest = max(left, right)
    if length <= widest:
        extra = widest - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        left, right = left - extra_left, right - extra_right
        x = F.pad(x, (extra_left, extra_right))
    return F.pad(x, (left, right), mode="reflect")


class HDemucsNet(nn.Module):
    """Hybrid Demucs, offline. ``forward(x [B, audio_channels, T]) -> [B, S, audio_channels, T]``.

    Args: as the ``demucs`` package's ``HDemucs`` (``sources`` list of names; see
    :data:`OFFICIAL_DEFAULTS`). Not supported (refused with a message): ``multi_freqs`` band
    splitting and Wiener filtering (``cac=False`` with ``wiener_iters >= 0``); no published
    HDemucs checkpoint uses either. ``rescale`` only affects random initialisation, which
    differs from the official one anyway; it is accepted and ignored.
    """

    def __init__(self, sources, **kwargs):
        super().__init__()
        unknown = set(kwargs) - set(OFFICIAL_DEFAULTS)
        if unknown:
            raise TypeError(f"HDemucsNet: unknown argument(s) {sorted(unknown)}")
        cfg = {**OFFICIAL_DEFAULTS, **kwargs}
        if cfg["multi_freqs"]:
            raise NotImplementedError(
                f"multi_freqs={cfg['multi_freqs']!r} (frequency band splitting) is not supported")
        if not cfg["cac"] and cfg["wiener_iters"] >= 0:
            raise NotImplementedError(
                "Wiener filtering (cac=False with wiener_iters >= 0) is not supported; "
                "cac=True (complex as channels) or wiener_iters < 0 (plain masking) are")
        if cfg["hybrid_old"] and not cfg["hybrid"]:
            raise ValueError("hybrid_old=True needs hybrid=True")
        self.config = {"sources": list(sources), **cfg}
        self.sources = list(sources)
        self.audio_channels = cfg["audio_channels"]
        self.nfft, self.hop_length = cfg["nfft"], cfg["nfft"] // 4
        self.cac, self.hybrid, self.hybrid_old = cfg["cac"], cfg["hybrid"], cfg["hybrid_old"]
        self.wiener_iters = cfg["wiener_iters"]
        self.samplerate, self.segment = cfg["samplerate"], cfg["segment"]
        self.depth = cfg["depth"]
        self.specs = plan_layers(
            audio_channels=cfg["audio_channels"], n_sources=len(self.sources),
            channels=cfg["channels"], channels_time=cfg["channels_time"], growth=cfg["growth"],
            n_bins=cfg["nfft"] // 2, depth=cfg["depth"], cac=cfg["cac"],
            kernel_size=cfg["kernel_size"], stride=cfg["stride"], time_stride=cfg["time_stride"],
            norm_starts=cfg["norm_starts"], dconv_lstm=cfg["dconv_lstm"],
            dconv_attn=cfg["dconv_attn"])
        self.freq_encoder = nn.ModuleList()
        self.freq_decoder = nn.ModuleList()  # deepest first, the order they run in
        self.time_encoder = nn.ModuleList()
        self.time_decoder = nn.ModuleList()
        common = dict(norm_groups=cfg["norm_groups"], rewrite=cfg["rewrite"])
        for sp in self.specs:
            residual = dict(depth=cfg["dconv_depth"], compress=cfg["dconv_comp"],
                            init=cfg["dconv_init"], lstm=sp.lstm, attn=sp.attn, gelu=True)
            enc_res = residual if cfg["dconv_mode"] & 1 else None
            dec_res = residual if cfg["dconv_mode"] & 2 else None
            self.freq_encoder.append(EncoderLayer(
                sp.chin_z, sp.chout_z, sp.kernel, sp.stride, freq=sp.freq, pad=sp.pad,
                norm=sp.norm, context=cfg["context_enc"], residual=enc_res, **common))
            self.freq_decoder.insert(0, DecoderLayer(
                sp.chout_z, sp.dec_chout_z, sp.kernel, sp.stride, freq=sp.freq, pad=sp.pad,
                norm=sp.norm, context=cfg["context"], residual=dec_res, last=sp.index == 0,
                **common))
            if self.hybrid and sp.freq:
                self.time_encoder.append(EncoderLayer(
                    sp.chin_t, sp.chout_t, cfg["kernel_size"], cfg["stride"], freq=False,
                    pad=True, norm=sp.norm, context=cfg["context_enc"], residual=enc_res,
                    bare=sp.merge, **common))
                self.time_decoder.insert(0, DecoderLayer(
                    sp.chout_t, sp.dec_chout_t, cfg["kernel_size"], cfg["stride"], freq=False,
                    pad=True, norm=sp.norm, context=cfg["context"], residual=dec_res,
                    last=sp.index == 0, bare=sp.merge, **common))
        self.freq_embedding = None
        if cfg["freq_emb"]:
            sp0 = self.specs[0]
            self.freq_embedding = FreqEmbedding(sp0.freqs_out, sp0.chout_z,
                                                scale=cfg["emb_scale"], smooth=cfg["emb_smooth"])
            self.freq_emb_weight = float(cfg["freq_emb"])

    # -- spectrogram helpers -----------------------------------------------------------------

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> complex ``[B, C, nfft // 2, ceil(T / hop)]`` (Nyquist dropped)."""
        hop, nfft = self.hop_length, self.nfft
        frames = math.ceil(x.shape[-1] / hop)
        if self.hybrid:
            # pad so that frame k is centred on samples [k hop, (k+1) hop): frame count is
            # exactly ceil(T / hop), as the strided waveform branch produces
            side = hop // 2 * 3
            fill = side + frames * hop - x.shape[-1]
            x = _reflect_pad(x, side, fill) if not self.hybrid_old else F.pad(x, (side, fill))
        lead = x.shape[:-1]
        z = torch.stft(x.reshape(-1, x.shape[-1]), nfft, hop,
                       window=torch.hann_window(nfft, device=x.device, dtype=x.dtype),
                       win_length=nfft, normalized=True, center=True, return_complex=True,
                       pad_mode="reflect")
        z = z.view(*lead, *z.shape[-2:])[..., :-1, :]
        if self.hybrid:
            z = z[..., 2:2 + frames]
        return z

    def _istft(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of :meth:`_stft`: complex ``[..., nfft // 2, T']`` -> ``[..., length]``."""
        hop = self.hop_length
        z = F.pad(z, (0, 0, 0, 1))  # the Nyquist bin back, as zeros
        if self.hybrid:
            z = F.pad(z, (2, 2))
            side = hop // 2 * 3
            total = hop * math.ceil(length / hop) + (0 if self.hybrid_old else 2 * side)
        else:
            total = length
        n_fft = 2 * z.shape[-2] - 2
        lead = z.shape[:-2]
        x = torch.istft(z.reshape(-1, *z.shape[-2:]), n_fft, hop,
                        window=torch.hann_window(n_fft, device=z.device, dtype=z.real.dtype),
                        win_length=n_fft, normalized=True, length=total, center=True)
        x = x.view(*lead, total)
        if self.hybrid and not self.hybrid_old:
            return x[..., side:side + length]
        return x[..., :length]

    # -- forward ---------------------------------------------------------------------------

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``mix`` ``[B, audio_channels, T]`` float -> ``[B, S, audio_channels, T]`` stems."""
        length = mix.shape[-1]
        z = self._stft(mix)
        if self.cac:  # complex as channels: [B, C, F, T, 2] -> [B, C*2, F, T]
            x = torch.view_as_real(z).permute(0, 1, 4, 2, 3).flatten(1, 2)
        else:
            x = z.abs()
        batch, _, n_bins, n_frames = x.shape
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        if self.hybrid:
            mean_t = mix.mean(dim=(1, 2), keepdim=True)
            std_t = mix.std(dim=(1, 2), keepdim=True)
            xt = (mix - mean_t) / (1e-5 + std_t)

        skips, skips_t, lengths, lengths_t = [], [], [], []
        for idx, enc in enumerate(self.freq_encoder):
            lengths.append(x.shape[-1])
            inject = None
            if self.hybrid and idx < len(self.time_encoder):
                tenc = self.time_encoder[idx]
                lengths_t.append(xt.shape[-1])
                xt = tenc(xt)
                if tenc.bare:
                    inject = xt  # same frame rate as the spectrogram branch now: merge
                else:
                    skips_t.append(xt)
            x = enc(x, inject)
            if idx == 0 and self.freq_embedding is not None:
                x = x + self.freq_emb_weight * self.freq_embedding(x.shape[-2])
            skips.append(x)

        # decoders start from zeros: everything reaches them through the skips
        x = torch.zeros_like(x)
        offset = self.depth - len(self.time_decoder)
        for idx, dec in enumerate(self.freq_decoder):
            x, pre = dec(x, skips.pop(), lengths.pop())
            if self.hybrid and idx >= offset:
                tdec = self.time_decoder[idx - offset]
                if tdec.bare:  # split: the waveform branch starts from the merged activation
                    xt, _ = tdec(pre[:, :, 0], None, lengths_t.pop())
                else:
                    xt, _ = tdec(xt, skips_t.pop(), lengths_t.pop())
        assert not skips and not skips_t and not lengths_t

        n_src = len(self.sources)
        x = x.view(batch, n_src, -1, n_bins, n_frames) * std[:, None] + mean[:, None]
        if self.cac:
            spec = x.view(batch, n_src, -1, 2, n_bins, n_frames).permute(0, 1, 2, 4, 5, 3)
            spec = torch.view_as_complex(spec.contiguous())
        else:  # plain masking of the mixture phase (wiener_iters < 0)
            spec = z[:, None] / (1e-8 + z.abs()[:, None]) * x
        out = self._istft(spec, length)
        if self.hybrid:
            xt = xt.view(batch, n_src, -1, length) * std_t[:, None] + mean_t[:, None]
            out = out + xt
        return out
