"""Training campaigns that outlive a session: a fixed recipe, one resume checkpoint in git.

A campaign is a recipe (:data:`RECIPES`: preset, data mix, every option of the trajectory)
trained a little at a time, on whatever machine is at hand. Its working run folder
``runs/NAME/`` (git-ignored: checkpoints, exports, the log) lives on one machine; what must
survive a session is the campaign folder ``campaign/NAME/`` (committed, a few MB):

- ``resume/``: the newest checkpoint (weights, Adam state, RNG states, step), overwritten
  on every save, never a pile;
- ``train.json``: the run's fixed options (a resumed run must repeat them);
- ``log.jsonl``: every logged step and validation since step 0 (the learning curve's data);
- ``curve.png``: the learning curve (training loss; validation nSDR per source);
- ``best.json`` + ``.safetensors``: the weights that scored best on validation.

:func:`restore` seeds an empty run folder from the campaign folder (a new machine), so the
trainer resumes exactly at the saved step; :func:`save` writes the campaign folder back from
the run folder, atomically (a new folder renamed over the old one). ``livestems campaign``
(stream/cli/campaign.py) runs the whole recipe: synthetic data, restore, train, save.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .ship import strip_paths as _strip_paths

__all__ = ["Recipe", "SynthSet", "RECIPES", "CampaignError", "CampaignPaths", "restore", "save",
           "plot_curve", "train_config"]


class CampaignError(ValueError):
    """A campaign that cannot run; the message says what was expected and how to fix it."""


@dataclass(frozen=True)
class SynthSet:
    """Songs from ``livestems synth``: ``tracks`` songs of ``seconds`` from seed ``seed``,
    sung by ``voices`` (its --voices; None: the default espeak singer), with singers made
    from the real training vocals when ``real_vocals`` (the validation song left out), and
    ``share`` of the training draws."""

    tracks: int
    seconds: float
    seed: int
    share: float
    voices: str | None = None
    real_vocals: bool = False

    def folder(self, root: Path) -> Path:
        kind = "synth-voices" if self.voices or self.real_vocals else "synth"
        return root / "runs" / "data" / f"{kind}-s{self.seed}-{self.tracks}x{self.seconds:g}s"

    def synth_args(self, real: Path, valid_song: str) -> list[str]:
        """``livestems synth`` arguments after OUTDIR."""
        args = ["--tracks", str(self.tracks), "--seconds", f"{self.seconds:g}",
                "--seed", str(self.seed)]
        if self.voices:
            args += ["--voices", self.voices]
        if self.real_vocals:
            args += ["--real-vocals", str(real), "--real-vocals-skip", valid_song]
        return args


@dataclass(frozen=True)
class Recipe:
    """One campaign's recipe. ``options`` are :class:`~livestems.model.training.trainer.TrainConfig`
    fields of the trajectory (fixed for the life of the run); ``real_share`` is the real
    stems' share of the training draws, each synthetic set's is its own; ``history`` says
    how earlier steps of the run differed (data added later, say)."""

    name: str
    preset: str
    synth: tuple
    real_share: float
    valid_song: str
    options: dict = field(hash=False)
    cadence: dict = field(hash=False)
    history: str = ""


RECIPES: dict[str, Recipe] = {
    "rt-small": Recipe(
        name="rt-small", preset="rt-small",
        # livestems synth (never the held-out seeds >= 10000): seeds 0..159 sung by espeak-ng,
        # seeds 200..259 by Festival/HTS/flite voices and singers made from the real vocals
        synth=(SynthSet(tracks=160, seconds=12.0, seed=0, share=0.15),
               SynthSet(tracks=60, seconds=12.0, seed=200, share=0.35,
                        voices="espeak,festival,hts,flite", real_vocals=True)),
        # shared/data/train-real, 6.Caesium held out for validation
        real_share=0.5, valid_song="6.Caesium",
        options=dict(seed=0, batch_size=4, segment_seconds=2.0, lr=1e-3, warmup_steps=200,
                     schedule="constant", stft_loss=0.02, clip_grad=5.0, remix=0.5,
                     epoch_size=0, steps=100_000),
        cadence=dict(valid_every=250, valid_seconds=10.0, checkpoint_every=100,
                     checkpoint_minutes=5.0, log_every=25),
        history="run 3 (2026-12-06): rt-small with a power-law compressed spectrum input and "
                "a per-bin mask refiner, from scratch; runs 1-2 (plain input, no refiner) are "
                "in git history before this change",
    ),
}


@dataclass(frozen=True)
class CampaignPaths:
    """Where a campaign's pieces live under the repository ``root``."""

    root: Path
    recipe: Recipe

    @property
    def campaign(self) -> Path:  # committed
        return self.root / "campaign" / self.recipe.name

    @property
    def run(self) -> Path:  # git-ignored, this machine's
        return self.root / "runs" / self.recipe.name

    def synth(self) -> list[Path]:
        return [s.folder(self.root) for s in self.recipe.synth]


def train_config(paths: CampaignPaths, real: Path, *, minutes: float | None, threads: int | None,
                 device: str, stop_after_steps: int | None = None):
    """The recipe as a :class:`~livestems.model.training.trainer.TrainConfig` for this invocation."""
    from livestems.model.training.trainer import TrainConfig

    r = paths.recipe
    valid = real / r.valid_song
    if not (valid.is_dir()):
        raise CampaignError(f"{valid}: the validation song is missing; expected the real "
                            f"stems folder with {r.valid_song}/ in it. Fix: --real DIR")
    data = [f"{real}:{r.real_share}"] + [f"{s.folder(paths.root)}:{s.share}" for s in r.synth]
    return TrainConfig(data=data, out=str(paths.run), preset=r.preset, valid=str(valid),
                       budget_minutes=minutes, threads=threads, device=device,
                       stop_after_steps=stop_after_steps, **r.options, **r.cadence)


