"""Fixtures for the reliability suite: the bad-input corpus, generated once per session."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from make_bad_corpus import make_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The bad-input corpus (a list of make_bad_corpus.Entry), generated once per session."""
    return make_corpus(tmp_path_factory.mktemp("bad-corpus"))
