"""Live karaoke: vocals removed from whatever plays on an input, with an optional guide vocal.

The engine's mix bus is the karaoke mix: every stem at unity except ``vocals``, which is muted
or kept at the guide level (``--guide-db``). The audio flows through
:class:`~livestems.stream.backends.portaudio.PortAudioHost`; the main thread runs the live view
(or just waits) until `q`, Ctrl-C, or ``seconds``.
"""

from __future__ import annotations

import sys
import time

__all__ = ["run_karaoke"]


def run_karaoke(*, input=None, output=None, guide_db: float | None = None, rate=None,
                blocksize: int = 256, latency="low", model=None, seconds: float | None = None,
                view: bool = True, resample_quality: str = "HQ", stats_path=None,
                out=sys.stdout) -> dict:
    """Run karaoke until stopped; returns the final stats (see ``live_stats``)."""
    from livestems.dsp.warmup import warmup
    from livestems.model.registry import load_separator

    from .backends.common import write_stats_json
    from .backends.portaudio import PortAudioHost
    from .live_view import LiveView

    warmup()
    sep = load_separator(model)
    host = PortAudioHost(sep, input=input, output=output, rate=rate, blocksize=blocksize,
                         latency=latency, resample_quality=resample_quality)
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
    print(f"latency {eng.latency_samples} samples = "
          f"{1000 * eng.latency_samples / host.rate:.1f} ms in livestems, plus the devices' "
          f"{1000 * (d_in + d_out):.1f} ms", file=out, flush=True)
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
        if stats_path:
            write_stats_json(stats_path, st)
    print(f"done: {st['deadline_misses']} deadline misses, {st['xruns']} xruns "
          f"(input overflows {st['input_overflows_pa']}, output underflows "
          f"{st['output_underflows']})", file=out)
    return st
