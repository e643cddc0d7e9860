"""The SPSC ring against a trivial oracle (a Python list per channel), plus threads."""

import threading
import tracemalloc

import numpy as np
import pytest

from livestems.stream.core.ring import Ring, next_pow2


def test_capacity_is_power_of_two():
    assert Ring(2, 1000).capacity == 1024
    assert Ring(1, 1024).capacity == 1024
    assert next_pow2(1) == 1 and next_pow2(3) == 4


@pytest.mark.parametrize("seed", range(5))
def test_random_pushes_and_pops_match_list_oracle(seed):
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 5))
    ring = Ring(channels, int(rng.integers(1, 300)))
    oracle = [[] for _ in range(channels)]
    counter = 0
    out = np.zeros((channels, 2 * ring.capacity), dtype=np.float32)
    for _ in range(2000):
        if rng.random() < 0.5:
            n = int(rng.integers(0, ring.capacity + 5))
            block = (counter + np.arange(n * channels, dtype=np.float32)).reshape(channels, n)
            counter += n * channels
            wrote = ring.write(block)
            assert wrote == min(n, ring.capacity - len(oracle[0]))
            for c in range(channels):
                oracle[c].extend(block[c, :wrote].tolist())
        else:
            n = int(rng.integers(0, ring.capacity + 5))
            start = int(rng.integers(0, ring.capacity))
            got = ring.read(out, start, n)
            assert got == min(n, len(oracle[0]))
            for c in range(channels):
                assert out[c, start:start + got].tolist() == oracle[c][:got]
                del oracle[c][:got]
        assert ring.readable() == len(oracle[0])
        assert ring.writable() == ring.capacity - len(oracle[0])


def test_peek_and_skip():
    ring = Ring(2, 8)
    ring.write(np.arange(10, dtype=np.float32).reshape(2, 5))
    out = np.zeros((2, 3), dtype=np.float32)
    assert ring.peek(out) == 3 and ring.readable() == 5
    assert ring.skip(2) == 2
    ring.read(out)
    assert out[0].tolist() == [2, 3, 4] and out[1].tolist() == [7, 8, 9]
    assert ring.skip(10) == 0


def test_wrong_dtype_or_channels_is_a_clear_error():
    ring = Ring(2, 16)
    with pytest.raises(ValueError, match="float32 \\[2, n\\]"):
        ring.write(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="float32 \\[2, n\\]"):
        ring.write(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="output"):
        ring.read(np.zeros((3, 4), dtype=np.float32))


def test_reads_and_writes_allocate_nothing():
    ring = Ring(2, 1024)
    block = np.ones((2, 100), dtype=np.float32)
    out = np.zeros((2, 100), dtype=np.float32)
    for _ in range(50):  # compile and settle
        ring.write(block)
        ring.read(out)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(10_000):
        ring.write(block)
        ring.read(out)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 4096, f"ring I/O grew traced memory by {grown} bytes"


def test_two_threads_see_every_sample_in_order():
    ring = Ring(2, 256)
    total = 200_000
    received = np.zeros((2, total), dtype=np.float32)

    def produce():
        rng = np.random.default_rng(1)
        sent = 0
        while sent < total:
            n = min(int(rng.integers(1, 200)), total - sent)
            block = np.stack([np.arange(sent, sent + n), -np.arange(sent, sent + n)]).astype(
                np.float32)
            done = 0
            while done < n:
                done += ring.write(block, done, n - done)
            sent += n

    t = threading.Thread(target=produce)
    t.start()
    got = 0
    while got < total:
        got += ring.read(received, got, min(137, total - got))
    t.join()
    assert np.array_equal(received[0], np.arange(total, dtype=np.float32))
    assert np.array_equal(received[1], -np.arange(total, dtype=np.float32))
