"""The PortAudio backend (sounddevice): a duplex stream from any input device to any output.

PortAudio reaches ALSA, OSS and, when a JACK server is running as PortAudio initialises, JACK
(Debian's libportaudio2 is built with it; the server is the one ``$JACK_DEFAULT_SERVER`` names).
The stream's output is the engine's mix bus: the stem mixer, so `karaoke` sets it to "vocals
muted" or "vocals at the guide level".

Threads. PortAudio calls :meth:`PortAudioHost._callback` on its audio thread: it copies the
input block into the engine, the engine's mix out into the output block (always filling it),
and folds the :class:`sounddevice.CallbackFlags` into counters. Nothing else happens there,
except, when a microphone is attached (``mic_channels`` + :attr:`PortAudioHost.mic`, see
``stream/apps/mic.py``), running its fixed-size block through the mic chain and adding it to the
output: the mic channels are extra input channels of the same duplex stream, so they share its
clock and its block.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from livestems.stream.core.engine import Engine, karaoke_buses
from .common import AudioBackendError, live_stats

__all__ = ["PortAudioHost", "list_devices", "resolve_device", "COMMON_RATES_HZ"]

COMMON_RATES_HZ = (22050, 32000, 44100, 48000, 88200, 96000)
_SWITCH_INTERVAL_S = 0.0005  # see backends/jack.py: bounds the callback's wait for the GIL


def _sd():
    import sounddevice as sd

    return sd


def _no_devices_error() -> AudioBackendError:
    sd = _sd()
    apis = ", ".join(a["name"] for a in sd.query_hostapis()) or "none"
    server = os.environ.get("JACK_DEFAULT_SERVER", "default")
    return AudioBackendError(
        "no audio devices found",
        expected="a sound card, or a running JACK server",
        got=f"PortAudio host APIs {apis} with no devices",
        fix=f"connect a sound card, or start JACK before livestems (`jackd -d alsa` or "
            f"`jackd --no-realtime -d dummy -r 48000 -p 256`; PortAudio joins the server "
            f"named by $JACK_DEFAULT_SERVER, now {server!r})",
    )


def list_devices() -> str:
    """Every device PortAudio sees, by host API, with channels, rate and latency range."""
    sd = _sd()
    devices = sd.query_devices()
    if len(devices) == 0:
        raise _no_devices_error()
    apis = sd.query_hostapis()
    lines = []
    for i, d in enumerate(devices):
        api = apis[d["hostapi"]]["name"]
        mark = (">" if i == sd.default.device[0] else " ") + ("<" if i == sd.default.device[1]
                                                              else " ")
        lines.append(
            f"{mark} {i:3d}  {d['name']!s:40.40s} {api:26.26s} in {d['max_input_channels']:2d}"
            f"  out {d['max_output_channels']:2d}  {d['default_samplerate']:.0f} Hz  latency "
            f"{1000 * d['default_low_output_latency']:.1f}-"
            f"{1000 * d['default_high_output_latency']:.1f} ms")
    lines.append("(> default input, < default output; pass the index or part of the name)")
    return "\n".join(lines)


def resolve_device(spec, kind: str) -> int:
    """A device index from an index, a name fragment, or None (the default)."""
    sd = _sd()
    if len(sd.query_devices()) == 0:
        raise _no_devices_error()
    if spec is None or spec == "":
        idx = sd.default.device[0 if kind == "input" else 1]
        if idx is None or idx < 0:
            raise AudioBackendError(f"there is no default {kind} device",
                                    fix=f"name one with --{kind} (see `livestems devices`)")
        return int(idx)
    if isinstance(spec, str) and spec.strip().lstrip("-").isdigit():
        spec = int(spec)
    try:
        info = sd.query_devices(spec, kind)
    except (ValueError, sd.PortAudioError) as exc:
        raise AudioBackendError(f"no usable {kind} device {spec!r}", got=str(exc),
                                fix="pick one from `livestems devices` (index or part of "
                                    "its name)") from None
    return int(info["index"])


def _supported_rates(device: int, kind: str) -> list[int]:
    sd = _sd()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    ok = []
    for r in COMMON_RATES_HZ:
        try:
            check(device=device, channels=2, dtype="float32", samplerate=r)
            ok.append(r)
        except sd.PortAudioError:
            pass
    return ok


class PortAudioHost:
    """Runs an :class:`Engine` on a PortAudio duplex stream.

    Args:
        separator: a stereo separator.
        input, output: device index or name fragment (None: the defaults).
        rate: stream rate in Hz (None: the output device's default). When it is not the
            model's rate the engine resamples both ways (and says so in its latency).
        blocksize: frames per callback. Smaller lowers latency but gives the worker less
            time per block; 0 lets PortAudio choose (with JACK: the server's period, the
            cheapest, since PortAudio then adds no buffering of its own).
        latency: PortAudio's device latency, 'low', 'high' or seconds: low answers faster,
            high survives a busier machine without dropouts.
        resample_quality: see :class:`Engine`.
        mic_channels: 0-based input channels (>= 2) that carry a microphone; the stream then
            opens that many more input channels. Set :attr:`mic` (an object with
            ``process(mic [m, blocksize], out [2, blocksize])`` that adds into ``out``) before
            :meth:`start`; it runs in the callback, so it must not allocate or block.
        safety_ms: extra latency the model's worker may run late by (see :class:`Engine`).
    """

    def __init__(self, separator, *, input=None, output=None, rate: int | None = None,
                 blocksize: int = 256, latency="low", resample_quality: str = "LD",
                 mic_channels=(), safety_ms: float = 0.0):
        sd = _sd()
        if separator.channels != 2:
            raise AudioBackendError("the live stream is stereo", expected="a 2-channel model",
                                    got=f"{separator.channels} channels")
        self.input = resolve_device(input, "input")
        self.output = resolve_device(output, "output")
        if rate is None:
            rate = int(sd.query_devices(self.output)["default_samplerate"])
        self.mic_channels = tuple(int(c) for c in mic_channels)
        if self.mic_channels and (min(self.mic_channels) < 2 or blocksize == 0):
            raise AudioBackendError(
                "bad microphone channels", expected="input channels 3 and up (1-2 carry the "
                "music) and a fixed block size", got=f"channels {[c + 1 for c in mic_channels]}"
                f", block {blocksize}", fix="--mic 3 (or 3,4) with --block 256")
        self.in_channels = max((2,) + tuple(c + 1 for c in self.mic_channels))
        have = int(sd.query_devices(self.input)["max_input_channels"])
        if self.in_channels > have:
            raise AudioBackendError(
                f"input device {self.input} ({sd.query_devices(self.input)['name']}) has "
                f"{have} input channels", expected=f"at least {self.in_channels} for the mic on "
                f"channel {self.in_channels}", got=f"{have}",
                fix="pick the channel your mic is on (`livestems devices` lists the channel "
                    "counts); with JACK, start the server with more capture ports (-C 4)")
        for dev, kind in ((self.input, "input"), (self.output, "output")):
            check = sd.check_input_settings if kind == "input" else sd.check_output_settings
            try:
                check(device=dev, channels=self.in_channels if kind == "input" else 2,
                      dtype="float32", samplerate=rate)
            except sd.PortAudioError as exc:
                name = sd.query_devices(dev)["name"]
                ok = _supported_rates(dev, kind)
                raise AudioBackendError(
                    f"{kind} device {dev} ({name}) rejects "
                    f"{self.in_channels if kind == 'input' else 2} channels of float32 at "
                    f"{rate} Hz",
                    expected=f"one of {', '.join(map(str, ok)) or 'no common rate'} Hz",
                    got=f"{rate} Hz ({exc})",
                    fix=f"--rate {ok[0]}" if ok else "pick another device",
                ) from None
        self.rate = int(rate)
        if blocksize < 0 or blocksize > 8192:
            raise AudioBackendError("bad block size", expected="0..8192 frames",
                                    got=str(blocksize))
        self.input_overflows = 0
        self.output_underflows = 0
        self.callbacks = 0
        nb = blocksize or 4096  # 0: PortAudio picks; size the engine for the largest block
        self.engine = eng = Engine(separator, block_size=nb, io_rate=self.rate,
                                   resample_quality=resample_quality,
                                   buses=karaoke_buses(separator.sources),
                                   safety_ms=safety_ms)
        s = len(separator.sources)
        self._in = np.zeros((2, nb), np.float32)
        self._mix = np.zeros((2, nb), np.float32)
        self._stems = np.zeros((s, 2, nb), np.float32)
        self._buses = np.zeros((1, 2, nb), np.float32)
        self._mic_in = np.zeros((len(self.mic_channels), nb), np.float32)
        self.mic = None  # set before start(); see mic_channels
        for n in {nb, max(1, nb // 2)}:  # compile every path now, not in the callback
            eng.push(self._in[:, :n])
            eng.run_pending()
            eng.pull_into(self._mix[:, :n], self._stems[:, :, :n], self._buses[:, :, :n])
        eng.reset()
        try:
            self.stream = sd.Stream(device=(self.input, self.output), samplerate=self.rate,
                                    blocksize=blocksize, dtype="float32",
                                    channels=(self.in_channels, 2),
                                    latency=latency, callback=self._callback)
        except sd.PortAudioError as exc:
            raise AudioBackendError(
                "the audio device refused the stream", got=str(exc),
                expected=f"a block size it supports at {self.rate} Hz",
                fix="try --block 0 (the device's own size) or --latency high") from None

    @property
    def latency_samples(self) -> int:
        return self.engine.latency_samples

    def device_latency_s(self) -> tuple[float, float]:
        """PortAudio's own (input, output) latency estimate, on top of the engine's."""
        return tuple(self.stream.latency)

    def _callback(self, indata, outdata, frames, time, status) -> None:
        """PortAudio's audio thread: copy in, copy out, count flags. Always fills outdata."""
        self.callbacks += 1
        if status:
            if status.input_overflow:
                self.input_overflows += 1
            if status.output_underflow:
                self.output_underflows += 1
        if frames > self.engine.block_size:  # cannot happen with a fixed block size
            outdata.fill(0.0)
            return
        inbuf = self._in[:, :frames]
        inbuf[:] = indata[:, :2].T
        self.engine.push(inbuf)
        self.engine.pull_into(self._mix[:, :frames], self._stems[:, :, :frames],
                              self._buses[:, :, :frames])
        mic = self.mic
        if mic is not None and frames == self._mic_in.shape[1]:
            for k, ch in enumerate(self.mic_channels):
                self._mic_in[k] = indata[:, ch]
            mic.process(self._mic_in, self._mix)
        outdata[:] = self._mix[:, :frames].T

    def start(self) -> "PortAudioHost":
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        self.engine.start()
        self.stream.start()
        return self

    def levels(self) -> dict[str, float]:
        out = {s: float(np.abs(self._stems[i]).max())
               for i, s in enumerate(self.engine.sources)}
        out["output"] = float(np.abs(self._mix).max())
        if self.mic is not None:
            out["mic"] = float(np.abs(self._mic_in).max())
        return out

    def stats(self) -> dict:
        sd = _sd()
        return live_stats(self.engine, backend="portaudio",
                          input_device=sd.query_devices(self.input)["name"],
                          output_device=sd.query_devices(self.output)["name"],
                          input_overflows_pa=self.input_overflows,
                          output_underflows=self.output_underflows,
                          xruns=self.input_overflows + self.output_underflows,
                          callbacks=self.callbacks,
                          mic_channels=[c + 1 for c in self.mic_channels],
                          device_latency_s=list(self.stream.latency))

    def close(self) -> None:
        try:
            self.stream.stop()
        finally:
            self.stream.close()
            self.engine.stop()
