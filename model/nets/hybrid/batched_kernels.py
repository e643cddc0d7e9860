"""numba kernels of the batched offline network (:mod:`.batched`): the glue between its GEMMs.

Each kernel is one pass (or two, where a norm needs its statistics first) over a layer's
channels-last activations, fusing what the torch network does in several: group norm +
affine + GELU (+ the next layer's skip), group norm + GLU (+ the frequency embedding), the
residual branch's per-row norms, the transposed frequency conv's overlap-add, the STFT's
framing and padding, the mask head, and the inverse STFT's overlap-add with the waveform
branch and the mixture projection.

Conventions, all for speed (each measured: together 5-8x less time than the same loops
without them):

- Activations are C-contiguous 2-D float32 arrays ``[rows, row_len]``; a row is a frame
  (``nb`` bins of ``C`` channels, bins outer) or one time step (``nb = 1``). A kernel reads or
  writes ``nb * C`` values of a row from an element offset (``*_off``), so a padded buffer
  (zero bins either side) or one with carried context rows is written in place. Rows are
  sliced at their offset before indexing, so every index is a sum of loop counters: numba
  then drops its negative-index wraparound, which otherwise turns vector loads into gathers.
- Channel counts come as tuples of zeros (``ct``: ``len(ct) == C``): a tuple's length is part
  of its numba type, so every kernel is compiled for the network's actual widths and the
  loops over channels are unrolled and vectorised.
- The array arguments of a kernel never overlap (the caller's contract), and the kernels are
  compiled with LLVM ``noalias`` on them (:class:`_NoAlias`): without it no load can move
  past a store and nothing vectorises. Scratch arrays are arguments too, for the same reason.
- Loops run along whole rows, not frame by frame: a per-frame group norm sums its rows first
  (flat, vectorised), then each frame's few columns, and writes the frame's statistics into
  every column of a scratch row, so the apply pass is one flat loop as well. Deep layers'
  frames are 2 to 32 bins; loops that short do not vectorise (these kernels ran 2.5-6x
  slower frame by frame).
- ``fastmath``, and ``error_model="numpy"`` (no zero-division branch). GELU's erf and GLU's
  sigmoid are rational approximations (max abs error 4.5e-7 and 1.6e-7 against float64):
  float32 rounding level, far below the offline == streaming tolerance.
- ``cache=True``: compiled once per machine and network width (beside the sources, or in
  numba's user cache where that is read-only).
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import compiler

__all__ = ["gelu_inplace", "sigmoid_inplace", "im2col_stride", "im2col_spec", "im2col_shift",
           "im2col_up", "norm_act", "norm_glu", "res_small", "res_ln_act", "res_ln_glu_add",
           "up_norm_act", "up_to_ifft", "lstm_seq", "compress_spec", "refine_feat", "gelu_rows",
           "stft_frames", "to_ifft", "mask_head", "istft_ola", "carry_cols"]

f32 = np.float32


class _NoAlias(compiler.Compiler):
    """numba's compiler with ``noalias`` on every pointer argument (numba sets it only for
    its parallel loops' bodies): the kernels' arrays never overlap."""

    def define_pipelines(self):
        self.state.flags.noalias = True
        return super().define_pipelines()


_JIT = dict(nogil=True, cache=True, fastmath=True, error_model="numpy")
_KERNEL = dict(_JIT, pipeline_class=_NoAlias)


@numba.njit(inline="always", **_JIT)
def _erf(x):
    """erf, rational approximation on [-4, 4] (outside, +-1 in float32)."""
    x = x if x < f32(4.0) else f32(4.0)
    x = x if x > f32(-4.0) else f32(-4.0)
    x2 = x * x
    p = f32(-2.72614225801306e-10)
    p = p * x2 + f32(2.77068142495902e-08)
    p = p * x2 + f32(-2.10102402082508e-06)
    p = p * x2 + f32(-5.69250639462346e-05)
    p = p * x2 + f32(-7.34990630326855e-04)
    p = p * x2 + f32(-2.95459980854025e-03)
    p = p * x2 + f32(-1.60960333262415e-02)
    q = f32(-1.45660718464996e-05)
    q = q * x2 + f32(-2.13374055278905e-04)
    q = q * x2 + f32(-1.68282697438203e-03)
    q = q * x2 + f32(-7.37332916720468e-03)
    q = q * x2 + f32(-1.42647390514189e-02)
    return x * p / q


@numba.njit(inline="always", **_JIT)
def _gelu(v):
    """Exact (erf) GELU, as ``torch.nn.functional.gelu``."""
    return f32(0.5) * v * (f32(1.0) + _erf(v * f32(0.7071067811865476)))


@numba.njit(inline="always", **_JIT)
def _tanh(x):
    """tanh, rational approximation on [-7.9, 7.9] (outside, +-1 in float32)."""
    x = x if x < f32(7.90531110763549805) else f32(7.90531110763549805)
    x = x if x > f32(-7.90531110763549805) else f32(-7.90531110763549805)
    x2 = x * x
    p = f32(-2.76076847742355e-16)
    p = p * x2 + f32(2.00018790482477e-13)
    p = p * x2 + f32(-8.60467152213735e-11)
    p = p * x2 + f32(5.12229709037114e-08)
    p = p * x2 + f32(1.48572235717979e-05)
    p = p * x2 + f32(6.37261928875436e-04)
    p = p * x2 + f32(4.89352455891786e-03)
    q = f32(1.19825839466702e-06)
    q = q * x2 + f32(1.18534705686654e-04)
    q = q * x2 + f32(2.26843463243900e-03)
    q = q * x2 + f32(4.89352518554385e-03)
    return x * p / q


@numba.njit(inline="always", **_JIT)
def _sigmoid(v):
    return f32(0.5) + f32(0.5) * _tanh(f32(0.5) * v)


@numba.njit(**_KERNEL)
def gelu_inplace(x):
    """GELU of a contiguous 1-D array, in place (the kernels' GELU, for tests)."""
    for i in range(x.shape[0]):
        x[i] = _gelu(x[i])


@numba.njit(**_KERNEL)
def sigmoid_inplace(x):
    """Sigmoid of a contiguous 1-D array, in place (the kernels' sigmoid, for tests)."""
    for i in range(x.shape[0]):
        x[i] = _sigmoid(x[i])


# -- im2col: a conv's input as columns of taps, one GEMM per conv --------------------------


@numba.njit(inline="always", **_JIT)
def _along_frames(orow, xrow, j, T, o_pitch, base, x_pitch, inside):
    """Short frames' im2col, one output bin ``j`` of all ``T`` frames (``o_pitch`` apart in
    ``orow``): ``xrow[base + t * x_pitch]`` for frame ``t``, or 0 where not ``inside`` (the
    zero padding)."""
    oj = orow[j:j + (T - 1) * o_pitch + 1]
    if not inside:
        for t in range(T):
            oj[t * o_pitch] = f32(0.0)
    else:
        src = xrow[base:base + (T - 1) * x_pitch + 1]
        for t in range(T):
            oj[t * o_pitch] = src[t * x_pitch]


@numba.njit(**_KERNEL)
def im2col_stride(x, x_off, x_pitch, lo, hi, T, cin_t, s, p, k, nb_out, out):
    """A strided conv's taps: ``out[tap * Cin + ci, t * nb_out + j] = x[ci, x_off + t * x_pitch
    + j * s + tap - p]`` where ``lo <= j * s + tap - p < hi``, else 0 (zero padding)."""
    Cin = len(cin_t)
    for tap in range(k):
        # the outputs j whose input lo <= j * s + tap - p < hi: j0 <= j < j1
        j0 = min(max(0, (lo - tap + p + s - 1) // s), nb_out)
        j1 = max(min(nb_out, (hi - tap + p + s - 1) // s), j0)
        if nb_out < 16:  # short frames: along the frames, one output bin at a time
            for ci in range(Cin):
                orow = out[tap * Cin + ci]
                xrow = x[ci]
                for j in range(nb_out):
                    _along_frames(orow, xrow, j, T, nb_out, x_off + j * s + tap - p, x_pitch,
                                  j0 <= j < j1)
            continue
        for ci in range(Cin):
            orow = out[tap * Cin + ci]
            xrow = x[ci]
            for t in range(T):
                o = orow[t * nb_out:(t + 1) * nb_out]
                for j in range(j0):
                    o[j] = f32(0.0)
                base = x_off + t * x_pitch + tap - p + j0 * s
                src = xrow[base:base + (j1 - j0 - 1) * s + 1]
                oj = o[j0:j1]
                for j in range(j1 - j0):
                    oj[j] = src[j * s]
                for j in range(j1, nb_out):
                    o[j] = f32(0.0)


@numba.njit(**_KERNEL)
def im2col_spec(spec, T, ct, s, p, k, nb, nb_out, out):
    """The first frequency conv's taps from the rfft output ``spec [T, C, bins + 1, 2]``
    (complex as pairs): ``out[tap * 2C + 2c + ri, t * nb_out + j] = spec[t, c, j * s + tap -
    p, ri]`` for bins in ``[0, nb)`` (Nyquist dropped), else 0."""
    C = len(ct)
    for tap in range(k):
        for c in range(C):
            ore = out[tap * 2 * C + 2 * c]
            oim = out[tap * 2 * C + 2 * c + 1]
            for t in range(T):
                sp = spec[t, c]
                for j in range(nb_out):
                    b = j * s + tap - p
                    if b >= 0 and b < nb:
                        ore[t * nb_out + j] = sp[b, 0]
                        oim[t * nb_out + j] = sp[b, 1]
                    else:
                        ore[t * nb_out + j] = f32(0.0)
                        oim[t * nb_out + j] = f32(0.0)


@numba.njit(**_KERNEL)
def im2col_shift(x, x_off, x_pitch, F, T, cin_t, dts, dfs, c, out):
    """Taps shifted by whole frames and bins: ``out[q * Cin + ci, t * F + f] = x[ci, x_off +
    (t + dts[q]) * x_pitch + f + dfs[q] - c]`` where ``0 <= f + dfs[q] - c < F``, else 0 (the
    zero bins either side of a frame). ``x_off``: the first (oldest) context frame."""
    Cin = len(cin_t)
    for q in range(dts.shape[0]):
        dt, df = dts[q], dfs[q]
        if df == c and x_pitch == F:  # no bin shift, frames back to back: one run
            for ci in range(Cin):
                src = x[ci, x_off + dt * F:x_off + (dt + T) * F]
                o = out[q * Cin + ci, :T * F]
                for i in range(T * F):
                    o[i] = src[i]
            continue
        f0 = max(0, c - df)
        f1 = min(F, F + c - df)
        if F < 4:  # short frames: along the frames, one output bin at a time
            for ci in range(Cin):
                orow = out[q * Cin + ci]
                xrow = x[ci]
                for f in range(F):
                    _along_frames(orow, xrow, f, T, F, x_off + dt * x_pitch + f + df - c,
                                  x_pitch, f0 <= f < f1)
            continue
        for ci in range(Cin):
            orow = out[q * Cin + ci]
            xrow = x[ci]
            for t in range(T):
                o = orow[t * F:(t + 1) * F]
                src = xrow[x_off + (t + dt) * x_pitch + df - c + f0:
                           x_off + (t + dt) * x_pitch + df - c + f1]
                for f in range(f0):
                    o[f] = f32(0.0)
                of = o[f0:f1]
                for f in range(f1 - f0):
                    of[f] = src[f]
                for f in range(f1, F):
                    o[f] = f32(0.0)


@numba.njit(**_KERNEL)
def im2col_up(x, x_off, x_pitch, F, T, cin_t, m, out):
    """A transposed frequency conv (kernel ``m * s``, stride ``s``) as a conv over blocks:
    ``out[j * Cin + ci, t * (F + m - 1) + a] = x[ci, x_off + t * x_pitch + a - j]`` for ``0 <=
    a - j < F``, else 0; the GEMM then gives output block ``a`` (bins ``a * s ..``)."""
    Cin = len(cin_t)
    Fa = F + m - 1
    if F < 4:  # short frames: along the frames, one output block at a time
        for j in range(m):
            for ci in range(Cin):
                orow = out[j * Cin + ci]
                xrow = x[ci]
                for a in range(Fa):
                    oa = orow[a:a + (T - 1) * Fa + 1]
                    if a < j or a >= j + F:
                        for t in range(T):
                            oa[t * Fa] = f32(0.0)
                    else:
                        src = xrow[x_off + a - j:x_off + a - j + (T - 1) * x_pitch + 1]
                        for t in range(T):
                            oa[t * Fa] = src[t * x_pitch]
        return
    for j in range(m):
        for ci in range(Cin):
            orow = out[j * Cin + ci]
            xrow = x[ci]
            for t in range(T):
                o = orow[t * Fa:(t + 1) * Fa]
                src = xrow[x_off + t * x_pitch:x_off + t * x_pitch + F]
                for a in range(j):
                    o[a] = f32(0.0)
                oj = o[j:j + F]
                for a in range(F):
                    oj[a] = src[a]
                for a in range(j + F, Fa):
                    o[a] = f32(0.0)


# -- norms, activations ----------------------------------------------------------------------


@numba.njit(inline="always", **_JIT)
def _per_frame(v, N, nb, inv, eps, rstd):
    """Column sums ``v[:N]`` (frames of ``nb``) to a per-frame statistic in every column: the
    frame's sum times ``inv`` (a mean), or with ``rstd`` 1 / sqrt(that + ``eps``)."""
    if nb == 1:  # one value per frame: a flat, vectorised loop
        if rstd:
            for i in range(N):
                v[i] = f32(1.0) / np.sqrt(v[i] * inv + eps)
        else:
            for i in range(N):
                v[i] *= inv
        return
    for t0 in range(0, N, nb):
        vt = v[t0:t0 + nb]
        s = f32(0.0)
        for f in range(nb):
            s += vt[f]
        s *= inv
        if rstd:
            s = f32(1.0) / np.sqrt(s + eps)
        for f in range(nb):
            vt[f] = s


@numba.njit(inline="always", **_JIT)
def _frame_stats(x, x_off, nb, N, c_lo, c_hi, cnt, eps, m, r, bias):
    """Group statistics per frame of contiguous frames: over rows ``c_lo .. c_hi`` of ``x``
    plus ``bias[row]`` (columns ``x_off .. x_off + N``, frames of ``nb``), the mean into every
    column of ``m``
    and 1/std into every column of ``r`` (so the apply pass is one flat loop). Column sums
    over the rows first (flat, vectorised), then per frame; two passes (mean, then squared
    deviations), as torch's group norm."""
    inv = f32(1.0) / f32(cnt)
    for i in range(N):
        m[i] = f32(0.0)
        r[i] = f32(0.0)
    for c in range(c_lo, c_hi):
        xr = x[c, x_off:x_off + N]
        bc = bias[c]
        for i in range(N):
            m[i] += xr[i] + bc
    _per_frame(m, N, nb, inv, eps, False)
    for c in range(c_lo, c_hi):
        xr = x[c, x_off:x_off + N]
        bc = bias[c]
        for i in range(N):
            d = xr[i] + bc - m[i]
            r[i] += d * d
    _per_frame(r, N, nb, inv, eps, True)


@numba.njit(inline="always", **_JIT)
def _norm_row(src, dst, n, bias, m, r, w, b, act):
    """``dst[i] = (src[i] + bias - m[i]) * r[i] * w + b`` over ``n`` columns, then GELU if
    ``act`` (``dst`` may be ``src``: in place)."""
    if act:
        for i in range(n):
            dst[i] = _gelu((src[i] + bias - m[i]) * r[i] * w + b)
    else:
        for i in range(n):
            dst[i] = (src[i] + bias - m[i]) * r[i] * w + b


@numba.njit(**_KERNEL)
def norm_act(y, y_off, nb, T, ct, bias, G, w, b, eps, act, inj, use_inj, out, o_off, post,
             p_off, use_post, ms, rs):
    """Rows = C channels, ``T`` frames of ``nb`` bins back to back from column ``y_off``, plus
    ``bias[c]`` (the conv's, not yet added by its GEMM). Optional ``inj[c, t]`` added to every
    bin of frame ``t`` (in place in ``y``, which is the caller's scratch), group norm per
    frame over (bins, C/G channels) with affine ``w, b`` (``G == 0``: none), GELU if ``act``,
    plus ``post`` (from ``p_off``) if ``use_post``; into ``out`` (from ``o_off``). ``ms,
    rs``: scratch of ``max(G, 1) * T * nb`` values."""
    C = len(ct)
    N = T * nb
    if use_inj:
        for c in range(C):
            yr = y[c, y_off:y_off + N]
            for t in range(T):
                add = inj[c, t]
                yt = yr[t * nb:(t + 1) * nb]
                for f in range(nb):
                    yt[f] += add
    cg = C // G if G > 0 else C
    for g in range(max(G, 1)):
        m = ms[g * N:(g + 1) * N]
        r = rs[g * N:(g + 1) * N]
        if G > 0:
            _frame_stats(y, y_off, nb, N, g * cg, (g + 1) * cg, cg * nb, eps, m, r, bias)
        for c in range(g * cg, (g + 1) * cg):
            yr = y[c, y_off:y_off + N]
            orow = out[c, o_off:o_off + N]
            yb = bias[c]
            if G > 0:
                _norm_row(yr, orow, N, yb, m, r, w[c], b[c], act)
            elif act:
                for i in range(N):
                    orow[i] = _gelu(yr[i] + yb)
            else:
                for i in range(N):
                    orow[i] = yr[i] + yb
            if use_post:
                prow = post[c, p_off:p_off + N]
                for i in range(N):
                    orow[i] += prow[i]


@numba.njit(**_KERNEL)
def norm_glu(u, u_off, nb, T, c2t, bias, G, w, b, eps, emb, use_emb, out, o_off, out2, o2_off,
             use_out2, ms, rs):
    """Rows = 2C channels, ``T`` frames of ``nb`` bins back to back from column ``u_off``, plus
    ``bias[c]`` (the conv's, not yet added by its GEMM):
    group norm per frame over (bins, 2C/G channels) (``G == 0``: none), GLU over channels
    (row ``c`` times sigmoid of row ``C + c``), plus ``emb [C, nb]`` on every frame if
    ``use_emb``; into ``out`` from ``o_off`` (and a copy into ``out2`` from ``o2_off``).
    ``ms, rs``: scratch of ``G * T * nb`` values."""
    C2 = len(c2t)
    C = C2 // 2
    N = T * nb
    cg = C2 // G if G > 0 else 1
    for g in range(G):
        _frame_stats(u, u_off, nb, N, g * cg, (g + 1) * cg, cg * nb, eps,
                     ms[g * N:(g + 1) * N], rs[g * N:(g + 1) * N], bias)
    for c in range(C):
        ua = u[c, u_off:u_off + N]
        ug = u[C + c, u_off:u_off + N]
        orow = out[c, o_off:o_off + N]
        za, zg = bias[c], bias[C + c]
        if G > 0:
            ga, gg = c // cg, (C + c) // cg
            ma, ra = ms[ga * N:(ga + 1) * N], rs[ga * N:(ga + 1) * N]
            mg, rg = ms[gg * N:(gg + 1) * N], rs[gg * N:(gg + 1) * N]
            wa, ba, wg, bg = w[c], b[c], w[C + c], b[C + c]
            for i in range(N):
                a = (ua[i] + za - ma[i]) * ra[i] * wa + ba
                gv = (ug[i] + zg - mg[i]) * rg[i] * wg + bg
                orow[i] = a * _sigmoid(gv)
        else:
            for i in range(N):
                orow[i] = (ua[i] + za) * _sigmoid(ug[i] + zg)
        if use_emb:
            er = emb[c, :nb]
            for t in range(T):
                ot = orow[t * nb:(t + 1) * nb]
                for f in range(nb):
                    ot[f] += er[f]
        if use_out2:
            o2 = out2[c, o2_off:o2_off + N]
            for i in range(N):
                o2[i] = orow[i]


@numba.njit(inline="always", **_JIT)
def _col_stats(h, rows, n, eps, m, r):
    """Layer norm statistics per column: over rows ``0 .. rows`` of ``h`` (its first ``n``
    columns), the mean into ``m`` and 1/std into ``r``; two passes (mean, then squared
    deviations), as torch's layer norm."""
    inv = f32(1.0) / f32(rows)
    for i in range(n):
        m[i] = f32(0.0)
        r[i] = f32(0.0)
    for c in range(rows):
        hr = h[c, :n]
        for i in range(n):
            m[i] += hr[i]
    for i in range(n):
        m[i] *= inv
    for c in range(rows):
        hr = h[c, :n]
        for i in range(n):
            d = hr[i] - m[i]
            r[i] += d * d
    for i in range(n):
        r[i] = f32(1.0) / np.sqrt(r[i] * inv + eps)


@numba.njit(inline="always", **_JIT)
def _norm_gelu_rows(h, rows, n, m, r, w, b):
    """Rows ``0 .. rows`` of ``h`` (first ``n`` columns), in place: ``(h - m) * r`` per column,
    times ``w[row]`` plus ``b[row]``, then GELU."""
    for j in range(rows):
        hj = h[j, :n]
        wj, bj = w[j], b[j]
        for i in range(n):
            hj[i] = _gelu((hj[i] - m[i]) * r[i] * wj + bj)


@numba.njit(inline="always", **_JIT)
def _norm_glu_add(u, C, n, m, r, w, b, gain, x_in, xi_off, x_out, xo_off):
    """``x_out[c, xo_off ..] = x_in[c, xi_off ..] + gain[c] * GLU`` of the normalised ``u [2C,
    n]`` (``(u - m) * r`` per column, times ``w[row]`` plus ``b[row]``)."""
    for c in range(C):
        ua = u[c, :n]
        ug = u[C + c, :n]
        xi = x_in[c, xi_off:xi_off + n]
        xo = x_out[c, xo_off:xo_off + n]
        wa, ba, wg, bg, gc = w[c], b[c], w[C + c], b[C + c], gain[c]
        for i in range(n):
            av = (ua[i] - m[i]) * r[i] * wa + ba
            gv = (ug[i] - m[i]) * r[i] * wg + bg
            xo[i] = xi[i] + gc * (av * _sigmoid(gv))


#: columns per block of :func:`res_small` (its temporaries stay in L1)
RES_BLOCK = 128


@numba.njit(**_KERNEL)
def res_small(x, x_cur, R, ct, ht, dts, w_in, b_in, wi, bi, ei, w_out, b_out, wo, bo, eo, gain,
              x_out, xo_off, hb, ub, m, r):
    """A whole narrow residual layer per block of columns, nothing written between its steps:
    the dilated conv ``h[j] = b_in[j] + sum_q,c w_in[j, q * C + c] * x[c, dts[q] + i]`` (``H =
    len(ht)`` outputs, taps at column offsets ``dts``), layer norm over ``H`` + affine + GELU,
    the 1x1 conv to ``2C`` channels, layer norm over them + affine, GLU, and ``x_out[c, xo_off
    + i] = x[c, x_cur + i] + gain[c] * glu``, for the ``R`` columns ``i``. For the narrow
    layers (a few channels), where the GEMMs' tiny dimensions and the activations written
    between them cost more than the arithmetic. ``hb [H, RES_BLOCK]``, ``ub [2C, RES_BLOCK]``,
    ``m, r [RES_BLOCK]``: scratch."""
    C = len(ct)
    H = len(ht)
    Q = dts.shape[0]
    B = RES_BLOCK
    for i0 in range(0, R, B):
        nb = min(B, R - i0)
        mm = m[:nb]
        rr = r[:nb]
        # conv in
        for j in range(H):
            hj = hb[j, :nb]
            bj = b_in[j]
            for i in range(nb):
                hj[i] = bj
            for q in range(Q):
                for c in range(C):
                    wv = w_in[j, q * C + c]
                    xr = x[c, dts[q] + i0:dts[q] + i0 + nb]
                    for i in range(nb):
                        hj[i] += wv * xr[i]
        # layer norm over H, GELU
        _col_stats(hb, H, nb, ei, mm, rr)
        _norm_gelu_rows(hb, H, nb, mm, rr, wi, bi)
        # conv out
        for c in range(2 * C):
            uc = ub[c, :nb]
            bc = b_out[c]
            for i in range(nb):
                uc[i] = bc
            for j in range(H):
                wv = w_out[c, j]
                hj = hb[j, :nb]
                for i in range(nb):
                    uc[i] += wv * hj[i]
        # layer norm over 2C, GLU, LayerScale, + the input
        _col_stats(ub, 2 * C, nb, eo, mm, rr)
        _norm_glu_add(ub, C, nb, mm, rr, wo, bo, gain, x, x_cur + i0, x_out, xo_off + i0)


@numba.njit(**_KERNEL)
def res_ln_act(h, R, ht, w, b, eps, ms, rs):
    """Residual branch, in place on ``h [H, R]`` (columns = bins x frames): each column's
    layer norm over its H channels (a one-group frame norm per bin and frame) + affine, then
    GELU. ``ms, rs``: scratch of ``R`` values."""
    H = len(ht)
    m = ms[:R]
    r = rs[:R]
    _col_stats(h, H, R, eps, m, r)
    _norm_gelu_rows(h, H, R, m, r, w, b)


@numba.njit(**_KERNEL)
def res_ln_glu_add(u, R, c2t, w, b, eps, gain, x_in, xi_off, x_out, xo_off, ms, rs):
    """Residual branch's end, per column of ``u [2C, R]``: layer norm over the 2C channels +
    affine, GLU, then ``x_out = x_in + gain * glu`` (``[C, R]`` each, from their offsets).
    ``ms, rs``: scratch of ``R`` values."""
    C2 = len(c2t)
    C = C2 // 2
    m = ms[:R]
    r = rs[:R]
    _col_stats(u, C2, R, eps, m, r)
    _norm_glu_add(u, C, R, m, r, w, b, gain, x_in, xi_off, x_out, xo_off)


@numba.njit(**_KERNEL)
def up_norm_act(yb, Fa, T, st, cut, bias, G, w, b, eps, per_sample, act, out, o_off, o_pitch,
                post, p_off, p_pitch, crop, use_post, ms, rs):
    """A transposed conv's output in blocks, ``yb [cu * s, T * Fa]`` (row ``co * s + r``,
    column ``(t, a)``: channel ``co``, bin or sample ``a * s + r``), plus ``bias[row]`` (the
    conv's, not yet added by its GEMM), to natural order: per frame
    ``t`` the ``Fa * s`` values written at ``out[co, o_off + t * o_pitch ..]``. Group norm over
    each frame's values and C/G channels (``per_sample``: over the channels of each value
    alone, the waveform branch's per-step norm; ``G == 0``: none), GELU if ``act``, plus, where
    ``use_post``, ``post`` at value index ``q - crop`` of its frames (``p_off + t *
    p_pitch``) for the values ``crop <= q < Fa * s - crop`` (the others are the crop the
    consumer skips). ``yb`` is the caller's scratch: the normalised values are written back
    into it (flat, vectorised loops) before the reordering. ``ms, rs``: scratch of ``max(G,
    1) * s * T * Fa`` values."""
    s = len(st)
    cu = len(cut)
    zl = Fa * s
    N = T * Fa
    cg = cu // G if G > 0 else cu
    for g in range(max(G, 1)):
        c_lo, c_hi = g * cg, (g + 1) * cg
        if G > 0 and per_sample:  # mean and 1/std per value (r, column)
            for r in range(s):
                m = ms[r * N:(r + 1) * N]
                v = rs[r * N:(r + 1) * N]
                for i in range(N):
                    m[i] = f32(0.0)
                    v[i] = f32(0.0)
                for c in range(c_lo, c_hi):
                    yr = yb[c * s + r, :N]
                    bq = bias[c * s + r]
                    for i in range(N):
                        m[i] += yr[i] + bq
                inv = f32(1.0) / f32(cg)
                for i in range(N):
                    m[i] *= inv
                for c in range(c_lo, c_hi):
                    yr = yb[c * s + r, :N]
                    bq = bias[c * s + r]
                    for i in range(N):
                        d = yr[i] + bq - m[i]
                        v[i] += d * d
                for i in range(N):
                    v[i] = f32(1.0) / np.sqrt(v[i] * inv + eps)
            for c in range(c_lo, c_hi):
                wc, bc = w[c], b[c]
                for r in range(s):
                    yr = yb[c * s + r, :N]
                    _norm_row(yr, yr, N, bias[c * s + r], ms[r * N:(r + 1) * N],
                              rs[r * N:(r + 1) * N], wc, bc, act)
        elif G > 0:  # mean and 1/std per frame, into every column
            m = ms[:N]
            v = rs[:N]
            _frame_stats(yb, 0, Fa, N, c_lo * s, c_hi * s, cg * s * Fa, eps, m, v, bias)
            for c in range(c_lo, c_hi):
                wc, bc = w[c], b[c]
                for r in range(s):
                    yr = yb[c * s + r, :N]
                    _norm_row(yr, yr, N, bias[c * s + r], m, v, wc, bc, act)
        else:
            for q in range(cu * s):
                yr = yb[q, :N]
                bq = bias[q]
                if act:
                    for i in range(N):
                        yr[i] = _gelu(yr[i] + bq)
                else:
                    for i in range(N):
                        yr[i] += bq
    # reorder (block rows -> natural order), then the skip
    for c in range(cu):
        for t in range(T):
            orow = out[c, o_off + t * o_pitch:o_off + t * o_pitch + zl]
            col = t * Fa
            for a in range(Fa):
                for r in range(s):
                    orow[a * s + r] = yb[c * s + r, col + a]
        if use_post:
            if crop == 0 and o_pitch == zl and p_pitch == zl:
                orow = out[c, o_off:o_off + T * zl]
                prow = post[c, p_off:p_off + T * zl]
                for q in range(T * zl):
                    orow[q] += prow[q]
            else:
                for t in range(T):
                    prow = post[c, p_off + t * p_pitch:p_off + t * p_pitch + zl - 2 * crop]
                    oc = out[c, o_off + t * o_pitch + crop:o_off + t * o_pitch + zl - crop]
                    for q in range(zl - 2 * crop):
                        oc[q] += prow[q]


@numba.njit(**_KERNEL)
def up_to_ifft(yt, Fa, T, st, kt, bias, crop, nb, z, t0):
    """The last decoder's transposed conv output, transposed, ``yt [T * Fa, K * s * 2]`` (row
    ``(t, a)``, column ``(k, r, re/im)``: stem channel ``k``, bin ``a * s + r``), plus
    ``bias[column]`` (the conv's, not yet added by its GEMM), cropped by
    ``crop < s`` bins, straight into the inverse FFT's input ``z [K, frames, bins + 1, 2]``
    at frames ``t0 ..`` (its Nyquist bin left zero): each row holds a stem channel's ``s``
    bins of a block in the FFT's order, ``2 * s`` contiguous values."""
    s = len(st)
    K = len(kt)
    w = 2 * s
    zf = z.reshape(-1)
    kp = z.shape[1] * z.shape[2] * 2  # one stem channel's frames
    fp = z.shape[2] * 2  # one frame
    for t in range(T):
        for a in range(Fa):
            row = yt[t * Fa + a]
            q0 = a * s - crop
            if q0 >= 0 and q0 + s <= nb:
                for k in range(K):
                    o = k * kp + (t0 + t) * fp + 2 * q0
                    dst = zf[o:o + w]
                    src = row[k * w:k * w + w]
                    bk = bias[k * w:k * w + w]
                    for j in range(w):
                        dst[j] = src[j] + bk[j]
            else:
                for k in range(K):
                    o = k * kp + (t0 + t) * fp
                    for r in range(s):
                        q = q0 + r
                        if q >= 0 and q < nb:
                            zf[o + 2 * q] = row[k * w + 2 * r] + bias[k * w + 2 * r]
                            zf[o + 2 * q + 1] = row[k * w + 2 * r + 1] + bias[k * w + 2 * r + 1]


# -- STFT and the output ---------------------------------------------------------------------


@numba.njit(**_KERNEL)
def stft_frames(x, hop, win, frames):
    """Analysis frames: ``frames[t, c, i] = x[c, t * hop + i] * win[i]`` (``x`` carries
    ``n_fft - hop`` samples of context in front)."""
    N = win.shape[0]
    for t in range(frames.shape[0]):
        for c in range(frames.shape[1]):
            src = x[c, t * hop:t * hop + N]
            fr = frames[t, c, :N]
            for i in range(N):
                fr[i] = src[i] * win[i]


@numba.njit(**_KERNEL)
def to_ifft(so, s_off, s_pitch, nb, T, kt, z):
    """The spectrogram branch's CaC output (rows ``2k + re/im``, per frame ``nb`` bins at
    ``s_off + t * s_pitch``) -> the inverse FFT's input ``z [K, T, bins + 1, 2]`` (its
    Nyquist bin left as it is: zero)."""
    K = len(kt)
    for k in range(K):
        for t in range(T):
            re = so[2 * k, s_off + t * s_pitch:s_off + t * s_pitch + nb]
            im = so[2 * k + 1, s_off + t * s_pitch:s_off + t * s_pitch + nb]
            zt = z[k, t]
            for f in range(nb):
                zt[f, 0] = re[f]
                zt[f, 1] = im[f]


@numba.njit(**_KERNEL)
def mask_head(so, s_off, s_pitch, nb, T, kt, st, spec, z, e, ref, use_ref):
    """Mask output: the spectrogram branch's rows ``2k`` (``k = s * C + c``) are logits (plus
    the refiner's ``ref[k, t * nb + f]`` if ``use_ref``); each source's softmax share (over
    the ``len(st)`` sources) of the mixture spectrum ``spec [T, C, bins + 1, 2]`` -> ``z [K,
    T, bins + 1, 2]`` (Nyquist left zero). ``e``: scratch of ``(S + 1) * nb`` values."""
    K = len(kt)
    S = len(st)
    C = K // S
    top = e[S * nb:(S + 1) * nb]
    for t in range(T):
        o = s_off + t * s_pitch
        for c in range(C):
            for s in range(S):
                lr = so[2 * (s * C + c), o:o + nb]
                es = e[s * nb:(s + 1) * nb]
                if use_ref:
                    rr = ref[s * C + c, t * nb:(t + 1) * nb]
                    for f in range(nb):
                        es[f] = lr[f] + rr[f]
                else:
                    for f in range(nb):
                        es[f] = lr[f]
            for f in range(nb):
                top[f] = e[f]
            for s in range(1, S):
                es = e[s * nb:(s + 1) * nb]
                for f in range(nb):
                    top[f] = max(top[f], es[f])
            for s in range(S):
                es = e[s * nb:(s + 1) * nb]
                for f in range(nb):
                    es[f] = np.exp(es[f] - top[f])
            for f in range(nb):
                top[f] = e[f]
            for s in range(1, S):
                es = e[s * nb:(s + 1) * nb]
                for f in range(nb):
                    top[f] += es[f]
            for f in range(nb):
                top[f] = f32(1.0) / top[f]
            sp = spec[t, c]
            for s in range(S):
                es = e[s * nb:(s + 1) * nb]
                zt = z[s * C + c, t]
                for f in range(nb):
                    share = es[f] * top[f]
                    zt[f, 0] = share * sp[f, 0]
                    zt[f, 1] = share * sp[f, 1]


@numba.njit(**_KERNEL)
def compress_spec(spec, T, power, out):
    """Power-law compression of ``T`` frames of a spectrum ``[frames, C, bins + 1, 2]``, as
    :func:`~livestems.model.nets.hybrid.causal.compress_cac`: each bin times ``(re^2 + im^2 +
    1e-8) ** ((power - 1) / 2)``."""
    ex = f32(0.5) * (f32(power) - f32(1.0))
    for t in range(T):
        for c in range(spec.shape[1]):
            sp = spec[t, c]
            op = out[t, c]
            for f in range(sp.shape[0]):
                re, im = sp[f, 0], sp[f, 1]
                g = (re * re + im * im + f32(1e-8)) ** ex
                op[f, 0] = re * g
                op[f, 1] = im * g


@numba.njit(**_KERNEL)
def refine_feat(so, s_off, s_pitch, nb, T, kt, specc, ct, feat):
    """The mask refiner's input per bin: the branch's ``2K`` output rows (cropped, from
    ``s_off``), then the (compressed) mixture spectrum ``specc [T, C, bins + 1, 2]`` as ``2C``
    rows (``2c + re/im``): ``feat [2K + 2C, T * nb]``."""
    K2 = 2 * len(kt)
    C = len(ct)
    for j in range(K2):
        for t in range(T):
            src = so[j, s_off + t * s_pitch:s_off + t * s_pitch + nb]
            dst = feat[j, t * nb:(t + 1) * nb]
            for f in range(nb):
                dst[f] = src[f]
    for t in range(T):
        for c in range(C):
            sp = specc[t, c]
            dr = feat[K2 + 2 * c, t * nb:(t + 1) * nb]
            di = feat[K2 + 2 * c + 1, t * nb:(t + 1) * nb]
            for f in range(nb):
                dr[f] = sp[f, 0]
                di[f] = sp[f, 1]


@numba.njit(**_KERNEL)
def gelu_rows(h, n):
    """GELU of the first ``n`` columns of every row of ``h``, in place."""
    for c in range(h.shape[0]):
        r = h[c, :n]
        for i in range(n):
            r[i] = _gelu(r[i])


@numba.njit(**_KERNEL)
def istft_ola(frames, syn, hop, tail, wave, w_off, out, o_pitch, o_off, project, mix, st, acc):
    """Inverse STFT's overlap-add, the waveform branch and mixture consistency, at once.

    ``frames [K, T, n_fft]`` (irfft output); the last ``M = len(syn)`` samples of each, times
    ``syn``, are overlap-added at ``hop`` after ``tail [K, M - hop]`` (the carried overlap,
    updated); plus ``wave[k, w_off ..]`` (the waveform branch, already delayed). With
    ``project``: the ``len(st)`` sources of each channel are moved to sum to ``mix [K / S,
    ..]`` (the delayed input). Output: row ``k`` at ``out[k * o_pitch + o_off ..]`` of the flat
    ``out`` (rows of a longer buffer: the caller's, no copy), ``T * hop`` values each.
    ``acc``: scratch of ``T * hop + M - hop`` values."""
    K, T, N = frames.shape[0], frames.shape[1], frames.shape[2]
    M = syn.shape[0]
    ov = M - hop
    n = T * hop
    a = acc[:n + ov]
    for k in range(K):
        tk = tail[k, :ov]
        for i in range(ov):
            a[i] = tk[i]
        for i in range(ov, n + ov):
            a[i] = f32(0.0)
        for t in range(T):
            src = frames[k, t, N - M:N]
            dst = a[t * hop:t * hop + M]
            for i in range(M):
                dst[i] += src[i] * syn[i]
        for i in range(ov):
            tk[i] = a[n + i]
        ok = out[k * o_pitch + o_off:k * o_pitch + o_off + n]
        wk = wave[k, w_off:w_off + n]
        for i in range(n):
            ok[i] = a[i] + wk[i]
    if project:
        S = len(st)
        C = K // S
        inv = f32(1.0) / f32(S)
        d = acc[:n]
        for c in range(C):
            mc = mix[c, :n]
            for i in range(n):
                d[i] = mc[i]
            for s in range(S):
                r0 = (s * C + c) * o_pitch + o_off
                os_ = out[r0:r0 + n]
                for i in range(n):
                    d[i] -= os_[i]
            for s in range(S):
                r0 = (s * C + c) * o_pitch + o_off
                os_ = out[r0:r0 + n]
                for i in range(n):
                    os_[i] += d[i] * inv


@numba.njit(**_KERNEL)
def carry_cols(buf, ctx, n):
    """Per row, move columns ``[n, n + ctx)`` to the front (the context the next chunk's first
    columns see); copied in increasing order, so safe when the ranges overlap."""
    for c in range(buf.shape[0]):
        row = buf[c]
        for i in range(ctx):
            row[i] = row[n + i]


@numba.njit(**_KERNEL)
def lstm_seq(xg, T, whh_t, h, c, out, ht, g):
    """One LSTM layer over ``T`` steps, PyTorch's equations and gate order (input, forget,
    cell, output): ``xg [T, 4H]`` holds ``W_ih x_t + b_ih + b_hh``; ``whh_t [H, 4H]`` is
    ``W_hh`` transposed; ``h, c [H]`` the carried state (updated); the outputs ``h_t`` go to
    ``out [T, H]``. ``g``: scratch of ``4H`` values."""
    H = len(ht)
    H4 = 4 * H
    for t in range(T):
        xr = xg[t, :H4]
        for j in range(H4):
            g[j] = xr[j]
        for k in range(H):
            hk = h[k]
            wr = whh_t[k, :H4]
            for j in range(H4):
                g[j] += hk * wr[j]
        o = out[t, :H]
        for j in range(H):
            i_ = _sigmoid(g[j])
            f_ = _sigmoid(g[H + j])
            c_ = _tanh(g[2 * H + j])
            o_ = _sigmoid(g[3 * H + j])
            cj = f_ * c[j] + i_ * c_
            c[j] = cj
            hj = o_ * _tanh(cj)
            h[j] = hj
            o[j] = hj
