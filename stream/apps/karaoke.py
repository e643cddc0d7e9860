"""Live karaoke: vocals removed from whatever plays on an input, with an optional guide vocal,
an optional key shift and an optional microphone.

The engine's mix bus is the karaoke mix: every stem at unity except ``vocals``, which is muted
or kept at the guide level (``--guide-db``). A key shift (``--key``) wraps the separator in
:class:`~livestems.dsp.pitch.KeyShiftedSeparator`, so it runs on the worker thread and its
delay is part of the published latency. A microphone (``--mic``: extra channels of the input
device) runs through :class:`~livestems.stream.apps.mic.MicChain` (pyo: gate, compressor, reverb)
inside the audio callback and is added to the output. The audio flows through
:class:`~livestems.stream.io.backends.portaudio.PortAudioHost`; the main thread runs the live view
(or just waits) until `q`, Ctrl-C, or ``seconds``.
"""

from __future__ import annotations

import sys
import time

__all__ = ["run_karaoke"]


def run_karaoke(*, input=None, output=None, guide_db: float | None = None, rate=None,
                blocksize: int = 256, latency="low", model=None, seconds: float | None = None,
                view: bool = True, resample_quality: str = "LD", stats_path=None,
                key: float | None = None, key_grain_ms: float | None = None,
                guide_original_key: bool = False, mic: str | None = None,
                mic_db: float = 0.0, mic_gate_db: float = -45.0, mic_reverb: float = 0.25,
                safety_ms: float | str = 0.0, out=sys.stdout) -> dict:
    """Run karaoke until stopped; returns the final stats (see ``live_stats``).

    ``key``: semitones (-12..12) to shift the music by, None for no shifter at all (no added
    latency). ``mic``: "3" or "3,4", 1-based input channels of the microphone.
    """
    from livestems.dsp.warmup import warmup
    from livestems.model.nets.registry import load_separator

    from livestems.stream.io.backends.common import write_stats_json
    from livestems.stream.io.backends.portaudio import PortAudioHost
    from livestems.stream.core.engine import safety_line
    from .live_view import LiveView

    from .mic import MicChain, parse_mic_channels
    from livestems.dsp.pitch import DEFAULT_GRAIN_MS, KeyShiftedSeparator

    mic_channels = parse_mic_channels(mic) if mic else ()
    warmup()
    sep = load_separator(model)
    shifter = None
    if key is not None:
        keep = ("vocals",) if guide_original_key else ()
        shifter = sep = KeyShiftedSeparator(
            sep, key, grain_ms=key_grain_ms or DEFAULT_GRAIN_MS,
            shift_sources=[s for s in sep.sources if s not in keep])
    host = PortAudioHost(sep, input=input, output=output, rate=rate, blocksize=blocksize,
                         latency=latency, resample_quality=resample_quality,
                         mic_channels=mic_channels, safety_ms=safety_ms)
    chain = None
    if mic_channels:
        chain = MicChain(host.rate, blocksize, channels=len(mic_channels), gate_db=mic_gate_db,
                         reverb_mix=mic_reverb, level_db=mic_db)
        host.mic = chain
    eng = host.engine
    if "vocals" in eng.sources:
        if guide_db is None:
            eng.mixer.set_mute("vocals")
        else:
            eng.mixer.set_gain_db("vocals", guide_db)
        eng.mixer.snap()
    else:
        print(f"note: model stems {', '.join(eng.sources)} have no vocals: nothing to remove",
              file=out)
    st = host.stats()
    guide = "off" if guide_db is None else f"{guide_db:+.1f} dB"
    title = (f"livestems karaoke: {st['input_device']} -> {st['output_device']} at "
             f"{host.rate} Hz, blocks of {blocksize or 'auto'}; guide vocal {guide}")
    d_in, d_out = host.device_latency_s()
    print(title, file=out)
    if shifter is not None:
        print(f"key {shifter.semitones:+g} semitones: the shifter adds {shifter.delay_samples} "
              f"samples = {1000 * shifter.delay_samples / shifter.sample_rate:.1f} ms "
              f"(included below)", file=out)
    if chain is not None:
        print(f"mic on input channel {','.join(str(c + 1) for c in mic_channels)}: gate "
              f"{mic_gate_db:g} dB, compressor, reverb {mic_reverb:.0%}, level {mic_db:+g} dB; "
              f"one block ({1000 * blocksize / host.rate:.1f} ms) plus the devices, not "
              f"delayed with the music", file=out)
    print(f"latency {eng.latency_samples} samples = "
          f"{1000 * eng.latency_samples / host.rate:.1f} ms in livestems, plus the devices' "
          f"{1000 * (d_in + d_out):.1f} ms", file=out)
    print(safety_line(eng), file=out, flush=True)
    end = None if seconds is None else time.monotonic() + seconds
    host.start()
    try:
        if view:
            with LiveView(title, host.stats, host.levels, out=out) as v:
                while v.tick() and (end is None or time.monotonic() < end):
                    time.sleep(0.02)
        else:
            while end is None or time.monotonic() < end:
                time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        st = host.stats()
        host.close()
        if chain is not None:
            chain.close()
        if stats_path:
            write_stats_json(stats_path, st)
    print(f"done: {st['deadline_misses']} deadline misses, {st['xruns']} xruns "
          f"(input overflows {st['input_overflows_pa']}, output underflows "
          f"{st['output_underflows']})", file=out)
    return st
