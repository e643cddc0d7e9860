"""StreamingHybrid: the causal hybrid network behind the Separator protocol, hop by hop.

Two step paths share the network's :meth:`~.causal.CausalHybridNet.core`:

- ``stft="dsp"`` (CPU default): STFT framing and overlap-add run in the numba kernels of
  :mod:`livestems.dsp.stft` (allocation-free, one jitted call each per hop); torch runs only
  the network. This is an independent implementation of the STFT from the torch one inside
  :meth:`CausalHybridNet.forward`, so the streaming == offline test checks both. The network
  part is, by default, :class:`_FastHop`: the same layers rewritten for one stream on the CPU
  (channels-last layouts, every conv one GEMM on weights packed at construction), checked
  against the network's own hop when built, traced with TorchScript.
- ``stft="torch"`` (GPU default): the whole hop, STFT included, is torch ops on static
  shapes; on CUDA it is captured once into a CUDA graph with static input, output and state
  buffers and replayed each hop (one launch instead of hundreds), falling back to eager
  execution, with a note in :attr:`StreamingHybrid.cuda_graph_error`, if capture fails.

Threading: one instance belongs to one thread (the engine's worker); ``step`` returns a view
of a preallocated buffer, valid until the next call.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from livestems.dsp.stft import StreamISTFT, StreamSTFT

from ..protocol import check_forward_input, check_step_input
from .causal import CausalHybridNet, compress_cac

__all__ = ["StreamingHybrid"]


class _Hop(torch.nn.Module):
    """One dsp-path hop of the network as a function of tensors only (for tracing):
    ``(x [1, C, hop], cac [1, 2C, F, k], *state) -> (wave, spec_out, *new_state)``."""

    def __init__(self, net: CausalHybridNet, keys: list[str]):
        super().__init__()
        self.net, self.keys = net, keys

    def forward(self, x, cac, *state):
        d = dict(zip(self.keys, state))
        wave, spec_out = self.net.core(x, cac, d)
        spec_out = self.net.head(cac, spec_out, d)
        wave = self.net.time_out_delay(wave, d)
        return (wave, spec_out) + tuple(d[k] for k in self.keys)


class _Unsupported(Exception):
    """The network has a layer :class:`_FastHop` does not cover (the generic trace is used)."""


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU. A contiguous input goes to oneDNN, whose per-call set-up costs more
    than the arithmetic at these sizes (~8 of ~10 us for 1k values here); through a transposed
    view (a layout oneDNN does not take) ATen's own kernel runs. Layouts are fixed for a
    trace, so the choice is made once, while tracing."""
    big = [i for i, n in enumerate(x.shape) if n > 1]
    if not x.is_contiguous() or len(big) < 2:
        return F.gelu(x)
    return F.gelu(x.transpose(big[0], big[1])).transpose(big[0], big[1])


