"""Helpers shared by the bridge tests (a module, not conftest, so that test files can import
it unambiguously): paths, `make -C bridge`, the error measure."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BRIDGE = REPO / "bridge"
BUILD = BRIDGE / "build"
sys.path.insert(0, str(REPO / "tests" / "stream"))  # jackio: the Python JACK app's test clients

_BUILT: set[str] = set()


def make(*targets: str) -> None:
    """`make -C bridge TARGETS` once per session, with this interpreter as PYTHON."""
    todo = [t for t in targets if t not in _BUILT]
    if not todo:
        return
    r = subprocess.run(["make", "-C", str(BRIDGE), f"PYTHON={sys.executable}", *todo],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"make -C bridge {' '.join(todo)} failed:\n{r.stdout[-4000:]}\n"
                    f"{r.stderr[-4000:]}")
    _BUILT.update(todo)


def error_db(got, want) -> float:
    """Error energy relative to the reference's, in dB (as tests/stream/jackio.py)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(10 * np.log10((np.sum((got - want) ** 2) + 1e-20) / (np.sum(want ** 2) + 1e-20)))
