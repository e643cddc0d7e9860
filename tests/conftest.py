import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture
def real_dir():
    if not REAL.is_dir():
        pytest.skip(f"real evaluation audio not found at {REAL}")
    return REAL
