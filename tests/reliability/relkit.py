"""Helpers shared by the reliability tests (a module, not conftest: several conftest.py exist)."""

import subprocess
import sys


def run_cli(*args, timeout=120, **kw):
    """`python -m livestems.stream ARGS` as a user runs it; never a Python traceback."""
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc
