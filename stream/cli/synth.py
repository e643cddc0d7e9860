"""`livestems synth`: write synthetic multitrack songs as a MUSDB-layout dataset."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

NAME = "synth"

_FILES = ("mixture", "vocals", "drums", "bass", "other")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="generate synthetic multitrack songs (MUSDB layout) for training or evaluation",
        description="Compose and render songs with known stems: General MIDI parts played "
        "through FluidSynth, a lead sung by espeak-ng words re-pitched with the WORLD vocoder "
        "(or, with --voices/--real-vocals, by Festival, HTS and flite voices or real vocal "
        "stems moved in pitch), mixed like a record. Writes OUTDIR/<seed>/{mixture,vocals,drums,bass,other}.wav "
        "(32-bit float, mixture = sum of the stems) and song.json (what was generated). "
        "Track i uses seed SEED+i, so sets made from disjoint seed ranges never share a song: "
        "keep seeds >= 10000 for evaluation and never train on them.",
    )
    p.add_argument("outdir", metavar="OUTDIR", help="dataset folder (created if missing)")
    p.add_argument("--tracks", type=int, default=10, metavar="N", help="songs to write (default 10)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S",
                   help="length of each song in seconds (default 10)")
    p.add_argument("--seed", type=int, default=0, metavar="K",
                   help="seed of the first track (default 0); track i uses K+i")
    p.add_argument("--style", default=None,
                   help="force one style (pop, rock, funk, ballad, dance, hiphop, country, jazz); "
                        "default: drawn per song")
    p.add_argument("--sample-rate", type=int, default=44100, metavar="HZ",
                   help="sample rate (default 44100, the model rate)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="worker processes (default 1); output does not depend on it")
    p.add_argument("--force", action="store_true",
                   help="re-render tracks whose folder is already complete (default: skip them, "
                        "so an interrupted run can be resumed)")
    p.add_argument("--voices", default="espeak", metavar="LIST",
                   help="comma-separated singers to draw from, one per song from its seed "
                        "(engine first, then a voice of it): espeak = espeak-ng formant "
                        "voices, robotic but what seeds 0.. of existing sets were made with "
                        "(default; only this keeps their audio); festival = diphone voices "
                        "recorded from people (US English kal/ked, Italian, Czech, Finnish: "
                        "Debian festvox-* packages); hts = statistical voices trained on one "
                        "person each (US English slt, Catalan ona): smoother, less buzzy; "
                        "flite = CMU kal16/awb/rms/slt. Any non-default choice also adds "
                        "level rides, double-tracks and breaths, so the same seed sounds "
                        "different. Missing voice packages are skipped with a note")
    p.add_argument("--real-vocals", default=None, metavar="DIR",
                   help="also draw singers from the real vocal stems of this TRAINING folder "
                        "(DIR/<song>/vocals.opus|flac|wav): a random sung excerpt per song, moved "
                        "by WORLD into the song's key and tuning (-6..+5 semitones), formants "
                        "part of the way. Costs ~1.5 s of CPU per 6 s of song. Never name "
                        "../shared/data/real: it is evaluation-only (refused)")
    p.add_argument("--real-vocals-skip", action="append", default=[], metavar="SONG",
                   help="leave this song folder of --real-vocals out (repeatable), e.g. the "
                        "validation song 6.Caesium")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _complete(folder: Path) -> bool:
    return (folder / "song.json").is_file() and all((folder / f"{n}.wav").is_file() for n in _FILES)


def _render_one(job: tuple) -> tuple[int, float, str]:
    """Render and write one track; returns (seed, seconds taken, style). Runs in a worker."""
    from livestems.model.training.synth import render_song

    from livestems.stream.io.files import write_audio

    outdir, seed, seconds, style, sample_rate, pool = job
    t0 = time.perf_counter()
    song = render_song(seed, seconds, sample_rate, style=style, voices=pool)
    folder = Path(outdir) / f"{seed:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    # song.json last: its presence marks a complete track (see _complete)
    (folder / "song.json").unlink(missing_ok=True)
    write_audio(folder / "mixture.wav", song.mixture, sample_rate, overwrite=True)
    for name, audio in song.stems.items():
        write_audio(folder / f"{name}.wav", audio, sample_rate, overwrite=True)
    (folder / "song.json").write_text(json.dumps(song.info, indent=1) + "\n")
    return seed, time.perf_counter() - t0, song.info["style"]


def run(args) -> int:
    from livestems.model.training.synth.compose import STYLES

    errors = []
    if args.tracks < 1:
        errors.append(f"--tracks must be >= 1, got {args.tracks}")
    if not 0.5 <= args.seconds <= 600:
        errors.append(f"--seconds must be in 0.5..600, got {args.seconds}")
    if args.seed < 0:
        errors.append(f"--seed must be >= 0, got {args.seed}")
    if args.style is not None and args.style not in STYLES:
        errors.append(f"--style must be one of {', '.join(sorted(STYLES))}, got {args.style!r}")
    if not 22050 <= args.sample_rate <= 96000:
        errors.append(f"--sample-rate must be 22050..96000 Hz, got {args.sample_rate}")
    if args.jobs < 1:
        errors.append(f"--jobs must be >= 1, got {args.jobs}")
    engines = tuple(e.strip() for e in args.voices.split(",") if e.strip())
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return 2
    pool = None
    if engines != ("espeak",) or args.real_vocals:
        from livestems.model.training.synth.singers import VoicePool, print_notes
        from livestems.model.training.synth.voice import VoiceError

        try:
            pool = VoicePool.build(engines, args.real_vocals, tuple(args.real_vocals_skip))
        except VoiceError as exc:  # SpeakerError and RealVocalError are VoiceErrors
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print_notes(pool)
    out = Path(args.outdir)
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a folder; expected a dataset folder. "
              "Fix: choose another OUTDIR", file=sys.stderr)
        return 3
    out.mkdir(parents=True, exist_ok=True)
    seeds = [args.seed + i for i in range(args.tracks)]
    todo = [s for s in seeds if args.force or not _complete(out / f"{s:06d}")]
    # a resumed set must not mix singers: complete tracks made with other voices are an error
    want = pool.describe()["engines"] if pool is not None else None
    for s in sorted(set(seeds) - set(todo)):
        made = json.loads((out / f"{s:06d}" / "song.json").read_text()).get("voice_pool")
        have = made["engines"] if made else None
        if have != want:
            print(f"error: {out / f'{s:06d}'} was sung by {have or ['espeak']}, this run by "
                  f"{want or ['espeak']}: expected one set of singers per folder. Fix: "
                  f"another OUTDIR, the same --voices/--real-vocals, or --force",
                  file=sys.stderr)
            return 3
    skipped = len(seeds) - len(todo)
    jobs = [(str(out), s, args.seconds, args.style, args.sample_rate, pool) for s in todo]
    t0 = time.perf_counter()
    times = []
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth", unit="track")
    if args.jobs == 1 or len(jobs) <= 1:
        results = map(_render_one, jobs)
    else:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(args.jobs)
        results = pool.imap_unordered(_render_one, jobs)
    for seed, dt, style in results:
        times.append(dt)
        if bar is not None:
            bar.set_postfix_str(f"seed {seed} {style} {dt:.1f}s")
            bar.update(1)
    if bar is not None:
        bar.close()
    if args.jobs > 1 and len(jobs) > 1:
        pool.close()
        pool.join()
    if not args.quiet:
        wall = time.perf_counter() - t0
        per = f"{sum(times) / len(times):.2f} s per track" if times else "nothing rendered"
        print(f"{out}: wrote {len(jobs)} track(s) of {args.seconds:g} s (seeds {seeds[0]}.."
              f"{seeds[-1]}), skipped {skipped} complete; {wall:.1f} s wall, {per}")
    return 0
