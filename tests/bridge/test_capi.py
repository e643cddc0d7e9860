"""The C API of liblivestems.so, driven by the C harness (bridge/tests/harness.c).

What the bridge is for: a host's audio thread calls livestems_process() and never waits for
Python, even while Python is busy; and the C path gives the very samples `livestems separate`
gives.
"""

import json
import subprocess

import numpy as np
from bridgekit import BUILD, error_db

from livestems.model.nets.registry import load_separator
from livestems.stream.core.engine import Engine, karaoke_buses
from livestems.stream.io.backends.file import play_through

NAMES = ["vocals_L", "vocals_R", "accompaniment_L", "accompaniment_R", "mix_L", "mix_R",
         "karaoke_L", "karaoke_R"]


def _run(harness, *args, timeout=120):
    r = subprocess.run([str(harness), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    return r


def _run_file(harness, tmp_path, x, *extra):
    """x [2, T] through `ls_harness file`; returns (outputs [8, T] aligned, info)."""
    src, dst = tmp_path / "in.f32", tmp_path / "out.f32"
    np.ascontiguousarray(x.T, dtype=np.float32).tofile(src)
    r = _run(harness, "file", src, dst, *extra)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    lat, frames = info["latency_samples"], info["frames"]
    y = np.fromfile(dst, dtype=np.float32).reshape(len(info["outputs"]), frames)
    return y[:, lat:lat + x.shape[1]], info


def test_process_never_waits_for_the_gil(harness):
    """Another thread holds the GIL 50 ms at a time (the worker stalls and the output falls
    back to dry, counted); process() at 256 frames never waits for it."""
    r = _run(harness, "stress", "--seconds", "4", "--block", "256", "--hold-ms", "50",
             "--gap-ms", "10")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    print(f"\nprocess() with the GIL held 50 ms per 60 ms: worst {st['worst_us']:.1f} us, "
          f"p99.9 {st['p999_us']:.1f} us, p99 {st['p99_us']:.1f} us, median "
          f"{st['median_us']:.1f} us over {st['calls']} calls (SCHED_FIFO: {st['sched_fifo']});"
          f" thread CPU time inside: worst {st['worst_cpu_us']:.1f} us, p99 "
          f"{st['p99_cpu_us']:.1f} us; calls that blocked {st['blocked_calls']}, preempted "
          f"{st['preempted_calls']}; {st['gil_holds']} holds, {st['deadline_misses']} blocks "
          "played dry")
    assert st["errors"] == 0
    assert st["gil_holds"] >= 40  # the GIL really was held, over and over
    # ...long enough to starve the worker: without the fallback the host would have stalled
    assert st["deadline_misses"] > 0 and st["hops_skipped"] > 0
    # Waiting for the GIL means sleeping on a futex: a voluntary context switch inside the
    # call (getrusage(RUSAGE_THREAD) around each call). Not one call may have slept.
    assert st["blocked_calls"] == 0, st
    # The 100 us bound holds for p99 every run. The single worst wall-clock call is
    # reported, not asserted: on the 2-core VM it ranged 71 us to 3.8 ms in runs where no call
    # blocked, with the thread SCHED_FIFO and mlockall'd (the hypervisor takes the vCPU; the
    # thread's own CPU clock counts that time too, so it cannot be told apart; docs/BRIDGE.md).
    assert st["p99_us"] < 100.0, st


def test_file_through_the_api_equals_separate(harness, reference, tmp_path):
    """Offline mode through the C API: every output equals `livestems separate` to -60 dB,
    aligned by the latency the API reports (768 = center's 256 + hop 256 + block 256)."""
    y, info = _run_file(harness, tmp_path, reference.mixture, "--block", "256")
    assert info["outputs"] == NAMES
    assert info["latency_samples"] == 768
    assert info["deadline_misses"] == 0
    for k, name in enumerate(NAMES):
        stem, side = name.rsplit("_", 1)
        err = error_db(y[k], reference.stems[stem][0 if side == "L" else 1])
        print(f"{name}: {err:.1f} dB")
        assert err < -60, (name, err)


def test_parameters_reach_the_mixer(harness, reference, tmp_path):
    """Muting vocals (param id 1) turns the mix bus into the accompaniment; the stems and
    the karaoke bus do not change."""
    y, _ = _run_file(harness, tmp_path, reference.mixture, "--block", "128", "--param", "1=1")
    acc = reference.stems["accompaniment"]
    for k in (4, 5):  # mix_L, mix_R: smoothing settles in ~50 ms, compare after that
        assert error_db(y[k, 4410:], acc[k - 4, 4410:]) < -60
    assert error_db(y[0], reference.stems["vocals"][0]) < -60
    assert error_db(y[6], acc[0]) < -60


def test_48k_host_resamples_like_the_engine(harness, reference, tmp_path):
    """A 48 kHz host: the C path equals the engine's own resampling path (same config,
    Python rings, run offline) to -60 dB, and reports the engine's latency."""
    import soxr

    x = soxr.resample(reference.mixture.T, 44100, 48000).T.astype(np.float32)
    y, info = _run_file(harness, tmp_path, x, "--block", "256", "--rate", "48000")
    sep = load_separator(None)
    eng = Engine(sep, block_size=256, io_rate=48000, buses=karaoke_buses(sep.sources),
                 resample_quality="HQ")  # the C API's default recipe
    assert info["latency_samples"] == eng.latency_samples
    mix, stems = play_through(eng, x)
    want = [stems[0, 0], stems[0, 1], stems[1, 0], stems[1, 1], mix[0], mix[1],
            stems[1, 0], stems[1, 1]]
    for k, name in enumerate(NAMES):
        err = error_db(y[k], want[k])
        assert err < -60, (name, err)


def test_bad_input_is_an_error_code_never_a_crash(harness, tmp_path):
    """Every bad input of the API (see cmd_badinput): NULL and freed handles, nframes above
    max_block, wrong channel counts, unknown parameter ids, process before create finished,
    missing and broken model files. No traceback reaches the host's stderr."""
    r = _run(harness, "badinput", "--model-dir", tmp_path)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "0 failed"
    assert sum(line.startswith("PASS ") for line in lines) >= 40
    assert "Traceback" not in r.stderr and r.stderr.strip() == "", r.stderr


def test_library_exports_only_the_c_api():
    """The version script hides cffi's module init and the ls_py_* trampolines."""
    from bridgekit import make

    make("lib")
    out = subprocess.run(["nm", "-D", "--defined-only", str(BUILD / "liblivestems.so")],
                         capture_output=True, text=True, check=True).stdout
    names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert names and all(n.startswith("livestems_") for n in names), names
    assert "livestems_process" in names
