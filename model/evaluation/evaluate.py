"""Separation quality: BSSEval v4 SDR (as museval computes it), MDX "new SDR", and baselines.

Metrics (per source, stereo signals ``[C, T]``):

- **SDR v4** (museval, SiSEC 2018): BSSEval v4 in "images" mode with time-invariant 512-tap
  distortion filters, on 1 s windows with 1 s hop; a track's score is the median over its
  windows, a dataset's the median over tracks. In this mode the four error terms of the
  decomposition add up to ``estimate - reference``, so a window's SDR is exactly
  ``10 log10(sum(s^2) / sum((s - s_hat)^2))``: the filters change ISR/SIR/SAR, never SDR.
  We compute that closed form (milliseconds instead of minutes) and keep museval's rules:
  windows where *any* evaluated source, reference or estimate, is all zero are NaN and left
  out; partial last windows are dropped; vocals and accompaniment are evaluated as their own
  pair, the other sources jointly (``museval.eval_mus_track``). ``tests/model/evaluation`` checks this
  against ``museval.metrics.bss_eval`` itself.
- **nSDR** (Music Demixing Challenge 2021 "new SDR"): ``10 log10((sum(s^2) + 1e-7) /
  (sum((s - s_hat)^2) + 1e-7))`` over the whole track; a dataset's score is the mean over
  tracks, as in the challenge.

Methods compared by :func:`evaluate`: the model under test through its streaming path
(:func:`~livestems.model.nets.protocol.stream_offline`, what users hear), and always beside it the
unprocessed mixture (every source estimated as the mixture), the DSP karaoke baseline
``center``, and the ideal ratio mask oracle at the model's STFT size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from livestems.model.nets.protocol import stream_offline

__all__ = [
    "EvalTrack",
    "sdr_v4_windows",
    "sdr_v4",
    "new_sdr",
    "ideal_ratio_mask",
    "score_track",
    "evaluate",
    "format_report",
]

FOUR = ("vocals", "drums", "bass", "other")
ACC = "accompaniment"


@dataclass
class EvalTrack:
    """A track with ground truth: ``stems`` maps vocals, drums, bass, other to float32
    ``[2, T]``; ``sample_rate`` in Hz. Its mixture is the sum of the stems."""

    name: str
    stems: dict
    sample_rate: int

    @property
    def mixture(self) -> np.ndarray:
        return np.sum([self.stems[s].astype(np.float64) for s in FOUR], axis=0)

    def truth(self, source: str) -> np.ndarray:
        if source == ACC:
            return np.sum([self.stems[s].astype(np.float64) for s in FOUR if s != "vocals"], axis=0)
        return self.stems[source].astype(np.float64)


# --------------------------------------------------------------------------------------------
# metrics


def _silent(x: np.ndarray) -> bool:
    # museval's test: a source is silent where the sum over channels is 0 at every sample
    return bool(np.all(np.sum(x, axis=0) == 0))


def sdr_v4_windows(references: np.ndarray, estimates: np.ndarray, window: int, hop: int
                   ) -> np.ndarray:
    """BSSEval v4 SDR per window, evaluating the sources jointly.

    Args:
        references, estimates: ``[S, C, T]`` (sources, channels, samples), same shape.
        window, hop: in samples (museval: 1 s each).

    Returns:
        float64 ``[S, n_windows]`` in dB; NaN where any source's reference or estimate is
        silent in that window; +inf where an estimate is exact.
    """
    references = np.asarray(references, dtype=np.float64)
    estimates = np.asarray(estimates, dtype=np.float64)
    if references.shape != estimates.shape or references.ndim != 3:
        raise ValueError(f"references and estimates must both be [S, C, T]; got "
                         f"{list(references.shape)} and {list(estimates.shape)}")
    n = references.shape[-1]
    n_win = (n - window + hop) // hop if window < n else 1
    out = np.full((references.shape[0], n_win), np.nan)
    for t in range(n_win):
        sl = slice(t * hop, min(t * hop + window, n))
        ref, est = references[..., sl], estimates[..., sl]
        if any(_silent(r) for r in ref) or any(_silent(e) for e in est):
            continue
        num = np.sum(ref**2, axis=(1, 2))
        den = np.sum((est - ref) ** 2, axis=(1, 2))
        with np.errstate(divide="ignore"):
            out[:, t] = np.where(den == 0, np.inf, 10.0 * np.log10(num / np.where(den == 0, 1, den)))
    return out


def sdr_v4(references: np.ndarray, estimates: np.ndarray, sample_rate: int,
           window_s: float = 1.0, hop_s: float = 1.0) -> np.ndarray:
    """Per-source track SDR v4: median over the windows of :func:`sdr_v4_windows`.

    ``[S, C, T]`` in, float64 ``[S]`` dB out (NaN if every window was left out)."""
    w = sdr_v4_windows(references, estimates, int(window_s * sample_rate), int(hop_s * sample_rate))
    with warnings.catch_warnings():  # all-NaN rows ("every window silent") give NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(w, axis=1)


def new_sdr(references: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """MDX 2021 SDR over whole signals: ``[S, C, T]`` in, float64 ``[S]`` dB out."""
    references = np.asarray(references, dtype=np.float64)
    estimates = np.asarray(estimates, dtype=np.float64)
    delta = 1e-7
    num = np.sum(references**2, axis=(1, 2)) + delta
    den = np.sum((references - estimates) ** 2, axis=(1, 2)) + delta
    return 10.0 * np.log10(num / den)


def ideal_ratio_mask(sources: np.ndarray, n_fft: int, hop: int | None = None,
                     alpha: float = 2.0) -> np.ndarray:
    """Oracle estimates by ideal ratio masks on the mixture's STFT.

    Args:
        sources: true sources ``[S, C, T]``; the mixture is their sum.
        n_fft: STFT size (samples; use the model's); Hann window, ``hop`` default n_fft/4.
        alpha: mask exponent: 2 is the power-ratio (Wiener-like) mask "IRM2", 1 "IRM1".

    Returns:
        float64 ``[S, C, T]``; the estimates sum to the mixture (masks sum to 1).
    """
    from scipy.signal import istft, stft

    sources = np.asarray(sources, dtype=np.float64)
    hop = hop or n_fft // 4
    T = sources.shape[-1]
    kw = dict(nperseg=n_fft, noverlap=n_fft - hop, window="hann", boundary="zeros", padded=True)
    _, _, spec = stft(sources, **kw)  # [S, C, F, K]
    mag = np.abs(spec) ** alpha
    mask = mag / np.maximum(mag.sum(axis=0, keepdims=True), 1e-30)
    mix_spec = spec.sum(axis=0, keepdims=True)
    _, est = istft(mask * mix_spec, nperseg=n_fft, noverlap=n_fft - hop, window="hann",
                   boundary=True)
    est = est[..., :T]
    if est.shape[-1] < T:
        est = np.pad(est, [(0, 0)] * (est.ndim - 1) + [(0, T - est.shape[-1])])
    return est


# --------------------------------------------------------------------------------------------
# scoring a track like museval.eval_mus_track


def score_track(track: EvalTrack, estimates: dict, window_s: float = 1.0,
                hop_s: float = 1.0) -> dict:
    """SDR v4 and nSDR of each estimated source of one track.

    ``estimates``: source -> ``[2, T]`` for any of vocals, drums, bass, other,
    accompaniment. As in museval, when both vocals and accompaniment are present they are
    evaluated as a pair, and the other sources jointly with each other.

    Returns ``{source: {"sdr": dB, "nsdr": dB}}``; NaN for every source of a group in which
    some reference is silent over the whole track (museval refuses such tracks); NaNs are
    left out of the dataset aggregates.
    """
    names = [s for s in (*FOUR, ACC) if s in estimates]
    groups = []
    if "vocals" in names and ACC in names:
        rest = [s for s in names if s not in ("vocals", ACC)]
        if rest:
            # museval evaluates vocals with the others too, then reports the pair's vocals
            groups.append(([*rest, "vocals"], rest))
        groups.append((["vocals", ACC], ["vocals", ACC]))
    else:
        groups.append((names, names))
    out: dict = {}
    for evaluated, reported in groups:
        refs = np.stack([track.truth(s) for s in evaluated])
        ests = np.stack([np.asarray(estimates[s], dtype=np.float64) for s in evaluated])
        v4 = sdr_v4(refs, ests, track.sample_rate, window_s, hop_s)
        ns = new_sdr(refs, ests)
        # a group with a source absent from the whole track has no defined scores: museval
        # refuses such tracks, and nSDR would be an outlier of -70 dB (the silent source) or
        # +90 dB (the mixture as an exact accompaniment); NaN keeps them out of the aggregates
        absent = any(not np.any(r) for r in refs)
        for k, s in enumerate(evaluated):
            if s in reported:
                out[s] = {"sdr": float("nan") if absent else float(v4[k]),
                          "nsdr": float("nan") if absent else float(ns[k])}
    return out


# --------------------------------------------------------------------------------------------
# running methods


def _run_separator(sep, mixture: np.ndarray, sample_rate: int) -> dict:
    """Stems of ``mixture`` [2, T] through ``sep``'s streaming path, at the track's rate."""
    x = mixture.astype(np.float32)
    if sep.sample_rate != sample_rate:
        import soxr

        x = soxr.resample(x.T, sample_rate, sep.sample_rate, quality="VHQ").T
    if sep.channels == 1:
        x = x.mean(axis=0, keepdims=True)
    elif sep.channels != x.shape[0]:
        raise ValueError(f"model expects {sep.channels} channels; evaluation audio is stereo")
    y = stream_offline(sep, np.ascontiguousarray(x, dtype=np.float32))  # [S, C, T']
    if sep.sample_rate != sample_rate:
        import soxr

        y = np.stack([soxr.resample(s.T, sep.sample_rate, sample_rate, quality="VHQ").T
                      for s in y])
    T = mixture.shape[-1]
    if y.shape[-1] < T:
        y = np.pad(y, ((0, 0), (0, 0), (0, T - y.shape[-1])))
    y = y[..., :T]
    if y.shape[1] == 1:
        y = np.repeat(y, 2, axis=1)
    out = {s: y[k].astype(np.float64) for k, s in enumerate(sep.sources)}
    if ACC not in out and all(s in out for s in FOUR):
        out[ACC] = sum(out[s] for s in FOUR if s != "vocals")
    return out


def scored_sources(model_sources) -> tuple[str, ...]:
    """What a model is scored on: its sources that have ground truth, plus accompaniment
    (the sum of its non-vocal stems) for a four-stem model."""
    have = [s for s in (*FOUR, ACC) if s in model_sources]
    if all(s in model_sources for s in FOUR) and ACC not in have:
        have.append(ACC)
    if not have:
        raise ValueError(f"model sources {tuple(model_sources)} include none of "
                         f"{', '.join((*FOUR, ACC))}: nothing to score")
    return tuple(have)


def _oracle(track: EvalTrack, scored, n_fft: int) -> dict:
    """IRM estimates of the scored sources: a two-stem model's oracle masks vocals against
    accompaniment; otherwise the four stems are masked and accompaniment is their non-vocal sum."""
    if set(scored) <= {"vocals", ACC}:
        est = ideal_ratio_mask(np.stack([track.truth("vocals"), track.truth(ACC)]), n_fft)
        out = {"vocals": est[0], ACC: est[1]}
    else:
        est = ideal_ratio_mask(np.stack([track.truth(s) for s in FOUR]), n_fft)
        out = dict(zip(FOUR, est))
        out[ACC] = sum(out[s] for s in FOUR if s != "vocals")
    return {s: out[s] for s in scored}


def evaluate(tracks, separator, method: str, *, baselines: bool = True, n_fft: int | None = None,
             progress: bool = False) -> dict:
    """Score ``separator`` and the baselines on ``tracks``.

    Args:
        tracks: iterable of :class:`EvalTrack` (or a callable yielding them lazily, so long
            datasets are not all held in memory).
        separator: a :class:`~livestems.model.nets.protocol.Separator`; run via its streaming path.
        method: its name in the report.
        baselines: also score the mixture, the ``center`` DSP baseline and the IRM oracle.
        n_fft: the oracle's STFT size (default: ``separator.n_fft``, else its network's
            ``module.n_fft``, else 4096).
        progress: show a progress bar per track (stderr).

    Returns:
        ``{"method", "tracks": [names], "metric", "sdr": {source: median SDR v4 dB},
        "nsdr": {source: mean nSDR dB}, "baselines": {name: {"sdr", "nsdr", "n_fft"?}},
        "per_track": {method: {track: {source: {"sdr", "nsdr"}}}}}``.
    """
    from livestems.model.nets.center import CenterCancel

    scored = scored_sources(separator.sources)
    # the model's own STFT size: the separator's, or its network's (StreamingHybrid.module)
    n_fft = int(n_fft or getattr(separator, "n_fft", None)
                or getattr(getattr(separator, "module", None), "n_fft", None) or 4096)
    methods: dict = {method: {}}
    center = None
    if baselines:
        center = CenterCancel()
        methods.update({"mixture": {}, "center": {}, "oracle_irm2": {}})
    names = []
    items = tracks() if callable(tracks) else tracks
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"eval {method}", unit="track")
    for track in items:
        names.append(track.name)
        mixture = track.mixture
        methods[method][track.name] = score_track(track, _run_separator(separator, mixture,
                                                                        track.sample_rate))
        if baselines:
            methods["mixture"][track.name] = score_track(track, {s: mixture for s in scored})
            c = _run_separator(center, mixture, track.sample_rate)
            methods["center"][track.name] = score_track(
                track, {s: c[s] for s in c if s in scored or s in ("vocals", ACC)})
            methods["oracle_irm2"][track.name] = score_track(track, _oracle(track, scored, n_fft))
    if not names:
        raise ValueError("no tracks to evaluate")

    def aggregate(per_track: dict) -> tuple[dict, dict]:
        sources = [s for s in (*FOUR, ACC) if any(s in v for v in per_track.values())]
        sdr, nsdr = {}, {}
        for s in sources:
            v4 = np.array([v[s]["sdr"] for v in per_track.values() if s in v], dtype=np.float64)
            ns = np.array([v[s]["nsdr"] for v in per_track.values() if s in v], dtype=np.float64)
            v4, ns = v4[~np.isnan(v4)], ns[~np.isnan(ns)]
            sdr[s] = float(np.median(v4)) if v4.size else float("nan")
            nsdr[s] = float(np.mean(ns)) if ns.size else float("nan")
        return sdr, nsdr

    sdr, nsdr = aggregate(methods[method])
    report = {
        "method": method,
        "tracks": names,
        "metric": "sdr: BSSEval v4 SDR (museval), 1 s windows, median over windows then "
                  "median over tracks, dB; nsdr: MDX 2021 new SDR per track, mean over tracks, dB",
        "sdr": sdr,
        "nsdr": nsdr,
        "baselines": {},
        "per_track": methods,
    }
    for name in ("mixture", "center", "oracle_irm2"):
        if name in methods:
            b_sdr, b_nsdr = aggregate(methods[name])
            report["baselines"][name] = {"sdr": b_sdr, "nsdr": b_nsdr}
            if name == "oracle_irm2":
                report["baselines"][name]["n_fft"] = n_fft
    return report


def format_report(report: dict) -> str:
    """Two plain-text tables (SDR v4 median, nSDR mean): one row per method, one column per
    source; ``-`` where a method does not produce that source."""
    rows = [(report["method"], report)] + [(k, v) for k, v in report["baselines"].items()
                                           if k != report["method"]]
    sources = [s for s in (*FOUR, ACC) if any(s in r["sdr"] for _, r in rows)]
    lines = []
    for key, title in (("sdr", "SDR v4 (museval; median of 1 s windows, median over tracks), dB"),
                       ("nsdr", "nSDR (MDX 2021; whole track, mean over tracks), dB")):
        lines.append(title)
        head = f"  {'method':22s}" + "".join(f"{s:>15s}" for s in sources)
        lines.append(head)
        lines.append("  " + "-" * (len(head) - 2))
        for name, r in rows:
            label = name + (f" (n_fft {r['n_fft']})" if "n_fft" in r else "")
            cells = "".join(f"{r[key][s]:15.2f}" if s in r[key] else f"{'-':>15s}" for s in sources)
            lines.append(f"  {label:22s}{cells}")
        lines.append("")
    lines.append(f"{len(report['tracks'])} track(s): {', '.join(report['tracks'])}")
    return "\n".join(lines)
