"""Separating a library: many files and folders, parallel workers, resume, one progress bar.

The unit of work is :func:`process_task` (one input file -> its stems, or a typed failure), the
same function whichever backend runs it: in this process (one worker), in worker processes on
this machine (:func:`iter_local`), or on Ray actors (:mod:`.ray_backend`). Each worker loads
the model once. :func:`run_library` plans (skips outputs already complete for their input,
refuses conflicting ones), runs a backend, draws one progress bar over the library (files, audio
hours, speed, time left from the audio still to do), prints one line per file and a summary,
and returns the exit code: 0 when nothing failed, otherwise the largest failure code (2 bad
input, 3 output exists or cannot be written, 4 a tool is missing), 130 when interrupted.

Interrupts: Ctrl-C (SIGINT) or SIGTERM stops the run; a file being written is abandoned and its
temporary folder removed (the finished ones stay, and a rerun skips them). Worker processes die
with their parent (Linux ``PR_SET_PDEATHSIG``), so even a SIGKILLed run leaves no worker behind;
at most a hidden ``.partial`` folder, removed by the next run that writes that track.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from livestems.stream.errors import LivestemsError

__all__ = ["AUDIO_EXTENSIONS", "Task", "Options", "Outcome", "collect_tasks", "process_task",
           "run_library", "iter_local", "default_workers"]

#: what a folder is searched for (case-insensitive); files named on the command line are
#: read whatever their extension
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                    ".aifc", ".m4a", ".mp4")


class DuplicateOutputError(LivestemsError):
    """Two inputs would write the same output (same track name in the same folder)."""

    exit_code = 2


@dataclass(frozen=True)
class Task:
    """One input: ``input`` (path as given or found), ``outdir`` (its track folder's parent)."""

    input: str
    outdir: str


@dataclass(frozen=True)
class Options:
    """Per-file settings, the same for every worker. ``model``: the ``--model`` value (None: the
    default); ``threads``: torch threads per worker."""

    model: str | None = None
    stems: tuple[str, ...] | None = None
    fmt: str = "wav"
    force: bool = False
    threads: int = 1


@dataclass
class Outcome:
    """What became of one task: ``status`` 'done', 'skipped', 'failed' or 'interrupted'."""

    input: str
    status: str
    folder: str = ""
    files: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    sample_rate: int = 0
    notes: list[str] = field(default_factory=list)
    error: str = ""
    exit_code: int = 0
    timing: dict = field(default_factory=dict)
    load_s: float = 0.0  # model load, on the first file a worker ran
    worker: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def default_workers(n_tasks: int) -> int:
    """One worker per core, no more than there are files."""
    return max(1, min(os.cpu_count() or 1, n_tasks))


# -- finding the inputs --------------------------------------------------------------------------


def collect_tasks(inputs: Iterable[str], outdir: str | Path) -> tuple[list[Task], list[str]]:
    """Files as given, folders searched recursively for :data:`AUDIO_EXTENSIONS` (hidden files
    and folders, and the output folder itself, skipped). A file found in ``DIR/a/b/x.flac``
    goes to ``OUTDIR/a/b/x/``; a file named directly to ``OUTDIR/x/``. Returns the tasks and
    one problem line per folder that holds no audio."""
    outdir = Path(outdir)
    out_abs = outdir.resolve()
    tasks, problems, seen = [], [], set()
    for arg in inputs:
        p = Path(arg)
        if not p.is_dir():
            tasks.append(Task(str(p), str(outdir)))
            continue
        found = []
        for root, dirs, files in os.walk(p):
            rootp = Path(root)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (rootp / d).resolve() != out_abs)
            for f in sorted(files):
                if not f.startswith(".") and f.lower().endswith(AUDIO_EXTENSIONS):
                    found.append(rootp / f)
        if not found:
            problems.append(f"{p}: no audio files found in this folder (searched recursively "
                            f"for {', '.join(AUDIO_EXTENSIONS)})")
        for f in found:
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            tasks.append(Task(str(f), str(outdir / f.parent.relative_to(p))))
    return tasks, problems


# -- the unit of work ------------------------------------------------------------------------------

_SEPARATORS: dict = {}  # per process: model spec -> (separator, load seconds), loaded once
_BUSY: bool | None = False  # worker: False idle, True on a file, None cleaning up after a signal


def model_id(spec: str | None) -> str:
    from livestems.model.nets.registry import default_model

    return spec or default_model()


def load_model(spec: str | None, threads: int):
    """The separator for ``spec`` in this process (cached) and the seconds its load took."""
    from .offline import set_threads

    set_threads(threads)
    key = model_id(spec)
    if key not in _SEPARATORS:
        from livestems.model.nets.registry import load_separator

        from .offline import prepare

        t0 = time.perf_counter()
        sep = load_separator(key)
        prepare(sep, threads)  # the offline engine's kernels loaded (or compiled) now
        _SEPARATORS[key] = (sep, time.perf_counter() - t0)
    return _SEPARATORS[key]


