"""Official fidelity: our HDemucsNet on converted weights equals the demucs package's HDemucs.

The demucs package is the oracle (installed --no-deps, see requirements-nodeps.txt). Models are
randomly initialised by demucs itself, serialised in its own checkpoint format (half-precision
tensors, pickled class reference), converted by our importer, and both forwards compared.
"""

import warnings

import numpy as np
import pytest
import torch

from livestems.model.nets.checkpoint import CheckpointError, load_model
from livestems.model.nets.import_demucs import convert_package, import_demucs, read_demucs_package
from livestems.stream.cli.main import main as cli_main

SOURCES = ["drums", "bass", "other", "vocals"]
# reduced sizes: nfft 256 -> 128 bins -> 3 frequency layers (the third merges), waveform
# strides 4^3 = the STFT hop 64; then two merged time layers (dconv LSTM + attention on)
REDUCED = dict(channels=8, nfft=256, depth=5, dconv_lstm=3, dconv_attn=3, norm_starts=3)


def _package(oracle, seed, **kwargs):
    HDemucs, serialize_model, load_model_d, OmegaConf = oracle
    torch.manual_seed(seed)
    theirs = HDemucs(SOURCES, **kwargs)
    pkg = serialize_model(theirs, OmegaConf.create({}), half=True)
    return pkg, load_model_d(pkg).eval()


def _save(pkg, path):
    torch.save(pkg, path)
    return path


@pytest.mark.parametrize("kwargs,length", [
    (REDUCED, 20000),
    (dict(REDUCED, hybrid_old=True), 7001),  # the MDX-era padding variant
    (dict(REDUCED, cac=False, wiener_iters=-1, end_iters=-1), 5000),  # plain masking
    (REDUCED, 150000),  # > 200 frames at the LSTM layer: the chunked BiLSTM path
    (dict(channels=8, nfft=1024, depth=6, channels_time=4, context=2, context_enc=1,
          norm_starts=2, dconv_mode=3, dconv_comp=2), 9000),
], ids=["reduced", "hybrid_old", "masking", "chunked-lstm", "growth-ctx"])
def test_reduced_size_equals_demucs(demucs_oracle, tmp_path, kwargs, length):
    pkg, theirs = _package(demucs_oracle, seed=length, **kwargs)
    with pytest.warns(UserWarning, match="unpickling"):
        out = import_demucs(_save(pkg, tmp_path / "m.th"), tmp_path / "m", trust=True)
    ours = load_model(out)
    x = torch.randn(2, 2, length, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert got.shape == want.shape == (2, 4, 2, length)
    assert want.abs().max() > 1e-3  # a real signal, not two zeros agreeing
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_official_size_equals_demucs(demucs_oracle):
    """The published configuration (84 M parameters), one forward on 1 s of stereo."""
    pkg, theirs = _package(demucs_oracle, seed=0)
    ours = convert_package(pkg)
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == sum(p.numel() for p in theirs.parameters())
    assert 83e6 < n_params < 85e6
    x = torch.randn(1, 2, 44100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_cli_import_requires_trust_then_converts(demucs_oracle, tmp_path, capsys):
    pkg, theirs = _package(demucs_oracle, seed=3, **REDUCED)
    th = _save(pkg, tmp_path / "955717e8.th")
    assert cli_main(["import-demucs", str(th), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unpickling" in err and "--trust" in err
    assert not (tmp_path / "out.json").exists()
    assert cli_main(["import-demucs", str(th), "-o", str(tmp_path / "out"), "--trust"]) == 0
    assert (tmp_path / "out.json").exists() and (tmp_path / "out.safetensors").exists()
    # refuses to overwrite without --force
    assert cli_main(["import-demucs", str(th), "-o", str(tmp_path / "out"), "--trust"]) == 3
    from livestems.model.nets.registry import load_separator

    sep = load_separator(str(tmp_path / "out.json"))
    assert type(sep).__name__ == "WindowedHybrid" and sep.sources == tuple(SOURCES)


def test_pickles_are_refused_without_import(tmp_path):
    from livestems.model.nets.registry import ModelError, load_separator

    th = tmp_path / "model.th"
    torch.save({"state": {}}, th)
    with pytest.raises(ModelError, match="unpickling|runs whatever code"):
        load_separator(str(th))
    with pytest.raises(CheckpointError, match="import-demucs"):
        load_model(th)
    with pytest.raises(CheckpointError, match="--trust"):
        read_demucs_package(th, trust=False)


def test_non_hdemucs_and_unsupported_configs_are_refused(demucs_oracle):
    pkg, _ = _package(demucs_oracle, seed=4, **REDUCED)
    bad = dict(pkg, klass=type("HTDemucs", (), {}))
    with pytest.raises(CheckpointError, match="HTDemucs"):
        convert_package(bad)
    multi = dict(pkg, kwargs=dict(pkg["kwargs"], multi_freqs=[0.25, 0.5]))
    with pytest.raises(CheckpointError, match="multi_freqs"):
        convert_package(multi)
    state = dict(pkg["state"])
    name = sorted(state)[5]
    del state[name]
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        convert_package(dict(pkg, state=state))
    state = dict(pkg["state"], **{"encoder.0.bogus": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="encoder.0.bogus"):
        convert_package(dict(pkg, state=state))


def test_restricted_unpickler_rejects_foreign_globals(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.th"
    torch.save({"klass": Evil()}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="system"):
            read_demucs_package(path, trust=True)


def test_windowed_separator_on_converted_weights_tracks_offline(demucs_oracle):
    """With ample context and look-ahead the windowed estimate is close to the offline one."""
    from livestems.model.nets.hybrid import WindowedHybrid

    pkg, theirs = _package(demucs_oracle, seed=5, **REDUCED)
    sep = WindowedHybrid(convert_package(pkg), hop=1024, context=8192, lookahead=4096)
    x = (np.random.default_rng(0).standard_normal((2, 16000)) * 0.1).astype(np.float32)
    with torch.no_grad():
        full = theirs(torch.from_numpy(x)[None])[0].numpy()
    win = sep.forward(x[None])[0]
    mid = slice(9000, 12000)  # far from the edges of the track
    err = np.abs(win[..., mid] - full[..., mid]).max() / np.abs(full[..., mid]).max()
    assert err < 0.2, err
