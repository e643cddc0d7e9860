"""The singers of `livestems synth --voices/--real-vocals`: Festival, HTS and flite voices driven
along the melody, real vocal stems moved in pitch, the per-seed choice, missing-voice fallback.

Pitch is measured on the audio with WORLD Harvest (an estimator the singer does not use:
singing analyses with DIO + StoneMask); nothing is mocked. The voice packages come from the
Makefile's DEBS (CI installs them); a voice missing here is skipped with its package named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from livestems.model.training.synth import SOURCES, render_song
from livestems.model.training.synth.compose import compose
from livestems.model.training.synth.compose import NOTE_NAMES, SCALES
from livestems.model.training.synth.realvocal import (RealVocalError, find_vocal_stems, key_shift,
                                             read_excerpt, shift_voice)
from livestems.model.training.synth.singers import REAL, VoicePool, sing_lead
from livestems.model.training.synth.speakers import (VOICES, SpeakerError, _missing_reason,
                                            available_voices, lyric_in, prefetch, speak)
from livestems.model.training.synth.voice import Singer, SungNote, sing_phrase
from livestems.stream.cli.main import main

SR = 44100
HUMAN = [v for v in VOICES if v.engine != "espeak"]
TRAIN_REAL = Path(__file__).resolve().parents[4] / "shared" / "data" / "train-real"


def _need(voice):
    why = _missing_reason(voice)
    if why is not None:
        pytest.skip(f"{voice.key}: {why} (apt-get install {voice.package}; make deps does)")


def _note_errors(y, t0, notes, octave=0):
    """Sung minus wanted pitch (semitones) in the middle of each note; NaN where unvoiced."""
    import pyworld as pw

    f0, t = pw.harvest(y, SR, f0_floor=70.0, f0_ceil=900.0, frame_period=10.0)
    t = t + t0
    out = []
    for nt in notes:
        mid = (t > nt.start_s + 0.12) & (t < nt.end_s - 0.08) & (f0 > 0)
        out.append(12 * np.log2(np.median(f0[mid]) / 440.0) + 69 - (nt.midi + octave)
                   if mid.sum() >= 3 else np.nan)
    return np.array(out)


def _median_f0(y):
    import pyworld as pw

    f0, _ = pw.harvest(y, SR, f0_floor=70.0, f0_ceil=900.0, frame_period=10.0)
    return f0


@pytest.mark.parametrize("voice", HUMAN, ids=lambda v: v.key)
def test_each_human_voice_sings_the_melody(voice):
    _need(voice)
    base = 60 if voice.sex == "f" else 50
    melody = [base, base + 4, base + 7, base + 2]
    words = ["hold", "night", "love", "day"]
    notes = [SungNote(0.3 + 0.55 * i, 0.3 + 0.55 * i + 0.45, m, w, 0.9)
             for i, (m, w) in enumerate(zip(melody, words))]
    t0, y = sing_phrase(notes, Singer(voice.name, 1.0, vibrato_st=0.2, engine=voice.engine),
                        np.random.default_rng(0), SR)
    assert np.all(np.isfinite(y))
    rms = float(np.sqrt(np.mean(y**2)))
    assert rms > 3e-3, f"{voice.key} is (nearly) silent: RMS {rms:.2e}"
    err = _note_errors(y, t0, notes)
    assert np.all(np.abs(err) < 0.4), f"{voice.key} sang {np.round(err, 2)} semitones off"


def test_words_are_spoken_in_the_voice_language_and_batches_do_not_change_them():
    assert lyric_in("love", "en") == "love"
    assert lyric_in("love", "it") == lyric_in("love", "it") != "love"
    with pytest.raises(SpeakerError, match="no lyric words"):
        lyric_in("love", "xx")
    v = next(v for v in HUMAN if v.key == "festival:kal_diphone")
    _need(v)
    single, sr = speak(v, "fire")
    from livestems.model.training.synth import speakers

    speakers._CACHE.clear()
    prefetch(v, ["night", "fire", "gold"])  # one Festival process, three utterances
    batched, sr2 = speak(v, "fire")
    assert sr == sr2 == 16000 and np.array_equal(single, batched)


@pytest.mark.parametrize("engine", ["festival", "hts", "flite", "espeak"])
def test_sing_lead_follows_the_composed_melody(engine):
    """The lead track of a whole song is at the composed pitches (moved by whole octaves into
    the voice's range), is deterministic, and is not silent."""
    pool = VoicePool.build((engine,))
    if not pool.voices:
        pytest.skip(f"no {engine} voice installed")
    song = compose(np.random.default_rng(5), 4.0)  # 12 notes, 6 held ones, a harmony
    n_all = int(np.ceil(song.render_seconds * SR))

    def lead():
        tracks, info = sing_lead(song, pool, np.random.default_rng(1), np.random.default_rng(2),
                                 SR, n_all)
        return next(a for _, r, a in tracks if r == "vocals"), info

    audio, info = lead()
    again, info2 = lead()
    assert np.array_equal(audio, again) and info == info2
    assert info["engine"] == engine and info["octave_shift"] % 12 == 0
    notes = [nt for ph in song.vocal_phrases for nt in ph if nt.end_s - nt.start_s > 0.3]
    assert len(notes) >= 3
    err = _note_errors(audio.mean(axis=0), 0.0, notes, info["octave_shift"])
    ok = np.abs(err[np.isfinite(err)]) < 0.5
    assert ok.size >= 0.8 * len(notes) and ok.mean() >= 0.8, \
        f"{info['voice']}: {np.round(err, 2)} semitones off the melody"


def test_voice_is_chosen_per_seed_deterministically(tmp_path):
    pool = VoicePool.build(("festival", "hts", "flite", "espeak"))
    picks = [pool.pick(np.random.default_rng(np.random.SeedSequence(s).spawn(5)[4]))
             for s in range(40)]
    assert len({p.key for p in picks}) >= 8, "40 seeds should meet many voices"
    assert {p.engine for p in picks} == set(pool.engines)
    a = render_song(20_000, 2.5, SR, voices=pool)
    b = render_song(20_000, 2.5, SR, voices=pool)
    for s in SOURCES:
        assert np.array_equal(a.stems[s], b.stems[s]), s
    assert a.info == b.info and a.info["singer"]["engine"] in pool.engines
    assert np.sqrt(np.mean(a.stems["vocals"].astype(np.float64) ** 2)) > 1e-3
    # the default renderer is untouched by the pool machinery: no pool, no pool in song.json
    assert "voice_pool" not in render_song(20_000, 1.0, SR).info


# --------------------------------------------------------------------------------------------
# real vocal stems


@pytest.fixture(scope="module")
def stem_folder(tmp_path_factory):
    """A training folder with one vocal stem: a human-recorded voice (Festival kal) sung
    along a melody with held notes, written as 48 kHz FLAC like the real stems' rate."""
    v = next(v for v in HUMAN if v.key == "festival:kal_diphone")
    if _missing_reason(v):
        v = next(v for v in HUMAN if v.key == "flite:kal16")
        _need(v)
    notes = [SungNote(0.3 + 0.7 * i, 0.3 + 0.7 * i + 0.6, m, w, 0.9)
             for i, (m, w) in enumerate(zip([52, 55, 59, 57, 54], ["oh", "love", "day", "so", "go"]))]
    t0, y = sing_phrase(notes, Singer(v.name, 1.0, vibrato_st=0.1, engine=v.engine),
                        np.random.default_rng(3), 48000)
    y = np.concatenate([np.zeros(int(max(t0, 0) * 48000)), y])
    root = tmp_path_factory.mktemp("train") / "stems"
    (root / "song1").mkdir(parents=True)
    sf.write(root / "song1" / "vocals.flac", np.stack([y, y], axis=1) * 0.5, 48000)
    (root / "song2").mkdir()
    sf.write(root / "song2" / "vocals.flac", np.stack([y, y], axis=1)[::-1] * 0.5, 48000)
    return root


@pytest.mark.parametrize("semitones,formant", [(3, 1.1), (-4, 0.9), (7, 1.0)])
def test_shift_voice_moves_pitch_by_the_requested_semitones(stem_folder, semitones, formant):
    x, sr = sf.read(stem_folder / "song1" / "vocals.flac", dtype="float64")
    x = x.mean(axis=1)
    import soxr

    x = soxr.resample(x, sr, SR)
    (y,) = shift_voice(x, SR, semitones, formant)
    assert y.shape == x.shape and np.sqrt(np.mean(y**2)) > 0.3 * np.sqrt(np.mean(x**2))
    fa, fb = _median_f0(x), _median_f0(y)
    both = (fa > 0) & (fb > 0)
    assert both.mean() > 0.3
    moved = float(np.median(12 * np.log2(fb[both] / fa[both])))
    assert abs(moved - semitones) < 0.15, f"asked {semitones} st, measured {moved:.2f}"


def test_double_take_is_detuned_by_its_cents(stem_folder):
    x, sr = sf.read(stem_folder / "song1" / "vocals.flac", dtype="float64")
    x = x.mean(axis=1)[::1]
    import soxr

    x = soxr.resample(x, sr, SR)
    a, b = shift_voice(x, SR, 0.0, 1.0, (0.0, 30.0))
    fa, fb = _median_f0(a), _median_f0(b)
    both = (fa > 0) & (fb > 0)
    assert abs(float(np.median(1200 * np.log2(fb[both] / fa[both]))) - 30.0) < 8.0


def _in_scale_share(f0, tonic, mode):
    midi = 69 + 12 * np.log2(f0[f0 > 0] / 440.0)
    scale = {(tonic + d) % 12 for d in SCALES[mode]}
    return float(np.mean([int(round(m)) % 12 in scale for m in midi]))


@pytest.mark.parametrize("tonic,mode", [(0, "major"), (1, "minor"), (6, "major")])
def test_key_shift_puts_a_real_take_into_the_song_key(stem_folder, tonic, mode):
    """The stem sings E G B A F# (E minor); moved by key_shift it lies in any asked key,
    and a singer 30 cents sharp gets a -30 cent correction."""
    x, sr = sf.read(stem_folder / "song1" / "vocals.flac", dtype="float64")
    import pyworld as pw

    x = x.mean(axis=1)
    f0, t = pw.dio(x, sr, f0_floor=60.0, f0_ceil=1000.0, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, sr)
    semis, cents = key_shift(f0, tonic, mode)
    assert -6 <= semis <= 5 and abs(cents) < 15
    moved = f0 * 2 ** ((semis + cents / 100) / 12)
    assert _in_scale_share(moved, tonic, mode) > 0.85
    assert _in_scale_share(f0, tonic, mode) < 0.85 or semis == 0
    semis2, cents2 = key_shift(f0 * 2 ** (30 / 1200), tonic, mode)
    assert semis2 == semis and abs(cents2 - (cents - 30)) < 3


def test_real_vocal_folders_are_checked(stem_folder, tmp_path):
    assert [p.parent.name for p in find_vocal_stems(stem_folder)] == ["song1", "song2"]
    assert [p.parent.name for p in find_vocal_stems(stem_folder, ["song1"])] == ["song2"]
    with pytest.raises(RealVocalError, match="does not exist"):
        find_vocal_stems(tmp_path / "nope")
    with pytest.raises(RealVocalError, match="no vocal stem"):
        find_vocal_stems(tmp_path)
    evalset = tmp_path / "data" / "real" / "song"
    evalset.mkdir(parents=True)
    sf.write(evalset / "vocals.flac", np.zeros((4800, 2)), 48000)
    with pytest.raises(RealVocalError, match="evaluation-only"):
        find_vocal_stems(evalset.parent)


def test_excerpts_land_where_the_singer_sings(stem_folder):
    x, sr, start = read_excerpt(stem_folder / "song1" / "vocals.flac", 1.0,
                                np.random.default_rng(0))
    assert sr == 48000 and x.shape == (48000,)
    n = 2400
    rms = np.sqrt(np.mean(x[: x.size // n * n].reshape(-1, n) ** 2, axis=1))
    assert np.mean(rms > 10 ** (-45 / 20)) >= 0.5


def test_songs_sung_by_real_stems(stem_folder):
    pool = VoicePool.build((), stem_folder)
    assert pool.engines == (REAL,)
    a = render_song(20_002, 2.5, SR, voices=pool)
    b = render_song(20_002, 2.5, SR, voices=pool)
    assert np.array_equal(a.stems["vocals"], b.stems["vocals"])
    s = a.info["singer"]
    assert s["engine"] == REAL and s["file"].endswith("vocals.flac")
    assert -6 <= s["semitones"] <= 5 and 0.7 < s["formant_shift"] < 1.4
    assert np.sqrt(np.mean(a.stems["vocals"].astype(np.float64) ** 2)) > 1e-3
    # moved into the song's key: most of the sung time is on notes of its scale
    tonic_name, mode = a.info["key"].split()
    f0 = _median_f0(a.stems["vocals"].astype(np.float64).mean(axis=0))
    assert _in_scale_share(f0, NOTE_NAMES.index(tonic_name), mode) > 0.75


@pytest.mark.skipif(not TRAIN_REAL.is_dir(), reason=f"{TRAIN_REAL} not here (shared data)")
def test_a_real_singer_from_train_real_moves_by_two_semitones():
    path = find_vocal_stems(TRAIN_REAL, ["6.Caesium"])[0]
    x, sr, _ = read_excerpt(path, 3.0, np.random.default_rng(5), min_active=0.7)
    import soxr

    x = soxr.resample(x, sr, SR)
    (y,) = shift_voice(x, SR, 2, 1.05)
    fa, fb = _median_f0(x), _median_f0(y)
    both = (fa > 0) & (fb > 0)
    assert both.sum() > 50
    assert abs(float(np.median(12 * np.log2(fb[both] / fa[both]))) - 2.0) < 0.2


# --------------------------------------------------------------------------------------------
# missing voices


@pytest.fixture()
def only_flite_on_path(tmp_path, monkeypatch):
    """A PATH that has flite and espeak-ng but no festival, as on a machine without it."""
    import shutil

    for prog in ("flite", "espeak-ng"):
        if shutil.which(prog) is None:
            pytest.skip(f"{prog} not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in ("flite", "espeak-ng"):
        (bin_dir / prog).symlink_to(shutil.which(prog))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/sbin:/sbin")


def test_missing_engine_is_skipped_with_one_note_each(only_flite_on_path):
    voices, notes = available_voices(["festival", "hts", "flite"])
    assert voices and {v.engine for v in voices} == {"flite"}
    assert len(notes) == 2 and all("apt-get install festival" in n for n in notes)
    assert "festvox-kallpc16k" in notes[0] and "festvox-us-slt-hts" in notes[1]
    with pytest.raises(SpeakerError, match="no voice of festival, hts is installed.*apt-get"):
        available_voices(["festival", "hts"])
    with pytest.raises(SpeakerError, match="unknown voice engine"):
        available_voices(["festival", "opera"])


def test_cli_voices_and_real_vocals(only_flite_on_path, stem_folder, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", str(out), "--tracks", "2", "--seconds", "1.5", "--seed", "20010",
                 "--voices", "festival,flite", "--real-vocals", str(stem_folder), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: voice engine festival") == 1
    for f in ("020010", "020011"):
        info = json.loads((out / f / "song.json").read_text())
        assert info["voice_pool"]["engines"] == ["flite", REAL]
        assert info["singer"]["engine"] in ("flite", REAL)
        vocals, sr = sf.read(out / f / "vocals.wav")
        assert sr == SR and np.abs(vocals).max() > 1e-3
    # resuming the folder with other singers would mix two sets: refused
    assert main(["synth", str(out), "--tracks", "2", "--seconds", "1.5", "--seed", "20010",
                 "--quiet"]) == 3
    assert "was sung by ['flite', 'real'], this run by ['espeak']" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--voices", "festival"]) == 2
    assert "no voice of festival is installed" in capsys.readouterr().err
    evalset = tmp_path / "data" / "real"
    (evalset / "s").mkdir(parents=True)
    sf.write(evalset / "s" / "vocals.flac", np.zeros((4800, 2)), 48000)
    assert main(["synth", str(tmp_path / "y"), "--real-vocals", str(evalset)]) == 2
    assert "evaluation-only" in capsys.readouterr().err
