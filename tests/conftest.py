import os
import signal
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# The suite's tests of mechanics (latency to the sample, live == offline, routing, the C API,
# the plugins) run with the DSP baseline `center`: exact, cheap and deterministic on a shared
# 2-core machine. $LIVESTEMS_MODEL is the user's documented way to change the default model,
# and it reaches every subprocess and the plugins. Tests about the shipped default model use
# the `shipped_default` fixture, which unsets it.
os.environ["LIVESTEMS_MODEL"] = "center"

# Several tests stop a live command with SIGINT, as Ctrl-C would. A shell without job control
# (a CI script, `cmd &` in a non-interactive shell) starts background jobs with SIGINT
# ignored, and an ignored signal stays ignored across exec: every subprocess would then ignore
# the tests' Ctrl-C and run on. A handler (unlike SIG_IGN) is reset to the default on exec, so
# restoring Python's own handler here gives the subprocesses a normal Ctrl-C however the
# suite was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Property tests (Hypothesis) draw the same examples on every run: a fresh-clone CI run must
# not pass or fail by the luck of its random seed (one failed on an odd window length no run
# before had drawn; that example is now pinned in the test). To explore new examples, run with
# HYPOTHESIS_PROFILE=explore; a failure it finds belongs in the test as an @example.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture
def real_dir():
    if not REAL.is_dir():
        pytest.skip(f"real evaluation audio not found at {REAL}")
    return REAL


@pytest.fixture
def shipped_default(monkeypatch):
    """Run with the model livestems uses out of the box (no $LIVESTEMS_MODEL)."""
    monkeypatch.delenv("LIVESTEMS_MODEL", raising=False)
    from livestems.model.nets.registry import DEFAULT_MODEL

    return DEFAULT_MODEL
