"""Training data from MUSDB-layout folders: scanning with validation, segments, augmentation.

A MUSDB-layout dataset is a folder of track folders, each holding one WAV (or FLAC) file per
source and usually ``mixture.wav``::

    root/[train|test/]Track Name/{mixture,vocals,drums,bass,other}.wav

This is the layout of MUSDB18-HQ, of ``livestems synth`` output, and easy to make from one's
own stems. Stems may also be compressed (Ogg Vorbis/Opus, ``.opus``, MP3) at any rate: on
the first scan each is decoded and resampled (soxr, high quality) once to the dataset rate
into a cache of float32 WAV files (:func:`cache_dir`), so epochs read WAV spans and never
decode again; a cached file is reused while the source's path, size and modification time
are unchanged. :func:`scan_musdb` finds the tracks and checks them without decoding audio
(missing stems, unreadable files, sample rates, lengths, channel counts); bad tracks are
skipped with a reason, or raise :class:`DatasetError` with ``strict=True``.

Two torch datasets yield ``(mixture [C, T], stems [S, C, T])`` float32 tensors, with the
mixture always the sum of the returned stems:

- :class:`StemSegments`: fixed segments in order, no augmentation (validation);
- :class:`AugmentedStems`: Demucs-style augmentation (random segment, each source from a
  random track with probability ``remix``, per-source gain, channel swap, sign flip and
  a short time shift), deterministic for a given ``seed``, epoch and index, whatever the
  number of DataLoader workers.

Sources default to ``vocals, drums, bass, other``; ``accompaniment`` may be asked for and is
the sum of the non-vocal stems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

__all__ = [
    "SOURCES",
    "DatasetError",
    "TrackInfo",
    "ScanReport",
    "scan_musdb",
    "read_source",
    "read_track",
    "StemSegments",
    "AugmentedStems",
]

#: MUSDB's four sources, in the order models and datasets use by default
SOURCES = ("vocals", "drums", "bass", "other")
#: derived source: the sum of every stem but vocals
ACCOMPANIMENT = "accompaniment"
_PCM_EXTS = (".wav", ".flac")
#: decoded and resampled once into the cache (:func:`cached_pcm`)
_COMPRESSED_EXTS = (".ogg", ".opus", ".mp3")
_EXTS = _PCM_EXTS + _COMPRESSED_EXTS


def cache_dir() -> Path:
    """Where decoded stems are cached: ``$LIVESTEMS_CACHE/stems``, else
    ``$XDG_CACHE_HOME/livestems/stems`` (``~/.cache/livestems/stems``)."""
    env = os.environ.get("LIVESTEMS_CACHE")
    if env:
        return Path(env) / "stems"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "livestems" / "stems"


def cached_pcm(path: Path, sample_rate: int) -> Path:
    """A float32 WAV of the compressed audio file ``path`` at ``sample_rate`` Hz in
    :func:`cache_dir`, made on first use (decode, then soxr high-quality resampling; mono
    stays mono) and written atomically, so an interrupted run never leaves a truncated cache
    file. Raises ``OSError``/``sf.LibsndfileError`` when the file cannot be decoded."""
    import hashlib

    import soxr

    st = path.stat()
    key = hashlib.sha256(f"v2|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{sample_rate}"
                         .encode()).hexdigest()[:20]
    out = cache_dir() / f"{path.stem}-{key}.wav"
    if out.is_file():
        return out
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != sample_rate:
        data = soxr.resample(data, rate, sample_rate, quality="HQ").astype(np.float32)
    # an Opus decoder renders digital silence as ~1e-34 (below -600 dBFS): make it the zeros it
    # was, so a silent stem (a song without bass) counts as silent in validation and eval
    data[np.abs(data) < 1e-20] = 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".part{os.getpid()}")
    try:
        sf.write(str(tmp), data, sample_rate, subtype="FLOAT", format="WAV")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message says what was expected and how to fix."""


@dataclass(frozen=True)
class TrackInfo:
    """One usable track: ``name`` (folder name, with its subset), ``files`` (stem name ->
    path), ``frames`` (samples per channel, equal for every file), ``sample_rate`` (Hz),
    ``channels`` (of the files: 1 is duplicated to stereo on reading, 2 as is)."""

    name: str
    folder: Path
    files: dict
    frames: int
    sample_rate: int
    channels: int


