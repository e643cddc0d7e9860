"""Training and distillation of the causal hybrid presets: resumable, budgeted, exact.

One run lives in one folder ``OUT``::

    OUT/train.json                      the options that fix the run's trajectory
    OUT/checkpoints/step-00001200/      the last two training states (state.json +
                                        state.safetensors: model, optimizer, LR schedule,
                                        step, RNG states, best validation so far)
    OUT/log.jsonl                       one line per step ({"step", "loss", "lr"}), per
                                        validation ({"step", "valid": {source: nSDR dB}}) and
                                        per checkpoint
    OUT/model.json + .safetensors       the latest weights (livestems model file)
    OUT/best.json + .safetensors        the weights with the best validation nSDR

Running the same command again resumes from the newest checkpoint, bit-exactly: the batch of
step ``s`` is a pure function of ``(seed, s)`` (items ``s*B .. s*B+B-1`` of the endless
sequence ``epoch e, item i`` of :class:`~livestems.model.training.data.AugmentedStems`, each drawn from
``default_rng([seed, e, i])``), and the checkpoint restores everything else that changes
between steps. "Exact" holds on the CPU for the same torch build and thread count; CUDA
kernels may be non-deterministic in their backward passes (see docs/MODEL.md).

Targets come from the stems of a MUSDB-layout folder (supervised), or, with a ``teacher``,
from any separator run on unlabelled music (distillation): a folder of audio files, each
segment augmented (gain, channel swap, sign flip) before the teacher sees it, so student and
teacher see the same input.

Loss: L1 between waveforms, mean over sources, channels and samples (Hybrid Demucs), plus an
optional multi-resolution STFT term (``stft_loss`` weight, default 0: off).

Checkpoints are written atomically (a temporary folder renamed into place) and no pickle is
ever written or read: tensors go to safetensors, the rest (schedule, RNG words, counters) to
JSON, with the sha256 of the tensors file checked on resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.nn import functional as F

__all__ = ["MixtureSegments", "TrainConfig", "TrainError", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "load_teacher", "multires_stft_loss",
           "save_checkpoint", "separation_loss", "train", "validate"]

STATE_FORMAT = "livestems-train-state"
STATE_VERSION = 1
KEEP_CHECKPOINTS = 2
#: held-out synthetic songs start here (docs/EVAL.md): never train on them
HELDOUT_SEED = 10000


class TrainError(ValueError):
    """A training run that cannot start or continue; the message says what was expected, what
    was found, and how to fix it."""


# --------------------------------------------------------------------------------------------
# configuration

# options that decide the trajectory: a resumed run must use the same values, or it would not
# be the run its checkpoints belong to
_FIXED = ("preset", "init", "teacher", "seed", "batch_size", "segment_seconds", "lr", "warmup_steps",
          "schedule", "steps_for_schedule", "stft_loss", "clip_grad", "remix", "epoch_size")


@dataclass
class TrainConfig:
    """Options of one training run (the CLI's flags; units in the names).

    Trajectory (must not change on resume): ``preset``, ``init`` (a model file whose weights
    replace the seeded initialisation: fine-tuning), ``teacher``, ``seed`` (weights init
    and data order), ``batch_size``, ``segment_seconds``, ``lr``, ``warmup_steps``,
    ``schedule`` ('constant' after warm-up, or 'cosine' down to 0 at ``steps``),
    ``stft_loss`` (weight of the multi-resolution STFT term; 0 = L1 only), ``clip_grad``
    (max gradient norm; 0 = none), ``remix`` (Demucs remix probability), ``epoch_size``.

    Per invocation (may change on resume): ``steps`` (total target; with a cosine schedule it
    is part of the trajectory), ``budget_minutes`` (wall clock for this invocation),
    ``stop_after_steps`` (at most this many steps now), checkpoint cadence, validation
    cadence, ``device``, ``threads``, ``workers``, ``strict``, ``resume_from``.
    """

    data: str
    out: str
    preset: str = "rt-tiny"
    teacher: str | None = None
    init: str | None = None  # start from this model file's weights (fine-tuning)
    valid: str | None = None
    steps: int = 100_000
    batch_size: int = 4
    segment_seconds: float = 2.0
    lr: float = 3e-4
    warmup_steps: int = 0
    schedule: str = "constant"
    stft_loss: float = 0.0
    clip_grad: float = 5.0
    remix: float = 1.0
    epoch_size: int = 0  # 0: as many non-overlapping segments as the data holds
    seed: int = 0
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    valid_every: int = 500
    valid_seconds: float = 10.0
    budget_minutes: float | None = None
    stop_after_steps: int | None = None
    device: str = "auto"
    threads: int | None = None
    workers: int = 0
    strict: bool = False
    resume_from: str | None = None
    log_every: int = 50

    @property
    def steps_for_schedule(self) -> int | None:
        return self.steps if self.schedule == "cosine" else None

    def check(self) -> None:
        """Raise :class:`TrainError` listing every invalid option."""
        from livestems.model.nets.presets import PRESETS

        errs = []
        if self.preset not in PRESETS:
            errs.append(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for name, lo in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 1),
                         ("valid_every", 1), ("log_every", 1), ("warmup_steps", 0),
                         ("workers", 0), ("epoch_size", 0)):
            if getattr(self, name) < lo:
                errs.append(f"--{name.replace('_', '-')} must be >= {lo}, "
                            f"got {getattr(self, name)}")
        if not 0.05 <= self.segment_seconds <= 60:
            errs.append(f"--segment-seconds must be in 0.05..60, got {self.segment_seconds}")
        if not 1.0 <= self.valid_seconds <= 600:
            errs.append(f"--valid-seconds must be in 1..600, got {self.valid_seconds}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            errs.append(f"--lr must be a positive number, got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            errs.append(f"--schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.stft_loss < 0 or self.clip_grad < 0:
            errs.append("--stft-loss and --clip-grad must be >= 0, got "
                        f"{self.stft_loss} and {self.clip_grad}")
        if not 0 <= self.remix <= 1:
            errs.append(f"--remix is a probability in 0..1, got {self.remix}")
        if self.checkpoint_minutes <= 0:
            errs.append(f"--checkpoint-minutes must be > 0, got {self.checkpoint_minutes}")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            errs.append(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if self.stop_after_steps is not None and self.stop_after_steps < 0:
            errs.append(f"--stop-after-steps must be >= 0, got {self.stop_after_steps}")
        if self.threads is not None and self.threads < 1:
            errs.append(f"--threads must be >= 1, got {self.threads}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            errs.append(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if errs:
            raise TrainError("invalid training options:\n  " + "\n  ".join(errs))

    def fixed(self) -> dict:
        return {k: getattr(self, k) for k in _FIXED}


# --------------------------------------------------------------------------------------------
# loss


def _stft_mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, window=window,
                      return_complex=True)
    return spec.abs()


def multires_stft_loss(est: torch.Tensor, ref: torch.Tensor,
                       sizes: tuple[int, ...] = (512, 1024, 2048), overlap: int = 4
                       ) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020), mean over ``sizes``: spectral
    convergence ``||S - S_hat||_F / ||S||_F`` plus L1 of log magnitudes, per resolution,
    Hann windows at hop ``n_fft // overlap``.

    ``est``, ``ref``: ``[..., T]`` waveforms (any leading shape); returns a scalar."""
    total = est.new_zeros(())
    for n_fft in sizes:
        if est.shape[-1] < n_fft:
            continue  # too short for this resolution
        hop = n_fft // overlap
        s_est, s_ref = _stft_mag(est, n_fft, hop), _stft_mag(ref, n_fft, hop)
        sc = torch.linalg.norm(s_ref - s_est) / (torch.linalg.norm(s_ref) + 1e-7)
        mag = F.l1_loss(torch.log(s_est + 1e-5), torch.log(s_ref + 1e-5))
        total = total + sc + mag
    return total / len(sizes)


def separation_loss(est: torch.Tensor, ref: torch.Tensor, stft_weight: float = 0.0
                    ) -> torch.Tensor:
    """Training loss: L1 on waveforms ``[B, S, C, T]`` (mean over every sample), as Hybrid
    Demucs, plus ``stft_weight`` times :func:`multires_stft_loss` of each stem's mid channel
    (the mean of its channels) at half-overlapping frames. The mid channel and the overlap
    of 2 make the spectral term cost about an eighth of the full stereo, 4-times-overlapped
    one (2.2 s -> 0.3 s per step of 4 x 2 s on one thread here, more than the network's own
    forward and backward); the L1 term keeps the channels apart. Returns a scalar."""
    if est.shape != ref.shape:
        raise ValueError(f"estimate and target shapes differ: {list(est.shape)} vs "
                         f"{list(ref.shape)}")
    loss = F.l1_loss(est, ref)
    if stft_weight:
        loss = loss + stft_weight * multires_stft_loss(est.mean(dim=-2), ref.mean(dim=-2),
                                                       overlap=2)
    return loss


# --------------------------------------------------------------------------------------------
# unlabelled data (distillation)

_AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
_STEM_NAMES = ("vocals", "drums", "bass", "other", "accompaniment")


@dataclass
class AudioScan:
    """Unlabelled audio found by :func:`scan_audio`: ``files`` as (path, frames, channels),
    ``skipped`` as (path, reason)."""

    root: Path
    files: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def summary(self) -> str:
        head = f"{self.root}: {len(self.files)} usable audio file(s), {len(self.skipped)} skipped"
        lines = [head]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def scan_audio(root, sample_rate: int = 44100, strict: bool = False) -> AudioScan:
    """Find music to distil on: every audio file under ``root``, except that a folder holding
    stems (``vocals.wav`` ...) contributes only its ``mixture`` file (MUSDB layout), so a
    stem is never mistaken for a song. Reads headers only; files at another sample rate,
    unreadable or with more than two channels are skipped (``strict``: raise)."""
    root = Path(root)
    if not root.exists():
        raise TrainError(f"{root}: no such file or folder; expected a folder of music (wav, "
                         "flac, ogg, mp3, aiff) to distil on. Fix: check --data")
    paths = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _AUDIO_EXTS)
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(p.parent, []).append(p)
    report = AudioScan(root)

    def skip(p, why):
        if strict:
            raise TrainError(f"{p}: {why}. Fix: repair or remove it, or run without --strict "
                             "to skip it")
        report.skipped.append((str(p), why))

    for folder, items in by_folder.items():
        stems = [p for p in items if p.stem.lower() in _STEM_NAMES]
        if stems:
            mix = [p for p in items if p.stem.lower() == "mixture"]
            if not mix:
                skip(folder, "holds stems but no mixture file (distillation needs the mix)")
                continue
            items = mix[:1]
        for p in items:
            try:
                info = sf.info(str(p))
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                skip(p, f"not readable audio ({exc})")
                continue
            if int(info.samplerate) != sample_rate:
                skip(p, f"sample rate {info.samplerate} Hz, expected {sample_rate} Hz "
                        f"(resample it, e.g. ffmpeg -i IN -ar {sample_rate} OUT.flac)")
                continue
            if info.channels not in (1, 2):
                skip(p, f"expected mono or stereo, got {info.channels} channels")
                continue
            if info.frames <= 0:
                skip(p, "empty (0 samples)")
                continue
            report.files.append((p, int(info.frames), int(info.channels)))
    if not report.files:
        raise TrainError(f"{root}: no usable audio files ({len(report.skipped)} skipped); "
                         f"expected {', '.join(_AUDIO_EXTS)} files at {sample_rate} Hz. Fix: "
                         "point --data at your music folder")
    return report


