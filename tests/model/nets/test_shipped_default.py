"""The model a user gets out of the box: rt-tiny with the trained weights shipped in
model/weights, chosen when no model is named, overridable with $LIVESTEMS_MODEL."""

import subprocess
import sys

import pytest
import torch

from livestems.model.nets.checkpoint import sha256_file
from livestems.model.evaluation.demo_song import make_demo_song
from livestems.model.nets.presets import PRESETS, build_preset
from livestems.model.nets.registry import SHIPPED, ModelError, load_separator
from livestems.stream.apps.demo import sdr_db


def test_default_is_rt_tiny_with_its_trained_weights(shipped_default):
    assert shipped_default == "rt-tiny"
    sep = load_separator(None)
    assert sep.sources == ("drums", "bass", "other", "vocals")
    # geometry of the preset: two STFT frames per step, 5.8 ms model latency
    assert (sep.hop, sep.latency_samples) == (PRESETS["rt-tiny"].hop,
                                              PRESETS["rt-tiny"].latency_samples)
    assert sep.latency_samples * 1000 / sep.sample_rate <= 12.0
    trained = dict(sep.module.state_dict())
    random = dict(build_preset("rt-tiny").module.state_dict())
    assert trained.keys() == random.keys()
    assert any(not torch.equal(trained[k], random[k]) for k in trained)
    prov = sep.module.provenance
    assert prov["preset"] == "rt-tiny" and prov["steps"] > 0
    # the shipped file names no path of the machine it was trained on
    assert "/work/" not in SHIPPED["rt-tiny"].read_text()


def test_shipped_weights_match_their_checksum_and_evaluation_record():
    import json

    cfg = json.loads(SHIPPED["rt-tiny"].read_text())
    assert sha256_file(SHIPPED["rt-tiny"].parent / cfg["weights"]) == cfg["sha256"]
    ev = cfg["provenance"]["evaluation"]
    # the card's claims (docs/MODEL.md): beats the mixture and the DSP baseline on the
    # held-out synthetic songs, and the mixture on the real clips' accompaniment
    synth = ev["held-out-synthetic"]
    for src, val in synth["sdr"].items():
        assert val > synth["baselines"]["mixture"]["sdr"][src], src
    for src in ("vocals", "accompaniment"):
        assert synth["sdr"][src] > synth["baselines"]["center"]["sdr"][src], src
    real = ev["real-clips"]
    assert real["sdr"]["accompaniment"] > real["baselines"]["mixture"]["sdr"]["accompaniment"]


def test_default_model_separates_music_it_never_saw(shipped_default):
    """A demo song (its own generator and seed, not the training data): the trained default
    pulls vocals and accompaniment out better than leaving the mixture as it is, while the
    same network with random weights does not."""
    song = make_demo_song(seconds=6.0, sample_rate=44100, seed=123)
    truth_v = song.stems["vocals"]
    truth_a = song.mixture - truth_v

    def score(sep):
        stems = sep.forward(song.mixture[None])[0]
        v = stems[list(sep.sources).index("vocals")]
        a = stems.sum(axis=0) - v
        return sdr_db(truth_v, v), sdr_db(truth_a, a)

    v, a = score(load_separator(None))
    floor_v, floor_a = sdr_db(truth_v, song.mixture), sdr_db(truth_a, song.mixture)
    assert v > floor_v + 1.0 and a > floor_a + 1.0, (v, a, floor_v, floor_a)
    rv, ra = score(build_preset("rt-tiny"))
    assert rv < v and ra < a


def test_livestems_model_variable_picks_the_default(monkeypatch):
    monkeypatch.setenv("LIVESTEMS_MODEL", "center")
    assert load_separator(None).sources == ("vocals", "accompaniment")
    monkeypatch.setenv("LIVESTEMS_MODEL", "no-such-model")
    with pytest.raises(ModelError, match="no-such-model"):
        load_separator(None)
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "separate", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert "LIVESTEMS_MODEL" in proc.stdout


def test_models_listing_says_which_preset_is_trained(shipped_default):
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "models"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = {ln.lstrip("* ").split()[0]: ln for ln in proc.stdout.splitlines()
             if ln.strip() and not ln.startswith("(")}
    assert lines["rt-tiny"].startswith("*")
    assert "trained on synthetic multitracks" in lines["rt-tiny"]
    assert "untrained" in lines["rt-small"]


def test_missing_shipped_weights_is_a_clear_error(shipped_default, monkeypatch, tmp_path):
    from livestems.model.nets import registry

    monkeypatch.setitem(registry.SHIPPED, "rt-tiny", tmp_path / "rt-tiny.json")
    with pytest.raises(ModelError, match="trained weights of 'rt-tiny' are missing"):
        load_separator(None)


def test_loading_the_default_model_does_not_pull_in_torch_compile():
    """The loader's shape-only shell (built on the meta device) once drew random values and
    a cumsum there, which go through torch's reference ops and import torch._dynamo: 1.2 to
    2 s of every model load (each library worker pays it), for values never read. (rt-tiny by
    name: the suite's $LIVESTEMS_MODEL picks `center`, which has no such table.)"""
    code = ("import sys\nfrom livestems.model.nets.registry import load_separator\n"
            "load_separator('rt-tiny')\nprint('torch._dynamo' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False", r.stdout
