"""Analysis/synthesis windows for the streaming STFT, including low-latency asymmetric pairs.

Every window here is float32 of length ``n_fft`` and is meant to be used with a hop that
divides ``n_fft``. A pair (analysis ``a``, synthesis ``s``) reconstructs perfectly by
weighted overlap-add when the envelope ``e[n] = sum_k a[n + k*hop] * s[n + k*hop]`` is the same
constant for every ``n``; :func:`check_reconstruction` verifies that and returns the constant,
which :class:`livestems.dsp.stft.StreamISTFT` divides out.

Latency of the streaming inverse is set by the synthesis window, not the analysis window: a
sample is final once no later frame can add to it, and a frame adds only where its synthesis
window is nonzero. A synthesis window nonzero only on the last ``M`` samples of the frame gives a
latency of ``M - hop`` samples, so a long analysis window (good frequency resolution) can be
paired with a short synthesis window (low latency). :func:`asymmetric_pair` builds such a pair
(Mauler & Martin, "A low delay, variable resolution, perfect reconstruction spectral analysis-
synthesis system for speech enhancement", EUSIPCO 2007).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "hann",
    "sqrt_hann",
    "asymmetric_pair",
    "check_reconstruction",
    "synthesis_support",
]

# Relative deviation of the overlap-add envelope from its mean that still counts as constant.
# float32 windows carry ~6e-8 relative error per tap; 1e-4 leaves room for that and rejects any
# real design error (a wrong hop gives deviations of order 1).
_RECONSTRUCTION_RTOL = 1e-4


def _check_length(n: int, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return int(n)


def _hann64(n: int) -> np.ndarray:
    # Periodic (DFT-even) Hann: w[k] = sin^2(pi k / n). Periodic, not symmetric, because the
    # periodic form is the one whose hop-shifted copies sum to a constant.
    k = np.arange(n, dtype=np.float64)
    return np.sin(np.pi * k / n) ** 2


def hann(n: int) -> np.ndarray:
    """Periodic Hann window, float32 [n]; ``w[k] = 0.5 - 0.5 cos(2 pi k / n)``.

    Same values as ``torch.hann_window(n, periodic=True)``. Sums to ``n / (2 hop)`` under overlap
    for any hop with ``n / hop >= 2`` integer.
    """
    n = _check_length(n)
    return _hann64(n).astype(np.float32)


def sqrt_hann(n: int) -> np.ndarray:
    """Square root of the periodic Hann window, float32 [n].

    Used on both sides (analysis and synthesis) its product is a Hann window, so it reconstructs
    for any hop with ``n / hop >= 2`` integer.
    """
    n = _check_length(n)
    return np.sqrt(_hann64(n)).astype(np.float32)


def asymmetric_pair(n_fft: int, hop: int, synthesis_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-latency analysis/synthesis pair (Mauler & Martin 2007).

    Args:
        n_fft: frame length in samples (also the analysis window length).
        hop: hop size in samples; must divide ``n_fft``.
        synthesis_len: ``M``, the number of trailing samples on which the synthesis window is
            nonzero. Must be a multiple of ``hop`` with ``2 * hop <= M <= n_fft``.

    Returns:
        ``(analysis, synthesis)``, both float32 [n_fft]. ``synthesis`` is zero on the first
        ``n_fft - M`` samples. The pair reconstructs exactly with unit gain: the overlap-add
        envelope of ``analysis * synthesis`` at this hop is 1. Used with
        :class:`~livestems.dsp.stft.StreamISTFT` it gives a latency of ``M - hop`` samples
        instead of ``n_fft - hop``.

    Construction: the product ``analysis * synthesis`` is chosen as a Hann window of length
    ``M`` on the last ``M`` samples, scaled by ``2 hop / M`` so its hop-shifted copies sum to 1.
    The analysis window rises like the first half of a sqrt-Hann of length ``2 n_fft - M`` over
    its first ``n_fft - M/2`` samples (``M/2`` rounded down), then falls like the second half
    of a sqrt-Hann of length ``M``; the synthesis window is the product divided by the
    analysis window. For ``M == n_fft`` this reduces to the symmetric sqrt-Hann pair (up to
    the constant gain).
    """
    n_fft = _check_length(n_fft, "n_fft")
    hop = _check_length(hop, "hop")
    synthesis_len = _check_length(synthesis_len, "synthesis_len")
    if n_fft % hop != 0:
        raise ValueError(f"hop must divide n_fft: n_fft={n_fft}, hop={hop} (n_fft % hop = {n_fft % hop})")
    if synthesis_len % hop != 0:
        raise ValueError(
            f"synthesis_len must be a multiple of hop={hop}, got {synthesis_len}; "
            f"try {max(2 * hop, synthesis_len // hop * hop)}"
        )
    if not 2 * hop <= synthesis_len <= n_fft:
        raise ValueError(
            f"synthesis_len must satisfy 2*hop <= synthesis_len <= n_fft, i.e. "
            f"{2 * hop} <= synthesis_len <= {n_fft}; got {synthesis_len}"
        )
    n, m = n_fft, synthesis_len
    half = m // 2
    rise_len = n - half  # analysis rises over [0, n - M/2), peaks at n - M/2, falls over the rest
    analysis = np.empty(n, dtype=np.float64)
    analysis[:rise_len] = np.sqrt(_hann64(2 * rise_len)[:rise_len])
    # the falling part lines up with the product's Hann: analysis[i] <-> hann(M)[i - (n - M)],
    # so it starts at hann index M - M//2 (M/2 for even M; past the peak pair for odd M)
    analysis[rise_len:] = np.sqrt(_hann64(m)[m - half:])

    product = np.zeros(n, dtype=np.float64)
    product[n - m :] = _hann64(m) * (2.0 * hop / m)
    synthesis = np.zeros(n, dtype=np.float64)
    # analysis > 0 on (0, n) so the division is safe wherever the product is nonzero; the only
    # zero of the analysis window (index 0) lies where the product is zero too.
    nz = product > 0.0
    synthesis[nz] = product[nz] / analysis[nz]
    return analysis.astype(np.float32), synthesis.astype(np.float32)


