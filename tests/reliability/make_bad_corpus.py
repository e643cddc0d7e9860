"""Generate the bad-input audio corpus into a folder (nothing binary is committed).

Run as a script (``python tests/reliability/make_bad_corpus.py OUTDIR``) or call
:func:`make_corpus`. Every file is built from code here, deterministically (fixed seeds), in
well under a second. Each entry of the returned manifest says what a reader must do with it:

- ``"ok"``: a usable file; a reader must return exactly ``frames`` frames at ``rate`` Hz.
- ``"error"``: unusable; a reader must refuse it with a clear, typed error.
- ``"either"``: damaged but partly decodable (lossy streams cut mid-frame, where the decoder may
  legitimately salvage what is there): a clear error or a result, never a crash. ``frames`` is
  then None, and the result's length is checked against what the decoder itself reports.

File names are unique in their stem (``trunc_wav.wav``, ``trunc_flac.flac``) because
``livestems separate`` names each output folder after the input's stem.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["Entry", "make_corpus", "riff_wav"]

RATE_HZ = 44100
SECONDS = 0.25  # short: every file goes through the whole engine in the CLI tests


@dataclass(frozen=True)
class Entry:
    """One corpus file: ``expect`` is "ok", "error" or "either"; ``frames``/``rate`` are the
    exact length (frames per channel) and sample rate a reader must return for "ok"."""

    path: Path
    expect: str
    why: str
    frames: int | None = None
    rate: int | None = None


def _signal(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """float32 [frames, channels]: a quiet chord plus noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / RATE_HZ
    freqs = 220.0 * (1 + np.arange(channels))[None, :]
    x = 0.2 * np.sin(2 * np.pi * freqs * t) + 0.05 * rng.standard_normal((frames, channels))
    return x.astype(np.float32)


def riff_wav(pcm16: bytes, *, channels: int = 2, rate: int = RATE_HZ,
             riff_size: int | None = None, data_size: int | None = None,
             extra_chunks: bytes = b"") -> bytes:
    """A 16-bit PCM WAV built by hand, with the RIFF and data chunk sizes under our control
    (``None``: the true sizes). ``extra_chunks`` go between ``fmt `` and ``data``."""
    block = 2 * channels
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, channels, rate, rate * block, block, 16)
    body = b"WAVE" + fmt + extra_chunks + b"data" + struct.pack(
        "<I", len(pcm16) if data_size is None else data_size) + pcm16
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def _flip(data: bytes, start_fraction: float, length: int, seed: int) -> bytes:
    """Overwrite ``length`` bytes from ``start_fraction`` of the file with random bytes."""
    rng = np.random.default_rng(seed)
    b = bytearray(data)
    a = int(len(b) * start_fraction)
    b[a:a + length] = rng.integers(0, 256, size=min(length, len(b) - a), dtype=np.uint8).tobytes()
    return bytes(b)


