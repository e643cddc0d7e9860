"""Model files that attack the loader: a pickle that runs code, and JSON configs with unknown
classes or absurd sizes. Pickles are refused without running anything; bad configs are refused
with a clear error before any large allocation.

The config cases run in one child process under an address-space limit (8 GiB), so a loader
that does try to allocate gigabytes fails fast instead of taking the machine's memory.
"""

import json
import pickle
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from livestems.model.nets.checkpoint import save_model
from livestems.model.nets.hybrid import CausalHybridNet
from livestems.model.nets.registry import ModelError, load_separator

MINI = {"channels": 4, "n_fft": 256, "stft_hop": 64, "synthesis_len": 128}
AS_LIMIT_BYTES = 8 << 30
PEAK_RSS_LIMIT_KB = 1_500_000  # growth past the import peak; a refused file adds nothing big


class _Payload:
    """Unpickling this creates the file ``marker`` (a harmless stand-in for any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(tmp_path, suffix):
    marker = tmp_path / f"pwned{suffix}"
    path = tmp_path / f"evil{suffix}"
    torch.save({"klass": _Payload(marker), "state": _Payload(marker)}, path)
    return path, marker


def test_the_payload_is_live(tmp_path):
    """Sanity: the payload really runs when unpickled, so 'no marker' below means 'refused'."""
    marker = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".th", ".pth", ".ckpt", ".bin"])
def test_pickle_checkpoint_is_refused_without_running_it(tmp_path, suffix):
    path, marker = _evil(tmp_path, suffix)
    with pytest.raises(ModelError, match="import-demucs"):
        load_separator(str(path))
    assert not marker.exists()


def test_cli_refuses_pickles_even_with_trust(tmp_path, capsys):
    """Through the CLI's main() in-process (an escaping exception fails the test just as a
    traceback would): `separate --model evil.pt` and `import-demucs evil.pt --trust`."""
    from livestems.stream.cli.main import main

    path, marker = _evil(tmp_path, ".pt")
    sf.write(tmp_path / "in.wav", np.zeros((4410, 2), np.float32), 44100)
    assert main(["separate", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out"),
                 "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pickle" in err and "--trust" in err
    assert not (tmp_path / "out").exists()
    # even with --trust the restricted unpickler resolves only torch's tensor rebuilders
    code = main(["import-demucs", str(path), "-o", str(tmp_path / "conv"), "--trust"])
    err = capsys.readouterr().err
    assert code == 2 and "error: " in err, err
    assert not marker.exists()
    assert not list(tmp_path.glob("conv*"))


# ----------------------------------------------------------------------------------------------
# JSON + safetensors configs


_CHILD = textwrap.dedent("""
    import json, resource, sys
    from livestems.model.nets.registry import ModelError, load_separator
    # importing compiles numba kernels when their cache is cold (a fresh clone), which peaks
    # far higher than loading a config should: measure growth past that peak
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {}
    for path in sys.argv[1:]:
        try:
            load_separator(path)
            r = {"outcome": "loaded"}
        except ModelError as exc:
            r = {"outcome": "ModelError", "message": str(exc)}
        except BaseException as exc:  # what a user would see as a traceback
            r = {"outcome": type(exc).__name__, "message": str(exc)[:300]}
        r["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        out[path] = r
    print(json.dumps(out))
""")

# name -> patch applied to a good config; all must be refused with ModelError
REFUSED = {
    "unknown_class": {"class": "os.system"},
    "dotted_class": {"class": "livestems.model.nets.center.CenterCancel"},
    "huge_n_fft": {"args": {"n_fft": 2**34, "stft_hop": 2**32}},
    "huge_synthesis_len": {"args": {"synthesis_len": 10**12}},
    "float_channels": {"args": {"channels": 1e300}},
    "unknown_arg": {"args": {"evil": 1}},
    "args_not_object": {"args": [1, 2, 3]},
    "sources_huge": {"sources": ["s"] * 100_000},
}
# known bugs (docs/RELIABILITY.md): the constructor allocates, or raises RuntimeError untyped
BUGGY = {
    "huge_channels": {"args": {"channels": 10**9}},
    "huge_audio_channels": {"args": {"audio_channels": 10**9}},
    "negative_channels": {"args": {"channels": -4}},
}


def _limit_as():
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT_BYTES, AS_LIMIT_BYTES))


@pytest.fixture(scope="module")
def config_outcomes(tmp_path_factory):
    """Load every patched config in one child process; {name: outcome dict}."""
    folder = tmp_path_factory.mktemp("configs")
    torch.manual_seed(0)
    good = save_model(CausalHybridNet(["vocals", "rest"], **MINI), folder / "good")
    base = json.loads(good.read_text())
    paths = {}
    for name, patch in {**REFUSED, **BUGGY}.items():  # refused first: peak RSS is cumulative
        cfg = json.loads(json.dumps(base))
        for key, value in patch.items():
            if key == "args" and isinstance(value, dict):
                cfg["args"].update(value)
            else:
                cfg[key] = value
        p = folder / f"{name}.json"
        p.write_text(json.dumps(cfg))
        paths[name] = str(p)
    paths["good"] = str(good)
    proc = subprocess.run([sys.executable, "-c", _CHILD, *paths.values()], capture_output=True,
                          text=True, timeout=120, check=False, preexec_fn=_limit_as)
    assert proc.returncode == 0, proc.stderr
    by_path = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: by_path[p] for name, p in paths.items()}


def test_good_config_loads(config_outcomes):
    assert config_outcomes["good"]["outcome"] == "loaded"


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_config_is_refused_early_with_a_clear_error(config_outcomes, name):
    r = config_outcomes[name]
    assert r["outcome"] == "ModelError", r
    assert r["peak_rss_kb"] < PEAK_RSS_LIMIT_KB, r


@pytest.mark.parametrize("name", list(BUGGY))
def test_absurd_sizes_are_refused_before_allocating(config_outcomes, name):
    r = config_outcomes[name]
    assert r["outcome"] == "ModelError", r