@dataclass
class ScanReport:
    """What :func:`scan_musdb` found: usable ``tracks`` and ``skipped`` (folder, reason)."""

    root: Path
    tracks: list[TrackInfo] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable: counts, then one line per skipped track."""
        lines = [f"{self.root}: {len(self.tracks)} usable track(s), {len(self.skipped)} skipped"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def _stem_files(folder: Path) -> dict[str, Path]:
    files = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in _EXTS:
            files.setdefault(entry.stem, entry)
    return files


def _track_folders(root: Path, subsets) -> list[Path]:
    """Folders that hold stems: ``root`` itself, its children, or children of subset folders."""
    if _stem_files(root):
        return [root]
    children = sorted(p for p in root.iterdir() if p.is_dir())
    names = {p.name for p in children}
    subset_dirs = [p for p in children if p.name in ("train", "test", "valid")]
    if subsets is not None:
        missing = [s for s in subsets if s not in names]
        if missing:
            raise DatasetError(
                f"{root}: subset folder(s) {', '.join(missing)} not found; expected "
                f"root/<subset>/<track>/<stem>.wav; got {', '.join(sorted(names)) or 'no folders'}. "
                "Fix: check the path or drop the subset option")
        subset_dirs = [root / s for s in subsets]
    if subset_dirs:
        return [t for s in subset_dirs for t in sorted(p for p in s.iterdir() if p.is_dir())]
    return children


def scan_musdb(root: str | os.PathLike, sources: tuple[str, ...] = SOURCES, *,
               sample_rate: int | None = 44100, subsets: tuple[str, ...] | None = None,
               strict: bool = False) -> ScanReport:
    """Find and validate the tracks of a MUSDB-layout folder, reading headers only.

    Args:
        root: the dataset folder (with or without ``train``/``test`` subsets) or one track
            folder.
        sources: stems every track must have (``accompaniment`` needs the non-vocal stems).
        sample_rate: required rate in Hz; None accepts the rate of the first good track and
            requires it of the others.
        subsets: only these subset folders (e.g. ``("train",)``); None: all that exist.
        strict: raise :class:`DatasetError` on the first bad track instead of skipping it.

    Returns:
        :class:`ScanReport`. Raises DatasetError when ``root`` is missing or no track is
        usable.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected a MUSDB-layout dataset folder "
                           "(root/<track>/<stem>.wav). Fix: check the path")
    needed = _needed_files(sources)
    report = ScanReport(root)
    rate = sample_rate
    for folder in _track_folders(root, subsets):
        name = str(folder.relative_to(root)) if folder != root else folder.name
        problem, track = _check_track(folder, name, needed, rate)
        if problem is not None:
            if strict:
                raise DatasetError(f"{folder}: {problem}. Fix: repair or remove this track, or "
                                   "run without --strict to skip bad tracks")
            report.skipped.append((name, problem))
            continue
        rate = track.sample_rate
        report.tracks.append(track)
    if not report.tracks:
        detail = f" ({len(report.skipped)} skipped: {report.skipped[0][1]}, ...)" \
            if report.skipped else ""
        raise DatasetError(f"{root}: no usable tracks{detail}; expected track folders with "
                           f"{', '.join(f + '.wav' for f in needed)}. Fix: point at the dataset "
                           "root (the folder holding the track folders or train/test)")
    return report


def _needed_files(sources) -> tuple[str, ...]:
    out: list[str] = []
    for s in sources:
        parts = [x for x in SOURCES if x != "vocals"] if s == ACCOMPANIMENT else [s]
        out += [p for p in parts if p not in out]
    return tuple(out)


def _check_track(folder: Path, name: str, needed, rate) -> tuple[str | None, TrackInfo | None]:
    files = _stem_files(folder)
    missing = [s for s in needed if s not in files]
    if missing:
        return (f"missing stem file(s) {', '.join(m + '.wav' for m in missing)} "
                f"(found: {', '.join(sorted(files)) or 'none'})"), None
    infos = {}
    for s in needed:
        try:
            if files[s].suffix.lower() in _COMPRESSED_EXTS:
                # decoded and resampled to the dataset rate once (the first good track's
                # rate when none is asked for: compressed stems are read at their own)
                files[s] = cached_pcm(files[s], rate or int(sf.info(str(files[s])).samplerate))
            infos[s] = sf.info(str(files[s]))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            return f"{files[s].name} is not readable audio ({exc})", None
    rates = {s: int(i.samplerate) for s, i in infos.items()}
    if len(set(rates.values())) > 1:
        return ("stems have different sample rates: "
                + ", ".join(f"{s} {r} Hz" for s, r in rates.items())), None
    sr = next(iter(rates.values()))
    if rate is not None and sr != rate:
        return f"sample rate {sr} Hz, expected {rate} Hz (resample it, e.g. ffmpeg -ar {rate})", None
    frames = {s: int(i.frames) for s, i in infos.items()}
    if len(set(frames.values())) > 1:
        return ("stems have different lengths: "
                + ", ".join(f"{s} {f} samples" for s, f in frames.items())), None
    n = next(iter(frames.values()))
    if n <= 0:
        return "stems are empty (0 samples)", None
    chans = {int(i.channels) for i in infos.values()}
    if not chans <= {1, 2}:
        return f"expected mono or stereo stems, got {sorted(chans)} channels", None
    return None, TrackInfo(name, folder, {s: files[s] for s in needed}, n, sr, max(chans))


