"""Model files: round trip, and each kind of bad file gives an error naming the culprit."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from livestems.model.nets.checkpoint import CheckpointError, load_model, save_model
from livestems.model.nets.hybrid import CausalHybridNet, HDemucsNet, StreamingHybrid
from livestems.model.nets.registry import ModelError, load_separator

MINI = dict(channels=4, n_fft=256, stft_hop=64, synthesis_len=128)


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    net = CausalHybridNet(["vocals", "rest"], **MINI)
    path = save_model(net, tmp_path / "m", provenance={"run": "unit-test"})
    return net, path


def test_round_trip_and_self_description(saved):
    net, path = saved
    cfg = json.loads(path.read_text())
    assert cfg["class"] == "CausalHybridNet" and cfg["sources"] == ["vocals", "rest"]
    assert cfg["sample_rate"] == 44100 and cfg["provenance"] == {"run": "unit-test"}
    assert len(cfg["sha256"]) == 64
    back = load_model(path)
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    sep = load_separator(str(path))
    assert isinstance(sep, StreamingHybrid) and sep.sources == ("vocals", "rest")
    x = np.random.default_rng(0).standard_normal((1, 2, 3000)).astype(np.float32)
    np.testing.assert_array_equal(sep.forward(x), StreamingHybrid(net).forward(x))


def test_official_round_trip(tmp_path):
    torch.manual_seed(1)
    net = HDemucsNet(["a", "b"], channels=4, nfft=256, depth=4)
    back = load_model(save_model(net, tmp_path / "o"))
    x = torch.randn(1, 2, 3000)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net.eval()(x), atol=0, rtol=0)


def _rewrite(path, **changes):
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def _edit_weights(path, fn):
    weights = path.with_suffix(".safetensors")
    state = load_file(str(weights))
    fn(state)
    save_file(state, str(weights))
    from livestems.model.nets.checkpoint import sha256_file

    _rewrite(path, sha256=sha256_file(weights))


def test_missing_tensor(saved):
    _, path = saved
    _edit_weights(path, lambda s: s.pop("bottleneck.proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) bottleneck\.proj\.weight"):
        load_model(path)


def test_extra_tensor(saved):
    _, path = saved
    _edit_weights(path, lambda s: s.__setitem__("decoder.9.extra", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) decoder\.9\.extra"):
        load_model(path)


def test_wrong_shape(saved):
    _, path = saved
    _edit_weights(path, lambda s: s.__setitem__("bottleneck.proj.bias", torch.zeros(5)))
    with pytest.raises(CheckpointError, match=r"'bottleneck\.proj\.bias' has shape \[5\]"):
        load_model(path)


def test_unknown_class(saved):
    _, path = saved
    _rewrite(path, **{"class": "HTDemucs"})
    with pytest.raises(CheckpointError, match="field 'class' is 'HTDemucs'"):
        load_model(path)
    with pytest.raises(ModelError, match="HTDemucs"):
        load_separator(str(path))


def test_sample_rate_mismatch(saved):
    _, path = saved
    _rewrite(path, sample_rate=48000)
    with pytest.raises(CheckpointError, match="'sample_rate' is 48000 Hz but the model was "
                                              "built for 44100 Hz"):
        load_model(path)


def test_checksum_and_missing_fields(saved):
    _, path = saved
    cfg = json.loads(path.read_text())
    _rewrite(path, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(path)
    del cfg["sources"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing field 'sources'"):
        load_model(path)


def test_bad_args(saved):
    _, path = saved
    cfg = json.loads(path.read_text())
    cfg["args"]["n_layers"] = 3
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="field 'args'.*n_layers"):
        load_model(path)
