"""`livestems train`: train or distil a causal hybrid preset, resumably, within a time budget."""

from __future__ import annotations

import sys

NAME = "train"


def add_parser(sub) -> None:
    from livestems.model.nets.presets import PRESETS

    p = sub.add_parser(
        "train",
        help="train a real-time preset on stems, or distil one from any separator",
        description="Train a causal hybrid preset on a MUSDB-layout folder of stems (L1 on "
        "waveforms, Demucs-style augmentation), or, with --teacher, distil it from any "
        "separator on unlabelled music (a folder of songs, no stems needed). Everything lives "
        "in OUT: checkpoints every N steps or M minutes (the last two kept, written "
        "atomically), log.jsonl, model.json (latest weights), best.json (best validation). "
        "Running the same command again resumes exactly where the run stopped.",
    )
    p.add_argument("--preset", default="rt-tiny", choices=list(PRESETS),
                   help="network to train (default rt-tiny)")
    p.add_argument("--data", required=True, metavar="DIR[:SHARE]", action="append",
                   help="training data: a MUSDB-layout folder (track/{vocals,drums,bass,"
                        "other}.wav, .flac, or .ogg/.opus/.mp3 at any rate: decoded and "
                        "resampled once into a cache), e.g. from `livestems synth DIR --seed 0`. "
                        "Repeat to mix sets; SHARE is a set's share of the draws (e.g. --data "
                        "real:0.5 --data synth:0.5; default: by length). With --remix, sources "
                        "of different sets meet (real vocals over synthetic backings). With "
                        "--teacher: one folder of any music (wav/flac/ogg/mp3 at 44.1 kHz)")
    p.add_argument("--out", "-o", required=True, metavar="OUT",
                   help="run folder: checkpoints, log and model files; an existing run there is "
                        "resumed")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from this model file's weights instead of a random "
                        "initialisation (fine-tuning, e.g. the shipped "
                        "model/weights/rt-tiny.json on your own stems); its architecture "
                        "must be the preset's. Use a lower --lr than from scratch")
    p.add_argument("--teacher", default=None, metavar="MODEL",
                   help="distil: targets come from this separator (a model file such as an "
                        "official Hybrid Demucs converted by `livestems import-demucs`, or a "
                        "built-in name) run on --data; its sources must be the student's")
    p.add_argument("--valid", default=None, metavar="DIR",
                   help="held-out MUSDB-layout folder scored (nSDR) every --valid-every steps; "
                        "the best weights go to OUT/best.json. Synthetic: seeds >= 10000")
    p.add_argument("--steps", type=int, default=100_000, metavar="N",
                   help="total steps of the run (default 100000; the budget usually stops "
                        "it first)")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="wall-clock limit of this invocation: stop cleanly (checkpoint, "
                        "model.json) before M minutes have passed; rerun to continue")
    p.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                   help="run at most N steps in this invocation")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help="default 4")
    p.add_argument("--segment-seconds", type=float, default=2.0, metavar="S",
                   help="training segment length (default 2): longer segments teach the "
                        "recurrent bottleneck longer context but cost proportionally more")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    p.add_argument("--warmup-steps", type=int, default=0, metavar="N",
                   help="linear learning-rate warm-up (default 0)")
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="learning rate after warm-up: constant (default; a run can be "
                        "extended), or cosine decay to 0 at --steps")
    p.add_argument("--stft-loss", type=float, default=0.0, metavar="W",
                   help="weight of a multi-resolution STFT loss added to the L1 waveform loss "
                        "(default 0: L1 only, as Hybrid Demucs)")
    p.add_argument("--clip-grad", type=float, default=5.0, metavar="NORM",
                   help="clip the gradient norm (default 5; 0: off)")
    p.add_argument("--remix", type=float, default=1.0, metavar="P",
                   help="probability that a source comes from another song (default 1)")
    p.add_argument("--epoch-size", type=int, default=0, metavar="N",
                   help="items per data epoch (default 0: non-overlapping segments in the data)")
    p.add_argument("--seed", type=int, default=0, help="weights and data-order seed (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="N",
                   help="checkpoint every N steps (default 500)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                   help="... and at least every M minutes (default 10)")
    p.add_argument("--valid-every", type=int, default=500, metavar="N",
                   help="validate every N steps (default 500)")
    p.add_argument("--valid-seconds", type=float, default=10.0, metavar="S",
                   help="validation segment length (default 10)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available), cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice; use 1 on a shared machine)."
                        " Exact resume needs the same value")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="data-loading processes (default 0: in the training process)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unusable track instead of skipping it with a note")
    p.add_argument("--resume-from", default=None, metavar="CHECKPOINT",
                   help="resume from this checkpoint folder (default: OUT's newest)")
    p.add_argument("--log-every", type=int, default=50, metavar="N",
                   help="print a loss line every N steps (default 50)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from livestems.model.training.trainer import TrainConfig, TrainError, train

    cfg = TrainConfig(
        data=args.data if len(args.data) > 1 else args.data[0], out=args.out, preset=args.preset, teacher=args.teacher, init=args.init,
        valid=args.valid, steps=args.steps, batch_size=args.batch_size,
        segment_seconds=args.segment_seconds, lr=args.lr, warmup_steps=args.warmup_steps,
        schedule=args.schedule, stft_loss=args.stft_loss, clip_grad=args.clip_grad,
        remix=args.remix, epoch_size=args.epoch_size, seed=args.seed,
        checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
        valid_every=args.valid_every, valid_seconds=args.valid_seconds,
        budget_minutes=args.budget_minutes, stop_after_steps=args.stop_after_steps,
        device=args.device, threads=args.threads, workers=args.workers, strict=args.strict,
        resume_from=args.resume_from, log_every=args.log_every)
    try:
        res = train(cfg, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{res['model']}  (step {res['step']}, stopped: {res['stopped']})")
    return 130 if res["stopped"] in ("SIGINT", "SIGTERM") else 0
