"""Every CLI entry point that reads audio files, fed the generated bad-input corpus: each file
gets a clear error (exit != 0, an ``error: <file>: ...`` line, no traceback) or a correct
result (the input's exact length and rate), never a crash.

`separate` takes many inputs per run, so one subprocess covers the whole corpus. `eval` reads
MUSDB-layout folders (one folder holds a track per corpus file) and `.stem.mp4` files.
`karaoke`, `jack` and `midi` read no audio files.
"""

import shutil

import numpy as np
import soundfile as sf
from livestems.stream.io.files import read_audio
from livestems.stream.errors import LivestemsError
from relkit import run_cli

STEMS = ("vocals", "accompaniment")  # the default model `center`


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


def test_separate_over_the_whole_corpus(corpus, tmp_path):
    out, fmt = tmp_path / "out", "wav"
    proc = run_cli("separate", *(e.path for e in corpus), "-o", out)
    errors = _error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr  # some inputs are bad: exit code of AudioFileError
    for e in corpus:
        named = [ln for ln in errors if ln.startswith(f"error: {e.path}: ")]
        folder = out / e.path.stem
        if e.expect == "either":  # the decoder may salvage a damaged lossy stream
            if named:
                outcome, frames, rate = "error", None, None
            else:
                a = read_audio(e.path)
                outcome, frames, rate = "ok", a.frames, a.sample_rate
        else:
            outcome, frames, rate = e.expect, e.frames, e.rate
        if outcome == "error":
            assert len(named) == 1, (e.path.name, e.why, proc.stderr)
            assert not folder.exists(), e.path.name
            continue
        assert not named, (e.path.name, e.why, named)
        for stem in STEMS:
            info = sf.info(folder / f"{stem}.{fmt}")
            assert (info.frames, info.samplerate, info.channels) == (frames, rate, 2), \
                (e.path.name, stem, info)
            y, _ = sf.read(folder / f"{stem}.{fmt}", dtype="float32")
            assert np.isfinite(y).all(), e.path.name
        assert f"{e.path} -> {folder}" in proc.stdout, (e.path.name, proc.stdout)
    # nothing else failed, and no temporary or half-written folder was left behind
    assert len(errors) == sum(1 for ln in errors if any(f"error: {e.path}: " in ln
                                                        for e in corpus))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_separate_reports_what_it_changed(corpus, tmp_path):
    by_name = {e.path.name: e for e in corpus}
    picks = ["all_nan.wav", "half_inf.wav", "eight_channel.wav", "mono.wav", "rate_192k.wav"]
    proc = run_cli("separate", *(by_name[n].path for n in picks), "-o", tmp_path / "out",
                   "--format", "flac")
    assert proc.returncode == 0, proc.stderr
    for n in picks:
        e = by_name[n]
        info = sf.info(tmp_path / "out" / e.path.stem / "vocals.flac")
        assert (info.frames, info.samplerate) == (e.frames, e.rate)
    notes = proc.stderr
    assert "22050 NaN/Inf samples replaced by 0" in notes  # all_nan: every sample, 2 channels
    assert "11025 NaN/Inf samples replaced by 0" in notes  # half_inf
    assert "8 channels downmixed to stereo" in notes
    assert "mono input duplicated" in notes
    assert "resampled 192000 Hz -> 44100 Hz" in notes
    v, _ = sf.read(tmp_path / "out" / "all_nan" / "vocals.flac")
    np.testing.assert_array_equal(v, 0.0)  # NaN in, silence out (not NaN, not noise)


def test_reader_agrees_with_the_manifest(corpus):
    """The library call behind every entry point: typed error or exact length, in-process."""
    for e in corpus:
        try:
            a = read_audio(e.path)
        except LivestemsError as exc:
            assert e.expect in ("error", "either"), (e.path.name, e.why, str(exc))
            assert exc.exit_code == 2 and str(e.path) in str(exc)
            continue
        assert e.expect in ("ok", "either"), (e.path.name, e.why)
        assert a.samples.dtype == np.float32 and a.samples.shape[0] == 2
        assert np.isfinite(a.samples).all()
        if e.expect == "ok":
            assert (a.frames, a.sample_rate) == (e.frames, e.rate), e.path.name


# ----------------------------------------------------------------------------------------------
# eval


def _musdb_root(corpus, root, names=None):
    """One track folder per corpus file, its four stems all that file (so lengths agree)."""
    for e in corpus:
        if e.path.suffix not in (".wav", ".flac") or (names and e.path.name not in names):
            continue
        track = root / e.path.name.replace(".", "_")
        track.mkdir(parents=True)
        for stem in ("vocals", "drums", "bass", "other"):
            shutil.copy(e.path, track / f"{stem}{e.path.suffix}")
    return root


# corrupt FLAC stems crash `eval` with a libsndfile traceback (see docs/RELIABILITY.md)
EVAL_CRASHERS = ("corrupt_flac.flac", "trunc_flac.flac")


def test_eval_over_a_folder_of_bad_tracks_skips_them_by_name(corpus, tmp_path):
    names = [e.path.name for e in corpus if e.path.name not in EVAL_CRASHERS]
    root = _musdb_root(corpus, tmp_path / "musdb", names)
    proc = run_cli("eval", root, "--no-baselines", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    scored = set(report["tracks"])
    for e in corpus:
        track = e.path.name.replace(".", "_")
        if e.path.name not in names or e.path.suffix not in (".wav", ".flac"):
            continue
        skipped = f"skipped {track}:" in proc.stderr
        assert (track in scored) != skipped, (track, proc.stderr)
        if e.expect == "error" and e.path.name not in ("trunc_wav.wav", "huge_data_chunk.wav",
                                                       "rate_4k.wav"):
            assert skipped, (track, proc.stderr)


def test_eval_with_a_corrupt_flac_stem_is_a_clear_error(corpus, tmp_path):
    """In-process through the CLI's main(): an escaping exception is the traceback a user sees."""
    from livestems.stream.cli.main import main

    root = _musdb_root(corpus, tmp_path / "musdb", [*EVAL_CRASHERS, "good_flac.flac"])
    assert main(["eval", str(root), "--no-baselines", "--quiet"]) in (0, 2)


def test_eval_refuses_a_stem_mp4_that_is_not_one(corpus, tmp_path):
    """A single-stream FLAC renamed .stem.mp4 (then text renamed so: the first stops the run)."""
    fakes = []
    for name in ("good_flac.flac", "text_named.wav"):
        src = next(e.path for e in corpus if e.path.name == name)
        fakes.append(tmp_path / f"{src.stem}.stem.mp4")
        shutil.copy(src, fakes[-1])
    fake = fakes[0]
    proc = run_cli("eval", *fakes, "--no-baselines", "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and str(fake) in proc.stderr, proc.stderr
