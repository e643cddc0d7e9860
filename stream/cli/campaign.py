"""`livestems campaign`: the training recipe end to end, a session at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NAME = "campaign"


def add_parser(sub) -> None:
    from livestems.model.training.campaign import RECIPES

    p = sub.add_parser(
        NAME,
        help="train the shipped model's recipe end to end, resumable across machines",
        description="Run a training campaign: its synthetic data (livestems synth, cached), "
        "the real stems (decoded once into a cache), training with the recipe's fixed "
        "options, resuming exactly where the last session stopped, and at the end a save of "
        "the campaign folder campaign/NAME/ (one resume checkpoint, the whole log, the "
        "learning curve, the best weights: commit it). On a new machine the run resumes from "
        "that folder. Run from the repository root. Working files go to runs/ (git-ignored).",
    )
    p.add_argument("action", choices=["run", "save", "status", "report"],
                   help="run: data + restore + train + save; save: write campaign/NAME/ from "
                        "runs/NAME/ now; status: steps, best validation, where things are; "
                        "report: the quality tables of docs/MODEL.md (eval on 6.Caesium and "
                        "the stem clips of ../shared/data/real, baselines, acceptance checks, "
                        "shift consistency), written there and to docs/quality.json")
    p.add_argument("--recipe", default="rt-small", choices=list(RECIPES),
                   help="which campaign (default rt-small)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="train at most this long now, then checkpoint and save (default: "
                        "until the recipe's step count or Ctrl-C, which also saves)")
    p.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                   help="train at most N steps now")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: torch's; 1 leaves a core free for other "
                        "work on a 2-core machine at about 1.6x the step time)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="processes rendering the synthetic songs (default 1)")
    p.add_argument("--real", default=None, metavar="DIR",
                   help="the real stems (default: ../shared/data/train-real beside the "
                        "repository)")
    p.add_argument("--root", default=".", metavar="DIR",
                   help="repository root holding campaign/ and runs/ (default: .)")
    p.add_argument("--models", default=None, metavar="A,B",
                   help="report: models to score (default: the default model and rt-tiny)")
    p.add_argument("--max-seconds", type=float, default=None, metavar="S",
                   help="report: only the first S seconds of each song (faster, less exact)")
    p.add_argument("--no-save", action="store_true",
                   help="run: do not write campaign/NAME/ at the end")


def _real_dir(args, root: Path) -> Path:
    real = Path(args.real) if args.real else root.resolve().parent / "shared" / "data" / "train-real"
    if not real.is_dir():
        raise SystemExit(f"error: {real}: the real training stems are not there; expected the "
                         "folder of song folders with vocals/drums/bass/other stems. Fix: "
                         "--real DIR")
    return real


def _synth(paths, real: Path, jobs: int) -> int:
    """Render (or complete) each synthetic set of the recipe; the first failure's code."""
    r = paths.recipe
    for s in r.synth:
        cmd = [sys.executable, "-m", "livestems.stream", "synth", str(s.folder(paths.root)),
               *s.synth_args(real, r.valid_song), "--jobs", str(jobs)]
        print("synthetic data: livestems " + " ".join(cmd[3:]), file=sys.stderr)
        code = subprocess.call(cmd)
        if code:
            return code
    return 0


def _status(paths) -> int:
    import json

    from livestems.model.training.campaign import read_log
    from livestems.model.training.trainer import list_checkpoints

    for where, folder in (("run", paths.run), ("campaign", paths.campaign)):
        ckpts = (list_checkpoints(folder) if where == "run"
                 else [paths.campaign / "resume"] if (paths.campaign / "resume").is_dir() else [])
        step = (json.loads((ckpts[-1] / "state.json").read_text())["step"] if ckpts else None)
        print(f"{where:8s} {folder}: " + (f"step {step}" if step is not None else "nothing yet"))
        log = folder / "log.jsonl"
        if log.is_file():
            losses, valids = read_log(log)
            if valids:
                best = max(valids, key=lambda v: v["valid"]["mean"])
                print(f"         best validation nSDR {best['valid']['mean']:.2f} dB at step "
                      f"{best['step']} (" + ", ".join(
                          f"{k} {v:.2f}" for k, v in best["valid"].items() if k != "mean") + ")")
            if losses:
                tail = [v for _, v in losses[-100:]]
                print(f"         last {len(tail)} training losses: mean {sum(tail) / len(tail):.4f}")
    return 0


def _report(args, root: Path) -> int:
    from livestems.model.nets.registry import default_model

    from livestems.stream.bench.quality import run_report, to_markdown, write_report

    models = ([m.strip() for m in args.models.split(",") if m.strip()] if args.models else
              list(dict.fromkeys([default_model(), "rt-tiny"])))
    shared = (Path(args.real).resolve().parent.parent if args.real
              else root.resolve().parent / "shared")
    result = run_report(models, shared, max_seconds=args.max_seconds,
                        log=lambda m: print(m, file=sys.stderr))
    write_report(result, root / "docs")
    print(to_markdown(result))
    return 0


def run(args) -> int:
    from livestems.model.training.campaign import RECIPES, CampaignError, CampaignPaths, restore, save, \
        train_config
    from livestems.model.training.trainer import TrainError, train

    root = Path(args.root)
    paths = CampaignPaths(root, RECIPES[args.recipe])
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        if args.action == "status":
            return _status(paths)
        if args.action == "report":
            return _report(args, root)
        if args.action == "save":
            save(paths, log=log)
            return 0
        real = _real_dir(args, root)
        if _synth(paths, real, args.jobs) != 0:
            print("error: rendering the synthetic songs failed (above)", file=sys.stderr)
            return 1
        restore(paths, log=log)
        cfg = train_config(paths, real, minutes=args.minutes, threads=args.threads,
                           device=args.device, stop_after_steps=args.stop_after_steps)
        res = train(cfg, progress=sys.stderr.isatty(), log=log)
        if not args.no_save:
            save(paths, log=log)
        print(f"{res['model']}  (step {res['step']}, stopped: {res['stopped']})")
        return 130 if res["stopped"] in ("SIGINT", "SIGTERM") else 0
    except (CampaignError, TrainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
