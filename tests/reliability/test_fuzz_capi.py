"""libFuzzer on the C API of liblivestems (bridge/fuzz/fuzz_capi.c), bounded: about 25 s.

`make -C bridge fuzz` builds the harness with clang (-fsanitize=fuzzer,address,undefined, with
ls_core.c compiled in) into bridge/build/ (ignored by git). The run starts from the seed corpus
in bridge/fuzz/corpus (regression inputs for the bugs it found) and writes new inputs and any
crash into this test's tmp_path only. It passes when libFuzzer exits 0 with no sanitizer report.
A broken promise of livestems.h (an error without a message, a failed process() that leaves an
output unzeroed, a gain outside -120..+12 dB, ...) is a trap in the harness, so it fails too.

The seed is fixed, so a failure names an input that reproduces it. The runs are not
bit-for-bit repeatable (the engine's worker thread races the fuzzer, and the shared engine
keeps its state from one input to the next), but the crash file libFuzzer writes replays
on its own: the failure message gives the command.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BRIDGE = REPO / "bridge"
FUZZER = BRIDGE / "build" / "fuzz_capi"
SEEDS = BRIDGE / "fuzz" / "corpus"
SECONDS = 25  # -max_total_time; start-up (Python, torch import) and exit come on top
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: libFuzzer",
                   "broken API promise")


def _build() -> None:
    r = subprocess.run(["make", "-C", str(BRIDGE), f"PYTHON={sys.executable}", "fuzz"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"make -C bridge fuzz failed (needs clang and libclang-rt-14-dev):\n"
                    f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def _stat(log: str, name: str) -> str:
    """A value of libFuzzer's -print_final_stats block, e.g. stat::number_of_executed_units."""
    for line in log.splitlines():
        if line.startswith(f"stat::{name}:"):
            return line.split(":", 3)[-1].strip()
    return "?"


def test_libfuzzer_on_the_c_api_finds_nothing(tmp_path):
    _build()
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    cmd = [str(FUZZER),
           "-seed=20240610",              # fixed: the same mutations every run
           f"-max_total_time={SECONDS}",
           "-timeout=15",                 # per input; below the library's 20 s offline wait
           "-rss_limit_mb=4096",          # Python + numpy + torch + ASan shadow: ~1.2 GB
           "-max_len=512", "-len_control=0",  # long call sequences from the start
           "-detect_leaks=0",             # the embedded Python is never finalised
           "-print_final_stats=1",
           f"-artifact_prefix={artifacts}/",
           str(corpus), str(SEEDS)]
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the harness's scratch model files
    try:
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           errors="replace", timeout=SECONDS + 240)
        log, code = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        err = exc.stderr or b""
        log = (out.decode("utf-8", "replace") if isinstance(out, bytes) else out) + \
              (err.decode("utf-8", "replace") if isinstance(err, bytes) else err)
        code = "timeout"
    (tmp_path / "fuzz.log").write_text(log)
    crashes = sorted(p for p in artifacts.iterdir())
    marks = [m for m in SANITIZER_MARKS if m in log]
    if code != 0 or marks or crashes:
        lines = [f"fuzz_capi exited {code}; found {marks or 'no sanitizer report'}",
                 f"command (cwd {tmp_path}): {' '.join(cmd)}",
                 f"full log: {tmp_path / 'fuzz.log'}"]
        for c in crashes:
            lines.append(f"input kept: {c}   replay: FUZZ_CAPI_TRACE=1 {FUZZER} {c}")
        tail = "\n".join(log.splitlines()[-60:])
        pytest.fail("\n".join(lines) + "\n--- last 60 lines of the log ---\n" + tail)
    execs = _stat(log, "number_of_executed_units")
    print(f"\nfuzz_capi: {execs} inputs in {SECONDS} s "
          f"({_stat(log, 'average_exec_per_sec')}/s), peak RSS {_stat(log, 'peak_rss_mb')} MB, "
          f"corpus {len(list(corpus.iterdir()))} new inputs")
    assert execs != "?" and int(execs) > 0, log[-3000:]
