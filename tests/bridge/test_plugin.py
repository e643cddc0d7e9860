"""The DPF plugin in real hosts: LV2 through lv2file (and lv2_validate), VST3 through
pedalboard in a separate process (the library must start or reuse an interpreter there)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from bridgekit import BUILD, error_db, make

URI = "urn:livestems:stems"
# plugin outputs: main (selector), karaoke, stem slots 1..4 (center fills 1 and 2)
LV2_OUT = ["main_L", "main_R", "karaoke_L", "karaoke_R", "vocals_L", "vocals_R",
           "accompaniment_L", "accompaniment_R"]


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    make("lib", "plugin")
    lv2_path = tmp_path_factory.mktemp("lv2")  # only our bundle: lilv scans every folder
    (lv2_path / "livestems.lv2").symlink_to(BUILD / "plugins" / "livestems.lv2")
    return {"lv2_path": lv2_path, "vst3": BUILD / "plugins" / "livestems.vst3",
            "clap": BUILD / "plugins" / "livestems.clap"}


def test_lv2_validate_passes(plugins):
    r = subprocess.run("lv2_validate livestems.lv2/*.ttl", shell=True, cwd=plugins["lv2_path"],
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert "Found 0 errors" in out, out[-3000:]


@pytest.mark.parametrize("block", [256, 1000])
def test_lv2file_equals_separate_after_the_reported_latency(plugins, reference, tmp_path, block):
    """lv2file (a C host: the library starts Python itself, and promotes libpython to
    RTLD_GLOBAL) renders the song; every output equals `livestems separate` after the
    latency the plugin reports, 768 + (block - 256) (the host block is part of it)."""
    out = tmp_path / "out.wav"
    r = subprocess.run(["lv2file", "-i", str(reference.wav), "-o", str(out), "-b", str(block),
                        "-p", "offline:1", URI], capture_output=True, text=True,
                       env=dict(os.environ, LV2_PATH=str(plugins["lv2_path"])), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "livestems plugin:" not in r.stderr, r.stderr
    y, rate = sf.read(out, dtype="float32")
    y = y.T
    assert rate == 44100 and y.shape[0] == 12
    lat = 512 + block  # center: 256 + hop 256 + host block
    n = y.shape[1] - lat  # lv2file writes as many frames as it read: the tail is cut
    want = dict(reference.stems, main=reference.stems["mix"])
    for k, name in enumerate(LV2_OUT):
        stem, side = name.rsplit("_", 1)
        err = error_db(y[k, lat:], want[stem][0 if side == "L" else 1][:n])
        print(f"{name}: {err:.1f} dB")
        assert err < -60, (name, err)
    assert np.abs(y[8:]).max() == 0.0  # stem slots 3 and 4: a 2-stem model leaves them silent
    assert np.abs(y[:, :lat - 256]).max() == 0.0  # nothing before the latency (minus window)


def test_lv2_without_global_libpython_fails_cleanly(plugins, reference, tmp_path):
    """The Debian PyExc_* trap, shown: without the RTLD_GLOBAL promotion, extension modules
    cannot see libpython's symbols. The plugin must survive it: silence, an error line."""
    out = tmp_path / "out.wav"
    r = subprocess.run(["lv2file", "-i", str(reference.wav), "-o", str(out), URI],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, LV2_PATH=str(plugins["lv2_path"]),
                                LIVESTEMS_NO_GLOBAL_LIBPYTHON="1"))
    assert r.returncode == 0, r.stderr
    assert "undefined symbol: PyExc_" in r.stderr, r.stderr
    assert "livestems plugin: the embedded Python module did not start" in r.stderr
    assert np.abs(sf.read(out)[0]).max() == 0.0


VST3_HOST = r'''
import json, sys
import numpy as np
import pedalboard
import soundfile as sf

path, wav = sys.argv[1], sys.argv[2]
p = pedalboard.load_plugin(path)
x, rate = sf.read(wav, dtype="float32")
out = {"name": p.name, "parameters": sorted(p.parameters.keys())}
p.offline_render = True
mix = p.process(x.T, rate, buffer_size=256)
out["latency"] = p.reported_latency_samples
p.output = "Karaoke"
karaoke = p.process(x.T, rate, buffer_size=256)
p.output = "Mix"
p.stem_1_mute = True
p.stem_2_gain_db = -6.0
out["gain_db"] = float(p.stem_2_gain_db)  # the host's value (VST3 quantises normalised)
muted = p.process(x.T, rate, buffer_size=256)
state = p.raw_state
q = pedalboard.load_plugin(path)
before = [bool(q.stem_1_mute), float(q.stem_2_gain_db)]
q.raw_state = state
out["restored"] = [before, [bool(q.stem_1_mute), float(q.stem_2_gain_db)]]
q.process(x.T[:, :4410], 48000, buffer_size=512)
out["latency_48k_512"] = q.reported_latency_samples
np.save(sys.argv[3], np.stack([mix, karaoke, muted]))
print(json.dumps(out))
del p, q
'''


def test_vst3_in_pedalboard(plugins, reference, tmp_path):
    """pedalboard loads the VST3 in its own process, reads the parameters and the latency
    (and compensates it: its output is aligned with the input), processes audio; the host
    saves the parameters as state and restores them into a new instance; the latency follows
    the rate and block size."""
    pytest.importorskip("pedalboard")
    npy = tmp_path / "y.npy"
    r = subprocess.run([sys.executable, "-c", VST3_HOST, str(plugins["vst3"]),
                        str(reference.wav), str(npy)], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["name"] == "livestems"
    assert {"output", "offline_render", "stem_1_gain_db", "stem_1_mute", "stem_1_solo",
            "stem_2_gain_db"} <= set(info["parameters"]), info["parameters"]
    assert info["latency"] == 768
    assert info["latency_48k_512"] > 768 + 256  # resamplers and the larger block
    (mute0, gain0), (mute1, gain1) = info["restored"]
    assert not mute0 and gain0 == pytest.approx(0.0, abs=1e-3)  # a fresh instance: defaults
    assert mute1 and gain1 == pytest.approx(info["gain_db"], abs=1e-3)  # restored
    assert info["gain_db"] == pytest.approx(-6.0, abs=0.1)
    mix, karaoke, muted = np.load(npy)
    assert error_db(mix, reference.stems["mix"]) < -60
    assert error_db(karaoke, reference.stems["karaoke"]) < -60
    assert error_db(muted, reference.stems["accompaniment"] * 10 ** (info["gain_db"] / 20)) < -60


def test_clap_in_a_headless_host(plugins, reference, tmp_path):
    """The CLAP build in bridge/tests/clap_host.c (dlopen RTLD_LOCAL, as DAWs do): its
    parameters, six stereo output ports, the latency extension, and the main output (mix)
    equal to `livestems separate` after that latency."""
    make("clap-host")
    src, dst = tmp_path / "in.f32", tmp_path / "out.f32"
    np.ascontiguousarray(reference.mixture.T).tofile(src)
    r = subprocess.run([str(BUILD / "clap_host"), str(plugins["clap"]), str(src), str(dst),
                        "44100", "256"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["latency"] == 768
    assert info["output_ports"] == [2] * 6  # main, karaoke, 4 stem slots
    assert "Offline render" in info["parameters"] and "Stem 1 mute" in info["parameters"]
    y = np.fromfile(dst, dtype=np.float32).reshape(2, -1)
    lat, n = info["latency"], y.shape[1] - info["latency"]
    assert error_db(y[:, lat:], reference.stems["mix"][:, :n]) < -60
