"""Fixtures for the model tests: the demucs oracle (imported without torchaudio)."""

import sys
import types

import pytest


def import_demucs_hdemucs():
    """The demucs package's HDemucs class and its serializer, or skip with the reason.

    openunmix (whose __init__ imports torchaudio, which we must not install) is only used by
    HDemucs for Wiener filtering, which cac=True models never run; when it is missing we
    register an inert `openunmix.filtering` whose `wiener` raises if ever called.
    """
    try:
        import openunmix.filtering  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or torchaudio's own import errors
        def wiener(*args, **kwargs):
            raise RuntimeError("Wiener filtering is not available in the test oracle")

        pkg = types.ModuleType("openunmix")
        filtering = types.ModuleType("openunmix.filtering")
        filtering.wiener = wiener
        pkg.filtering = filtering
        sys.modules["openunmix"] = pkg
        sys.modules["openunmix.filtering"] = filtering
    try:
        from demucs.hdemucs import HDemucs
        from demucs.states import load_model, serialize_model
        from omegaconf import OmegaConf
    except ImportError as exc:
        pytest.skip(f"demucs oracle not installed ({exc}); `make test` installs it from "
                    "requirements-nodeps.txt")
    return HDemucs, serialize_model, load_model, OmegaConf


@pytest.fixture(scope="session")
def demucs_oracle():
    return import_demucs_hdemucs()