def _encode(fmt: str, subtype: str | None, x: np.ndarray, rate: int = RATE_HZ) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def make_corpus(folder: str | Path) -> list[Entry]:
    """Write every corpus file into ``folder`` (created); return the manifest."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    n = int(SECONDS * RATE_HZ)
    x = _signal(n)
    entries: list[Entry] = []

    def put(name: str, data: bytes, expect: str, why: str, frames=None, rate=None) -> None:
        p = out / name
        p.write_bytes(data)
        entries.append(Entry(p, expect, why, frames, rate))

    wav = _encode("WAV", "FLOAT", x)
    flac = _encode("FLAC", "PCM_16", x)
    ogg = _encode("OGG", "VORBIS", x)
    mp3 = _encode("MP3", "MPEG_LAYER_III", x)

    # controls: the same audio, intact, so a failure below is about the damage, not the format
    put("good_wav.wav", wav, "ok", "intact 32-bit float WAV", n, RATE_HZ)
    put("good_flac.flac", flac, "ok", "intact FLAC", n, RATE_HZ)
    put("good_ogg.ogg", ogg, "ok", "intact Ogg Vorbis", n, RATE_HZ)
    put("good_mp3.mp3", mp3, "either", "intact MP3 (length set by the decoder's padding)")

    # truncated: lossless formats have an exact length, so a cut must be an error
    put("trunc_wav.wav", _cut(wav, 0.6), "error", "WAV cut at 60% of its data")
    put("trunc_wav_header.wav", wav[:30], "error", "WAV cut inside its header")
    put("trunc_flac.flac", _cut(flac, 0.6), "error", "FLAC cut at 60%")
    put("trunc_ogg.ogg", _cut(ogg, 0.6), "either", "Ogg Vorbis cut at 60%")
    put("trunc_mp3.mp3", _cut(mp3, 0.6), "either", "MP3 cut at 60%")

    # corrupt: random bytes over part of the payload (headers intact)
    put("corrupt_flac.flac", _flip(flac, 0.4, 400, seed=1), "either",
        "FLAC with 400 random bytes mid-stream (frame CRCs fail)")
    put("corrupt_ogg.ogg", _flip(ogg, 0.4, 400, seed=2), "either",
        "Ogg with 400 random bytes mid-stream (page CRCs fail)")
    put("corrupt_mp3.mp3", _flip(mp3, 0.4, 400, seed=3), "either",
        "MP3 with 400 random bytes mid-stream")
    pcm_wav = riff_wav(_pcm16(x))
    put("corrupt_wav_fmt.wav", pcm_wav[:20] + b"\xff" * 16 + pcm_wav[36:], "error",
        "WAV whose fmt chunk body is all 0xFF (format tag 65535, absurd rate)")
    put("random_bytes.wav", np.random.default_rng(4).integers(0, 256, 4000, dtype=np.uint8)
        .tobytes(), "error", "4000 random bytes named .wav")

    # sizes and shapes
    put("empty.wav", b"", "error", "zero-length file")
    put("zero_frames.wav", riff_wav(b""), "error", "valid header, no frames")
    put("one_sample.wav", _encode("WAV", "FLOAT", x[:1]), "ok", "a single frame", 1, RATE_HZ)
    put("eight_channel.wav", _encode("WAV", "FLOAT", _signal(n, 8)), "ok",
        "8 channels (downmixed)", n, RATE_HZ)
    put("mono.wav", _encode("WAV", "FLOAT", x[:, :1]), "ok", "mono (duplicated)", n, RATE_HZ)
    n8 = int(SECONDS * 8000)
    put("rate_8k.wav", _encode("WAV", "FLOAT", _signal(n8), 8000), "ok",
        "8 kHz, the lowest supported rate", n8, 8000)
    n192 = int(SECONDS * 192000)
    put("rate_192k.wav", _encode("WAV", "FLOAT", _signal(n192), 192000), "ok", "192 kHz",
        n192, 192000)
    put("rate_4k.wav", _encode("WAV", "FLOAT", _signal(1000), 4000), "error",
        "4 kHz, below the supported range")

    # non-finite samples: zeroed and counted, the result keeps the length
    nan = x.copy()
    nan[:] = np.nan
    put("all_nan.wav", _encode("WAV", "FLOAT", nan), "ok", "every sample NaN", n, RATE_HZ)
    inf = x.copy()
    inf[::2, 0] = np.inf
    inf[1::2, 1] = -np.inf
    put("half_inf.wav", _encode("WAV", "FLOAT", inf), "ok", "half the samples +/-Inf", n,
        RATE_HZ)
    mixed = _signal(n, seed=5)
    mixed[100:200] = np.nan
    mixed[300, 1] = np.inf
    put("some_nan_double.wav", _encode("WAV", "DOUBLE", mixed.astype(np.float64)), "ok",
        "64-bit float with a NaN run and one Inf", n, RATE_HZ)

    # headers that lie about sizes
    pcm = _pcm16(x)
    put("huge_data_chunk.wav", riff_wav(pcm, data_size=0x7FFFFFF0, riff_size=0x7FFFFFF0 + 36),
        "error", "data chunk claims 2 GiB, file holds 44 kB")
    put("huge_riff_only.wav", riff_wav(pcm, riff_size=0xFFFFFFF0), "ok",
        "RIFF size claims 4 GiB, data chunk size is true", n, RATE_HZ)
    junk = b"LIST" + struct.pack("<I", 0x7FFFFFF0) + b"INFO"
    put("huge_list_chunk.wav", riff_wav(pcm, extra_chunks=junk), "error",
        "a LIST chunk claiming 2 GiB before the data chunk")

    # wrong extensions
    put("flac_named.mp3", flac, "ok", "FLAC content named .mp3", n, RATE_HZ)
    put("wav_named.flac", wav, "ok", "WAV content named .flac", n, RATE_HZ)
    put("text_named.wav", b"these are my notes, not audio\n" * 40, "error", "text named .wav")
    put("text_named.mp3", b"ID3 is not here either\n" * 40, "error", "text named .mp3")
    put("html_named.flac", b"<!doctype html><html><body>404 Not Found</body></html>\n" * 10,
        "error", "an HTML error page saved as .flac")
    return entries


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "bad-corpus")
    for e in make_corpus(folder):
        print(f"{e.expect:6s} {e.path.name:24s} {e.why}")
