"""The trainer: exact resume, atomic checkpoints, bad input, distillation, outputs, the CLI.

Everything runs rt-tiny on tiny data (a few 1 s songs of tones and noise at 44.1 kHz, 0.1 s
segments, batches of 2), so each step takes tens of milliseconds on one CPU thread.
"""

from __future__ import annotations

import json
import shutil
import os
import random
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from livestems.model.nets.checkpoint import load_model, save_model
from livestems.model.nets.hybrid.causal import CausalHybridNet
from livestems.model.nets.presets import PRESETS
from livestems.model.training.trainer import (
    TrainConfig,
    TrainError,
    list_checkpoints,
    load_checkpoint,
    load_teacher,
    multires_stft_loss,
    save_checkpoint,
    separation_loss,
    train,
)

SR = 44100
STEMS = ("vocals", "drums", "bass", "other")


def song(j: int, seconds: float = 1.0) -> dict:
    """Four distinguishable stems [T, 2] for song j: a sung-ish tone, clicks, a low tone,
    noise."""
    rng = np.random.default_rng(j)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    v = 0.2 * np.sin(2 * np.pi * (300 + 40 * j) * t) * (1 + 0.3 * np.sin(2 * np.pi * 5 * t))
    d = np.zeros(n)
    d[:: SR // 4] = 0.8
    d = np.convolve(d, np.exp(-np.arange(400) / 60.0))[:n]
    b = 0.3 * np.sin(2 * np.pi * (55 + 5 * j) * t)
    o = 0.05 * rng.standard_normal(n)
    pan = lambda x, g: np.stack([x * g, x * (1.2 - g)], axis=1)
    return {"vocals": pan(v, 0.6), "drums": pan(d, 0.5), "bass": pan(b, 0.6),
            "other": pan(o, 0.3 + 0.1 * j)}


def write_musdb(root, seeds, skip=None):
    for j in seeds:
        folder = root / f"{j:06d}"
        folder.mkdir(parents=True)
        stems = song(j)
        for name, x in stems.items():
            if skip and skip == (j, name):
                continue
            sf.write(folder / f"{name}.wav", x, SR, subtype="FLOAT")
        sf.write(folder / "mixture.wav", sum(stems.values()), SR, subtype="FLOAT")
        (folder / "song.json").write_text(json.dumps({"seed": j}))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_musdb(root / "train", range(3)), write_musdb(root / "valid", [10000])


def config(data, out, **kw) -> TrainConfig:
    train_dir, valid_dir = data
    base = {"data": str(train_dir), "out": str(out), "preset": "rt-tiny",
            "valid": str(valid_dir), "steps": 20, "batch_size": 2, "segment_seconds": 0.1,
            "lr": 1e-3, "warmup_steps": 3, "schedule": "cosine", "checkpoint_every": 5,
            "valid_every": 10, "valid_seconds": 1.0, "threads": 1, "log_every": 1000}
    base.update(kw)
    return TrainConfig(**base)


def run(cfg):
    return train(cfg, progress=False, log=lambda m: None)


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def scramble_global_rngs():
    torch.manual_seed(12345)
    np.random.seed(54321)
    random.seed(999)


def test_resume_is_bit_exact(data, tmp_path):
    """20 steps straight == 10 steps, a new process state, then 10 more from the checkpoint:
    the same weights, optimizer moments, schedule, RNG states and losses, bit for bit."""
    straight = run(config(data, tmp_path / "a"))
    assert straight["step"] == 20 and len(straight["losses"]) == 20

    first = run(config(data, tmp_path / "b", stop_after_steps=10))
    assert first["step"] == 10 and first["stopped"] == "stop_after_steps"
    scramble_global_rngs()  # resume must restore them, not inherit the process's
    second = run(config(data, tmp_path / "b"))
    assert second["start_step"] == 10 and second["step"] == 20

    assert first["losses"] + second["losses"] == straight["losses"]  # exact floats
    # the last two checkpoints are kept, the older ones removed
    assert [p.name for p in list_checkpoints(tmp_path / "a")] == ["step-00000015",
                                                                  "step-00000020"]
    meta_a, tens_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "step-00000020")
    meta_b, tens_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000020")
    assert sorted(tens_a) == sorted(tens_b)
    assert any(k.startswith("optim.") for k in tens_a) and "rng.torch" in tens_a
    for k in tens_a:
        assert torch.equal(tens_a[k], tens_b[k]), k
    for key in ("step", "optimizer", "scheduler", "rng"):
        assert meta_a[key] == meta_b[key], key
    assert meta_a["extra"]["best"] == meta_b["extra"]["best"]
    assert meta_a["scheduler"]["last_epoch"] == 20
    # and the run's log holds each step's loss once, equal to the straight run's
    def logged(out):
        return [(r["step"], r["loss"]) for r in read_log(out) if "loss" in r]
    assert logged(tmp_path / "b") == logged(tmp_path / "a") == straight["losses"]