class MixtureSegments(torch.utils.data.Dataset):
    """Random segments of unlabelled music with mixture augmentation, for distillation.

    Item ``i`` of epoch ``e`` is drawn from ``default_rng([seed, e, i])`` (as
    :class:`~livestems.model.training.data.AugmentedStems`): a file chosen with probability
    proportional to its length, a random offset, a gain uniform in ``gain_range``, channel
    swap and sign flip with probability 0.5 each. Items: ``mixture float32 [2, T]``.
    """

    def __init__(self, scan: AudioScan, segment_samples: int, *, epoch_size: int | None = None,
                 seed: int = 0, gain_range=(0.5, 1.25)):
        self.files = list(scan.files)
        self.segment_samples = int(segment_samples)
        self.seed, self.epoch, self.gain_range = int(seed), 0, gain_range
        fits = sum(max(1, n // self.segment_samples) for _, n, _ in self.files)
        self.epoch_size = int(epoch_size or fits)
        lengths = np.array([n for _, n, _ in self.files], dtype=np.float64)
        self._weights = lengths / lengths.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        path, frames, _ = self.files[int(rng.choice(len(self.files), p=self._weights))]
        T = self.segment_samples
        start = int(rng.integers(0, max(frames - T, 0) + 1))
        data = sf.read(str(path), start=start, stop=min(start + T, frames), dtype="float32",
                       always_2d=True)[0].T
        x = np.zeros((2, T), dtype=np.float32)
        x[:, :data.shape[1]] = data if data.shape[0] == 2 else data[:1]
        x *= np.float32(rng.uniform(*self.gain_range))
        if rng.random() < 0.5:
            x = x[::-1]
        if rng.random() < 0.5:
            x = -x
        return torch.from_numpy(np.ascontiguousarray(x))


class _Endless(torch.utils.data.Dataset):
    """Global item ``g`` of an epoch-structured dataset: epoch ``g // size``, item
    ``g % size``. Setting the epoch per item (not per epoch) keeps DataLoader workers, which
    hold their own copy of the dataset, on the right epoch."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, g: int):
        size = len(self.base)
        self.base.set_epoch(g // size)
        return self.base[g % size]


def _worker_init(_):
    torch.set_num_threads(1)  # workers only read and augment audio; never oversubscribe


# --------------------------------------------------------------------------------------------
# teacher


class Teacher:
    """Targets for distillation: ``teacher(mix [B, 2, T]) -> [B, S, 2, T]`` in the student's
    source order, on the student's device, no gradient."""

    def __init__(self, spec: str, fn, sources, perm, description: str):
        self.spec, self._fn, self.sources, self._perm = spec, fn, tuple(sources), perm
        self.description = description

    @torch.no_grad()
    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        return self._fn(mix)[:, self._perm]


def load_teacher(spec: str, student_sources, sample_rate: int, device) -> Teacher:
    """Any separator as a teacher: a livestems model file (an imported official Hybrid
    Demucs runs its full offline network on each segment), or a built-in name.

    Raises :class:`TrainError` when its sources (as a set) or sample rate differ from the
    student's, or it cannot be loaded."""
    from livestems.model.nets.checkpoint import CheckpointError, load_model, read_config
    from livestems.model.nets.registry import ModelError, load_separator

    path = Path(spec)
    module = None
    is_model_file = False
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            is_model_file = "weights" in json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
            is_model_file = False  # load_separator below says what is wrong with it
    if is_model_file:
        try:
            cfg, _ = read_config(path)
            module = load_model(path)
        except CheckpointError as exc:
            raise TrainError(f"teacher {spec}: {exc}") from None
        sources, rate, channels = list(module.sources), int(cfg["sample_rate"]), \
            int(getattr(module, "audio_channels", 2))
        desc = f"{cfg['class']} from {path} (sha256 {cfg['sha256'][:12]})"
    else:
        try:
            sep = load_separator(spec)
        except ModelError as exc:
            raise TrainError(f"teacher {spec!r}: {exc}") from None
        sources, rate, channels = list(sep.sources), int(sep.sample_rate), int(sep.channels)
        module = getattr(sep, "module", None)
        desc = f"built-in {spec}"
    student = list(student_sources)
    if sorted(sources) != sorted(student):
        missing = [s for s in student if s not in sources]
        extra = [s for s in sources if s not in student]
        got = "; ".join(part for part in (
            "missing " + ", ".join(missing) if missing else "",
            "extra " + ", ".join(extra) if extra else "") if part)
        raise TrainError(
            f"teacher {spec} separates into {', '.join(sources)}; the student needs "
            f"{', '.join(student)} (expected the same set of sources, got {got}). Fix: distil "
            "from a 4-stem model (e.g. an official Hybrid Demucs converted with "
            "`livestems import-demucs`)")
    if rate != sample_rate:
        raise TrainError(f"teacher {spec} runs at {rate} Hz, the student at {sample_rate} Hz "
                         "(expected equal rates). Fix: use a teacher built for "
                         f"{sample_rate} Hz")
    if channels != 2:
        raise TrainError(f"teacher {spec} takes {channels} channel(s); expected 2 (stereo)")
    perm = [sources.index(s) for s in student]
    if module is not None:
        module = module.to(device).eval()

        def fn(mix):
            return module(mix)
    else:
        def fn(mix):
            y = sep.forward(mix.detach().cpu().numpy())
            return torch.from_numpy(np.asarray(y, dtype=np.float32)).to(mix.device)
    return Teacher(spec, fn, sources, perm, desc)


# --------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def validate(net, segments, device) -> dict:
    """nSDR (MDX 2021, :func:`~livestems.model.evaluation.evaluate.new_sdr`) of ``net`` on each item of
    ``segments`` (a :class:`~livestems.model.training.data.StemSegments` in the net's source order),
    mean over items per source; an item whose reference of a source is silent throws no vote
    for that source. Returns ``{source: dB, ..., "mean": mean over sources}``.

    Uses the offline forward, which equals the streaming output shifted by the latency (the
    separator contract), so this is what users hear, aligned."""
    from livestems.model.evaluation.evaluate import new_sdr

    was_training = net.training
    net.eval()
    scores: dict[str, list] = {s: [] for s in net.sources}
    for i in range(len(segments)):
        mix, stems = segments[i]
        est = net(mix[None].to(device))[0].double().cpu().numpy()
        ref = stems.double().numpy()
        nsdr = new_sdr(ref, est)
        for k, s in enumerate(net.sources):
            if np.any(ref[k]):
                scores[s].append(float(nsdr[k]))
    net.train(was_training)
    out = {s: float(np.mean(v)) if v else float("nan") for s, v in scores.items()}
    finite = [v for v in out.values() if math.isfinite(v)]
    out["mean"] = float(np.mean(finite)) if finite else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# checkpoints: safetensors + JSON, atomic, keep the last two


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_checkpoints(out) -> list[Path]:
    """Complete checkpoint folders of run ``out``, oldest first (temporary folders of an
    interrupted write are not listed)."""
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest_checkpoint(out) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rng_state() -> tuple[dict, dict]:
    """(tensors, json) holding the torch, CUDA, numpy and python RNG states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, words, gauss = random.getstate()
    meta = {"numpy": [name, int(pos), int(has_gauss), float(cached)],
            "python": [version, list(words), gauss]}
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                       key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss,
                         cached))
    version, words, gauss = meta["python"]
    random.setstate((version, tuple(words), gauss))


def save_checkpoint(out, step: int, net, optimizer, scheduler, extra: dict) -> Path:
    """Write the training state of ``step`` atomically to ``out/checkpoints/step-NNNNNNNN``
    and delete all but the newest :data:`KEEP_CHECKPOINTS`. ``extra`` (JSON-safe) is stored
    as is (best validation, counters)."""
    from safetensors.torch import save_file

    folder = Path(out) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tmp = folder / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {idx}.{key} is not a tensor")
            tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": STATE_FORMAT})
    meta = {
        "format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step),
        "optimizer": {"class": type(optimizer).__name__, "param_groups": opt["param_groups"]},
        "scheduler": scheduler.state_dict(), "rng": rng_meta, "extra": extra,
        "sha256": _sha256(tmp / "state.safetensors"),
    }
    (tmp / "state.json").write_text(json.dumps(meta) + "\n")
    for name in ("state.safetensors", "state.json"):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():  # the same step saved again (e.g. resumed and stopped at once)
        shutil.rmtree(final)
    os.rename(tmp, final)  # atomic: a reader sees the old set of checkpoints or the new one
    _fsync_dir(folder)
    for old in list_checkpoints(out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read and verify a checkpoint folder: ``(meta, tensors)``. Raises :class:`TrainError`
    naming what is wrong (missing file, bad JSON, checksum mismatch, unreadable tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta_path, tensor_path = path / "state.json", path / "state.safetensors"
    for p in (meta_path, tensor_path):
        if not p.is_file():
            raise TrainError(f"checkpoint {path} is incomplete: {p.name} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainError(f"checkpoint {path} is corrupt: state.json is not JSON ({exc})") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise TrainError(f"checkpoint {path} is corrupt: state.json has format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r}, "
                         f"expected {STATE_FORMAT!r}")
    digest = _sha256(tensor_path)
    if digest != meta.get("sha256"):
        raise TrainError(f"checkpoint {path} is corrupt: state.safetensors has sha256 "
                         f"{digest[:16]}..., state.json expects {str(meta.get('sha256'))[:16]}..."
                         " (file truncated or changed)")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as exc:
        raise TrainError(f"checkpoint {path} is corrupt: {exc}") from None
    return meta, tensors


def _restore(meta: dict, tensors: dict, net, optimizer, scheduler, where: Path) -> None:
    from livestems.model.nets.checkpoint import CheckpointError, load_state_checked

    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        load_state_checked(net, model_state, where=str(where))
    except CheckpointError as exc:
        raise TrainError(f"checkpoint {where} does not fit the model: {exc}") from None
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    groups = meta["optimizer"]["param_groups"]
    for g in groups:  # JSON turned tuples into lists
        for k, v in g.items():
            if isinstance(v, list) and k != "params":
                g[k] = tuple(v)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(meta["scheduler"])
    _set_rng_state(tensors, meta["rng"])


# --------------------------------------------------------------------------------------------
# provenance


def _git_commit() -> dict:
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
        return {"commit": head, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _hardware(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
          "device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def _synth_seeds(tracks) -> list[int]:
    """Seeds of ``livestems synth`` songs among ``tracks`` (from their song.json)."""
    seeds = []
    for tr in tracks:
        info = Path(tr.folder) / "song.json"
        if info.is_file():
            try:
                seed = json.loads(info.read_text()).get("seed")
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(seed, int):
                seeds.append(seed)
    return sorted(seeds)


def _data_specs(data) -> list[tuple[str, float]]:
    """``--data`` values as ``[(folder, share)]``: one folder or a list, each ``DIR`` or
    ``DIR:SHARE`` (its share of the training draws; default: its length in seconds relative
    to the others, i.e. all audio equally likely). Shares are normalised to sum to 1."""
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not items:
        raise TrainError("--data: no training folder given. Fix: --data DIR [--data DIR:SHARE]")
    out, shares = [], []
    for item in items:
        text = str(item)
        path, _, tail = text.rpartition(":")
        try:
            share = float(tail) if path else None
        except ValueError:
            share = None
        if share is None:
            path = text
        elif not (share > 0 and math.isfinite(share)):
            raise TrainError(f"--data {text}: the share after ':' must be a positive number, "
                             f"got {tail!r}. Fix: e.g. --data {path}:0.5")
        out.append(path)
        shares.append(share)
    given = [x for x in shares if x is not None]
    if given and len(given) < len(shares):
        raise TrainError("--data: give a share to every folder or to none (e.g. "
                         "--data real:0.6 --data synth:0.4); got " + ", ".join(map(str, items)))
    if not given:
        return [(p, 1.0 / len(out)) for p in out] if len(out) == 1 else \
            [(p, float("nan")) for p in out]
    total = sum(given)
    return [(p, x / total) for p, x in zip(out, given)]


def _fingerprint(items) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# the loop


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: torch {torch.__version__} sees no CUDA device. "
                         "Fix: use --device cpu, or install a CUDA build of torch")
    return dev


def _lr_lambda(cfg: TrainConfig):
    warm, total = cfg.warmup_steps, cfg.steps

    def factor(step: int) -> float:
        # LambdaLR calls this with the number of steps taken so far
        w = min(1.0, (step + 1) / warm) if warm else 1.0
        if cfg.schedule == "cosine":
            return w * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return w
    return factor


class _Stopper:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and returns."""

    def __init__(self):
        self.reason = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.reason is not None:  # second signal: the user insists
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log records of steps after ``step`` (a run killed after its last checkpoint
    logged steps that the resumed run will take again), so each step appears once."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


def _export(net, out: Path, name: str, provenance: dict) -> Path:
    """Write ``out/name.json`` + ``.safetensors`` via save_model, replacing an older pair
    only once the new one is complete."""
    from livestems.model.nets.checkpoint import save_model

    tmp = out / f".tmp-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(net, tmp / name, provenance=provenance)
    # weights first: the JSON (which names them and holds their sha256) arriving last means a
    # reader never sees a JSON whose weights are from another save
    os.replace(tmp / f"{name}.safetensors", out / f"{name}.safetensors")
    os.replace(tmp / f"{name}.json", out / f"{name}.json")
    shutil.rmtree(tmp, ignore_errors=True)
    return out / f"{name}.json"


def _init_from(net, spec: str, preset: str) -> dict:
    """Load a model file's weights into the freshly built preset network (fine-tuning)."""
    from livestems.model.nets.checkpoint import CheckpointError, load_model

    try:
        src = load_model(spec)
    except CheckpointError as exc:
        raise TrainError(f"--init {spec}: {exc}") from None
    if type(src) is not type(net) or tuple(src.sources) != tuple(net.sources):
        raise TrainError(f"--init {spec}: a {type(src).__name__} separating into "
                         f"{', '.join(src.sources)}; expected a {type(net).__name__} with the "
                         f"sources of preset {preset} ({', '.join(net.sources)})")
    own, theirs = net.state_dict(), src.state_dict()
    bad = [k for k in own if k not in theirs or theirs[k].shape != own[k].shape]
    if bad or set(theirs) - set(own):
        raise TrainError(f"--init {spec}: its architecture is not preset {preset}'s (tensors "
                         f"{', '.join((bad or sorted(set(theirs) - set(own)))[:4])} differ). "
                         "Fix: pass the --preset the model was trained from")
    net.load_state_dict(theirs)
    prov = getattr(src, "provenance", {}) or {}
    return {"model": str(spec), "sha256": _sha_of(spec), "steps": prov.get("steps"),
            "wall_seconds": prov.get("wall_seconds"), "kind": prov.get("kind")}


def _sha_of(spec: str) -> str | None:
    try:
        return json.loads(Path(spec).read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def train(cfg: TrainConfig, *, progress: bool = True, log=print) -> dict:
    """Train (or resume) the run in ``cfg.out``; returns a summary dict.

    Stops at ``cfg.steps`` total steps, after ``cfg.stop_after_steps`` steps in this call,
    when ``cfg.budget_minutes`` of wall clock would be exceeded by another step, or on
    SIGINT/SIGTERM; in every case it writes a checkpoint and ``model.json`` first.

    Returns ``{"step", "start_step", "losses": [(step, loss)], "valid": [...], "stopped":
    reason, "model": path, "best": path|None, "checkpoint": path}``.
    """
    from .data import AugmentedStems, DatasetError, StemSegments, scan_musdb
    from livestems.model.nets.presets import build_preset_net

    t_start = time.monotonic()
    cfg.check()
    out = Path(cfg.out)
    device = _resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        # exactness where cuDNN allows it; the rest of CUDA's backward kernels may still
        # reorder sums (see docs/MODEL.md)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    # -- run folder: same options as the run's first invocation ------------------------------
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "train.json"
    fixed = cfg.fixed()
    # a run with no checkpoint yet has no trajectory to protect: (re)start with these options
    if run_file.is_file() and (list_checkpoints(out) or cfg.resume_from):
        try:
            first = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainError(f"{run_file} is not readable JSON ({exc}). Fix: restore it, or "
                             "start a new run with another --out") from None
        diff = [(k, first["fixed"].get(k), v) for k, v in fixed.items()
                if first["fixed"].get(k) != v]
        if diff:
            lines = [f"{k}: the run uses {a!r}, got {b!r}" for k, a, b in diff]
            raise TrainError(
                f"{out} holds a run started with other options, so resuming would not be that "
                "run:\n  " + "\n  ".join(lines) + "\nFix: repeat the run's options (see "
                f"{run_file}), or use a new --out for a new run")
    else:
        run_file.write_text(json.dumps({"fixed": fixed, "first_options": asdict(cfg)},
                                       indent=1) + "\n")

    # -- model, optimizer, schedule -----------------------------------------------------------
    net = build_preset_net(cfg.preset, seed=cfg.seed)
    init_from = None
    if cfg.init:
        resuming = bool(list_checkpoints(out) or cfg.resume_from)
        if resuming and not Path(cfg.init).is_file():
            # the checkpoint holds the weights; the starting file is only provenance now
            init_from = {"model": str(cfg.init), "note": "not found when resumed"}
        else:
            init_from = _init_from(net, cfg.init, cfg.preset)
    net = net.to(device)
    net.train()
    sources = tuple(net.sources)
    rate = net.samplerate
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))

    # -- data ---------------------------------------------------------------------------------
    seg = round(cfg.segment_seconds * rate)
    notes = []
    teacher = None
    try:
        if cfg.teacher:
            if len(_data_specs(cfg.data)) > 1:
                raise TrainError("--teacher distils one folder of music; got several --data "
                                 "folders. Fix: put the music in one folder")
            scan = scan_audio(_data_specs(cfg.data)[0][0], rate, strict=cfg.strict)
            if scan.skipped:
                notes.append(scan.summary())
            dataset = MixtureSegments(scan, seg, epoch_size=cfg.epoch_size or None,
                                      seed=cfg.seed)
            teacher = load_teacher(cfg.teacher, sources, rate, device)
            data_items = [f"{p}:{n}" for p, n, _ in scan.files]
            data_desc = {"kind": "unlabelled audio (distillation)", "files": len(scan.files),
                         "teacher": teacher.description}
            train_seeds = []
        else:
            vrep = None
            if cfg.valid:
                same = [p for p, _ in _data_specs(cfg.data)
                        if Path(p).resolve() == Path(cfg.valid).resolve()]
                if same:
                    raise TrainError(
                        f"--valid {cfg.valid} is the training data; expected a held-out "
                        "folder. Fix: `livestems synth DIR --seed 10000 ...`, or one song "
                        "folder of the training set (it is then left out of training)")
                vrep = scan_musdb(cfg.valid, sources, sample_rate=rate, strict=cfg.strict)
                if vrep.skipped:
                    notes.append(vrep.summary())
            held = {Path(t.folder).resolve() for t in vrep.tracks} if vrep else set()
            tracks, weights, sets = [], [], []
            for path, share in _data_specs(cfg.data):
                report = scan_musdb(path, sources, sample_rate=rate, strict=cfg.strict)
                if report.skipped:
                    notes.append(report.summary())
                kept = [t for t in report.tracks if Path(t.folder).resolve() not in held]
                if len(kept) < len(report.tracks):
                    notes.append(f"{path}: {len(report.tracks) - len(kept)} track(s) of the "
                                 "validation set left out of training ("
                                 + ", ".join(t.name for t in report.tracks if t not in kept)
                                 + ")")
                if not kept:
                    raise TrainError(
                        f"--data {path}: every track is in the validation set --valid "
                        f"{cfg.valid}; expected held-out validation. Fix: validate on other "
                        "songs (`livestems synth DIR --seed 10000 ...`, or one song folder)")
                frames = np.array([t.frames for t in kept], dtype=np.float64)
                tracks += kept
                # no shares given: every second of audio equally likely, across sets too
                weights += list(frames if math.isnan(share) else share * frames / frames.sum())
                sets.append({"dir": str(Path(path).resolve()), "tracks": len(kept),
                             "share": None if math.isnan(share) else share,
                             "seconds": round(frames.sum() / rate, 1)})
            if len(sets) == 1:
                weights = None  # by length, as a single set always was
            dataset = AugmentedStems(tracks, seg, epoch_size=cfg.epoch_size or None,
                                     seed=cfg.seed, sources=sources, remix=cfg.remix,
                                     track_weights=weights)
            data_items = [f"{t.name}:{t.frames}" for t in tracks]
            train_seeds = _synth_seeds(tracks)
            data_desc = {"kind": "MUSDB-layout stems", "tracks": len(tracks), "sets": sets}
        valid_set = None
        if cfg.valid:
            if cfg.teacher:
                vrep = scan_musdb(cfg.valid, sources, sample_rate=rate, strict=cfg.strict)
                if vrep.skipped:
                    notes.append(vrep.summary())
            overlap = sorted(set(train_seeds) & set(_synth_seeds(vrep.tracks)))
            if overlap:
                raise TrainError(
                    f"training and validation data share {len(overlap)} synthetic song(s) "
                    f"(seeds {overlap[:5]}...); validation would measure memory, not "
                    "generalisation. Fix: make the validation set from seeds >= "
                    f"{HELDOUT_SEED} and the training set from seeds below")
            valid_set = StemSegments(vrep, round(cfg.valid_seconds * rate),
                                     sources=sources, sample_rate=rate)
    except DatasetError as exc:
        raise TrainError(str(exc)) from None
    heldout = [s for s in train_seeds if s >= HELDOUT_SEED]
    if heldout:
        notes.append(f"warning: the training data holds {len(heldout)} synthetic song(s) with "
                     f"held-out seeds >= {HELDOUT_SEED} (e.g. {heldout[0]}); scores on the "
                     "held-out set will be optimistic")
    for note in notes:
        log(f"note: {note}")
    fingerprint = _fingerprint(data_items)

    # -- resume -------------------------------------------------------------------------------
    step, best, wall_before, ema = 0, None, 0.0, None
    ckpt = Path(cfg.resume_from) if cfg.resume_from else latest_checkpoint(out)
    if cfg.resume_from and not (ckpt / "state.json").exists():
        raise TrainError(f"--resume-from {ckpt}: not a checkpoint folder (no state.json); "
                         f"expected one of {', '.join(p.name for p in list_checkpoints(out))}")
    if ckpt is not None:
        try:
            meta, tensors = load_checkpoint(ckpt)
        except TrainError as exc:
            others = [p for p in list_checkpoints(out) if p != ckpt]
            if others:
                raise TrainError(
                    f"{exc}.\nThe previous checkpoint {others[-1]} is kept. Fix: resume from it "
                    f"with --resume-from {others[-1]} (or delete {ckpt})") from None
            raise TrainError(f"{exc}.\nNo other checkpoint is left. Fix: delete {ckpt} to "
                             "start the run over") from None
        _restore(meta, tensors, net, optimizer, scheduler, ckpt)
        step = int(meta["step"])
        extra = meta.get("extra", {})
        best, wall_before, ema = extra.get("best"), extra.get("wall_seconds", 0.0), \
            extra.get("loss_ema")
        if extra.get("data_fingerprint") not in (None, fingerprint):
            log("note: the training data changed since this checkpoint (tracks added, removed "
                "or edited); training continues on the new data, so the run is no longer "
                "bit-identical to an uninterrupted one")
        _truncate_log(out / "log.jsonl", step)
        log(f"resumed from {ckpt} (step {step})")
    else:
        # a fresh run owns the global generators too: nothing in it depends on what the
        # process did before (checkpoints restore them on resume)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        _truncate_log(out / "log.jsonl", 0)  # an earlier attempt that never checkpointed
    start_step = step
    last_valid_step = step if (best is not None and best.get("step") == step) else None

    def provenance(kind: str) -> dict:
        return {
            "trainer": "livestems.model.training.trainer", "kind": kind, "preset": cfg.preset,
            "data": {"dir": ", ".join(str(Path(p).resolve()) for p, _ in _data_specs(cfg.data)),
                     "fingerprint": fingerprint,
                     **data_desc,
                     "synth_seeds": ([train_seeds[0], train_seeds[-1], len(train_seeds)]
                                     if train_seeds else None)},
            "valid": str(Path(cfg.valid).resolve()) if cfg.valid else None,
            "seed": cfg.seed, "steps": step, "options": fixed, "init_from": init_from,
            "samples_seen": step * cfg.batch_size * seg,
            "wall_seconds": round(wall_before + time.monotonic() - t_start, 1),
            "hardware": _hardware(device), "loss": {"train_ema": ema, "best_valid": best},
            "git": _git_commit(),
            "checkpoint": str(out.resolve()),
        }

    # -- loop ---------------------------------------------------------------------------------
    loader = torch.utils.data.DataLoader(
        _Endless(dataset), batch_size=cfg.batch_size,
        sampler=range(step * cfg.batch_size, 2 ** 62), num_workers=cfg.workers,
        worker_init_fn=_worker_init if cfg.workers else None,
        persistent_workers=False, prefetch_factor=2 if cfg.workers else None,
        # its own generator: starting an iterator draws a seed, which must not advance the
        # global torch RNG (a resumed run starts one more iterator than a straight run)
        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    # open for the whole loop; the `with` below closes it, also when a step raises
    log_file = open(out / "log.jsonl", "a")  # noqa: SIM115

    def emit(record: dict) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    budget_s = None if cfg.budget_minutes is None else 60.0 * cfg.budget_minutes
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        tty = sys.stderr.isatty()
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.preset}", unit="step",
                   dynamic_ncols=True, mininterval=1.0 if tty else 30.0, smoothing=0.05)
    losses, valids = [], []
    step_s = None  # running mean of one step's seconds, for the budget
    last_ckpt_time = time.monotonic()
    last_ckpt_step = step
    stopped = "steps"
    audio_s_per_step = cfg.batch_size * seg / rate

    valid_s = 0.0  # seconds the last validation took, for the budget

    def do_validate():
        nonlocal best, last_valid_step, valid_s
        t0 = time.monotonic()
        scores = validate(net, valid_set, device)
        valid_s = time.monotonic() - t0
        last_valid_step = step
        rec = {"step": step, "valid": scores, "seconds": round(time.monotonic() - t0, 2)}
        improved = math.isfinite(scores["mean"]) and (best is None or scores["mean"] > best["mean"])
        if improved:
            best = {"step": step, "mean": scores["mean"], "sources": scores}
        valids.append(rec)
        emit(rec)
        msg = (f"step {step}: valid nSDR mean {scores['mean']:.3f} dB ("
               + ", ".join(f"{s} {scores[s]:.2f}" for s in sources) + ")"
               + (" best" if improved else f"; best {best['mean']:.3f} at {best['step']}"))
        (bar.write if bar else log)(msg)
        if improved:
            _export(net, out, "best", provenance("best validation"))
        return improved

    def checkpoint():
        nonlocal last_ckpt_time, last_ckpt_step
        extra = {"best": best, "wall_seconds": wall_before + time.monotonic() - t_start,
                 "loss_ema": ema, "data_fingerprint": fingerprint}
        path = save_checkpoint(out, step, net, optimizer, scheduler, extra)
        last_ckpt_time, last_ckpt_step = time.monotonic(), step
        emit({"step": step, "checkpoint": str(path)})
        return path

    ckpt_path = ckpt
    with _Stopper() as stopper, log_file:
        try:
            while True:
                if step >= cfg.steps:
                    stopped = "steps"
                    break
                if cfg.stop_after_steps is not None and step - start_step >= cfg.stop_after_steps:
                    stopped = "stop_after_steps"
                    break
                if stopper.reason:
                    stopped = stopper.reason
                    break
                elapsed = time.monotonic() - t_start
                # leave room for one more step (and its validation, if one is due) and the
                # final checkpoint and export
                due = valid_set is not None and (step + 1) % cfg.valid_every == 0
                need = 1.5 * (step_s or 0.0) + 5.0 + (valid_s if due else 0.0)
                if budget_s is not None and step_s is not None and elapsed + need > budget_s:
                    stopped = "budget"
                    break
                t0 = time.monotonic()
                batch = next(batches)
                if teacher is not None:
                    mix = batch.to(device)
                    target = teacher(mix)
                else:
                    mix, target = batch[0].to(device), batch[1].to(device)
                est = net(mix)
                loss = separation_loss(est, target, cfg.stft_loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
                optimizer.step()
                scheduler.step()
                step += 1
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainError(
                        f"loss is {value} at step {step}: training diverged. Fix: resume from "
                        f"the last checkpoint with a lower --lr (a new --out), or raise "
                        "--warmup-steps")
                losses.append((step, value))
                ema = value if ema is None else 0.98 * ema + 0.02 * value
                dt = time.monotonic() - t0
                step_s = dt if step_s is None else 0.9 * step_s + 0.1 * dt
                lr = scheduler.get_last_lr()[0]
                emit({"step": step, "loss": value, "lr": lr})
                if bar is not None:
                    bar.update(1)
                    # no forced refresh: tqdm's own interval keeps a log file small
                    bar.set_postfix_str(f"loss {ema:.4f} lr {lr:.2e} "
                                        f"{audio_s_per_step / step_s:.1f}x audio/s",
                                        refresh=False)
                if step % cfg.log_every == 0:
                    (bar.write if bar else log)(
                        f"step {step}: loss {value:.5f} (ema {ema:.5f}) lr {lr:.2e}, "
                        f"{step_s:.2f} s/step")
                if valid_set is not None and step % cfg.valid_every == 0:
                    do_validate()
                if step % cfg.checkpoint_every == 0 or \
                        time.monotonic() - last_ckpt_time >= 60.0 * cfg.checkpoint_minutes:
                    ckpt_path = checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if valid_set is not None and step >= cfg.steps and last_valid_step != step and step > 0:
            do_validate()
        if step != last_ckpt_step or ckpt_path is None:
            ckpt_path = checkpoint()
        model_path = _export(net, out, "model", provenance("latest"))
    wall = time.monotonic() - t_start
    log(f"{out}: stopped at step {step} ({stopped}); {step - start_step} step(s) in "
        f"{wall:.0f} s; loss ema {ema if ema is None else round(ema, 5)}; checkpoint "
        f"{ckpt_path}; model {model_path}"
        + (f"; best valid nSDR {best['mean']:.3f} dB at step {best['step']} ({out / 'best.json'})"
           if best else ""))
    return {"step": step, "start_step": start_step, "losses": losses, "valid": valids,
            "stopped": stopped, "model": model_path, "checkpoint": ckpt_path,
            "best": (out / "best.json") if best else None, "best_valid": best}
