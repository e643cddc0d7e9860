"""The live terminal view: per-stem meters, latency, real-time factor, misses and xruns; `q` quits.

Plain ANSI (no curses), so it works in any terminal, under tmux and through a pty. It runs on
the main thread: :meth:`LiveView.tick` redraws and polls the keyboard without blocking. Meter
levels are read from the backend's last output block (a racy read of a float array, harmless
for a display), so the audio callback does no metering work at all.
"""

from __future__ import annotations

import math
import os
import select
import sys
import time

__all__ = ["LiveView", "meter_bar"]

_FLOOR_DB = -60.0


def meter_bar(db: float, width: int = 30) -> str:
    """``db`` (dBFS) as a bar of ``width`` cells from -60 dB to 0 dB."""
    frac = min(1.0, max(0.0, (db - _FLOOR_DB) / -_FLOOR_DB))
    full = int(round(frac * width))
    return "#" * full + "-" * (width - full)


class LiveView:
    """Redraws a status screen and watches for `q`.

    Args:
        title: first line (what runs, where).
        stats: callable returning the backend's stats dict (see ``live_stats``).
        levels: callable returning ``{name: peak linear level of the last block}``.
        out, keys: text output and keyboard input (default: stdout, stdin).
        interval_s: redraw period.
    """

    def __init__(self, title: str, stats, levels, *, out=None, keys=None,
                 interval_s: float = 0.1):
        self.title = title
        self.stats = stats
        self.levels = levels
        self.out = out or sys.stdout
        self.keys = keys or sys.stdin
        self.interval_s = interval_s
        self._held: dict[str, float] = {}
        self._last = 0.0
        self._term = None
        self.quit = False

    def __enter__(self):
        try:  # cbreak: keys arrive one at a time, without Enter, and are not echoed
            import termios
            import tty

            fd = self.keys.fileno()
            if os.isatty(fd):
                self._term = (fd, termios.tcgetattr(fd))
                tty.setcbreak(fd)
        except (ImportError, OSError, ValueError, AttributeError):
            self._term = None
        self.out.write("\x1b[?25l\x1b[2J")  # hide the cursor, clear the screen
        self.out.flush()
        return self

    def __exit__(self, *exc):
        if self._term is not None:
            import termios

            termios.tcsetattr(self._term[0], termios.TCSADRAIN, self._term[1])
        self.out.write("\x1b[?25h\n")
        self.out.flush()

    def _poll_keys(self) -> None:
        try:
            fd = self.keys.fileno()
            while select.select([fd], [], [], 0)[0]:
                ch = os.read(fd, 1)
                if not ch:  # end of input: nobody can press q any more; keep running
                    break
                if ch in (b"q", b"Q"):
                    self.quit = True
                    break
        except (OSError, ValueError, AttributeError):
            pass

    def render(self) -> str:
        st = self.stats()
        lines = [self.title, ""]
        now = time.monotonic()
        for name, peak in self.levels().items():
            db = 20 * math.log10(peak) if peak > 1e-6 else -120.0
            # peak hold with a 20 dB/s fall, so short peaks stay readable at 10 redraws a second
            held = self._held.get(name, -120.0) - 20.0 * (now - self._last if self._last else 0)
            held = max(db, held)
            self._held[name] = held
            lines.append(f"  {name:14s} [{meter_bar(held)}] {held:6.1f} dB")
        lines.append("")
        lines.append(f"  latency   {st['latency_samples']} samples = {st['latency_ms']:.1f} ms"
                     f" at {st['sample_rate']} Hz (model {st['model_rate']} Hz)")
        lines.append(f"  per hop   p50 {st['per_hop_ms']['p50']:.3f} ms, p99 "
                     f"{st['per_hop_ms']['p99']:.3f} ms; real-time factor p50 "
                     f"{st['rtf_p50']:.3f}, p99 {st['rtf_p99']:.3f}")
        lines.append(f"  misses    {st['deadline_misses']} deadline misses "
                     f"({st['missed_samples']} samples played dry); xruns {st.get('xruns', 0)}")
        if st.get("worker_error"):
            lines.append(f"  MODEL ERROR (playing the dry input): {st['worker_error']}")
        lines.append("")
        lines.append("  press q to quit")
        self._last = now
        return "\x1b[H" + "\n".join(line + "\x1b[K" for line in lines) + "\x1b[J"

    def tick(self) -> bool:
        """Main thread: redraw when due, read keys; False once `q` was pressed."""
        self._poll_keys()
        if self.quit:
            return False
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self.out.write(self.render())
            self.out.flush()
        return True