def process_task(task: Task, options: Options) -> Outcome:
    """Separate one input with ``options``; never raises for a bad file (the outcome says why).
    Runs in whichever process or actor holds the model."""
    global _BUSY
    from livestems.model.nets.registry import ModelError

    from .separate import separate_file

    fresh = model_id(options.model) not in _SEPARATORS
    who = f"{os.uname().nodename}:{os.getpid()}"
    _BUSY = True
    try:
        sep, load_s = load_model(options.model, options.threads)
        res = separate_file(task.input, task.outdir, sep, stems=list(options.stems or []) or None,
                            fmt=options.fmt, force=options.force,
                            model_id=model_id(options.model))
    except KeyboardInterrupt:
        if _EXIT:  # the temporary folder is gone (separate_file cleans up): now leave
            os._exit(1)
        return Outcome(task.input, "interrupted", worker=who)
    except ModelError as exc:
        return Outcome(task.input, "failed", error=str(exc), exit_code=2, worker=who)
    except LivestemsError as exc:
        return Outcome(task.input, "failed", error=str(exc), exit_code=exc.exit_code, worker=who)
    except MemoryError:
        return Outcome(task.input, "failed", exit_code=1, worker=who, error=(
            "not enough memory for this file (its decoded audio is held in memory, 0.35 MB "
            "per second at 44.1 kHz stereo, 6 MB per second for --format stem.mp4): use fewer "
            "--workers, or split it"))
    except Exception as exc:  # noqa: BLE001 - one file's unexpected failure must not end the run
        return Outcome(task.input, "failed", error=f"unexpected {type(exc).__name__}: {exc} "
                       "(please report this with the file)", exit_code=1, worker=who)
    finally:
        _BUSY = False
    return Outcome(task.input, res.status, folder=str(res.folder),
                   files=[str(f) for f in res.files], audio_s=res.audio_s,
                   sample_rate=res.sample_rate, notes=list(res.notes),
                   timing=res.timing.as_dict(), load_s=load_s if fresh else 0.0, worker=who)


# -- local backends ----------------------------------------------------------------------------


_EXIT = False  # SIGTERM arrived: leave once the file in flight is cleaned up


def _interrupt_if_busy(signum, frame):
    """In a worker. SIGINT (Ctrl-C, or the run stopping): abandon the file in flight (its
    temporary folder is removed), stay for the run's shutdown. SIGTERM (the run died, or it
    stops its pool): the same, then exit. A signal during that clean-up does not interrupt it."""
    global _EXIT, _BUSY
    if signum == signal.SIGTERM:
        _EXIT = True
        if _BUSY is False:  # idle: nothing to clean up
            os._exit(1)
    if _BUSY is True:
        _BUSY = None  # cleaning up
        raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Linux: ask the kernel to send us SIGTERM when the parent dies (a SIGKILLed run)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers finish their file, then exit
        pass


def _init_worker(spec: str | None, threads: int) -> None:
    signal.signal(signal.SIGINT, _interrupt_if_busy)
    signal.signal(signal.SIGTERM, _interrupt_if_busy)
    _die_with_parent()
    load_model(spec, threads)


def iter_local(todo: list[Task], options: Options, workers: int) -> Iterator[Outcome]:
    """Run ``todo`` here: in this process (``workers == 1``) or in ``workers`` spawned worker
    processes, each loading the model once; yields outcomes as files finish."""
    if workers <= 1:
        for task in todo:
            out = process_task(task, options)
            yield out
            if out.status == "interrupted":
                raise KeyboardInterrupt
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    def new_pool():
        return ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker,
                                   initargs=(options.model, options.threads))

    # At most one file per worker is handed out, so when a worker process dies (killed for
    # memory, a crash inside a decoder) the files in flight are known: each is retried once in
    # a fresh pool (the others in flight were only collateral), a second death fails it.
    queue, strikes = list(reversed(todo)), {}
    pool = new_pool()
    running = {}  # future -> task
    try:
        while queue or running:
            while queue and len(running) < workers:
                task = queue.pop()
                running[pool.submit(process_task, task, options)] = task
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            broken = []
            for fut in done:
                task = running.pop(fut)
                try:
                    out = fut.result()
                except BrokenProcessPool:
                    broken.append(task)
                    continue
                yield _retry_outcome(out) if task in strikes else out
            if broken:
                broken += list(running.values())  # the pool is gone: all in flight failed
                running.clear()
                _stop_pool(pool)
                for task in broken:
                    strikes[task] = strikes.get(task, 0) + 1
                    if strikes[task] >= 2:
                        yield Outcome(task.input, "failed", exit_code=1, error=(
                            "the worker process died twice while separating this file "
                            "(killed by the system, e.g. out of memory, or a crash in a "
                            "decoder); try it alone with --workers 1, or convert it to WAV"))
                    else:
                        queue.append(task)
                pool = new_pool()
    except BaseException:
        _stop_pool(pool)  # files in flight abandoned, their temporary folders removed
        raise
    pool.shutdown(wait=True)


