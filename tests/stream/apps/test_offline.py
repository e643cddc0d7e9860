"""The offline path `separate` computes with equals the streaming result.

The reference is the separator's own ``step`` hop by hop (the live engine's arithmetic, through
the numba STFT kernels for the hybrid net), shifted by the latency; the offline path is the
network's torch-STFT path over long chunks with carried state (or ``step`` itself for the DSP
baseline). The difference is stated in dB below the reference's energy.
"""

import numpy as np
import pytest
import torch
from signals import music_like

from livestems.model.nets.protocol import stream_offline
from livestems.stream.apps.offline import batched_path, separate_array


def _diff_db(a, b):
    return 10 * np.log10(np.sum((a - b) ** 2) / np.sum(b ** 2) + 1e-30)


@pytest.mark.parametrize("model,chunk_hops", [("rt-tiny", 256), ("rt-tiny", 7),
                                              ("rt-small", 64), ("center", 256)])
def test_offline_equals_streaming(model, chunk_hops):
    from livestems.model.nets.registry import load_separator

    sep = load_separator(model)
    x = music_like(3.3, seed=5)[:, :145_037]  # not a multiple of any hop or chunk
    ref = stream_offline(sep, x)
    got = separate_array(sep, x, chunk_hops=chunk_hops)
    assert got.shape == ref.shape == (len(sep.sources), 2, x.shape[1])
    db = _diff_db(got, ref)
    print(f"{model} chunk {chunk_hops}: offline - streaming = {db:.1f} dB")
    if batched_path(sep) == "step":
        np.testing.assert_array_equal(got, ref)  # the same code path: bit-exact
    else:
        assert db < -100.0, db  # float32 rounding of two implementations (~ -130 dB)
        assert np.abs(got - ref).max() < 1e-4


def test_offline_path_is_batched_for_the_network_and_step_for_the_dsp_baseline():
    from livestems.model.nets.registry import load_separator

    assert batched_path(load_separator("rt-tiny")) == "batched"
    assert batched_path(load_separator("center")) == "step"


def test_separate_array_checks_its_input():
    from livestems.model.nets.registry import load_separator

    with pytest.raises(ValueError, match="channels=2"):
        separate_array(load_separator("center"), np.zeros((1, 100), np.float32))


@pytest.mark.parametrize("model", ["rt-tiny", "center"])
@pytest.mark.parametrize("segment", [3000, 44100, 10**7])
def test_segments_concatenate_to_the_whole_file_result(model, segment):
    """Long files are separated piece by piece with carried state (bounded memory): the pieces
    put together equal the one-call result."""
    from livestems.model.nets.registry import load_separator
    from livestems.stream.apps.offline import iter_separated

    sep = load_separator(model)
    x = music_like(2.1, seed=7)[:, :90_001]
    whole = separate_array(sep, x)
    pieces = list(iter_separated(sep, x, segment_samples=segment, chunk_hops=16))
    got = np.concatenate(pieces, axis=-1)
    assert got.shape == whole.shape
    if batched_path(sep) == "step":
        np.testing.assert_array_equal(got, whole)
    else:  # chunk size differs from the whole-file call: float rounding only
        assert _diff_db(got, whole) < -100.0


def test_reused_segment_buffer_gives_the_same_stems():
    """``reuse=True`` (what the file writer asks for) hands every segment in one buffer that
    the next overwrites; taken as they come, the segments are the same stems as fresh ones."""
    from livestems.model.nets.registry import load_separator
    from livestems.stream.apps.offline import iter_separated

    sep = load_separator("rt-tiny")
    x = music_like(2.1, seed=7)[:, :90_001]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a library worker (two threads split a file in blocks)
    try:
        fresh = list(iter_separated(sep, x, segment_samples=30_000, chunk_hops=16))
        got, bases = [], []
        for y in iter_separated(sep, x, segment_samples=30_000, chunk_hops=16, reuse=True):
            got.append(y.copy())
            bases.append(y.base)  # (kept alive, so no two buffers can share an address)
    finally:
        torch.set_num_threads(threads)
    assert len(got) == len(fresh) > 2
    assert all(b is bases[0] for b in bases)  # one buffer for all segments
    for a, b in zip(got, fresh):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model", ["rt-tiny", "rt-small"])
def test_one_file_on_two_threads_equals_one_thread(model, monkeypatch):
    """With two torch threads the batched engine runs blocks of the file in parallel (each
    block recomputing the frames before it that its non-recurrent layers remember): the same
    result, piece by piece, as one thread."""
    import torch

    from livestems.model.nets.registry import load_separator
    from livestems.stream.apps import offline
    from livestems.stream.apps.offline import iter_separated

    monkeypatch.setattr(offline, "BLOCK_FRAMES", 40)  # small blocks: many hand-overs
    sep = load_separator(model)
    x = music_like(4.2, seed=9)[:, :180_001]
    one = separate_array(sep, x)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = np.concatenate(list(iter_separated(sep, x, segment_samples=50_000)), axis=-1)
        assert torch.get_num_threads() == 2  # restored around each piece
    finally:
        torch.set_num_threads(threads)
    db = _diff_db(two, one)
    print(f"{model}: two threads - one thread = {db:.1f} dB")
    assert two.shape == one.shape
    assert db < -110.0, db
