"""The causal hybrid network's batched offline path: many frames per call, in GEMMs.

:class:`BatchedNet` computes what :meth:`CausalHybridNet.stream` computes (new samples in,
the streaming stems out, state carried from call to call), rewritten for throughput on the
CPU, where the generic path spends most of its time around the arithmetic (layout copies,
per-frame norms through permutes, small-kernel set-up):

- Channels first, everything flat: an activation is ``[channels, columns]`` with the columns
  the frames' bins (frame-major) or the waveform's samples, in buffers allocated once. A
  causal layer's input buffer holds its carried context as leading columns, so the layer
  before writes into it in place; no concatenation, permute or padding copy is made.
- Every conv is one GEMM, ``weights [out, taps x in] @ columns [taps x in, frames x bins]``,
  on an im2col copy of its input (strided frequency convs, causal time taps, the decoders'
  frequency x time rewrite, transposed convs as convs over blocks of ``stride`` outputs).
  With the long axis last, the GEMMs' small channel counts cost little. They run through
  numpy's BLAS (OpenBLAS in its wheel: 7 % faster than torch's MKL on the AMD machines here),
  held to the calling thread (:func:`blas_on_this_thread`), without their bias: the kernel
  that reads a GEMM's output adds it (one pass fewer). Two exceptions: a
  narrow residual layer (a few channels, where BLAS on a 2-row product and the activations
  written between its five steps cost more than the arithmetic) is one numba kernel over
  blocks of columns that stay in L1; the last transposed conv of a complex-as-channels
  output is computed transposed, so that each block's bins land in the inverse FFT's order.
- Everything between the GEMMs is one fused numba kernel per step
  (:mod:`.batched_kernels`), looping along the long contiguous rows: norm + affine + GELU
  (+ the next layer's skip), norm + GLU (+ frequency embedding), the residual branch's column
  norms, the transposed convs' reordering, the STFT framing, the mask head, and the inverse
  STFT's overlap-add with the waveform branch and the mixture projection, which writes the
  stems straight into the caller's buffer (``run(x, out=, at=)``).

The arithmetic is the network's, reordered: the result differs from :meth:`stream` by float32
rounding only (tests/model/nets/test_batched.py; tests/stream/apps/test_offline.py against
the hop-by-hop ``step``). The packed weights are a snapshot: build a new instance after
changing weights. Networks with layers it does not cover raise :class:`Unsupported`; callers
fall back to :meth:`stream`.

One instance belongs to one thread at a time. The kernels release the GIL, as numpy's GEMMs
do, so instances in two threads run in parallel.
"""

from __future__ import annotations

import numpy as np
import torch

from . import batched_kernels as K
from .causal import CausalHybridNet

__all__ = ["BatchedNet", "BlockRunner", "Unsupported", "MAX_CHANNELS",
           "blas_on_this_thread"]


#: the widest layer (conv output channels) the engine takes: its kernels are compiled for each
#: channel count, unrolled, which grows compile time and code with the width
MAX_CHANNELS = 256


class Unsupported(Exception):
    """The network has a layer :class:`BatchedNet` does not cover."""


_D2 = np.zeros((1, 1), np.float32)
_D1 = np.zeros(1, np.float32)