def _retry_outcome(out: Outcome) -> Outcome:
    """The outcome of a retried file. A worker can die after writing its file completely but
    before reporting it: the retry then finds the output complete. This run wrote it, so it
    counts as done (with a note), not as 'skipped (already complete)'."""
    if out.status != "skipped":
        return out
    out.status = "done"
    out.audio_s = out.audio_s or (_duration_s(out.input) or 0.0)
    out.notes.append("its worker died after writing it; the retry found the output complete "
                     "and kept it")
    return out


def _stop_pool(pool, grace_s: float = 10.0) -> None:
    """Stop every worker of ``pool`` now: SIGTERM (a busy one removes its temporary folder,
    then exits), SIGKILL for any still there after ``grace_s``. A worker killed while holding
    one of the pool's queue locks would leave the others blocked forever, so they are never
    just waited for."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, AttributeError):
            pass
    end = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, end - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
    pool.shutdown(wait=False, cancel_futures=True)


# -- the run -----------------------------------------------------------------------------------


def _duration_s(path: str) -> float | None:
    try:
        import soundfile as sf

        info = sf.info(path)
        return info.frames / info.samplerate if info.samplerate else None
    except Exception:  # noqa: BLE001 - unknown here (mp4, or a bad file): estimated
        return None


def _hms(seconds: float) -> str:
    """h:mm:ss (never negative)."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class _Bar:
    """One line for the whole library: files, audio done / total, speed, time left.

    The time left is the audio still to do divided by the audio rate measured so far in this
    run (never negative, unknown until the first file finishes)."""

    def __init__(self, n_files: int, total_audio_s: float, enabled: bool):
        self.n, self.total = n_files, max(total_audio_s, 1e-9)
        self.done_files = self.done_audio = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and n_files:
            import shutil

            from tqdm import tqdm

            # a terminal that reports no size (0 x 0: some ptys) gets 120 x 24: tqdm would
            # draw an empty line there
            try:
                size = os.get_terminal_size(sys.stderr.fileno())
            except OSError:
                size = shutil.get_terminal_size((120, 24))
            cols, rows = size.columns or 120, size.lines or 24
            self.bar = tqdm(total=n_files, file=sys.stderr, ncols=cols, nrows=rows,
                            leave=False, desc=f"0/{n_files} files",
                            unit=self._text(), bar_format="{desc} |{bar}| {unit}")

    def _text(self) -> str:
        el = time.perf_counter() - self.t0
        speed = self.done_audio / el if el > 0 and self.done_audio else 0.0
        left = max(self.total - self.done_audio, 0.0)
        eta = _hms(left / speed) if speed else "?"
        return (f"{_hms(self.done_audio)}/{_hms(self.total)} of audio, "
                f"{speed:.1f}x real time, {_hms(el)} elapsed, {eta} left")

    def _draw(self):
        self.bar.set_description_str(f"{self.done_files}/{self.n} files", refresh=False)
        self.bar.unit = self._text()
        self.bar.refresh()

    def advance(self, audio_s: float):
        self.done_files += 1
        self.done_audio = min(self.done_audio + audio_s, self.total)
        if self.bar is not None:
            self.bar.n = self.done_files
            self._draw()

    def write(self, line: str, file):
        if self.bar is not None:
            self.bar.clear()
            print(line, file=file, flush=True)
            self.bar.refresh()
        else:
            print(line, file=file, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclass
class Summary:
    outcomes: list[Outcome]
    wall_s: float
    interrupted: bool = False

    def by(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return max([o.exit_code or 1 for o in self.by("failed")], default=0)


def run_library(tasks: list[Task], options: Options, *, backend: Callable | None = None,
                workers: int | None = None, quiet: bool = False,
                problems: list[str] | None = None, stdout=None, stderr=None) -> Summary:
    """Plan, run and report a library. ``backend(todo, options, workers)`` yields
    :class:`Outcome` objects as files finish (default :func:`iter_local`); ``workers``
    defaults to :func:`default_workers`. Prints per-file lines, notes, errors and the summary;
    returns the :class:`Summary` (its ``exit_code`` is the command's)."""
    from .separate import output_state, output_target, stem_names, _select

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    t0 = time.perf_counter()
    outcomes: list[Outcome] = []
    for line in problems or []:
        print(f"error: {line}", file=stderr)
        outcomes.append(Outcome(line.split(":", 1)[0], "failed", error=line.split(": ", 1)[-1],
                                exit_code=2))
    # plan in this process: which outputs are complete already, which collide
    sep, _ = load_model(options.model, options.threads)
    chosen = _select(list(options.stems) if options.stems else None,
                     stem_names(tuple(sep.sources)))
    mid = model_id(options.model)
    todo, targets = [], {}
    for t in tasks:
        target = output_target(Path(t.input), Path(t.outdir), options.fmt)
        key = str(target.resolve()) if target.parent.exists() else str(target.absolute())
        if key in targets:
            err = DuplicateOutputError(
                f"would write the same output as {targets[key]}", path=t.input,
                fix="rename one of them, or separate them into different -o folders")
            print(f"error: {err}", file=stderr)
            outcomes.append(Outcome(t.input, "failed", error=str(err), exit_code=2))
            continue
        targets[key] = t.input
        if not options.force and Path(t.input).is_file():
            state, _ = output_state(Path(t.input), target, fmt=options.fmt, stems=chosen,
                                    model_id=mid)
            if state == "complete":
                outcomes.append(Outcome(t.input, "skipped", folder=str(target)))
                continue
        todo.append(t)
    known = {t.input: _duration_s(t.input) for t in todo}
    sizes = [d for d in known.values() if d]
    mean = sum(sizes) / len(sizes) if sizes else 0.0
    total = sum(d if d else mean for d in known.values())
    n_workers = max(1, min(workers or default_workers(len(todo)), max(len(todo), 1)))
    bar = _Bar(len(todo), total, enabled=not quiet and sys.stderr.isatty() and stderr is
               sys.stderr)
    run = backend or iter_local
    interrupted = False
    old_term = signal.getsignal(signal.SIGTERM)
    in_main = _is_main_thread()
    if in_main:  # SIGTERM ends the run as Ctrl-C does: in-flight files cleaned up
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for out in run(todo, options, n_workers):
            if out.status == "interrupted":
                interrupted = True
                continue
            outcomes.append(out)
            _report(out, bar, quiet, stdout, stderr)
            bar.advance(out.audio_s or known.get(out.input) or 0.0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
        bar.close()
    summary = Summary(outcomes, time.perf_counter() - t0, interrupted)
    _print_summary(summary, len(tasks) + len(problems or []), stdout)
    return summary


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _report(out: Outcome, bar: _Bar, quiet: bool, stdout, stderr) -> None:
    if out.status == "failed":
        bar.write(f"error: {out.error}" if out.error.startswith(out.input)
                  else f"error: {out.input}: {out.error}", stderr)
        return
    if quiet:
        return
    for note in out.notes:
        bar.write(f"note: {out.input}: {note}", stderr)
    tm = out.timing
    if out.status == "skipped" or not tm.get("compute_s"):
        # not separated in this call: complete already (another run wrote it meanwhile, or
        # a worker that died had written it before it could report)
        bar.write(f"{out.input} -> {out.folder} (output complete, not redone)", stdout)
        return
    speed = out.audio_s / tm["compute_s"] if tm.get("compute_s") else 0.0
    bar.write(f"{out.input} -> {out.folder} ({out.audio_s:.1f} s at {out.sample_rate} Hz; "
              f"compute {tm.get('compute_s', 0):.2f} s = {speed:.0f}x real time, decode "
              f"{tm.get('decode_s', 0):.2f} s, write {tm.get('write_s', 0):.2f} s; "
              f"{len(out.files)} file(s))", stdout)


def _print_summary(s: Summary, n_inputs: int, stdout) -> None:
    done, skipped, failed = s.by("done"), s.by("skipped"), s.by("failed")
    audio = sum(o.audio_s for o in done)
    compute = sum(o.timing.get("compute_s", 0.0) for o in done)
    line = (f"summary: {len(done)} done, {len(skipped)} skipped (already complete), "
            f"{len(failed)} failed")
    if s.interrupted:
        line += f", {n_inputs - len(s.outcomes)} not done (interrupted)"
    line += f"; {audio / 60:.1f} min of audio in {s.wall_s:.1f} s wall"
    if audio and s.wall_s:
        line += f" ({audio / s.wall_s:.1f}x real time overall"
        line += f", compute {audio / compute:.0f}x per worker)" if compute else ")"
    print(line, file=stdout)
    for o in failed:
        print(f"  failed: {o.input}: {o.error.removeprefix(o.input + ': ')}", file=stdout)
    if skipped and len(skipped) <= 20:
        for o in skipped:
            print(f"  skipped: {o.input} (complete in {o.folder}; --force redoes it)",
                  file=stdout)
    elif skipped:
        print(f"  skipped {len(skipped)} inputs whose outputs are complete (--force redoes "
              "them)", file=stdout)
    if s.interrupted:
        print("interrupted: finished files are kept; run the same command again to resume",
              file=stdout)