def read_source(track: TrackInfo, source: str, start: int = 0, length: int | None = None
                ) -> np.ndarray:
    """Samples ``[start, start + length)`` of one source as float32 ``[2, length]``.

    Reads only that span from disk; zero-pads past the end (and before 0 for negative
    ``start``); mono files are duplicated; ``accompaniment`` sums the non-vocal stems.
    """
    length = track.frames - start if length is None else int(length)
    if source == ACCOMPANIMENT:
        return sum(read_source(track, s, start, length) for s in SOURCES if s != "vocals")
    out = np.zeros((2, length), dtype=np.float32)
    a, b = max(start, 0), min(start + length, track.frames)
    if b > a:
        try:
            data = sf.read(str(track.files[source]), start=a, stop=b, dtype="float32",
                           always_2d=True)[0].T
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise DatasetError(f"{track.files[source]}: cannot read the {source} stem "
                               f"({exc}); re-export or remove this track") from None
        out[:, a - start:b - start] = data if data.shape[0] == 2 else data[:1]
    return out


def read_track(track: TrackInfo, sources=SOURCES) -> np.ndarray:
    """The whole track: float32 ``[S, 2, frames]`` in ``sources`` order."""
    return np.stack([read_source(track, s) for s in sources])


def _tracks_of(data, sources, sample_rate) -> list[TrackInfo]:
    if isinstance(data, ScanReport):
        return list(data.tracks)
    if isinstance(data, (str, os.PathLike)):
        return scan_musdb(data, sources, sample_rate=sample_rate).tracks
    return list(data)


class StemSegments(torch.utils.data.Dataset):
    """Fixed segments of every track, in order, without augmentation (for validation).

    Args:
        data: a dataset folder, a :class:`ScanReport` or a list of :class:`TrackInfo`.
        segment_samples: T, samples per item.
        stride_samples: hop between segment starts (default T: no overlap); a track's last
            partial segment is zero-padded.
        sources: stem order of ``stems``.

    Items: ``(mixture float32 [2, T], stems float32 [S, 2, T])`` with
    ``mixture == stems.sum(0)``.
    """

    def __init__(self, data, segment_samples: int, stride_samples: int | None = None,
                 sources: tuple[str, ...] = SOURCES, sample_rate: int | None = 44100):
        if segment_samples <= 0:
            raise ValueError(f"segment_samples must be > 0, got {segment_samples}")
        self.sources = tuple(sources)
        self.tracks = _tracks_of(data, self.sources, sample_rate)
        self.segment_samples = int(segment_samples)
        self.stride_samples = int(stride_samples or segment_samples)
        self.index = []
        for t, tr in enumerate(self.tracks):
            starts = list(range(0, max(tr.frames - self.segment_samples, 0) + 1,
                                self.stride_samples))
            if starts[-1] + self.segment_samples < tr.frames:
                starts.append(starts[-1] + self.stride_samples)  # the tail, zero-padded
            self.index += [(t, s) for s in starts]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        t, start = self.index[i]
        stems = np.stack([read_source(self.tracks[t], s, start, self.segment_samples)
                          for s in self.sources])
        return torch.from_numpy(stems.sum(axis=0)), torch.from_numpy(stems)