def _ct(n: int) -> tuple:
    """The kernels' compile-time channel count: a tuple of ``n`` zeros."""
    return (0,) * int(n)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def _np(p: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(p.detach().cpu().numpy(), dtype=np.float32)


def _norm(norm):
    """``(groups, weight, bias, eps)`` of a FrameNorm, ``(0, .., .., 0.0)`` for none."""
    if norm is None:
        return (0, _D1, _D1, 0.0)
    return (int(norm.groups), _np(norm.weight), _np(norm.bias), float(norm.eps))


class _Gemm:
    """``out [N, cols] = w [N, Kdim] @ cols [Kdim, cols] (+ bias)`` into preallocated memory,
    through numpy's BLAS (see :func:`blas_on_this_thread`)."""

    def __init__(self, w: torch.Tensor, bias: torch.Tensor | None, kdim: int, cols: int,
                 own_col: bool = True):
        self.w = _np(w)
        self.has_bias = bias is not None
        # the bias (zeros for none): added here, or by the kernel that reads the output
        self.bz = _np(bias) if self.has_bias else np.zeros(self.w.shape[0], np.float32)
        self.N, self.K = self.w.shape
        if self.K != kdim:
            raise Unsupported("weight packing")
        self.col = np.zeros((kdim, cols if own_col else 0), np.float32)
        self.out = np.zeros((self.N, cols), np.float32)

    def __call__(self, n: int, col: np.ndarray | None = None, bias: bool = True) -> np.ndarray:
        """The product over the first ``n`` columns of ``col`` (default :attr:`col`, the same
        width); returns the output (its first ``n`` columns are the result). ``bias=False``:
        without the bias, for a kernel that adds :attr:`bz` as it reads the output (one pass
        over it fewer)."""
        col = self.col if col is None else col
        out = self.out
        if n == col.shape[1] == out.shape[1]:
            np.matmul(self.w, col, out=out)
        else:  # fewer columns (a short last chunk)
            out[:, :n] = self.w @ col[:, :n]
        if bias and self.has_bias:
            np.add(out[:, :n], self.bz[:, None], out=out[:, :n])
        return out


class _GemmT:
    """The product of a :class:`_Gemm`'s weights with rows reordered by ``perm``, transposed:
    ``out [cols, N] = col [Kdim, cols].T @ w[perm].T (+ bias[perm])``, over pieces of the
    columns of the :class:`_Gemm`'s own ``col`` (BLAS reads the transposed view in place)."""

    def __init__(self, g: _Gemm, perm: np.ndarray, cols: int):
        self.g = g
        self.wt = np.ascontiguousarray(g.w[perm].T)  # [Kdim, N]
        self.bz = g.bz[perm].copy()  # the bias, for the kernel that reads the output
        self.out = np.zeros((int(cols), g.N), np.float32)

    def part(self, c0: int, c1: int) -> np.ndarray:
        """``[c1 - c0, N]``: columns ``c0 .. c1`` (at most ``cols``), without the bias
        (:attr:`bz`), valid until the next call."""
        out = self.out[:c1 - c0]
        np.matmul(self.g.col[:, c0:c1].T, self.wt, out=out)
        return out


_BLAS = []  # [threadpoolctl controller of the process's BLAS libraries, or None]


def numpy_blas_paths(info: list[dict]) -> list[str]:
    """The files among threadpoolctl's ``info`` that numpy's wheel brings (``numpy.libs``
    beside the package, or inside it)."""
    import os

    here = os.path.dirname(np.__file__)
    return [i["filepath"] for i in info
            if i["filepath"].startswith((here + ".libs", here + os.sep))]


def blas_on_this_thread():
    """A context in which numpy's BLAS (the engine's GEMMs) runs on the calling thread alone.

    The engine's parallelism is one engine per thread or process (:class:`BlockRunner`, the
    library's workers); a BLAS thread pool on top would oversubscribe the cores, and OpenBLAS's
    threads spin while they wait. The limit is process-wide while the context is open (BLAS
    libraries have one setting) and restored after; it costs ~20 us to enter. It holds the BLAS
    that numpy's own wheel brings (other BLAS libraries in the process, scipy's or torch's,
    are not the engine's), or every BLAS loaded where numpy links a system one. Without
    ``threadpoolctl`` it does nothing."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a dependency
            _BLAS.append(None)
        else:
            blas = ThreadpoolController().select(user_api="blas")
            mine = numpy_blas_paths(blas.info())
            _BLAS.append(blas.select(filepath=mine) if mine else blas)
    if _BLAS[0] is None:  # pragma: no cover
        import contextlib
        return contextlib.nullcontext()
    return _BLAS[0].limit(limits=1)


#: the largest residual layer (``H * (taps + 2) * C`` multiply-adds per column) run by the fused
#: kernel :func:`.batched_kernels.res_small` instead of im2col + GEMMs
_SMALL_RES = 512

#: frames per piece of the last decoder's transposed conv (see :meth:`BatchedNet._decode_freq`)
_SUB = 32


class _Ctx:
    """A channels-first buffer ``[rows, ctx + cols]``: ``ctx`` columns of carried context, then
    this call's columns."""

    def __init__(self, rows: int, ctx: int, cols: int):
        self.ctx = int(ctx)
        self.a = np.zeros((int(rows), self.ctx + int(cols)), np.float32)

    def carry(self, n: int) -> None:
        if self.ctx:
            K.carry_cols(self.a, self.ctx, n)

    def reset(self) -> None:
        """Zero the context (every call writes all of its own columns)."""
        self.a[:, :self.ctx] = 0.0


class _Residual:
    """The causal residual branch (dilated time taps, per-column norms, LayerScale) on ``C``
    channels of ``bins`` bins per frame (``bins = 1``: the waveform branch)."""

    def __init__(self, res, C: int, frames: int, bins: int, scratch):
        self.C, self.bins, self.scratch = C, bins, scratch
        self.layers = []
        cols = frames * bins
        for conv_in, norm_in, conv_out, norm_out, gain in zip(
                res.convs_in, res.norms_in, res.convs_out, res.norms_out, res.gains):
            conv = conv_in.conv
            k, d = conv.kernel_size[0], conv.dilation[0]
            if conv.stride[0] != 1 or conv.padding[0] or conv.groups != 1:
                raise Unsupported("residual conv geometry")
            ni, no = _norm(norm_in), _norm(norm_out)
            if ni[0] != 1 or no[0] != 1:
                raise Unsupported("residual norms with groups")
            H = conv.out_channels
            ctx = conv_in.context
            w = conv.weight.detach().permute(0, 2, 1).reshape(H, k * C)
            w_out = conv_out.weight[:, :, 0]
            L = dict(buf=_Ctx(C, ctx * bins, cols), ctx=ctx, H=H,
                     dts=np.arange(k, dtype=np.int64) * d, dfs=np.zeros(k, np.int64),
                     ni=ni, no=no, gain=_np(gain))
            if H * (k + 2) * C <= _SMALL_RES:  # one fused kernel, the weights as arrays
                def bias(b, n):
                    return np.zeros(n, np.float32) if b is None else _np(b)
                L["small"] = (_np(w), bias(conv.bias, H), _np(w_out), bias(conv_out.bias, 2 * C),
                              np.zeros((H, K.RES_BLOCK), np.float32),
                              np.zeros((2 * C, K.RES_BLOCK), np.float32))
            else:
                L["g_in"] = _Gemm(w, conv.bias, k * C, cols)
                L["g_out"] = _Gemm(w_out, conv_out.bias, H, cols, own_col=False)
            self.layers.append(L)

    def entry(self):
        """``(buffer, column offset)`` where the layer before writes the branch's input."""
        L = self.layers[0]
        return L["buf"].a, L["ctx"] * self.bins

    def run(self, T: int, out: np.ndarray, o_off: int) -> None:
        """``T`` frames of the branch's input (in :meth:`entry`) -> ``out`` at ``o_off``."""
        C, bins = self.C, self.bins
        n = T * bins
        ms, rs = self.scratch
        for i, L in enumerate(self.layers):
            buf = L["buf"]
            if i + 1 < len(self.layers):
                nxt, off = self.layers[i + 1]["buf"].a, self.layers[i + 1]["ctx"] * bins
            else:
                nxt, off = out, o_off
            if "small" in L:
                w_in, b_in, w_out, b_out, hb, ub = L["small"]
                _, wi, bi, ei = L["ni"]
                _, wo, bo, eo = L["no"]
                K.res_small(buf.a, L["ctx"] * bins, n, _ct(C), _ct(L["H"]), L["dts"] * bins,
                            w_in, b_in, wi, bi, ei, w_out, b_out, wo, bo, eo, L["gain"],
                            nxt, off, hb, ub, ms, rs)
                continue
            g = L["g_in"]
            K.im2col_shift(buf.a, 0, bins, bins, T, _ct(C), L["dts"], L["dfs"], 0, g.col)
            h = g(n)
            _, w, b, eps = L["ni"]
            K.res_ln_act(h, n, _ct(L["H"]), w, b, eps, ms, rs)
            u = L["g_out"](n, h)
            _, w, b, eps = L["no"]
            K.res_ln_glu_add(u, n, _ct(2 * C), w, b, eps, L["gain"], buf.a, L["ctx"] * bins,
                             nxt, off, ms, rs)

    def carry(self, T: int) -> None:
        for L in self.layers:
            L["buf"].carry(T * self.bins)

    def reset(self) -> None:
        for L in self.layers:
            L["buf"].reset()


class BatchedNet:
    """:meth:`CausalHybridNet.stream` over up to ``frames`` STFT frames per call, batched.

    ``run(x [C, n * stft_hop])`` -> stems ``[S, C, n * stft_hop]`` (float32 numpy, a fresh
    array), each output sample ``latency_samples`` behind the input, state carried;
    :meth:`reset` returns to the zero state.
    """

    def __init__(self, net: CausalHybridNet, frames: int = 64):
        net = net.eval()
        if any(p.device.type != "cpu" for p in net.parameters()):
            raise Unsupported("the batched path runs on the CPU")
        if len(net.specs) != len(net.freq_encoder) or not all(s.freq for s in net.specs):
            raise Unsupported("layers after the merge")
        widest = max(m.out_channels for m in net.modules()
                     if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose1d,
                                       torch.nn.ConvTranspose2d)))
        if widest > MAX_CHANNELS:
            raise Unsupported(f"{widest} channels: the kernels are compiled per width, up to "
                              f"{MAX_CHANNELS} (a GPU-sized network)")
        self.net = net
        self.sub = _SUB
        self.T = T = int(frames)
        if T < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.hop = hop = int(net.stft_hop)
        self.n_fft = N = int(net.n_fft)
        self.C = C = int(net.audio_channels)
        self.S = S = len(net.sources)
        self.Ko = Ko = S * C
        self.nb = nb = N // 2
        self.la = la = int(net.lookahead)
        self.lat = int(net.latency_samples)
        self.mask = net.output == "mask"
        self.spec_power = float(getattr(net, "spec_power", 1.0))
        refiner = getattr(net, "refiner", None)
        self.project = bool(net.consistency)
        self.L = L = len(net.specs)
        n_max = T * hop
        max_cols = max(T * nb, n_max)  # the widest activation: the first layers
        # scratch of the kernels (statistics per column, per group)
        groups = max([4] + [int(getattr(m, "groups", 1)) for m in net.modules()
                            if isinstance(getattr(m, "groups", None), int)])
        self.ms = np.zeros(groups * max_cols, np.float32)
        self.rs = np.zeros(groups * max_cols, np.float32)
        scratch = (self.ms, self.rs)

        # -- input: STFT context, mixture delay --
        self.ctx_stft = N - hop
        self.xbuf = _Ctx(C, self.ctx_stft, n_max)
        self.win = (net.analysis_window.astype(np.float64) * net.spec_scale).astype(np.float32)
        self.frames_in = np.zeros((T, C, N), np.float32)
        self.mixbuf = _Ctx(C, self.lat, n_max) if self.project else None
        # the mixture spectrum the mask head multiplies, delayed by the look-ahead
        self.specbuf = (torch.zeros(la + T, C, nb + 1, dtype=torch.complex64)
                        if self.mask else None)

        # -- encoders --
        pads = [(sp.kernel // 4 if sp.pad else 0) for sp in net.specs]
        self.tenc, self.zenc = [], []
        rows = n_max  # waveform samples at this depth (for T frames)
        f_in = nb
        cum = 1
        for i, (sp, tenc, enc) in enumerate(zip(net.specs, net.time_encoder, net.freq_encoder)):
            # waveform branch
            conv = tenc.conv.conv
            s = conv.stride[0]
            if conv.kernel_size[0] != 2 * s or conv.dilation[0] != 1 or conv.padding[0]:
                raise Unsupported("time conv geometry")
            cin, cout = conv.in_channels, conv.out_channels
            m = rows // s
            cum *= s
            lay = dict(s=s, cin=cin, cout=cout, m=m, bare=tenc.bare,
                       conv=_Gemm(conv.weight.permute(0, 2, 1).reshape(cout, 2 * s * cin),
                                  conv.bias, 2 * s * cin, m))
            if not tenc.bare:
                lay["norm"] = _norm(tenc.norm_conv.norm)
                lay["res"] = (_Residual(tenc.residual, cout, m, 1, scratch)
                              if tenc.residual is not None else None)
                lay["rw"] = _Gemm(tenc.rewrite.weight[:, :, 0], tenc.rewrite.bias, cout, m)
                lay["norm_rw"] = _norm(tenc.norm_rewrite.norm)
                # output: the next layer's input and this layer's skip (delayed by the
                # look-ahead at this rate): context for both
                delay = net.time_skip_delay[L - 1 - i].frames
                nxt_ctx = net.time_encoder[i + 1].conv.context
                lay["delay"] = delay
                lay["out"] = _Ctx(cout, max(delay, nxt_ctx), m)
            self.tenc.append(lay)
            rows = m
            # spectrogram branch
            conv = enc.conv
            k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            if conv.kernel_size[1] != 1 or conv.stride[1] != 1 or p != pads[i]:
                raise Unsupported("frequency conv geometry")
            f_out = (f_in + 2 * p - k) // s + 1
            if f_out != sp.freqs_out or f_out < 1:
                raise Unsupported("frequency conv geometry")
            cin, cout = conv.in_channels, conv.out_channels
            cols = T * f_out
            lay = dict(k=k, s=s, p=p, fin=f_in, fout=f_out, cin=cin, cout=cout,
                       conv=_Gemm(conv.weight[..., 0].permute(0, 2, 1).reshape(cout, k * cin),
                                  conv.bias, k * cin, cols),
                       norm=_norm(enc.norm_conv.norm),
                       res=(_Residual(enc.residual, cout, T, f_out, scratch)
                            if enc.residual is not None else None),
                       rw=_Gemm(enc.rewrite.weight[:, :, 0, 0], enc.rewrite.bias, cout, cols),
                       norm_rw=_norm(enc.norm_rewrite.norm),
                       # output: the next layer's input and the skip, delayed by the look-ahead
                       out=_Ctx(cout, la * f_out, cols))
            if net.freq_skip_delay[L - 1 - i].frames != la:
                raise Unsupported("skip delays")
            self.zenc.append(lay)
            f_in = f_out
        if rows != T or f_in != 1:
            raise Unsupported("the branches do not meet at one bin per STFT frame")
        if not self.tenc[-1]["bare"] or any(t["bare"] for t in self.tenc[:-1]):
            raise Unsupported("merge layer")
        self.emb, self.use_emb = _D2, False
        if net.freq_embedding is not None:
            with torch.no_grad():  # [C, F, 1] as the network adds it
                e = net.freq_emb_weight * net.freq_embedding(net.specs[0].freqs_out)
            self.emb, self.use_emb = _np(e[:, :, 0]), True

        # -- bottleneck --
        bott = net.bottleneck
        self.rnn, self.attn = bott.rnn, bott.attn
        if bott.rnn is not None:
            rnn = bott.rnn
            if rnn.bidirectional or rnn.proj_size or not rnn.bias or rnn.batch_first:
                raise Unsupported("LSTM variant")
            H = rnn.hidden_size
            self.lstm = [(getattr(rnn, f"weight_ih_l{i}").detach().t().contiguous(),
                          (getattr(rnn, f"bias_ih_l{i}") + getattr(rnn, f"bias_hh_l{i}"))
                          .detach().contiguous(),
                          _np(getattr(rnn, f"weight_hh_l{i}").t()))
                         for i in range(rnn.num_layers)]
            self.lstm_g = np.zeros(4 * H, np.float32)
            self.lstm_seq = [np.zeros((T, H), np.float32) for _ in range(rnn.num_layers)]
            self.w_proj = bott.proj.weight.detach().contiguous()
            self.b_proj = bott.proj.bias.detach().reshape(-1, 1).contiguous()

        # -- decoders --
        self.zdec, self.tdec = [], []
        prev_pitch, prev_crop = 1, 0  # how the layer before lays out its output frames
        for i, (dec, tdec) in enumerate(zip(net.freq_decoder, net.time_decoder)):
            j = L - 1 - i
            enc = self.zenc[j]
            F, Cz = enc["fout"], enc["cout"]
            rw = dec.rewrite
            c = rw.context
            conv = rw.conv
            if conv.kernel_size != (2 * c + 1, c + 1) or conv.padding != (c, 0):
                raise Unsupported("rewrite geometry")
            taps = [(dt, df) for dt in range(c + 1) for df in range(2 * c + 1)
                    if F > 1 or df == c]  # a single bin's neighbours are the zero padding
            w = torch.cat([conv.weight.detach()[:, :, df, dt] for dt, df in taps], 1)
            up = dec.upconv
            k, s = up.kernel_size[0], up.stride[0]
            if (up.padding != (0, 0) or up.output_padding != (0, 0) or up.kernel_size[1] != 1
                    or k % s):
                raise Unsupported("transposed conv geometry")
            cu, mb = up.out_channels, k // s
            Fa = F + mb - 1
            wu = up.weight.detach()[..., 0].reshape(Cz, cu, mb, s).permute(1, 3, 2, 0)
            d = dict(F=F, C=Cz, c=c, s=s, cu=cu, mb=mb, Fa=Fa, pad=dec.pad, last=dec.last,
                     # input: y + skip, c frames of context, frames at the pitch the layer
                     # before writes them (the crop of its transposed conv included)
                     inp=_Ctx(Cz, c * prev_pitch, T * prev_pitch), pitch=prev_pitch,
                     crop=prev_crop,
                     dts=np.array([t for t, _ in taps], np.int64),
                     dfs=np.array([f for _, f in taps], np.int64),
                     rw=_Gemm(w, conv.bias, len(taps) * Cz, T * F),
                     norm_rw=_norm(dec.norm_rewrite.norm),
                     pre=np.zeros((Cz, T * F), np.float32),
                     up=_Gemm(wu.reshape(cu * s, mb * Cz), up.bias.detach().repeat_interleave(s),
                              mb * Cz, T * Fa),
                     norm_out=_norm(dec.norm_out.norm))
            self.zdec.append(d)
            prev_pitch, prev_crop = Fa * s, dec.pad
            tl = self.tenc[j]
            m = tl["m"]  # this decoder's input columns: the mirror encoder's output
            t = dict(bare=tdec.bare, last=tdec.last, m=m, cin=tl["cout"])
            cin = tl["cout"]
            if not tdec.bare:
                rcv = tdec.rewrite.conv
                kt = rcv.kernel_size[0]
                if rcv.stride[0] != 1 or rcv.dilation[0] != 1 or rcv.padding[0]:
                    raise Unsupported("time rewrite geometry")
                t.update(inp=_Ctx(cin, kt - 1, m), dts=np.arange(kt, dtype=np.int64),
                         dfs=np.zeros(kt, np.int64),
                         rw=_Gemm(rcv.weight.permute(0, 2, 1).reshape(2 * cin, kt * cin),
                                  rcv.bias, kt * cin, m),
                         norm_rw=_norm(tdec.norm_rewrite.norm))
            upc = tdec.upconv.conv
            s = tdec.upconv.stride
            if upc.kernel_size[0] != 2 * s or upc.stride[0] != s or upc.padding[0]:
                raise Unsupported("transposed time conv geometry")
            cout = upc.out_channels
            wt = upc.weight.detach().reshape(cin, cout, 2, s).permute(1, 3, 2, 0)
            t.update(s=s, cout=cout, uin=_Ctx(cin, 1, m),
                     up=_Gemm(wt.reshape(cout * s, 2 * cin), upc.bias.detach().repeat_interleave(s),
                              2 * cin, m),
                     norm_out=_norm(tdec.norm_out.norm))
            self.tdec.append(t)
        last = self.zdec[-1]
        if last["Fa"] * last["s"] - 2 * last["pad"] != nb or last["cu"] != 2 * Ko:
            raise Unsupported("spectrogram output geometry")
        if self.tdec[-1]["cout"] != Ko or self.tdec[-1]["m"] * self.tdec[-1]["s"] != n_max:
            raise Unsupported("waveform output geometry")
        if not self.mask and last["norm_out"][0] == 0 and last["pad"] < last["s"]:
            # CaC: the last transposed conv straight into the inverse FFT's input, from a
            # transposed product whose rows are (stem channel, bin in block, re/im)
            s = last["s"]
            perm = np.array([(2 * k + ri) * s + r for k in range(Ko) for r in range(s)
                             for ri in range(2)], np.int64)
            last["up_t"] = _GemmT(last["up"], perm, self.sub * last["Fa"])
            last["up"].out = np.zeros((last["up"].N, 0), np.float32)  # (never used)
        # the spectrogram branch's output (frames of Fa * s bins, the crop either side)
        self.so = np.zeros((2 * Ko, T * last["Fa"] * last["s"]), np.float32)
        # the waveform branch's output, delayed by the inverse STFT's latency
        self.wave = _Ctx(Ko, net.time_out_delay.frames, n_max)
        # the inverse FFT's input [K, T, bins + 1] (Nyquist bin zero) and the overlap-add
        self.zifft = torch.zeros(Ko, T, nb + 1, dtype=torch.complex64)
        self.zr = torch.view_as_real(self.zifft).numpy()
        syn = net.syn_window.detach().cpu().numpy().astype(np.float64) / net.spec_scale
        self.syn = syn.astype(np.float32)
        self.M = M = len(syn)
        self.tail = np.zeros((Ko, M - hop), np.float32)
        self.acc = np.zeros(n_max + M - hop, np.float32)
        self.es = np.zeros((S + 1) * nb, np.float32)
        # the input spectrum power-law compressed (the branch reads it; the refiner too)
        self.specc = (np.zeros((la + T, C, nb + 1, 2), np.float32)
                      if self.spec_power != 1.0 or refiner is not None else None)
        self.refine = None
        if refiner is not None:
            c1, act, c2 = refiner
            if (not isinstance(act, torch.nn.GELU) or act.approximate != "none"
                    or c1.kernel_size != (1, 1) or c2.kernel_size != (1, 1)
                    or c1.in_channels != 2 * Ko + 2 * C or c2.out_channels != Ko):
                raise Unsupported("mask refiner")
            self.refine = (_Gemm(c1.weight[:, :, 0, 0], c1.bias, 2 * Ko + 2 * C, T * nb),
                           _Gemm(c2.weight[:, :, 0, 0], c2.bias, c1.out_channels, T * nb,
                                 own_col=False))
        self.reset()

    # -- state --------------------------------------------------------------------------------

    def _bufs(self):
        yield self.xbuf
        if self.mixbuf is not None:
            yield self.mixbuf
        for lay in self.tenc + self.zenc:
            if lay.get("res") is not None:
                yield from (L["buf"] for L in lay["res"].layers)
            if lay.get("out") is not None:
                yield lay["out"]
        for d in self.zdec:
            yield d["inp"]
        for t in self.tdec:
            if not t["bare"]:
                yield t["inp"]
            yield t["uin"]
        yield self.wave

    def reset(self) -> None:
        """The zero state: silence before the stream in every layer."""
        for b in self._bufs():
            b.reset()
        if self.specbuf is not None:
            self.specbuf[:self.la].zero_()
        if self.specc is not None:
            self.specc[:self.la] = 0.0
        self.tail[:] = 0.0  # (the inverse FFT's Nyquist bin is zero from the start, never set)
        if self.rnn is not None:
            self.h = np.zeros((self.rnn.num_layers, self.rnn.hidden_size), np.float32)
            self.c = np.zeros((self.rnn.num_layers, self.rnn.hidden_size), np.float32)
        if self.attn is not None:
            st = self.attn.initial_state(1, "cpu", torch.float32)
            self.attn_state = {self.attn.key + k: v for k, v in st.items()}

    # -- one call -------------------------------------------------------------------------------

    def run(self, x: np.ndarray, out: np.ndarray | None = None, at: int = 0) -> np.ndarray:
        """New samples ``[C, n * stft_hop]`` (``n <= frames``) -> stems ``[S, C, n *
        stft_hop]``, each sample estimating the input ``latency_samples`` earlier.

        ``out``: a C-contiguous float32 ``[S, C, length]`` buffer to write the stems into, at
        columns ``at .. at + n * stft_hop`` (the returned view); the default is a new array.
        Writing into the caller's buffer saves a copy of every output sample."""
        x = np.asarray(x, dtype=np.float32)
        C, hop = self.C, self.hop
        if x.ndim != 2 or x.shape[0] != C or x.shape[1] % hop or x.shape[1] > self.T * hop:
            raise ValueError(f"expected [{C}, n * {hop}] with n <= {self.T}, got {list(x.shape)}")
        n = x.shape[1]
        if out is None:
            out, at = np.empty((self.S, C, n), np.float32), 0
        elif (out.dtype != np.float32 or not out.flags.c_contiguous or out.ndim != 3
              or out.shape[:2] != (self.S, C) or not 0 <= at <= out.shape[2] - n):
            raise ValueError(f"out must be a C-contiguous float32 [{self.S}, {C}, length] with "
                             f"columns {at}..{at + n}, got {out.dtype} {list(out.shape)}")
        T = n // hop
        if T:
            with torch.inference_mode(), blas_on_this_thread():
                self._run(x, T, n, out, at)
        return out[..., at:at + n]

    def _run(self, x, T, n, out, at):
        z = self._encode_all(x, T, n)
        bott = self._bottleneck(z, T)
        self._decode_all(bott, T, n, out, at)
        self._carry(T, n)

    def _encode_all(self, x, T, n):
        """STFT and encoders over ``T`` new frames; returns the bottleneck's input ``[width,
        T]`` (a view)."""
        C, hop, nb, la = self.C, self.hop, self.nb, self.la
        xb = self.xbuf
        xb.a[:, xb.ctx:xb.ctx + n] = x
        if self.project:
            mb = self.mixbuf
            mb.a[:, mb.ctx:mb.ctx + n] = x
        # STFT
        frames = self.frames_in[:T]
        K.stft_frames(xb.a, hop, self.win, frames)
        spec = torch.fft.rfft(_t(frames), dim=-1)  # [T, C, bins + 1]
        if self.mask:
            self.specbuf[la:la + T] = spec
        spec_r = torch.view_as_real(spec).numpy()
        if self.specc is not None:  # compressed, after la frames of the delayed ones
            K.compress_spec(spec_r, T, self.spec_power, self.specc[la:])
            if self.spec_power != 1.0:
                spec_r = self.specc[la:]

        # -- encoders --
        x_src, x_off = xb.a, xb.ctx  # the waveform branch's input and its new samples
        for i in range(self.L):
            tl = self.tenc[i]
            m = tl["m"] * T // self.T
            g = tl["conv"]
            K.im2col_stride(x_src, x_off, 0, -tl["s"], 1 << 60, 1, _ct(tl["cin"]), tl["s"],
                            tl["s"], 2 * tl["s"], m, g.col)
            y = g(m, bias=tl["bare"])  # (a bare layer's output is added as it is, below)
            if not tl["bare"]:
                self._encode(tl, y, g.bz, m, 1, _D2, False)
                x_src, x_off = tl["out"].a, tl["out"].ctx
            zl = self.zenc[i]
            g = zl["conv"]
            fo = zl["fout"]
            if i == 0:
                K.im2col_spec(spec_r, T, _ct(C), zl["s"], zl["p"], zl["k"], nb, fo, g.col)
            else:
                prev = self.zenc[i - 1]
                K.im2col_stride(prev["out"].a, la * prev["fout"], prev["fout"], 0, prev["fout"],
                                T, _ct(zl["cin"]), zl["s"], zl["p"], zl["k"], fo, g.col)
            y = g(T * fo, bias=False)
            merge = tl["bare"]
            self._encode(zl, y, g.bz, T, fo, self.tenc[i]["conv"].out if merge else _D2, merge,
                         emb=(i == 0))
        last = self.zenc[-1]["out"]
        return last.a[:, la:la + T]  # [width, T] (the new frames)

    def _bottleneck(self, z, T):
        """The recurrent bottleneck over ``T`` frames ``z [width, T]`` (its state carried):
        ``[width, T]``."""
        if self.rnn is not None:
            seq = _t(z).t()  # [T, width]
            H = self.rnn.hidden_size
            for i, (w_ih, b, whh_t) in enumerate(self.lstm):
                xg = torch.addmm(b, seq, w_ih).numpy()  # [T, 4H]
                out = self.lstm_seq[i]
                K.lstm_seq(xg, T, whh_t, self.h[i], self.c[i], out, _ct(H), self.lstm_g)
                seq = _t(out)[:T]
            bott = torch.addmm(self.b_proj, self.w_proj, seq.t()).numpy()
            bott += z
        else:
            bott = z.copy()
        if self.attn is not None:
            bott[:] = self.attn(_t(bott)[None], self.attn_state)[0].numpy()
        return bott

    def _decode_all(self, bott, T, n, out=None, at=0):
        """Decoders, head, inverse STFT over ``T`` frames from the bottleneck's output ``bott
        [width, T]``: the stems ``[S, C, n]``, written to ``out[..., at:at + n]`` (a buffer
        ``[S, C, length]``; default a new one) and returned."""
        C, hop, nb = self.C, self.hop, self.nb
        last = self.zenc[-1]["out"]
        d0 = self.zdec[0]
        inp = d0["inp"]
        np.add(bott, last.a[:, :T], out=inp.a[:, inp.ctx:inp.ctx + T])  # + the delayed skip
        for i in range(self.L):
            self._decode_freq(i, T)
            self._decode_time(i, T)
        # -- head, inverse STFT, waveform branch, projection --
        Ko = self.Ko
        dl = self.zdec[-1]
        pitch = dl["Fa"] * dl["s"]
        zr = self.zr
        if self.mask:
            ref, use_ref = _D2, False
            if self.refine is not None:
                g1, g2 = self.refine
                K.refine_feat(self.so, dl["pad"], pitch, nb, T, _ct(Ko), self.specc, _ct(C),
                              g1.col)
                h = g1(T * nb)
                K.gelu_rows(h, T * nb)
                ref, use_ref = g2(T * nb, h), True
            K.mask_head(self.so, dl["pad"], pitch, nb, T, _ct(Ko), _ct(self.S),
                        torch.view_as_real(self.specbuf).numpy(), zr, self.es, ref, use_ref)

        frames = torch.fft.irfft(self.zifft[:, :T], n=self.n_fft, dim=-1).numpy()
        if out is None:
            out, at = np.empty((self.S, C, n), np.float32), 0
        K.istft_ola(frames, self.syn, hop, self.tail, self.wave.a, 0, out.reshape(-1),
                    out.shape[2], at, self.project, self.mixbuf.a if self.project else _D2,
                    _ct(self.S), self.acc)
        return out[..., at:at + n]

    # -- the recurrent state, for the block runner ------------------------------------------

    def bottleneck_state(self) -> dict:
        """A copy of the bottleneck's carried state (LSTM, attention)."""
        st = {}
        if self.rnn is not None:
            st["h"], st["c"] = self.h.copy(), self.c.copy()
        if self.attn is not None:
            st["attn"] = {k: v.clone() for k, v in self.attn_state.items()}
        return st

    def set_bottleneck_state(self, st: dict) -> None:
        if self.rnn is not None:
            self.h[:], self.c[:] = st["h"], st["c"]
        if self.attn is not None:
            self.attn_state = {k: v.clone() for k, v in st["attn"].items()}

    def run_block(self, x: np.ndarray, warm: int, bott_warm: np.ndarray | None,
                  state: dict, on_state=None) -> np.ndarray:
        """One block of the block runner: from the zero state, ``x [C, (warm + B) *
        stft_hop]`` for frames ``start - warm .. start + B``; the bottleneck's output for the
        first ``warm`` frames is ``bott_warm [width, warm]`` (the true one, from the block
        before), its state at ``start`` is ``state`` (a callable returning it is waited for
        only when needed). ``on_state(bott [width, warm + B], state at the end)`` is called as
        soon as they are known. Returns the streaming output of frames ``start .. start + B``:
        ``[S, C, B * stft_hop]``."""
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[1]
        T = n // self.hop
        if x.shape[0] != self.C or n % self.hop or T > self.T or not 0 <= warm <= T:
            raise ValueError(f"block of {list(x.shape)} with {warm} warm-up frames")
        with torch.inference_mode():
            self.reset()
            z = self._encode_all(x, T, n)
            self.set_bottleneck_state(state() if callable(state) else state)
            bott = np.empty((z.shape[0], T), np.float32)
            if warm:
                bott[:, :warm] = bott_warm[:, -warm:]
            if T > warm:
                bott[:, warm:] = self._bottleneck(np.ascontiguousarray(z[:, warm:]), T - warm)
            if on_state is not None:
                on_state(bott, self.bottleneck_state())
            out = self._decode_all(bott, T, n)
        return out[..., warm * self.hop:]

    def _encode(self, lay, y, bias, T, nb, inj, use_inj, emb=False):
        """After an encoder conv ``y [C, T * nb]`` (its ``bias`` not yet added): norm + GELU,
        residual, rewrite + norm + GLU into the layer's output buffer (its new columns)."""
        ms, rs = self.ms, self.rs
        C = lay["cout"]
        g, w, b, eps = lay["norm"]
        res = lay["res"]
        rw = lay["rw"]
        if res is not None:
            dst, doff = res.entry()
        else:
            dst, doff = rw.col, 0
        K.norm_act(y, 0, nb, T, _ct(C), bias, g, w, b, eps, True, inj, use_inj, dst, doff,
                   _D2, 0, False, ms, rs)
        if res is not None:
            res.run(T, rw.col, 0)
        u = rw(T * nb, bias=False)
        g, w, b, eps = lay["norm_rw"]
        out = lay["out"]
        K.norm_glu(u, 0, nb, T, _ct(2 * C), rw.bz, g, w, b, eps, self.emb if emb else _D2,
                   emb and self.use_emb, out.a, out.ctx, _D2, 0, False, ms, rs)

    def _decode_freq(self, i, T):
        ms, rs = self.ms, self.rs
        d = self.zdec[i]
        F, Cz, c, pitch = d["F"], d["C"], d["c"], d["pitch"]
        inp = d["inp"]
        g = d["rw"]
        K.im2col_shift(inp.a, d["crop"], pitch, F, T, _ct(Cz), d["dts"], d["dfs"], c, g.col)
        u = g(T * F, bias=False)
        gr, w, b, eps = d["norm_rw"]
        tdec = self.tdec[i]
        bare = tdec["bare"]
        ui = tdec["uin"]
        K.norm_glu(u, 0, F, T, _ct(2 * Cz), g.bz, gr, w, b, eps, _D2, False, d["pre"], 0,
                   ui.a if bare else _D2, ui.ctx, bare, ms, rs)
        gu = d["up"]
        K.im2col_up(d["pre"], 0, F, F, T, _ct(Cz), d["mb"], gu.col)
        gn, w, b, eps = d["norm_out"]
        zl = d["Fa"] * d["s"]
        if "up_t" in d:
            # CaC: straight into the inverse FFT's input, a few frames at a time so that the
            # transposed conv's output (the largest activation) stays in cache; the product
            # transposed, so that each block's bins of a stem channel are contiguous
            Fa = d["Fa"]
            for t0 in range(0, T, self.sub):
                t1 = min(T, t0 + self.sub)
                yt = d["up_t"].part(t0 * Fa, t1 * Fa)
                K.up_to_ifft(yt, Fa, t1 - t0, _ct(d["s"]), _ct(self.Ko), d["up_t"].bz, d["pad"],
                             self.nb, self.zr, t0)
            return
        yb = gu(T * d["Fa"], bias=False)
        if d["last"]:
            out, ooff, post, poff, ppitch, use_post = self.so, 0, _D2, 0, 0, False
        else:
            nxt = self.zdec[i + 1]
            out, ooff = nxt["inp"].a, nxt["inp"].ctx
            enc = self.zenc[self.L - 2 - i]
            post, poff, ppitch, use_post = enc["out"].a, 0, enc["fout"], True
        K.up_norm_act(yb, d["Fa"], T, _ct(d["s"]), _ct(d["cu"]), gu.bz, gn, w, b, eps, False,
                      not d["last"], out, ooff, zl, post, poff, ppitch, d["pad"], use_post,
                      ms, rs)

    def _decode_time(self, i, T):
        ms, rs = self.ms, self.rs
        t = self.tdec[i]
        m = t["m"] * T // self.T
        cin, s, cout = t["cin"], t["s"], t["cout"]
        ui = t["uin"]
        if not t["bare"]:
            inp = t["inp"]
            g = t["rw"]
            K.im2col_shift(inp.a, 0, 1, 1, m, _ct(cin), t["dts"], t["dfs"], 0, g.col)
            u = g(m, bias=False)
            gr, w, b, eps = t["norm_rw"]
            K.norm_glu(u, 0, 1, m, _ct(2 * cin), g.bz, gr, w, b, eps, _D2, False, ui.a, ui.ctx,
                       _D2, 0, False, ms, rs)
        gu = t["up"]
        # block j: frame j (taps 0..s-1) and frame j - 1 (taps s..2s-1)
        K.im2col_shift(ui.a, 0, 1, 1, m, _ct(cin), _UP_DTS, _UP_DFS, 0, gu.col)
        yb = gu(m, bias=False)
        gn, w, b, eps = t["norm_out"]
        if t["last"]:
            out, ooff, post, poff, use_post = self.wave.a, self.wave.ctx, _D2, 0, False
        else:
            nxt = self.tdec[i + 1]
            out, ooff = nxt["inp"].a, nxt["inp"].ctx
            enc = self.tenc[self.L - 2 - i]
            post = enc["out"].a
            poff = enc["out"].ctx - enc["delay"]
            use_post = True
        K.up_norm_act(yb, m, 1, _ct(s), _ct(cout), gu.bz, gn, w, b, eps, True, not t["last"], out,
                      ooff, m * s, post, poff, m * s, 0, use_post, ms, rs)

    def _carry(self, T, n):
        self.xbuf.carry(n)
        if self.mixbuf is not None:
            self.mixbuf.carry(n)
        if self.specbuf is not None and self.la:
            self.specbuf[:self.la] = self.specbuf[T:T + self.la].clone()
        if self.specc is not None and self.la:
            self.specc[:self.la] = self.specc[T:T + self.la].copy()
        for lay in self.tenc:
            m = lay["m"] * T // self.T
            if lay.get("res") is not None:
                lay["res"].carry(m)
            if lay.get("out") is not None:
                lay["out"].carry(m)
        for lay in self.zenc:
            if lay["res"] is not None:
                lay["res"].carry(T)
            lay["out"].carry(T * lay["fout"])
        for d in self.zdec:
            d["inp"].carry(T * d["pitch"])
        for t in self.tdec:
            m = t["m"] * T // self.T
            if not t["bare"]:
                t["inp"].carry(m)
            t["uin"].carry(m)
        self.wave.carry(n)


_UP_DTS = np.array([1, 0], np.int64)
_UP_DFS = np.zeros(2, np.int64)


def warmup_frames(net: CausalHybridNet) -> int:
    """STFT frames after which a zero-state start of the network's non-recurrent part gives
    exactly the carried-state result.

    The memory of each activation (how far back, in input samples, its newest value reaches)
    is followed through the network as a longest path: a layer that carries ``c`` steps of
    context at ``r`` samples per step adds ``c * r`` to its input's memory, and where two
    paths meet (a skip added to a decoder's input, the waveform branch injected into the
    spectrogram branch, the two branches summed at the output) the longer one counts. The
    recurrent bottleneck ends a path: its state and its output for the warm-up frames are
    handed over from the block before, so only its input on the block's own frames must be
    exact. The result, in frames, rounded up, plus one for the frame grid's alignment: 17 for
    ``rt-tiny``, 18 for ``rt-small`` (the sum of every layer's context, used before, gave 23
    and 33). tests/model/nets/test_batched.py checks it is exact and that fewer are not."""
    hop = net.stft_hop
    # waveform branch: memory of each time encoder's output, and the sample rate of its steps
    m_t, rate = 0, 1
    mem_t, rates = [], []
    for tenc in net.time_encoder:
        m_t += tenc.conv.context * rate
        rate *= tenc.conv.conv.stride[0]
        if getattr(tenc, "residual", None) is not None:
            m_t += sum(c.context for c in tenc.residual.convs_in) * rate
        mem_t.append(m_t)
        rates.append(rate)
    # spectrogram branch: the STFT frame's own context, then each encoder (the bare waveform
    # layer's output is injected where the branches merge)
    m_f = net.n_fft - hop
    mem_f = []
    for k, (enc, tenc) in enumerate(zip(net.freq_encoder, net.time_encoder)):
        if tenc.bare:
            m_f = max(m_f, mem_t[k])
        if enc.residual is not None:
            m_f += sum(c.context for c in enc.residual.convs_in) * hop
        mem_f.append(m_f)
    # decoders: the bottleneck's output needs only its input on the block's frames
    n_dec = len(net.freq_decoder)
    m_y, m_w = m_f, None
    for i, (dec, tdec) in enumerate(zip(net.freq_decoder, net.time_decoder)):
        skip = mem_f[n_dec - 1 - i] + net.freq_skip_delay[i].frames * hop
        m_y = max(m_y, skip) + dec.rewrite.context * hop
        r = rates[n_dec - 1 - i]  # this decoder's input rate: its mirror's output
        if tdec.bare:
            m_w = m_y + r  # the split from the merged branch; the transposed conv's frame
        else:
            skip_t = mem_t[n_dec - 1 - i] + net.time_skip_delay[i].frames * r
            m_w = max(m_w, skip_t) + tdec.rewrite.context * r + r
    # the output: inverse STFT overlap (with the mask's mixture spectrum), waveform branch,
    # mixture projection
    m_spec = m_y
    if net.mask_delay is not None:
        m_spec = max(m_spec, net.n_fft - hop + net.mask_delay.frames * hop)
    total = m_spec + net.synthesis_support - hop
    total = max(total, m_w + net.time_out_delay.frames)
    if net.mix_delay is not None:
        total = max(total, net.mix_delay.frames)
    return -(-total // hop) + 1


class BlockRunner:
    """:meth:`CausalHybridNet.stream` over a long signal on several threads, equal to the
    one-thread result up to float rounding.

    The signal is cut into blocks of ``block`` frames. Everything but the recurrent bottleneck
    has a finite memory (:func:`warmup_frames`), so a block can start from the zero state
    ``warm`` frames early and be exact from its own first frame: blocks run in parallel, one
    :class:`BatchedNet` per thread, and only the bottleneck's state is handed from block to
    block (a block's recurrent part waits for the block before; its encoders before, and its
    decoders after, run meanwhile). The bottleneck's output for the warm-up frames is the
    block before's. Threads take the next block when free, so a thread the OS does not
    schedule (a busy machine) only takes fewer blocks; nothing spins.

    ``run(x [C, n * stft_hop])`` -> ``[S, C, n * stft_hop]``: the next samples of the stream,
    state carried from call to call; :meth:`reset` starts a new stream. Set torch to one
    intra-op thread around it (:func:`run` does not change torch's threads).
    """

    def __init__(self, net: CausalHybridNet, threads: int = 2, block: int = 256,
                 warm: int | None = None):
        self.threads = max(1, int(threads))
        self.block = int(block)
        self.warm = warmup_frames(net) if warm is None else int(warm)
        self.engines = [BatchedNet(net, frames=self.block + self.warm)
                        for _ in range(self.threads)]
        self.hop = int(net.stft_hop)
        self.C, self.S = int(net.audio_channels), len(net.sources)
        self.reset()

    def reset(self) -> None:
        e = self.engines[0]
        e.reset()
        self._state = e.bottleneck_state()
        width = self.engines[0].zenc[-1]["cout"]
        self._bott_tail = np.zeros((width, self.warm), np.float32)
        self._x_tail = np.zeros((self.C, self.warm * self.hop), np.float32)
        self._frames = 0  # frames of the stream so far

    def run(self, x: np.ndarray) -> np.ndarray:
        import threading

        x = np.ascontiguousarray(x, dtype=np.float32)
        hop, B, W = self.hop, self.block, self.warm
        if x.ndim != 2 or x.shape[0] != self.C or x.shape[1] % hop:
            raise ValueError(f"expected [{self.C}, n * {hop}], got {list(x.shape)}")
        n_frames = x.shape[1] // hop
        out = np.empty((self.S, self.C, x.shape[1]), np.float32)
        if n_frames == 0:
            return out
        starts = list(range(0, n_frames, B))
        # the input with the warm-up frames before this call in front
        xw = np.concatenate([self._x_tail, x], axis=1)
        done = [threading.Event() for _ in starts]
        chain = [None] * len(starts)  # (bottleneck output's last W frames, state) per block
        errors = []
        lock = threading.Lock()
        todo = iter(range(len(starts)))
        frames0 = self._frames
        first = (self._bott_tail, self._state)

        def block(k, eng):
            a = starts[k]
            b = min(a + B, n_frames)
            warm = min(W, frames0 + a)  # at the stream's start the zero state is exact
            xs = xw[:, (W + a - warm) * hop:(W + b) * hop]

            def prev():  # (bottleneck output's last W frames, state) of the block before
                if not k:
                    return first
                done[k - 1].wait()
                if chain[k - 1] is None:
                    raise RuntimeError("a block before this one failed")
                return chain[k - 1]

            def publish(bott, st):
                tail = np.concatenate([prev()[0], bott[:, warm:]], axis=1)
                chain[k] = (tail[:, tail.shape[1] - W:], st)
                done[k].set()

            # the warm-up frames' bottleneck output is read after the state was waited for
            res = eng.run_block(xs, warm, _Lazy(lambda: prev()[0]), lambda: prev()[1], publish)
            out[..., a * hop:b * hop] = res

        def worker(index):
            eng = self.engines[index]
            try:
                while not errors:
                    with lock:
                        k = next(todo, None)
                    if k is None:
                        return
                    block(k, eng)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                errors.append(exc)
                for ev in done:
                    ev.set()

        pool = [threading.Thread(target=worker, args=(i,), daemon=True)
                for i in range(1, min(self.threads, len(starts)))]
        with blas_on_this_thread():  # (the blocks' threads run their GEMMs themselves)
            for t in pool:
                t.start()
            worker(0)
            for t in pool:
                t.join()
        if errors:
            raise errors[0]
        self._bott_tail, self._state = chain[-1]
        self._x_tail = xw[:, xw.shape[1] - W * hop:]
        self._frames += n_frames
        return out


class _Lazy:
    """The warm-up frames' bottleneck output, fetched when :meth:`BatchedNet.run_block` reads
    it (after the block before has published it)."""

    def __init__(self, fetch):
        self.fetch = fetch

    def __getitem__(self, key):
        return self.fetch()[key]