class _FastHop(nn.Module):
    """The dsp path's hop (:meth:`CausalHybridNet.core` and the waveform branch's output delay)
    for one stream and a fixed number of frames, written for inference on the CPU: the same
    arithmetic as :class:`_Hop` up to float rounding, in fewer and cheaper kernel calls.

    - Channels last everywhere: the waveform branch is ``[time, C]``, the spectrogram branch
      ``[frames, F, C]``. Every conv is then one ``linear`` (one GEMM with its bias) on weights
      packed once at construction: 1x1 convs on the tensor itself, strided and transposed time
      convs on a strided view of the context-prefixed input (overlapping rows, no copy),
      frequency convs on one im2col copy; transposed frequency convs overlap-add tap blocks.
      No conv kernel is called: at these sizes their set-up, the transposed ones' most, costs
      more than the arithmetic. Carried context is a leading slice; per-bin residual convs and
      per-bin norms need no permutes; only the group norms over (channels, bins) see a
      transposed view.
    - Shapes are Python constants, so the trace holds no shape arithmetic.

    The packed weights are a snapshot: build a new :class:`StreamingHybrid` after changing
    the network's weights. State: the names of :meth:`CausalHybridNet.initial_state` this path
    carries, channels last (:meth:`initial_state`).
    ``(x [C, hop], spec [frames, F, 2C], *state) -> (wave [hop, S*C], spec_out
    [frames, F, 2*S*C], *new_state)``.
    """

    def __init__(self, net, frames: int):
        super().__init__()
        self.T = T = int(frames)
        self.spec_power = net.spec_power
        self.refine = None
        if getattr(net, "refiner", None) is not None:  # 1x1 convs -> linear, channels last
            r = net.refiner
            self.refine = tuple(t.detach() for t in (r[0].weight[:, :, 0, 0], r[0].bias,
                                                     r[2].weight[:, :, 0, 0], r[2].bias))
        self.shapes: dict[str, tuple[int, ...]] = {}
        if len(net.specs) != len(net.freq_encoder) or not all(s.freq for s in net.specs):
            raise _Unsupported("layers after the merge")
        n, f = T * net.stft_hop, net.n_fft // 2  # waveform samples, bins at this depth
        lengths = []
        self.enc_t, self.enc_z = [], []
        for sp, tenc, enc in zip(net.specs, net.time_encoder, net.freq_encoder):
            lengths.append(n)
            self.enc_t.append(self._pack_tenc(tenc, n))
            n //= sp.time_stride
            self.enc_z.append(self._pack_zenc(enc, sp, f))
            f = sp.freqs_out
        if (n, f) != (T, 1):
            raise _Unsupported("geometry")
        self.emb = None
        if net.freq_embedding is not None:
            with torch.no_grad():  # [C, F, 1], as the network adds it -> [F, C]
                emb = net.freq_emb_weight * net.freq_embedding(net.specs[0].freqs_out)
            self.emb = emb[:, :, 0].t().contiguous()
        self.lstm = self._pack_lstm(net.bottleneck)
        self.attn = net.bottleneck.attn
        if self.attn is not None:
            a = self.attn
            self.shapes[a.key + ".k"] = self.shapes[a.key + ".v"] = (
                1, a.heads, a.channels // a.heads, a.window - 1)
        self.dec_z, self.dec_t = [], []
        for i, (dec, tdec) in enumerate(zip(net.freq_decoder, net.time_decoder)):
            j = len(net.specs) - 1 - i
            self.dec_z.append(self._pack_zdec(dec, net.specs[j], net.freq_skip_delay[i]))
            self.dec_t.append(self._pack_tdec(tdec, net.specs[j], lengths[j],
                                              net.time_skip_delay[i]))
        self.out_delay = self._delay(net.time_out_delay, (len(net.sources) * net.audio_channels,))
        self.mask = None
        if net.mask_delay is not None:  # mask output: the input spectrum's delay line
            self.mask = (self._delay(net.mask_delay, (net.n_fft // 2, 2 * net.audio_channels)),
                         len(net.sources), net.audio_channels, net.n_fft // 2)
        self.hop = T * net.stft_hop
        self.keys = list(self.shapes)

    def initial_state(self) -> dict[str, torch.Tensor]:
        return {k: torch.zeros(s) for k, s in self.shapes.items()}

    # -- packing (detached copies of the weights) ---------------------------------------------

    @staticmethod
    def _norm(norm):
        if norm is None:
            return None
        return (norm.groups, norm.weight.detach().clone(), norm.bias.detach().clone(), norm.eps,
                (int(norm.weight.shape[0]),))

    @staticmethod
    def _taps_last(w: torch.Tensor) -> torch.Tensor:
        """Conv weight ``[out, in, *taps]`` -> ``[out, (*taps, in)]``: columns in the order of
        channels-last taps."""
        return w.detach().permute(0, *range(2, w.dim()), 1).reshape(w.shape[0], -1).clone()

    def _cconv(self, mod, n_in, bins=None):
        """A :class:`CausalConv1d` on ``[n_in, C]``, or per bin on ``[n_in, bins, C]``."""
        conv = mod.conv
        k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
        if conv.padding[0] or conv.groups != 1:
            raise _Unsupported("conv padding/groups")
        ctx, cin = mod.context, conv.in_channels
        if ctx:
            self.shapes[mod.key] = (ctx, cin) if bins is None else (ctx, bins, cin)
        return dict(key=mod.key, ctx=ctx, k=k, s=s, d=d, cin=cin, n_in=n_in, bins=bins or 1,
                    n_out=(ctx + n_in - (k - 1) * d - 1) // s + 1,
                    w=self._taps_last(conv.weight), b=conv.bias.detach().clone())

    def _residual(self, res, n, bins=None):
        if res is None:
            return None
        return [dict(conv=self._cconv(conv_in, n, bins), norm_in=self._norm(norm_in),
                     w_out=conv_out.weight.detach()[:, :, 0].clone(),
                     b_out=conv_out.bias.detach().clone(), norm_out=self._norm(norm_out),
                     gain=gain.detach().clone())
                for conv_in, norm_in, conv_out, norm_out, gain in zip(
                    res.convs_in, res.norms_in, res.convs_out, res.norms_out, res.gains)]

    def _pack_tenc(self, tenc, n):
        p = dict(bare=tenc.bare, conv=self._cconv(tenc.conv, n))
        if not tenc.bare:
            p.update(norm=self._norm(tenc.norm_conv.norm),
                     residual=self._residual(tenc.residual, p["conv"]["n_out"]),
                     w_rw=tenc.rewrite.weight.detach()[:, :, 0].clone(),
                     b_rw=tenc.rewrite.bias.detach().clone(),
                     norm_rw=self._norm(tenc.norm_rewrite.norm))
        return p

    def _pack_zenc(self, enc, sp, f):
        conv = enc.conv
        k, s, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        f_out = (f + 2 * pad - k) // s + 1
        if f_out != sp.freqs_out or conv.kernel_size[1] != 1 or conv.stride[1] != 1:
            raise _Unsupported("frequency conv geometry")
        return dict(k=k, s=s, pad=pad, f=f, f_out=f_out, cin=conv.in_channels,
                    edge=torch.zeros(self.T, pad, conv.in_channels),
                    cout=conv.out_channels, w=self._taps_last(conv.weight[..., 0]),
                    b=conv.bias.detach().clone(), norm=self._norm(enc.norm_conv.norm),
                    residual=self._residual(enc.residual, self.T, f_out),
                    w_rw=enc.rewrite.weight.detach()[:, :, 0, 0].clone(),
                    b_rw=enc.rewrite.bias.detach().clone(),
                    norm_rw=self._norm(enc.norm_rewrite.norm))

    def _pack_lstm(self, bott):
        if bott.rnn is None:
            return None
        layers = [tuple(getattr(bott.rnn, f"{n}_l{i}").detach().clone() for n in
                        ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                  for i in range(bott.layers)]
        self.shapes[bott.key + ".h"] = self.shapes[bott.key + ".c"] = (
            bott.layers, 1, bott.channels)
        return dict(key=bott.key, layers=layers, w_proj=bott.proj.weight.detach().clone(),
                    b_proj=bott.proj.bias.detach().clone())

    def _delay(self, mod, shape):
        if not mod.frames:
            return None
        self.shapes[mod.key] = (mod.frames, *shape)
        return (mod.key, mod.frames)

    def _pack_zdec(self, dec, sp, skip_delay):
        f, rw = sp.freqs_out, dec.rewrite
        conv, c = rw.conv, rw.context
        cin = conv.in_channels
        if conv.padding != (c, 0) or conv.kernel_size != (2 * c + 1, c + 1):
            raise _Unsupported("rewrite geometry")
        if c:
            self.shapes[rw.key] = (c, f, cin)
        up = dec.upconv
        k, s = up.kernel_size[0], up.stride[0]
        if up.padding != (0, 0) or up.output_padding != (0, 0) or up.kernel_size[1] != 1 or (
                f > 1 and k % s):
            raise _Unsupported("transposed conv geometry")
        cu = up.out_channels
        w_up = up.weight.detach()[..., 0].permute(2, 1, 0).reshape(k * cu, up.in_channels)
        b = up.bias.detach()
        if f == 1:  # no overlap: every tap carries the bias
            b_up, b_row = b.repeat(k), None
        else:  # the first stride of taps carries it, and the block only later taps reach
            b_up = torch.cat([b.repeat(s), torch.zeros((k - s) * cu)])
            b_row = b.expand(self.T, k // s - 1, s, cu).clone()
        return dict(
            skip=self._delay(skip_delay, (f, sp.chout_z)), key=rw.key, c=c, f=f, cin=cin,
            edge=torch.zeros(c + self.T, c, cin),
            w_rw=self._taps_last(conv.weight), b_rw=conv.bias.detach().clone(),
            norm_rw=self._norm(dec.norm_rewrite.norm), k=k, s=s, cu=cu, w_up=w_up.clone(),
            b_up=b_up.clone(), b_row=b_row, pad=dec.pad,
            zlen=k if f == 1 else (f + k // s - 1) * s, norm_out=self._norm(dec.norm_out.norm),
            last=dec.last)

    def _pack_tdec(self, tdec, sp, n, skip_delay):
        m = n // sp.time_stride  # input frames of this decoder
        p = dict(bare=tdec.bare, last=tdec.last)
        if not tdec.bare:
            p.update(skip=self._delay(skip_delay, (sp.chout_t,)),
                     rewrite=self._cconv(tdec.rewrite, m),
                     norm_rw=self._norm(tdec.norm_rewrite.norm))
        up = tdec.upconv
        conv, s = up.conv, up.stride
        cin, cout = conv.in_channels, conv.out_channels
        if conv.kernel_size[0] != 2 * s or conv.stride[0] != s or conv.padding[0]:
            raise _Unsupported("transposed time conv geometry")
        # output block m, tap r: input frame m (taps s + r) and frame m + 1 (taps r), i.e.
        # columns (frame j, cin), rows (r, cout)
        w = conv.weight.detach()  # [cin, cout, 2s]
        w_up = torch.cat([w[:, :, s:], w[:, :, :s]], 0)  # [(j, cin), cout, r]
        self.shapes[up.key] = (1, cin)
        p.update(key=up.key, m=m, cin=cin, cout=cout, s=s,
                 w_up=w_up.permute(2, 1, 0).reshape(s * cout, 2 * cin).clone(),
                 b_up=conv.bias.detach().repeat(s), norm_out=self._norm(tdec.norm_out.norm))
        return p

    # -- running ------------------------------------------------------------------------------

    @staticmethod
    def _gn(x, norm):
        """Per-row group norm: ``[time or rows, C]``, or ``[frames, F, C]`` with the groups
        over channels and bins of a frame (through a transposed view)."""
        if norm is None:
            return x
        g, w, b, eps, c = norm
        if x.dim() == 2:  # one group per row is a layer norm, whose kernel is faster here
            return (F.layer_norm(x, c, w, b, eps) if g == 1 else
                    F.group_norm(x, g, w, b, eps))
        if x.shape[1] > 1:
            return F.group_norm(x.transpose(1, 2), g, w, b, eps).transpose(1, 2)
        return F.group_norm(x.flatten(1), g, w, b, eps).view_as(x)

    @staticmethod
    def _run_delay(spec, x, st, new, n):
        if spec is None:
            return x
        key = spec[0]
        full = torch.cat([st[key], x], 0)
        new[key] = full[n:]
        return full[:n]

    @staticmethod
    def _run_cconv(p, x, st, new):
        """``x [n_in, C]`` -> ``[n_out, cout]``; per bin ``[n_in, F, C]`` -> ``[n_out * F,
        cout]``."""
        ctx, k, s, d, cin, bins = p["ctx"], p["k"], p["s"], p["d"], p["cin"], p["bins"]
        n_in, n_out = p["n_in"], p["n_out"]
        if ctx:
            full = torch.cat([st[p["key"]], x], 0)
            new[p["key"]] = full[n_in:]
        else:
            full = x.contiguous()
        fr = bins * cin  # values per frame
        if d == 1 and bins == 1:  # overlapping rows of the input itself
            cols = full.as_strided((n_out, k * cin), (s * cin, 1))
        else:
            cols = full.as_strided((n_out, bins, k, cin), (s * fr, cin, d * fr, 1)).reshape(
                n_out * bins, k * cin)
        return F.linear(cols, p["w"], p["b"])

    def _run_residual(self, layers, x, st, new):
        """``x [n, C]``, or per bin ``[frames, F, C]``."""
        for p in layers:
            h = self._run_cconv(p["conv"], x, st, new)  # [rows, hidden]
            h = _gelu(self._gn(h, p["norm_in"]))
            y = F.glu(self._gn(F.linear(h, p["w_out"], p["b_out"]), p["norm_out"]), dim=1)
            x = torch.addcmul(x, y.view_as(x), p["gain"])
        return x

    def _run_tenc(self, p, x, st, new):
        y = self._run_cconv(p["conv"], x, st, new)
        if p["bare"]:
            return y
        y = _gelu(self._gn(y, p["norm"]))
        if p["residual"] is not None:
            y = self._run_residual(p["residual"], y, st, new)
        return F.glu(self._gn(F.linear(y, p["w_rw"], p["b_rw"]), p["norm_rw"]), dim=1)

    def _run_zenc(self, p, x, st, new, inject):
        T, k, s, pad, cin, f_out = self.T, p["k"], p["s"], p["pad"], p["cin"], p["f_out"]
        if f_out == 1 and not pad and p["f"] == k:  # the merge layer: all bins are taps
            cols = x.reshape(T, k * cin)
        else:
            xp = torch.cat([p["edge"], x, p["edge"]], 1) if pad else x.contiguous()
            fp = p["f"] + 2 * pad
            cols = xp.as_strided((T, f_out, k * cin), (fp * cin, s * cin, 1)).reshape(
                T * f_out, k * cin)
        y = F.linear(cols, p["w"], p["b"]).view(T, f_out, p["cout"])
        if inject is not None:  # [T, C]
            y = y + inject[:, None]
        y = _gelu(self._gn(y, p["norm"]))
        if p["residual"] is not None:
            y = self._run_residual(p["residual"], y, st, new)
        y = F.linear(y.reshape(T * f_out, p["cout"]), p["w_rw"], p["b_rw"])
        return F.glu(self._gn(y.view(T, f_out, -1), p["norm_rw"]), dim=2)

    def _run_lstm(self, p, x, st, new):
        """``x [T, C]`` -> ``x + proj(lstm(x))``, frame by frame: ATen's ``lstm_cell`` (the
        equations of :func:`~.causal_blocks._lstm_cell` in one call)."""
        key = p["key"]
        h0, c0 = st[key + ".h"], st[key + ".c"]
        seq, hs, cs = x, [], []
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(p["layers"]):
            h, c = h0[layer], c0[layer]
            outs = []
            for t in range(self.T):
                h, c = torch.lstm_cell(seq[t:t + 1], (h, c), w_ih, w_hh, b_ih, b_hh)
                outs.append(h)
            seq = torch.cat(outs, 0) if self.T > 1 else outs[0]
            hs.append(h)
            cs.append(c)
        new[key + ".h"], new[key + ".c"] = torch.stack(hs), torch.stack(cs)
        return x + F.linear(seq, p["w_proj"], p["b_proj"])

    def _run_zdec(self, p, x, skip, st, new):
        T, c, f, cin = self.T, p["c"], p["f"], p["cin"]
        z = x + self._run_delay(p["skip"], skip, st, new, T)  # [T, F, C]
        if c:
            full = torch.cat([st[p["key"]], z], 0)
            new[p["key"]] = full[T:]
            full = torch.cat([p["edge"], full, p["edge"]], 1)  # zero bins either side
        else:
            full = z.contiguous()
        fp, kf, kt = f + 2 * c, 2 * c + 1, c + 1
        cols = full.as_strided((T, f, kf, kt, cin), (fp * cin, cin, cin, fp * cin, 1)).reshape(
            T * f, kf * kt * cin)
        y = F.linear(cols, p["w_rw"], p["b_rw"]).view(T, f, -1)
        y = F.glu(self._gn(y, p["norm_rw"]), dim=2)  # [T, F, C]: the time decoder's input
        k, s, cu = p["k"], p["s"], p["cu"]
        parts = F.linear(y.reshape(T * f, cin), p["w_up"], p["b_up"])  # [(T, F), (tap, cu)]
        if f == 1:
            z = parts.view(T, k, cu)
        else:  # overlap-add: block q gets tap block j of input bin q - j
            m = k // s
            parts = parts.view(T, f, m, s, cu)
            z = torch.cat([parts[:, :, 0], p["b_row"]], 1)  # [T, F + m - 1, s, cu]
            for j in range(1, m):
                z[:, j:j + f].add_(parts[:, :, j])
            z = z.view(T, p["zlen"], cu)
        z = self._gn(z, p["norm_out"])  # over the whole output, as the layer; then crop
        if p["pad"]:
            z = z[:, p["pad"]:p["zlen"] - p["pad"]]
        return (z if p["last"] else _gelu(z)), y

    def _run_tdec(self, p, x, skip, st, new):
        if not p["bare"]:
            x = x + self._run_delay(p["skip"], skip, st, new, p["m"])
            x = F.glu(self._gn(self._run_cconv(p["rewrite"], x, st, new), p["norm_rw"]), dim=1)
        m, cin, s = p["m"], p["cin"], p["s"]
        full = torch.cat([st[p["key"]], x], 0)
        new[p["key"]] = full[m:]
        cols = full.as_strided((m, 2 * cin), (cin, 1))  # frames (m, m + 1)
        z = F.linear(cols, p["w_up"], p["b_up"]).view(m * s, p["cout"])
        z = self._gn(z, p["norm_out"])
        return z if p["last"] else _gelu(z)

    def forward(self, x, spec, *state):
        st = dict(zip(self.keys, state))
        new: dict[str, torch.Tensor] = {}
        xt, z = x.t(), compress_cac(spec, self.spec_power, dim=2)
        skips, skips_t = [], []
        for idx, (pt, pz) in enumerate(zip(self.enc_t, self.enc_z)):
            xt = self._run_tenc(pt, xt, st, new)
            if not pt["bare"]:
                skips_t.append(xt)
            z = self._run_zenc(pz, z, st, new, xt if pt["bare"] else None)
            if idx == 0 and self.emb is not None:
                z = z + self.emb
            skips.append(z)
        y = z[:, 0]  # [T, C]
        if self.lstm is not None:
            y = self._run_lstm(self.lstm, y, st, new)
        if self.attn is not None:
            key = self.attn.key
            d = {key + ".k": st[key + ".k"], key + ".v": st[key + ".v"]}
            y = self.attn(y.t()[None], d)[0].t()
            new[key + ".k"], new[key + ".v"] = d[key + ".k"], d[key + ".v"]
        y = y[:, None]  # [T, 1, C]
        n_dec = len(self.dec_z)
        for i, (pz, pt) in enumerate(zip(self.dec_z, self.dec_t)):
            y, pre = self._run_zdec(pz, y, skips[n_dec - 1 - i], st, new)
            if pt["bare"]:
                xt = self._run_tdec(pt, pre[:, 0], None, st, new)
            else:
                xt = self._run_tdec(pt, xt, skips_t[n_dec - 1 - i], st, new)
        xt = self._run_delay(self.out_delay, xt, st, new, self.hop)
        if self.mask is not None:  # as CausalHybridNet.head, channels last
            delay, s, c, f = self.mask
            z = self._run_delay(delay, spec, st, new, self.T)
            logits = y.view(self.T, f, s, c, 2)[..., 0]
            if self.refine is not None:
                w1, b1, w2, b2 = self.refine
                feat = torch.cat([y, compress_cac(z, self.spec_power, dim=2)], dim=2)
                hid = _gelu(F.linear(feat, w1, b1))
                logits = logits + F.linear(hid, w2, b2).view(self.T, f, s, c)
            share = torch.softmax(logits, dim=2)
            y = (share[..., None] * z.view(self.T, f, 1, c, 2)).view(self.T, f, 2 * s * c)
        return (xt, y) + tuple(new[k] for k in self.keys)


class StreamingHybrid:
    """Separator protocol over a :class:`CausalHybridNet`.

    Args:
        net: the network (its weights are used as they are; it is put in eval mode).
        device: 'cpu', 'cuda', 'cuda:N'.
        stft: 'auto' (dsp on CPU, torch elsewhere), 'dsp' or 'torch'.
        cuda_graph: capture the hop in a CUDA graph when on CUDA (default True).
        jit: on the dsp path, trace the hop with TorchScript once at construction (about 1.7x
            less per-hop time than eager on the 2-core CPU: fewer Python dispatches). The
            generic trace (``fast=False``) shares the module's parameters: construct anew
            after changing the architecture, not after changing weights.
        hop_frames: STFT frames per :meth:`step` (``hop = hop_frames * net.stft_hop``);
            more frames per call amortise per-call overhead (GPU) at the cost of one hop more
            of engine latency.
        fast: on the dsp path (with ``jit``), trace :class:`_FastHop` instead of the
            network's own hop: same results up to float rounding, 2.5 times less time per hop
            on the 2-core CPU (docs/MODEL.md). Its packed weights are a snapshot: construct
            anew after changing the weights. Default: on, unless the environment variable
            ``LIVESTEMS_FAST_HOP`` is ``0``. Where the network has a layer it does not cover,
            tracing fails, or its two-hop self-check against the network disagrees, the
            generic trace is used and :attr:`fast_error` says why.

    Attributes: ``sample_rate`` (Hz), ``channels``, ``sources``, ``hop`` (samples),
    ``latency_samples`` (from the network's geometry: inverse-STFT window + look-ahead),
    ``module`` (the torch network, for training and export).
    """

    def __init__(self, net: CausalHybridNet, device: str = "cpu", stft: str = "auto",
                 cuda_graph: bool = True, hop_frames: int = 1, jit: bool = True,
                 fast: bool | None = None):
        self.module = net.eval()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device "
                             f"(torch {torch.__version__}); use device='cpu'")
        self.module.to(self.device)
        if stft == "auto":
            stft = "dsp" if self.device.type == "cpu" else "torch"
        if stft not in ("dsp", "torch"):
            raise ValueError(f"stft must be 'auto', 'dsp' or 'torch', got {stft!r}")
        if stft == "dsp" and self.device.type != "cpu":
            raise ValueError("stft='dsp' runs on the CPU; use stft='torch' with a GPU")
        self.stft = stft
        self.sample_rate = int(net.samplerate)
        self.channels = int(net.audio_channels)
        self.sources = tuple(net.sources)
        self.hop_frames = int(hop_frames)
        if self.hop_frames < 1:
            raise ValueError(f"hop_frames must be >= 1, got {hop_frames}")
        self.hop = self.hop_frames * net.stft_hop
        self.latency_samples = int(net.latency_samples)
        n_out = len(self.sources) * self.channels
        self._out = np.zeros((len(self.sources), self.channels, self.hop), dtype=np.float32)
        self._out_flat = self._out.reshape(n_out, self.hop)
        self._out_t = torch.from_numpy(self._out)  # a view, for the projection
        if stft == "dsp":
            self._stft = StreamSTFT(net.n_fft, net.stft_hop, self.channels,
                                    net.analysis_window, pad_start=net.n_fft - net.stft_hop,
                                    max_block=self.hop)
            self._istft = StreamISTFT(net.n_fft, net.stft_hop, n_out, net.analysis_window,
                                      net.synthesis_window, max_frames=self.hop_frames)
            if self._istft.latency_samples != net.istft_latency:
                raise AssertionError("dsp and torch inverse STFT geometries disagree")
            n_bins = net.n_fft // 2
            self._ospec = np.zeros((n_out, self.hop_frames, n_bins + 1), dtype=np.complex64)
            # torch views of numpy buffers: filled in place, no per-hop allocation of them
            self._ospec_t = torch.view_as_real(torch.from_numpy(self._ospec))[:, :, :n_bins]
            self._wave_t = torch.from_numpy(self._out_flat)
            self._spec_ri = np.zeros((self.channels, 2, n_bins, self.hop_frames),
                                     dtype=np.float32)
            # the fast hop's channels-last input [k, F, C, 2]
            self._spec_kf = np.zeros((self.hop_frames, n_bins, self.channels, 2),
                                     dtype=np.float32)
        self._inv_scale = 1.0 / net.spec_scale
        self._hop_fn = None
        self._fast: _FastHop | None = None
        self.jit_error: str | None = None
        self.fast_error: str | None = None
        if fast is None:
            fast = os.environ.get("LIVESTEMS_FAST_HOP", "1") != "0"
        if stft == "dsp" and jit:
            if fast:
                self._trace_fast()
            if self._hop_fn is None:
                self._trace()
        self._graph = None
        self.cuda_graph_error: str | None = None
        self._want_graph = cuda_graph and self.device.type == "cuda"
        self.reset()

    # -- protocol ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the stream: zero every layer's state (and the STFT rings)."""
        with torch.inference_mode():
            fresh = self.module.initial_state(1, self.device)
            if self._fast is not None:  # its layouts for the names it carries
                fresh.update(self._fast.initial_state())
        if self._graph is not None:
            for k, v in fresh.items():  # the graph reads these exact tensors: refill them
                self._state[k].copy_(v)
        else:
            self._state = fresh
        if self.stft == "dsp":
            self._stft.reset()
            self._istft.reset()
        elif self._want_graph and self._graph is None and self.cuda_graph_error is None:
            self._capture()

    def state_nbytes(self) -> int:
        """Bytes of carried state (network + STFT rings): constant over the stream."""
        n = sum(t.numel() * t.element_size() for t in self._state.values())
        if self.stft == "dsp":
            n += self._stft._ring.nbytes + self._istft._acc.nbytes
        return n

    def state_names(self) -> list[str]:
        """Names of the carried state tensors, one or more per stateful layer."""
        return sorted(self._state)

    def step(self, x: np.ndarray) -> np.ndarray:
        """One hop: float32 ``[channels, hop]`` -> stems float32 ``[S, channels, hop]`` (view),
        each sample ``latency_samples`` behind the input."""
        check_step_input(self, x)
        if self.stft == "dsp":
            return self._step_dsp(x)
        return self._step_torch(x)

    def _trace(self) -> None:
        net = self.module
        with torch.inference_mode():
            state = net.initial_state(1, self.device)
        keys = list(state)
        hop_mod = _Hop(net, keys)
        x = torch.zeros(1, self.channels, self.hop)
        cac = torch.zeros(1, 2 * self.channels, net.n_fft // 2, self.hop_frames)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # the shape branches it warns about are fixed for a given hop size
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(hop_mod, (x, cac, *state.values()), check_trace=False)
        except Exception as exc:  # noqa: BLE001 - tracing is an optimisation; run eagerly
            self.jit_error = f"{type(exc).__name__}: {exc}"
            return
        self._hop_keys = keys
        self._hop_fn = traced

    def _trace_fast(self) -> None:
        net = self.module
        err = None
        try:
            fast = _FastHop(net, self.hop_frames)
            state = fast.initial_state()
            x = torch.zeros(self.channels, self.hop)
            spec = torch.zeros(self.hop_frames, net.n_fft // 2, 2 * self.channels)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(fast, (x, spec, *state.values()), check_trace=False)
            err = self._check_fast(fast, traced)
        except Exception as exc:  # noqa: BLE001 - an optimisation: use the generic trace
            err = f"{type(exc).__name__}: {exc}"
        if err is not None:
            self.fast_error = err
            return
        self._fast = fast
        self._hop_keys = fast.keys
        self._hop_fn = traced

    def _check_fast(self, fast: _FastHop, traced) -> str | None:
        """Two hops of random input through the traced fast hop and the network's own eager
        hop, state carried; the reason to reject it, or None."""
        net, k, C = self.module, self.hop_frames, self.channels
        gen = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            ref = net.initial_state(1, self.device)
            st = fast.initial_state()
            for _ in range(2):
                x = 0.3 * torch.randn(C, self.hop, generator=gen)
                spec = torch.randn(1, 2 * C, net.n_fft // 2, k, generator=gen)
                wave, spec_out = net.core(x[None], spec, ref)
                spec_out = net.head(spec, spec_out, ref)
                wave = net.time_out_delay(wave, ref)
                res = traced(x, spec[0].permute(2, 1, 0).contiguous(), *st.values())
                st = dict(zip(fast.keys, res[2:]))
                for want, got in ((wave[0].t(), res[0]), (spec_out[0].permute(2, 1, 0), res[1])):
                    diff = float((want - got).abs().max())
                    if not diff <= 1e-3 * (1.0 + float(want.abs().max())):
                        return f"self-check: fast hop differs from the network by {diff:.3g}"
        return None

    def _step_dsp(self, x: np.ndarray) -> np.ndarray:
        net = self.module
        spec = self._stft.process(x)  # complex64 [C, k, bins + 1]
        if self._fast is not None:
            return self._step_fast(x, spec)
        # complex-as-channels layout [C, 2, F, k], scaled; one strided copy
        ri = spec.view(np.float32).reshape(self.channels, self.hop_frames, -1, 2)
        np.multiply(ri[:, :, :-1].transpose(0, 3, 2, 1), net.spec_scale, out=self._spec_ri)
        with torch.inference_mode():
            cac = torch.from_numpy(self._spec_ri).view(1, 2 * self.channels, -1,
                                                       self.hop_frames)
            if self._hop_fn is not None:
                st = self._state
                res = self._hop_fn(torch.from_numpy(x)[None], cac,
                                   *[st[k] for k in self._hop_keys])
                wave, spec_out = res[0], res[1]
                for k, v in zip(self._hop_keys, res[2:]):
                    st[k] = v
            else:
                wave, spec_out = net.core(torch.from_numpy(x)[None], cac, self._state)
                spec_out = net.head(cac, spec_out, self._state)
                wave = net.time_out_delay(wave, self._state)
            n_out = self._out_flat.shape[0]
            so = spec_out.view(n_out, 2, -1, self.hop_frames).permute(0, 3, 2, 1)
            torch.mul(so, self._inv_scale, out=self._ospec_t)
            self._wave_t.copy_(wave[0])
        self._out_flat += self._istft.process(self._ospec)
        return self._project(x)

    def _step_fast(self, x: np.ndarray, spec: np.ndarray) -> np.ndarray:
        ri = spec.view(np.float32).reshape(self.channels, self.hop_frames, -1, 2)
        # channels last [k, F, C, 2], scaled; one strided copy
        np.multiply(ri[:, :, :-1].transpose(1, 2, 0, 3), self.module.spec_scale,
                    out=self._spec_kf)
        n_out, k = self._out_flat.shape[0], self.hop_frames
        # untraced if someone dropped the trace (tests/model/nets/step_timing.py --no-jit)
        fn = self._hop_fn if self._hop_fn is not None else self._fast
        with torch.inference_mode():
            st = self._state
            res = fn(torch.from_numpy(x), torch.from_numpy(self._spec_kf).view(
                k, -1, 2 * self.channels), *[st[key] for key in self._hop_keys])
            for key, v in zip(self._hop_keys, res[2:]):
                st[key] = v
            so = res[1].view(k, -1, n_out, 2).permute(2, 0, 1, 3)
            torch.mul(so, self._inv_scale, out=self._ospec_t)
            self._wave_t.copy_(res[0].t())
        self._out_flat += self._istft.process(self._ospec)
        return self._project(x)

    def _project(self, x: np.ndarray) -> np.ndarray:
        """Mixture consistency (when the network has it) on the hop's stems, in place: the
        network's own delay line and the same arithmetic as :meth:`CausalHybridNet.project`."""
        net = self.module
        if net.mix_delay is not None:
            with torch.inference_mode():
                out = self._out_t
                out.copy_(net.project(torch.from_numpy(x)[None], out[None], self._state)[0])
        return self._out

    def _step_torch(self, x: np.ndarray) -> np.ndarray:
        if self._graph is not None:
            self._x_static.copy_(torch.from_numpy(x))
            self._graph.replay()
            self._out_flat[:] = self._y_static.cpu().numpy()
            return self._out
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device)[None]
            y = self.module.stream(xt, self._state)
            self._out_flat[:] = y.reshape(self._out_flat.shape).cpu().numpy()
        return self._out

    def _capture(self) -> None:
        """Record one hop of :meth:`CausalHybridNet.stream` into a CUDA graph."""
        net = self.module
        try:
            self._x_static = torch.zeros(self.channels, self.hop, device=self.device)
            static = self._state
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # warm-up on a side stream, as capture requires
                    scratch = {k: v.clone() for k, v in static.items()}
                    net.stream(self._x_static[None], scratch)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                work = dict(static)
                y = net.stream(self._x_static[None], work)
                for k, v in work.items():
                    if v is not static[k]:
                        static[k].copy_(v)
                self._y_static = y.reshape(self._out_flat.shape)
            self._graph = graph
            self.reset()  # capture ran the step once on zeros; start clean
        except Exception as exc:  # noqa: BLE001 - any failure means "run eagerly"
            self._graph = None
            self.cuda_graph_error = f"{type(exc).__name__}: {exc}"
            with torch.inference_mode():
                self._state = net.initial_state(1, self.device)

    # -- offline -----------------------------------------------------------------------------

    def forward(self, x: np.ndarray, chunk_hops: int = 64) -> np.ndarray:
        """Offline: float ``[B, C, T]`` -> aligned stems float32 ``[B, S, C, T]``.

        Runs the network's torch STFT path (not the dsp kernels ``step`` uses) from the zero
        state in chunks of ``chunk_hops`` STFT hops, carrying state, so memory stays bounded
        for long inputs; the result is the same as one call over the whole input.
        """
        x = check_forward_input(self, x)
        net = self.module
        batch, _, total = x.shape
        lat, hop = self.latency_samples, net.stft_hop
        n = -(-(total + lat) // hop)
        xp = np.zeros((batch, self.channels, n * hop), dtype=np.float32)
        xp[:, :, :total] = x
        out = np.empty((batch, len(self.sources), self.channels, n * hop), dtype=np.float32)
        with torch.inference_mode():
            state = net.initial_state(batch, self.device)
            step = chunk_hops * hop
            for a in range(0, n * hop, step):
                xt = torch.from_numpy(xp[:, :, a:a + step]).to(self.device)
                out[..., a:a + step] = net.stream(xt, state).cpu().numpy()
        return out[..., lat:lat + total]

    def forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable offline forward (training): ``[B, C, T]`` -> ``[B, S, C, T]``."""
        return self.module(x)
