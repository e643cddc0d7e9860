"""`livestems separate` over a library: folders, parallel workers, resume, interrupts, summary.

Real files, real subprocesses and real signals. The DSP baseline `center` (the suite's default,
tests/conftest.py) keeps these cheap; tests/stream/apps/test_offline.py checks the network's offline path.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from signals import music_like

STEMS = ("vocals", "accompaniment")  # center's


def run_cli(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _library(root: Path, n: int, seconds: float, nested: bool = True) -> list[Path]:
    """``n`` wav files of distinct content, some in sub-folders when ``nested``."""
    paths = []
    for i in range(n):
        p = root / (f"disc{i % 3}" if i % 2 and nested else "") / f"track{i:02d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, music_like(seconds, seed=i).T, 44100, subtype="FLOAT")
        paths.append(p)
    return paths


def _target(lib: Path, out: Path, p: Path) -> Path:
    return out / p.parent.relative_to(lib) / p.stem


def _snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in out.rglob("*")}


def _assert_complete(folder: Path, frames: int, ext: str = "wav") -> None:
    man = json.loads((folder / ".livestems.json").read_text())
    assert man["stems"] == list(STEMS) and man["frames"] == frames
    for s in STEMS:
        info = sf.info(folder / f"{s}.{ext}")
        assert (info.frames, info.samplerate, info.channels) == (frames, 44100, 2), folder


def _visible_outputs(out: Path, ext: str = "wav") -> list[Path]:
    """Every track folder a user would see (no hidden temporary ones). Read while a run
    writes: the hidden temporaries are not entered (one may be renamed or removed while it is
    scanned, which made ``rglob`` raise FileNotFoundError), and a folder that vanishes
    mid-walk is skipped (``os.walk`` ignores such errors)."""
    found = set()
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(f.endswith(f".{ext}") and not f.startswith(".") for f in files):
            found.add(Path(root))
    return sorted(found)


def test_library_of_20_with_a_corrupt_file_and_one_done_resumes_and_reruns_idle(tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "out"
    paths = _library(lib, 19, 0.5)
    corrupt = lib / "disc1" / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + os.urandom(3000))  # a FLAC header, then garbage
    # one track separated before, by an earlier run (track04 lies at the library's top level)
    done_before = paths[4]
    proc = run_cli("separate", done_before, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert _target(lib, out, done_before).is_dir()
    before = _snapshot(out)

    proc = run_cli("separate", lib, "-o", out, "--workers", "2")
    assert proc.returncode == 2, proc.stderr  # a bad input: AudioFileError's code
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and str(corrupt) in errors[0], proc.stderr
    assert "summary: 18 done, 1 skipped (already complete), 1 failed" in proc.stdout, proc.stdout
    assert f"failed: {corrupt}" in proc.stdout and f"skipped: {done_before}" in proc.stdout
    assert sum(" -> " in ln for ln in proc.stdout.splitlines()) == 18
    for p in paths:
        _assert_complete(_target(lib, out, p), sf.info(p).frames)
    assert not _target(lib, out, corrupt).exists()
    # the one done before was not touched
    assert {k: v for k, v in _snapshot(out).items() if k in before} == before
    assert not [p for p in out.rglob(".*") if p.name != ".livestems.json"]  # no temporaries

    after = _snapshot(out)
    proc = run_cli("separate", lib, "-o", out, "--workers", "2")
    assert proc.returncode == 2
    assert "summary: 0 done, 19 skipped (already complete), 1 failed" in proc.stdout
    assert _snapshot(out) == after  # nothing new written, nothing rewritten


def test_a_changed_input_is_not_skipped_and_needs_force(tmp_path):
    """Resume skips only outputs made from this very input: an edited file is a conflict."""
    song = tmp_path / "song.wav"
    sf.write(song, music_like(0.5).T, 44100, subtype="FLOAT")
    assert run_cli("separate", song, "-o", tmp_path / "out").returncode == 0
    time.sleep(0.01)
    sf.write(song, music_like(0.5, seed=3).T, 44100, subtype="FLOAT")
    proc = run_cli("separate", song, "-o", tmp_path / "out")
    assert proc.returncode == 3 and "different version of this input" in proc.stderr
    assert "--force" in proc.stderr


def _wait_for(pred, timeout_s, poll_s=0.002):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(poll_s)
    return False


def _partials(out: Path) -> list[Path]:
    """The temporary folders of files in flight (read while a run writes: see above)."""
    found = []
    for root, dirs, _ in os.walk(out):
        found += [Path(root) / d for d in dirs if d.endswith(".partial")]
        dirs[:] = [d for d in dirs if not d.endswith(".partial")]
    return found


def _start(lib, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "livestems.stream", "separate", str(lib),
                             "-o", str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_no_partial_output(lib, out, paths, ext="wav"):
    """Every folder a user sees holds every stem, complete; no other entries are visible."""
    visible = [p for p in out.rglob("*") if p.is_dir() and p.parent == out
               and not p.name.startswith(".")] if out.exists() else []
    assert sorted(visible) == _visible_outputs(out, ext)
    for folder in visible:
        src = next(p for p in paths if _target(lib, out, p) == folder)
        _assert_complete(folder, sf.info(src).frames, ext)


def test_ctrl_c_mid_library_keeps_finished_files_and_cleans_the_one_in_flight(tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "out"
    paths = _library(lib, 8, 20.0, nested=False)
    p = _start(lib, out, "--workers", "2")
    try:
        # interrupt while a track is being written: its temporary folder exists
        caught = _wait_for(lambda: bool(_partials(out)) or p.poll() is not None, 240)
        caught = caught and p.poll() is None
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert caught, "the run finished before any write could be interrupted"
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert not _partials(out), "a temporary folder was left behind"
    _check_no_partial_output(lib, out, paths)
    n_done = len(_visible_outputs(out))
    assert n_done < len(paths)
    proc = run_cli("separate", lib, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert f"summary: {len(paths) - n_done} done, {n_done} skipped" in proc.stdout
    _check_no_partial_output(lib, out, paths)
    assert len(_visible_outputs(out)) == len(paths)


def test_sigkill_mid_write_leaves_no_visible_partial_output_and_a_rerun_completes(tmp_path):
    """A crash (SIGKILL: no handler runs) while a track folder is being written."""
    lib = tmp_path / "lib"
    paths = _library(lib, 6, 30.0, nested=False)
    for attempt in range(5):  # the kill must land inside a write; retry if it did not
        out = tmp_path / f"out{attempt}"
        # FLAC: encoding makes the write phase long enough to land in
        p = _start(lib, out, "--workers", "1", "--format", "flac")
        try:
            _wait_for(lambda: bool(_partials(out)) or p.poll() is not None, 240)
            p.kill()
            p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        if _partials(out):
            break
    else:
        raise AssertionError("never caught the run inside a write")
    _check_no_partial_output(lib, out, paths, "flac")  # every visible folder is complete
    proc = run_cli("separate", lib, "-o", out, "--format", "flac")
    assert proc.returncode == 0, proc.stderr
    assert not _partials(out), "the rerun did not remove the dead process's temporary folder"
    assert len(_visible_outputs(out, "flac")) == len(paths)
    _check_no_partial_output(lib, out, paths, "flac")


def test_folder_without_audio_and_duplicate_track_names_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    a, b = tmp_path / "a" / "song.wav", tmp_path / "b" / "song.wav"
    for p in (a, b):
        p.parent.mkdir()
        sf.write(p, music_like(0.3).T, 44100, subtype="FLOAT")
    proc = run_cli("separate", empty, a, b, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert f"error: {empty}: no audio files found" in proc.stderr
    assert f"error: {b}: would write the same output as {a}" in proc.stderr
    assert "summary: 1 done, 0 skipped (already complete), 2 failed" in proc.stdout


def test_progress_bar_on_a_terminal_shows_files_hours_speed_and_time_left(tmp_path):
    """The library's one bar, drawn when stderr is a terminal (a pseudo-terminal here): no
    tqdm warning, no negative time (the old per-file bar printed both)."""
    import pty

    lib, out = tmp_path / "lib", tmp_path / "out"
    _library(lib, 4, 2.0, nested=False)
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, cols
    try:
        p = subprocess.Popen([sys.executable, "-m", "livestems.stream", "separate", str(lib),
                              "-o", str(out), "--workers", "1"], stdout=subprocess.PIPE,
                             stderr=slave, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        stdout, _ = p.communicate(timeout=300)
    finally:
        os.close(master)
    err = b"".join(chunks).decode(errors="replace")
    assert p.returncode == 0, err
    assert "Warning" not in err and "Traceback" not in err, err
    assert "0/4 files" in err and "3/4 files" in err, err
    assert "0:00:00/0:00:08 of audio" in err and "x real time" in err, err
    # time left is h:mm:ss or ?, never negative
    import re

    lefts = re.findall(r"elapsed, (\S+) left", err)
    assert lefts and all(t == "?" or re.fullmatch(r"\d+:\d\d:\d\d", t) for t in lefts), lefts
    assert "?" in lefts and any(t != "?" for t in lefts), lefts
    assert "summary: 4 done" in stdout


def _worker_pids(pid: int) -> list[int]:
    """The run's spawned worker processes (not multiprocessing's resource tracker)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for k in kids:
        try:
            cmd = Path(f"/proc/{k}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            found.append(int(k))
    return found


def test_a_worker_killed_mid_file_fails_nothing_its_file_is_retried(tmp_path):
    """A worker process dies (SIGKILL, as the kernel's out-of-memory killer sends): its file is
    retried in a fresh worker, the others go on, the run ends with every file written."""
    lib, out = tmp_path / "lib", tmp_path / "out"
    paths = _library(lib, 6, 20.0, nested=False)
    p = _start(lib, out, "--workers", "2")
    try:
        assert _wait_for(lambda: len(_worker_pids(p.pid)) == 2 or p.poll() is not None, 240)
        # once the first track is out, the workers are inside the next files
        _wait_for(lambda: bool(_visible_outputs(out)) or p.poll() is not None, 240)
        victims = _worker_pids(p.pid)
        assert victims, "the run finished before a worker could be killed"
        os.kill(victims[0], signal.SIGKILL)
        stdout, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err, err
    assert f"summary: {len(paths)} done" in stdout, stdout
    _check_no_partial_output(lib, out, paths)
    assert len(_visible_outputs(out)) == len(paths)
    assert not _partials(out)


def test_a_file_its_dead_worker_wrote_before_reporting_counts_as_done_not_skipped(tmp_path):
    """The race the kill test above can hit: a worker writes its file completely, then dies
    before it reports. The retry finds the output complete; the run wrote it, so the summary
    counts it done (with a note), and no line claims '0 Hz' or '0 file(s)'."""
    import io

    from livestems.stream.apps import library as L

    lib, out = tmp_path / "lib", tmp_path / "out"
    paths = _library(lib, 2, 3.0, nested=False)
    tasks, problems = L.collect_tasks([str(lib)], out)
    assert not problems and len(tasks) == 2

    def dies_after_writing_the_first(todo, options, workers):
        for i, task in enumerate(todo):
            first = L.process_task(task, options)
            if i == 0:  # its report is lost with the worker; the retry runs the file again
                assert first.status == "done"
                yield L._retry_outcome(L.process_task(task, options))
            else:
                yield first

    stdout, stderr = io.StringIO(), io.StringIO()
    summary = L.run_library(tasks, L.Options(), backend=dies_after_writing_the_first,
                            workers=1, stdout=stdout, stderr=stderr)
    text = stdout.getvalue()
    assert summary.exit_code == 0
    assert "summary: 2 done, 0 skipped" in text, text
    assert " at 0 Hz" not in text and "; 0 file(s)" not in text, text
    assert "output complete, not redone" in text, text
    assert "the retry found the output complete" in stderr.getvalue()
    for p in paths:
        _assert_complete(_target(lib, out, p), 3 * 44100)