def test_the_trainer_changes_the_model_and_a_different_seed_differs(data, tmp_path):
    """Guards the exactness test against a trainer that does nothing (or ignores seeds)."""
    a = run(config(data, tmp_path / "a", steps=3, valid=None))
    b = run(config(data, tmp_path / "b", steps=3, valid=None, seed=1))
    _, ta = load_checkpoint(a["checkpoint"])
    from livestems.model.nets.presets import build_preset_net

    init = build_preset_net("rt-tiny", seed=0).state_dict()
    moved = [k for k, v in init.items() if not torch.equal(ta[f"model.{k}"], v)]
    assert len(moved) > len(init) // 2
    assert a["losses"] != b["losses"]


def test_corrupt_checkpoint_is_a_clear_error_and_the_previous_one_is_kept(data, tmp_path):
    out = tmp_path / "run"
    run(config(data, out, stop_after_steps=10, valid=None))
    ckpts = list_checkpoints(out)
    assert [p.name for p in ckpts] == ["step-00000005", "step-00000010"]
    blob = ckpts[-1] / "state.safetensors"
    blob.write_bytes(blob.read_bytes()[:-100])  # truncated, as by a full disk
    with pytest.raises(TrainError) as err:
        run(config(data, out, valid=None))
    msg = str(err.value)
    assert "step-00000010 is corrupt" in msg and "sha256" in msg
    assert "previous checkpoint" in msg and "step-00000005" in msg and "--resume-from" in msg
    assert (ckpts[0] / "state.safetensors").is_file()  # nothing was deleted
    res = run(config(data, out, valid=None, resume_from=str(ckpts[0]), stop_after_steps=1))
    assert res["start_step"] == 5 and res["step"] == 6
    # the log forgets the steps after the checkpoint it resumed from: each step once
    steps = [r["step"] for r in read_log(out) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_unparseable_checkpoint_json(data, tmp_path):
    out = tmp_path / "run"
    run(config(data, out, stop_after_steps=5, valid=None))
    (list_checkpoints(out)[-1] / "state.json").write_text("{not json")
    with pytest.raises(TrainError, match="(?s)state.json is not JSON.*No other checkpoint"):
        run(config(data, out, valid=None))


def test_checkpoint_write_is_atomic(data, tmp_path, monkeypatch):
    """A write that fails before the rename leaves the old checkpoints as they were, and a
    left-over temporary folder is never taken for a checkpoint."""
    out = tmp_path / "run"
    res = run(config(data, out, stop_after_steps=5, valid=None))
    before = list_checkpoints(out)
    net = CausalHybridNet(["drums", "bass", "other", "vocals"], **PRESETS["rt-tiny"].args)
    opt = torch.optim.Adam(net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def fail(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(out, 6, net, opt, sched, {})
    monkeypatch.undo()
    assert list_checkpoints(out) == before
    assert any(p.name.startswith(".tmp-step-") for p in (out / "checkpoints").iterdir())
    again = run(config(data, out, stop_after_steps=1, valid=None))
    assert again["start_step"] == res["step"] == 5


def test_changed_options_on_resume_are_refused(data, tmp_path):
    out = tmp_path / "run"
    run(config(data, out, stop_after_steps=2, valid=None))
    with pytest.raises(TrainError, match=r"(?s)batch_size: the run uses 2, got 3.*new --out"):
        run(config(data, out, valid=None, batch_size=3))


def test_budget_stops_cleanly_with_a_checkpoint(data, tmp_path):
    t0 = time.monotonic()
    res = run(config(data, tmp_path / "run", steps=10_000, schedule="constant", valid=None,
                     budget_minutes=0.02))
    assert res["stopped"] == "budget" and 1 <= res["step"] < 10_000
    assert time.monotonic() - t0 < 30
    assert list_checkpoints(tmp_path / "run")[-1].name == f"step-{res['step']:08d}"
    assert (tmp_path / "run" / "model.json").is_file()


def test_outputs_are_model_files_with_provenance(data, tmp_path):
    from livestems.model.nets.hybrid.streaming import StreamingHybrid
    from livestems.model.nets.registry import load_separator

    out = tmp_path / "run"
    res = run(config(data, out, steps=10, valid_every=5))
    assert [v["step"] for v in res["valid"]] == [5, 10]
    for name in ("model", "best"):
        sep = load_separator(str(out / f"{name}.json"))
        assert isinstance(sep, StreamingHybrid) and sep.sources == ("drums", "bass", "other",
                                                                    "vocals")
    prov = json.loads((out / "model.json").read_text())["provenance"]
    assert prov["steps"] == 10 and prov["seed"] == 0 and prov["preset"] == "rt-tiny"
    assert prov["data"]["dir"] == str(data[0].resolve())
    assert prov["data"]["synth_seeds"] == [0, 2, 3]
    assert prov["wall_seconds"] > 0 and prov["hardware"]["torch_threads"] == 1
    assert np.isfinite(prov["loss"]["train_ema"])
    assert prov["loss"]["best_valid"]["step"] in (5, 10)
    assert "commit" in prov["git"]
    # the final weights are the last checkpoint's
    _, tens = load_checkpoint(res["checkpoint"])
    net = load_separator(str(out / "model.json")).module
    for k, v in net.state_dict().items():
        assert torch.equal(v, tens[f"model.{k}"]), k
    best = res["best_valid"]
    assert best["mean"] == max(v["valid"]["mean"] for v in res["valid"])


def test_validation_that_shares_songs_with_training_is_refused(data, tmp_path):
    # a copy of a training song elsewhere is caught by its synth seed
    copy = tmp_path / "copy"
    shutil.copytree(data[0] / "000001", copy / "000001")
    with pytest.raises(TrainError, match="(?s)share 1 synthetic song.*seeds >= 10000"):
        run(config(data, tmp_path / "run", valid=str(copy)))
    with pytest.raises(TrainError, match="is the training data"):
        run(config(data, tmp_path / "run2", valid=str(data[0])))
    solo = tmp_path / "solo"
    shutil.copytree(data[0] / "000002", solo / "000002")
    with pytest.raises(TrainError, match="every track is in the validation set"):
        run(config((solo, data[1]), tmp_path / "run3", valid=str(solo / "000002")))


def test_one_song_of_the_training_folder_validates_and_is_left_out(data, tmp_path):
    """--data real --valid real/6.Caesium: that song is held out of training (with a note),
    the rest trains."""
    notes = []
    res = train(config(data, tmp_path / "run", valid=str(data[0] / "000001"), steps=2,
                       valid_every=2), progress=False, log=notes.append)
    assert res["step"] == 2
    assert any("1 track(s) of the validation set left out of training (000001)" in n
               for n in notes)
    prov = json.loads((tmp_path / "run" / "model.json").read_text())["provenance"]
    assert prov["data"]["tracks"] == 2


def test_several_data_sets_with_shares(data, tmp_path):
    other = write_musdb(tmp_path / "other", [500, 501])
    cfg = config(data, tmp_path / "run", steps=2)
    cfg.data = [f"{data[0]}:0.7", f"{other}:0.3"]
    res = train(cfg, progress=False, log=lambda m: None)
    assert res["step"] == 2
    sets = json.loads((tmp_path / "run" / "model.json").read_text())["provenance"]["data"]["sets"]
    assert [(s["tracks"], s["share"]) for s in sets] == [(3, pytest.approx(0.7)),
                                                        (2, pytest.approx(0.3))]
    for bad, why in ((f"{data[0]}:0", "must be a positive number"),
                     ([f"{data[0]}:0.5", str(other)], "give a share to every folder")):
        with pytest.raises(TrainError, match=why):
            cfg = config(data, tmp_path / "bad")
            cfg.data = bad
            run(cfg)


def test_bad_tracks_skipped_with_a_note_or_strict_error(data, tmp_path):
    root = write_musdb(tmp_path / "d", [0, 1], skip=(1, "bass"))
    notes = []
    res = train(config((root, data[1]), tmp_path / "run", steps=2, valid=None),
                progress=False, log=notes.append)
    assert res["step"] == 2
    assert any("skipped 000001: missing stem file(s) bass.wav" in n for n in notes)
    with pytest.raises(TrainError, match="(?s)000001.*missing stem.*without --strict"):
        run(config((root, data[1]), tmp_path / "run2", steps=2, valid=None, strict=True))


def save_teacher(path, sources, seed=7):
    torch.manual_seed(seed)
    net = CausalHybridNet(list(sources), **PRESETS["rt-tiny"].args)
    return save_model(net, path, provenance={"test": "teacher"}), net


def test_teacher_with_other_sources_is_refused(data, tmp_path):
    bad, _ = save_teacher(tmp_path / "two", ["vocals", "accompaniment"])
    with pytest.raises(TrainError) as err:
        run(config(data, tmp_path / "run", teacher=str(bad), valid=None))
    msg = str(err.value)
    assert "separates into vocals, accompaniment" in msg
    assert "missing drums, bass, other" in msg and "extra accompaniment" in msg
    assert "Fix:" in msg
    with pytest.raises(TrainError, match="separates into vocals, accompaniment"):
        load_teacher("center", ["drums", "bass", "other", "vocals"], SR, "cpu")


def test_distillation_from_a_teacher_on_unlabelled_music(data, tmp_path):
    # the teacher's stems are in another order than the student's: targets are reordered
    path, tnet = save_teacher(tmp_path / "teacher", ["vocals", "drums", "bass", "other"])
    student = ["drums", "bass", "other", "vocals"]
    teacher = load_teacher(str(path), student, SR, "cpu")
    x = torch.randn(2, 2, 4410) * 0.1
    with torch.no_grad():
        want = tnet.eval()(x)[:, [1, 2, 3, 0]]
    assert torch.equal(teacher(x), want)

    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    for j in range(2):  # plain songs: no stems anywhere
        sf.write(music / "album" / f"song{j}.flac", sum(song(j).values()) * 0.5, SR)
    sf.write(music / "low_rate.wav", np.zeros((4000, 2)), 22050)
    (music / "stems_only").mkdir()
    sf.write(music / "stems_only" / "vocals.wav", np.zeros((4000, 2)), SR)
    notes = []
    res = train(config((music, data[1]), tmp_path / "run", teacher=str(path), steps=4,
                       valid_every=4), progress=False, log=notes.append)
    assert res["step"] == 4 and all(np.isfinite(v) for _, v in res["losses"])
    assert any("low_rate.wav: sample rate 22050 Hz, expected 44100 Hz" in n for n in notes)
    assert any("stems_only: holds stems but no mixture" in n for n in notes)
    prov = json.loads((tmp_path / "run" / "model.json").read_text())["provenance"]
    assert prov["data"]["kind"].startswith("unlabelled") and prov["data"]["files"] == 2
    assert str(path) in prov["data"]["teacher"]
    # the first step's loss is the L1 distance to the teacher's output on that batch
    from livestems.model.training.trainer import MixtureSegments, scan_audio

    ds = MixtureSegments(scan_audio(music, SR), int(0.1 * SR), seed=0)
    mix = torch.stack([ds[0], ds[1]])
    from livestems.model.nets.presets import build_preset_net

    with torch.no_grad():
        loss0 = separation_loss(build_preset_net("rt-tiny", 0)(mix), teacher(mix))
    assert res["losses"][0][1] == pytest.approx(float(loss0), rel=1e-6)


def test_losses():
    torch.manual_seed(0)
    ref = torch.randn(2, 4, 2, 4096)
    est = ref + 0.1 * torch.randn_like(ref)
    assert float(separation_loss(est, ref)) == pytest.approx(float((est - ref).abs().mean()))
    assert float(multires_stft_loss(ref, ref)) == pytest.approx(0.0, abs=1e-6)
    assert float(multires_stft_loss(est, ref)) > 0.01
    both = separation_loss(est, ref, stft_weight=0.5)
    assert float(both) == pytest.approx(float(separation_loss(est, ref))
                                        + 0.5 * float(multires_stft_loss(
                                            est.mean(-2), ref.mean(-2), overlap=2)), rel=1e-5)
    # the spectral term sees what the waveform L1 does not weigh: a stem right in level but
    # smeared over other bins scores worse than it
    noisy_mid = ref + 0.05 * torch.randn_like(ref)
    assert float(multires_stft_loss(noisy_mid.mean(-2), ref.mean(-2), overlap=2)) > 0.01
    with pytest.raises(ValueError, match="shapes differ"):
        separation_loss(est[:, :2], ref)


def test_invalid_options_are_listed():
    cfg = TrainConfig(data="x", out="y", preset="huge", batch_size=0, schedule="linear")
    with pytest.raises(TrainError) as err:
        cfg.check()
    msg = str(err.value)
    assert "--preset must be one of rt-tiny" in msg and "--batch-size must be >= 1, got 0" in msg
    assert "--schedule must be 'constant' or 'cosine'" in msg


def test_cli(data, tmp_path, capsys):
    from livestems.stream.cli.main import main

    train_dir = data[0]
    args = ["train", "--data", str(train_dir), "--out", str(tmp_path / "run"), "--steps", "3",
            "--batch-size", "2", "--segment-seconds", "0.1", "--threads", "1", "--quiet"]
    assert main(args) == 0
    assert "model.json" in capsys.readouterr().out
    args[args.index("--steps") + 1] = "4"
    assert main(args) == 0  # resumes, one more step
    assert json.loads((tmp_path / "run" / "model.json").read_text())["provenance"]["steps"] == 4
    bad, _ = save_teacher(tmp_path / "two", ["vocals", "accompaniment"])
    args[4] = str(tmp_path / "run2")
    assert main(args + ["--teacher", str(bad)]) == 2
    assert "error: teacher" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training_resumes(data, tmp_path):
    first = run(config(data, tmp_path / "run", device="cuda", stop_after_steps=3, valid=None))
    second = run(config(data, tmp_path / "run", device="cuda", steps=6, valid=None))
    assert first["step"] == 3 and second["start_step"] == 3 and second["step"] == 6
    prov = json.loads((tmp_path / "run" / "model.json").read_text())["provenance"]
    assert "gpu" in prov["hardware"]


def test_sigterm_stops_cleanly_with_a_checkpoint(data, tmp_path):
    """What a scheduler or `kill` does to a long run: the step finishes, a checkpoint and
    model.json are written, the exit code says 'interrupted', and the run resumes."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "livestems.stream", "train", "--data", str(data[0]), "--out",
           str(out), "--batch-size", "2", "--segment-seconds", "0.1", "--threads", "1",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is training
            log = out / "log.jsonl"
            if log.is_file() and log.read_text().count('"loss"') >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(15)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopped at step" in err and "(SIGTERM)" in err
    steps = [r["step"] for r in read_log(out) if "loss" in r]
    assert list_checkpoints(out)[-1].name == f"step-{steps[-1]:08d}"
    assert (out / "model.json").is_file()
    res = run(config(data, out, valid=None, schedule="constant", warmup_steps=0, lr=3e-4,
                     steps=100_000, stop_after_steps=1))
    assert res["start_step"] == steps[-1]


def test_init_fine_tunes_from_a_model_file_and_refuses_other_architectures(data, tmp_path):
    """--init starts from a model file's weights (the shipped default, say): step 0 of the new
    run is those weights, and the run records where it started."""
    start, start_net = save_teacher(tmp_path / "start", ["drums", "bass", "other", "vocals"])
    out = tmp_path / "ft"
    run(config(data, out, init=str(start), steps=2, valid=None, lr=1e-12, warmup_steps=0,
               schedule="constant"))
    tuned = load_model(out / "model.json")
    # a negligible learning rate: the fine-tuned weights are still (almost) the start's
    for k, v in start_net.state_dict().items():
        assert torch.allclose(tuned.state_dict()[k], v, atol=1e-6), k
    prov = json.loads((out / "model.json").read_text())["provenance"]
    assert prov["init_from"]["model"] == str(start) and prov["options"]["init"] == str(start)
    # a model of another architecture (rt-small's channels) is refused with the fix
    torch.manual_seed(0)
    other = save_model(CausalHybridNet(["drums", "bass", "other", "vocals"],
                                       **PRESETS["rt-small"].args), tmp_path / "small")
    with pytest.raises(TrainError, match="not preset rt-tiny's.*Fix: pass the --preset"):
        run(config(data, tmp_path / "ft2", init=str(other), steps=1, valid=None))
    two, _ = save_teacher(tmp_path / "two", ["vocals", "accompaniment"])
    with pytest.raises(TrainError, match="separating into vocals, accompaniment"):
        run(config(data, tmp_path / "ft3", init=str(two), steps=1, valid=None))
