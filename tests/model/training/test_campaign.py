"""A campaign resumes exactly on a new machine from its committed folder (campaign/NAME/)."""

from __future__ import annotations

import json
import shutil

import torch

from livestems.model.training.campaign import (CampaignPaths, Recipe, SynthSet, read_log, restore, save,
                                     train_config)
from livestems.model.nets.checkpoint import load_model
from livestems.model.training.trainer import train

from test_train import write_musdb

RECIPE = Recipe(name="tiny", preset="rt-tiny",
                synth=(SynthSet(tracks=2, seconds=1.0, seed=0, share=0.4),),
                real_share=0.6, valid_song="000003",
                options=dict(seed=0, batch_size=2, segment_seconds=0.1, lr=1e-3, warmup_steps=2,
                             schedule="constant", stft_loss=0.5, clip_grad=5.0, remix=0.5,
                             epoch_size=0, steps=100),
                cadence=dict(valid_every=3, valid_seconds=1.0, checkpoint_every=2,
                             checkpoint_minutes=60.0, log_every=1000))


def machine(root, real):
    """A repository checkout with its own runs/ (synthetic data rendered there)."""
    paths = CampaignPaths(root, RECIPE)
    write_musdb(paths.synth()[0], [0, 1])
    return paths


def weights(run_dir):
    return load_model(run_dir / "model.json").state_dict()


def test_campaign_saved_on_one_machine_resumes_exactly_on_another(tmp_path):
    real = write_musdb(tmp_path / "real", [100, 101, 3])
    go = dict(minutes=None, threads=1, device="cpu")

    # one machine, 8 steps straight
    a = machine(tmp_path / "a", real)
    train(train_config(a, real, stop_after_steps=8, **go), progress=False, log=lambda m: None)

    # another: 4 steps, save the campaign folder (what gets committed)
    b = machine(tmp_path / "b", real)
    train(train_config(b, real, stop_after_steps=4, **go), progress=False, log=lambda m: None)
    camp = save(b, log=lambda m: None)
    assert sorted(p.name for p in camp.iterdir()) == [
        "best.json", "best.safetensors", "curve.png", "log.jsonl", "resume", "train.json"]
    assert json.loads((camp / "resume" / "state.json").read_text())["step"] == 4
    assert "/" not in json.dumps(json.loads((camp / "train.json").read_text()))  # no local paths

    # a third, fresh machine gets only the committed folder, restores and goes on to step 8
    c = machine(tmp_path / "c", real)
    shutil.copytree(camp, c.campaign)
    assert restore(c, log=lambda m: None) == 4
    assert restore(c, log=lambda m: None) is None  # its own checkpoints win from now on
    train(train_config(c, real, stop_after_steps=4, **go), progress=False, log=lambda m: None)
    wa, wc = weights(a.run), weights(c.run)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    # and its log is the whole curve: steps 1..8 once each, validation at 3 and 6
    losses, valids = read_log(c.run / "log.jsonl")
    assert [s for s, _ in losses] == list(range(1, 9))
    assert [v["step"] for v in valids] == [3, 6]
    save(c, log=lambda m: None)
    assert json.loads((c.campaign / "resume" / "state.json").read_text())["step"] == 8
    assert len(list((tmp_path / "c" / "campaign").iterdir())) == 1  # swapped, nothing left over


def test_the_recipe_never_trains_on_the_validation_singer(tmp_path):
    """The rt-small recipe's synthetic singers made from real vocals leave the validation song
    out, and every set's songs come from seeds below the held-out range."""
    from livestems.model.training.campaign import RECIPES
    from livestems.model.training.trainer import HELDOUT_SEED

    r = RECIPES["rt-small"]
    for s in r.synth:
        args = s.synth_args(tmp_path / "real", r.valid_song)
        if s.real_vocals:
            assert args[args.index("--real-vocals-skip") + 1] == r.valid_song
        assert s.seed + s.tracks <= HELDOUT_SEED
    folders = [s.folder(tmp_path) for s in r.synth]
    assert len(set(folders)) == len(folders)
    assert r.real_share + sum(s.share for s in r.synth) == 1.0
