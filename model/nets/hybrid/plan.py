"""Layer geometry of the Hybrid Demucs family, shared by the offline and the causal networks.

Both networks are the same U-Net: a spectrogram branch whose encoder layers stride over the
frequency axis until one bin is left, a waveform branch whose strided convolutions reach the
STFT hop at the same depth (its last layer is a bare convolution whose output is added into
the spectrogram branch: the merge), then optional layers on the merged frame sequence. This
module computes, once, what each layer looks like (kernel, stride, channels, which axis it
strides, whether it is the merge layer), so that both networks and the checkpoint importer
agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerSpec", "plan_layers"]


@dataclass(frozen=True)
class LayerSpec:
    """One encoder layer and its mirror decoder layer.

    Attributes:
        index: depth, 0 = outermost.
        freq: True while the spectrogram branch still strides over frequency.
        kernel, stride: of the spectrogram-branch (or merged) layer, along its strided axis.
        pad: whether the layer pads by ``kernel // 4`` (False for the last frequency layer,
            whose kernel covers all remaining bins).
        merge: the last frequency layer; the waveform branch's layer at this depth is a bare
            convolution added into it (encoder) / split off from it (decoder).
        norm: group norm in this layer (``index >= norm_starts``).
        lstm, attn: residual branch carries a recurrent / attention sub-layer.
        chin_z, chout_z: spectrogram-branch encoder channels in/out.
        chin_t, chout_t: waveform-branch encoder channels in/out (0 when no waveform layer).
        dec_chout_z, dec_chout_t: decoder output channels (the mirror of ``chin_*``: sources
            times audio channels, times 2 for complex-as-channels, at depth 0).
        freqs_in, freqs_out: frequency bins before/after this layer.
        time_kernel, time_stride: waveform-branch kernel/stride at this depth.
    """

    index: int
    freq: bool
    kernel: int
    stride: int
    pad: bool
    merge: bool
    norm: bool
    lstm: bool
    attn: bool
    chin_z: int
    chout_z: int
    chin_t: int
    chout_t: int
    dec_chout_z: int
    dec_chout_t: int
    freqs_in: int
    freqs_out: int
    time_kernel: int
    time_stride: int


def plan_layers(
    *,
    audio_channels: int,
    n_sources: int,
    channels: int,
    channels_time: int | None,
    growth: float,
    n_bins: int,
    depth: int,
    cac: bool,
    kernel_size: int,
    stride: int,
    time_stride: int,
    norm_starts: int,
    dconv_lstm: int,
    dconv_attn: int,
    time_strides: list[int] | None = None,
) -> list[LayerSpec]:
    """Per-layer geometry, outermost first.

    ``n_bins`` is the number of frequency bins the spectrogram branch sees (``n_fft // 2``:
    the Nyquist bin is dropped). ``time_strides`` overrides the waveform branch's per-layer
    strides (the causal network uses it so that their product equals its STFT hop); by
    default every waveform layer strides by ``stride``, as in the official model.
    """
    specs = []
    chin_t = audio_channels
    chin_z = audio_channels * (2 if cac else 1)
    chout_t = channels_time or channels
    chout_z = channels
    freqs = n_bins
    n_freq_layers = 0
    for index in range(depth):
        freq = freqs > 1
        ker, stri, pad, merge = kernel_size, stride, True, False
        if not freq:
            if freqs != 1:
                raise ValueError(f"frequency axis did not reach one bin (left: {freqs})")
            ker, stri = 2 * time_stride, time_stride
        if freq and freqs <= kernel_size:
            ker, pad, merge = freqs, False, True
        if merge:
            chout_z = max(chout_t, chout_z)
            chout_t = chout_z
        if freq:
            t_stride = time_strides[n_freq_layers] if time_strides else stride
            t_kernel = 2 * t_stride if time_strides else kernel_size
            n_freq_layers += 1
        else:
            t_stride = t_kernel = 0
        dec_z = audio_channels * n_sources * (2 if cac else 1) if index == 0 else chin_z
        dec_t = audio_channels * n_sources if index == 0 else chin_t
        freqs_out = (1 if freqs <= kernel_size else freqs // stride) if freq else 1
        specs.append(LayerSpec(
            index=index, freq=freq, kernel=ker, stride=stri, pad=pad, merge=merge,
            norm=index >= norm_starts, lstm=index >= dconv_lstm, attn=index >= dconv_attn,
            chin_z=chin_z, chout_z=chout_z, chin_t=chin_t if freq else 0,
            chout_t=chout_t if freq else 0, dec_chout_z=dec_z, dec_chout_t=dec_t if freq else 0,
            freqs_in=freqs, freqs_out=freqs_out, time_kernel=t_kernel, time_stride=t_stride,
        ))
        chin_t, chin_z = chout_t, chout_z
        chout_t, chout_z = int(growth * chout_t), int(growth * chout_z)
        freqs = freqs_out
    if time_strides is not None and len(time_strides) != n_freq_layers:
        raise ValueError(
            f"time_strides has {len(time_strides)} entries but the spectrogram branch has "
            f"{n_freq_layers} frequency layers")
    return specs
