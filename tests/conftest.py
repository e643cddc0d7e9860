import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The suite's tests of mechanics (latency to the sample, live == offline, routing, the C API,
# the plugins) run with the DSP baseline `center`: exact, cheap and deterministic on a shared
# 2-core machine. $LIVESTEMS_MODEL is the user's documented way to change the default model,
# and it reaches every subprocess and the plugins. Tests about the shipped default model use
# the `shipped_default` fixture, which unsets it.
os.environ["LIVESTEMS_MODEL"] = "center"

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