#: the run folder's files a campaign folder keeps (beside the checkpoint)
_RUN_FILES = ("train.json", "log.jsonl", "best.json", "best.safetensors")


def _staging(tmp: Path, checkpoint: Path, as_name: str, files_from: Path) -> Path:
    """A fresh folder ``tmp`` holding a copy of ``checkpoint`` (as ``as_name``) and of the
    :data:`_RUN_FILES` that ``files_from`` has: what is then moved into place."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(checkpoint, tmp / as_name)
    for name in _RUN_FILES:
        if (files_from / name).is_file():
            shutil.copyfile(files_from / name, tmp / name)
    return tmp


def _checkpoints(run: Path) -> list[Path]:
    from livestems.model.training.trainer import list_checkpoints

    return list_checkpoints(run)


def restore(paths: CampaignPaths, log=print) -> int | None:
    """Seed an empty run folder from the committed campaign folder; returns the step it will
    resume at (None: nothing to restore, or the run folder already has checkpoints, which
    win: they are this machine's newer state)."""
    camp, run = paths.campaign, paths.run
    resume = camp / "resume"
    if _checkpoints(run) or not (resume / "state.json").is_file():
        return None
    step = int(json.loads((resume / "state.json").read_text())["step"])
    dst = run / "checkpoints" / f"step-{step:08d}"
    tmp = _staging(run / f".restore-{os.getpid()}", resume, "ckpt", camp)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for name in _RUN_FILES:
        if (tmp / name).is_file():
            os.replace(tmp / name, run / name)
    os.replace(tmp / "ckpt", dst)  # last: its presence means the rest is in place
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"restored {run} from {camp} (step {step})")
    return step


def save(paths: CampaignPaths, log=print) -> Path:
    """Write the campaign folder from the run folder: the newest checkpoint as ``resume/``,
    the fixed options, the whole log, the best weights and the learning curve. Built in a
    new folder and swapped in, so a crash leaves the old campaign folder whole."""
    camp, run = paths.campaign, paths.run
    ckpts = _checkpoints(run)
    if not ckpts:
        raise CampaignError(f"{run}: no checkpoint to save; expected {run}/checkpoints/step-*. "
                            "Fix: run the campaign first (livestems campaign run)")
    tmp = _staging(camp.with_name(f".{camp.name}.new-{os.getpid()}"), ckpts[-1], "resume", run)
    if (tmp / "best.json").is_file():  # name this machine's folders by their last part only
        cfg = json.loads((tmp / "best.json").read_text())
        cfg["provenance"] = _strip_paths(cfg.get("provenance", {}))
        (tmp / "best.json").write_text(json.dumps(cfg, indent=1) + "\n")
    if (tmp / "train.json").is_file():
        first = json.loads((tmp / "train.json").read_text())
        (tmp / "train.json").write_text(json.dumps(_strip_paths(first), indent=1) + "\n")
    if (tmp / "log.jsonl").is_file():
        weight = json.loads((tmp / "train.json").read_text())["fixed"].get("stft_loss") \
            if (tmp / "train.json").is_file() else None
        plot_curve(tmp / "log.jsonl", tmp / "curve.png", title=paths.recipe.name,
                   stft_weight=weight)
    old = camp.with_name(f".{camp.name}.old-{os.getpid()}")
    if camp.exists():
        os.replace(camp, old)
    os.replace(tmp, camp)
    shutil.rmtree(old, ignore_errors=True)
    step = int(json.loads((camp / "resume" / "state.json").read_text())["step"])
    log(f"saved {camp} (step {step})")
    return camp


def read_log(path: Path) -> tuple[list[tuple[int, float]], list[dict]]:
    """``(losses [(step, loss)], validations [{"step", "valid": {...}}])`` of a run log."""
    losses, valids = [], []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if "loss" in rec:
            losses.append((int(rec["step"]), float(rec["loss"])))
        elif "valid" in rec:
            valids.append(rec)
    return losses, valids


def plot_curve(log_path: Path, png: Path, title: str = "", stft_weight: float | None = None
               ) -> Path:
    """The learning curve: training loss (raw and smoothed) and validation nSDR per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    losses, valids = read_log(log_path)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        steps, vals = np.array(losses).T
        a.plot(steps, vals, color="0.8", lw=0.5, label="per step")
        k = max(1, min(200, len(vals) // 10))
        smooth = np.convolve(vals, np.ones(k) / k, mode="valid")
        a.plot(steps[k - 1:], smooth, color="C0", label=f"mean of {k}")
        a.set_yscale("log")
        a.legend()
    a.set_xlabel("step")
    a.set_ylabel("training loss" + (f" (L1 + {stft_weight:g} x MR-STFT)" if stft_weight
                                     else " (L1)" if stft_weight == 0 else ""))
    if valids:
        steps = [v["step"] for v in valids]
        names = [k for k in valids[0]["valid"] if k != "mean"]
        for name in names:
            b.plot(steps, [v["valid"][name] for v in valids], marker=".", label=name)
        b.plot(steps, [v["valid"]["mean"] for v in valids], color="k", lw=2, label="mean")
        b.legend()
    b.set_xlabel("step")
    b.set_ylabel("validation nSDR (dB)")
    b.grid(alpha=0.3)
    fig.suptitle(f"{title} learning curve" if title else "learning curve")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