class AugmentedStems(torch.utils.data.Dataset):
    """Random training segments with Demucs-style augmentation, reproducible per epoch.

    Item ``i`` of epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])``:

    - remix: with probability ``remix`` each source comes from its own random track and
      offset (new "songs" from parts that never played together); otherwise all sources
      come from one random track at one offset;
    - shift: each source is read from a window ``shift_samples`` longer and cropped at a
      random offset (Demucs ``Shift``): sources move against each other by up to that much;
    - gain: each source is scaled by a uniform gain in ``gain_range`` (Demucs ``Scale``);
    - channel swap and sign flip, each with probability 0.5 per source (Demucs
      ``FlipChannels``, ``FlipSign``).

    The mixture is the sum of the augmented stems.

    Args:
        data: a dataset folder, a :class:`ScanReport` or a list of :class:`TrackInfo`.
        segment_samples: T, samples per item (e.g. 6 s * 44100).
        epoch_size: items per epoch (default: as many as non-overlapping segments fit).
        seed: base seed; :meth:`set_epoch` selects the epoch.
        sources: stem order of ``stems``.
        remix: probability of drawing each source from its own track (0 disables).
        shift_samples: maximum relative shift (0 disables; Demucs uses 0.5 s).
        gain_range: (low, high) linear gains, or None to disable.
        flip_channels, flip_sign: enable those augmentations.
        track_weights: relative probability of drawing each track (one per track; default:
            its length, so every second of audio is equally likely). Mixing datasets
            (real stems and synthetic songs, say) sets each set's share this way.

    Items: ``(mixture float32 [2, T], stems float32 [S, 2, T])``.
    """

    def __init__(self, data, segment_samples: int, *, epoch_size: int | None = None,
                 seed: int = 0, sources: tuple[str, ...] = SOURCES, remix: float = 1.0,
                 shift_samples: int = 22050, gain_range: tuple[float, float] | None = (0.25, 1.25),
                 flip_channels: bool = True, flip_sign: bool = True,
                 sample_rate: int | None = 44100, track_weights=None):
        if segment_samples <= 0:
            raise ValueError(f"segment_samples must be > 0, got {segment_samples}")
        if not 0.0 <= remix <= 1.0:
            raise ValueError(f"remix is a probability in [0, 1], got {remix}")
        if shift_samples < 0:
            raise ValueError(f"shift_samples must be >= 0, got {shift_samples}")
        if gain_range is not None and not 0 <= gain_range[0] <= gain_range[1]:
            raise ValueError(f"gain_range must be (low, high) with 0 <= low <= high, got {gain_range}")
        self.sources = tuple(sources)
        self.tracks = _tracks_of(data, self.sources, sample_rate)
        self.segment_samples = int(segment_samples)
        self.shift_samples = int(shift_samples)
        self.seed = int(seed)
        self.remix = float(remix)
        self.gain_range = gain_range
        self.flip_channels = flip_channels
        self.flip_sign = flip_sign
        self.epoch = 0
        fits = sum(max(1, tr.frames // self.segment_samples) for tr in self.tracks)
        self.epoch_size = int(epoch_size or fits)
        # tracks weighted by length by default, so every second of audio is equally likely
        if track_weights is None:
            weights = np.array([tr.frames for tr in self.tracks], dtype=np.float64)
        else:
            weights = np.asarray(track_weights, dtype=np.float64)
            if weights.shape != (len(self.tracks),) or not np.all(weights >= 0) or \
                    not weights.sum() > 0:
                raise ValueError(f"track_weights must be {len(self.tracks)} non-negative "
                                 f"numbers with a positive sum, got {track_weights!r}")
        self._weights = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: items differ between epochs, repeat within one."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, i: int):
        if not 0 <= i < self.epoch_size:
            raise IndexError(f"index {i} out of range for epoch size {self.epoch_size}")
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        T, shift = self.segment_samples, self.shift_samples
        span = T + shift
        n_tracks = len(self.tracks)
        shared_track = int(rng.choice(n_tracks, p=self._weights))
        shared_tr = self.tracks[shared_track]
        shared_start = int(rng.integers(0, max(shared_tr.frames - span, 0) + 1))
        stems = np.empty((len(self.sources), 2, T), dtype=np.float32)
        for k, source in enumerate(self.sources):
            if rng.random() < self.remix:
                tr = self.tracks[int(rng.choice(n_tracks, p=self._weights))]
                start = int(rng.integers(0, max(tr.frames - span, 0) + 1))
            else:
                tr, start = shared_tr, shared_start
            offset = int(rng.integers(0, shift + 1)) if shift else 0
            x = read_source(tr, source, start + offset, T)
            if self.gain_range is not None:
                x *= np.float32(rng.uniform(*self.gain_range))
            if self.flip_channels and rng.random() < 0.5:
                x = x[::-1]
            if self.flip_sign and rng.random() < 0.5:
                x = -x
            stems[k] = x
        return torch.from_numpy(stems.sum(axis=0)), torch.from_numpy(stems)