def _as_window(w, name: str) -> np.ndarray:
    arr = np.asarray(w)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [n_fft], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr.astype(np.float64)


def overlap_envelope(analysis, synthesis, hop: int) -> np.ndarray:
    """Steady-state overlap-add envelope, float64 [hop].

    ``e[n] = sum_k analysis[n + k*hop] * synthesis[n + k*hop]`` for ``n`` in ``[0, hop)``: the
    gain a weighted overlap-add applies to the sample at phase ``n`` once every frame covering it
    has been added.
    """
    a = _as_window(analysis, "analysis")
    s = _as_window(synthesis, "synthesis")
    if a.shape != s.shape:
        raise ValueError(f"analysis and synthesis must have the same length, got {a.size} and {s.size}")
    hop = _check_length(hop, "hop")
    if a.size % hop != 0:
        raise ValueError(f"hop must divide n_fft: n_fft={a.size}, hop={hop} (n_fft % hop = {a.size % hop})")
    return (a * s).reshape(a.size // hop, hop).sum(axis=0)


def check_reconstruction(analysis, synthesis, hop: int) -> float:
    """Verify that a window pair reconstructs perfectly at ``hop``; return its constant gain.

    Args:
        analysis, synthesis: 1-D windows of equal length ``n_fft`` (any float dtype).
        hop: hop size in samples; must divide ``n_fft``.

    Returns:
        The constant ``c`` of the overlap-add envelope (1.0 for :func:`asymmetric_pair`;
        ``n_fft / (2 hop)`` for sqrt-Hann on both sides). Weighted overlap-add followed by a
        division by ``c`` gives back the input.

    Raises:
        ValueError: with the reason and the max relative deviation, when the envelope is not
            constant (the hop is too large for the windows, or the windows do not match) or
            is zero.
    """
    env = overlap_envelope(analysis, synthesis, hop)
    mean = float(env.mean())
    peak = float(np.abs(env).max())
    if peak <= 1e-12 or abs(mean) <= 1e-12:
        raise ValueError(
            f"window pair cannot reconstruct at hop={hop}: overlap-add envelope is zero "
            f"(max |envelope| = {peak:.3g})"
        )
    dev = float(np.abs(env - mean).max() / abs(mean))
    if dev > _RECONSTRUCTION_RTOL:
        raise ValueError(
            f"window pair cannot reconstruct at hop={hop}: overlap-add envelope is not constant "
            f"(max relative deviation {dev:.3g} > {_RECONSTRUCTION_RTOL:g}; "
            f"envelope ranges {env.min():.6g}..{env.max():.6g}); use a smaller hop or a matching pair"
        )
    if mean < 0:
        raise ValueError(f"window pair cannot reconstruct at hop={hop}: overlap-add envelope is negative ({mean:.6g})")
    return mean


def synthesis_support(synthesis, hop: int) -> int:
    """Length ``M`` of the synthesis window's support, rounded up to whole hops.

    ``M`` counts the trailing samples from the first nonzero tap to the end of the frame, rounded
    up to a multiple of ``hop``, so ``n_fft`` for symmetric windows (whose first tap may be 0) and
    ``synthesis_len`` for :func:`asymmetric_pair`. The streaming inverse's latency is ``M - hop``.
    Rounding keeps the latency a whole number of hops, so it does not depend on whether a
    window's first tap happens to be exactly zero.
    """
    s = _as_window(synthesis, "synthesis")
    hop = _check_length(hop, "hop")
    nz = np.flatnonzero(s)
    if nz.size == 0:
        raise ValueError("synthesis window is all zeros")
    raw = s.size - int(nz[0])
    return -(-raw // hop) * hop
