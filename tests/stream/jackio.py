"""Test-side JACK clients: a player that plays a known signal and a recorder that records ports.

They are two clients (not one), so the graph player -> livestems -> recorder has no cycle and
every port is recorded in the same JACK cycle the player fed. Both index by JACK frame time:
recorded sample ``i`` of every port is the cycle-aligned frame ``start + i``, and player sample
``i`` goes out at frame ``start + i``.
"""

import os
import re
import subprocess
import sys
import time

import jack
import numpy as np


class PlayRecord:
    def __init__(self, servername, signal, record, total, *, prefix="lstest"):
        self.signal = np.ascontiguousarray(signal, dtype=np.float32)  # [2, T]
        self.rec = np.zeros((len(record), total), dtype=np.float32)
        self.total = total
        self.start = None
        self.xruns = 0
        self.gaps = 0  # cycles the server skipped for the player or the recorder
        self._next = {"play": None, "rec": None}
        self.player = jack.Client(f"{prefix}-player", servername=servername,
                                  no_start_server=True)
        self.recorder = jack.Client(f"{prefix}-rec", servername=servername,
                                    no_start_server=True)
        self.outs = [self.player.outports.register(p) for p in ("out_L", "out_R")]
        self.ins = [self.recorder.inports.register(f"rec_{i}") for i in range(len(record))]
        self.targets = record
        self.player.set_process_callback(self._play)
        self.recorder.set_process_callback(self._record)
        self.recorder.set_xrun_callback(self._xrun)
        self.player.activate()
        self.recorder.activate()
        for port, target in zip(self.ins, record):
            self.recorder.connect(target, port)

    def _xrun(self, usecs):
        self.xruns += 1

    def _count_gap(self, who, t, frames):
        nxt = self._next[who]
        if nxt is not None and t != nxt:
            self.gaps += 1
        self._next[who] = (t + frames) & 0xFFFFFFFF

    @property
    def disturbed(self) -> int:
        """Xruns JACK reported plus cycles skipped for our clients: either loses samples."""
        return self.xruns + self.gaps

    def connect_to(self, left, right):
        self.player.connect(self.outs[0], left)
        self.player.connect(self.outs[1], right)

    def _play(self, frames):
        t = self.player.last_frame_time
        self._count_gap("play", t, frames)
        for ch, port in enumerate(self.outs):
            buf = port.get_array()
            buf[:] = 0.0
            if self.start is None:
                continue
            i = t - self.start
            a, b = max(i, 0), min(i + frames, self.signal.shape[1])
            if b > a:
                buf[a - i:b - i] = self.signal[ch, a:b]

    def _record(self, frames):
        t = self.recorder.last_frame_time
        self._count_gap("rec", t, frames)
        if self.start is None:
            return
        i = t - self.start
        a, b = max(i, 0), min(i + frames, self.total)
        if b > a:
            for k, port in enumerate(self.ins):
                self.rec[k, a:b] = port.get_array()[a - i:b - i]

    def play(self, lead_frames=256 * 40, timeout_s=None):
        """Start playing ``lead_frames`` from now (cycle aligned); wait until all is recorded.

        A recording that has not finished by the deadline is returned as it is when JACK
        reported xruns or skipped cycles in it (:attr:`disturbed`, which callers check: on a
        machine busy enough the player's frame time was seen to stop short of the end, with
        xruns reported); without any, that is a failure (TimeoutError)."""
        period = self.player.blocksize
        lead = -(-lead_frames // period) * period
        self.start = self.player.last_frame_time + lead
        duration = (lead + self.total) / self.player.samplerate
        deadline = time.monotonic() + (timeout_s or duration * 3 + 10)
        while self.player.last_frame_time < self.start + self.total + 2 * period:
            if time.monotonic() > deadline:
                if self.disturbed:
                    return self.rec
                raise TimeoutError("recording did not finish")
            time.sleep(0.05)
        time.sleep(0.3)  # xrun notifications arrive asynchronously, maybe after the last cycle
        return self.rec

    def close(self):
        for c in (self.player, self.recorder):
            c.deactivate()
            c.close()


def lsp_capture_latency(servername, port):
    """Capture latency range of ``port`` as `jack_lsp -l` (not our code) reports it."""
    out = subprocess.run(["jack_lsp", "-l", port], capture_output=True, text=True,
                         env=dict(os.environ, JACK_DEFAULT_SERVER=servername), check=True).stdout
    m = re.search(r"port capture latency = \[ (\d+) (\d+) \]", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def wait_for_ports(servername, names, timeout_s=30):
    client = jack.Client("lstest-wait", servername=servername, no_start_server=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            have = {p.name for p in client.get_ports()}
            if all(n in have for n in names):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"ports {names} did not appear; have {sorted(have)}")
            time.sleep(0.1)
    finally:
        client.close()


def error_db(got, want):
    """Error energy relative to the reference's, in dB."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return 10 * np.log10((np.sum((got - want) ** 2) + 1e-20) / (np.sum(want ** 2) + 1e-20))


def thread_dump(pid):
    """What a hung process's threads are doing, for a failure message: py-spy's Python and
    native stacks when py-spy is installed, else each thread's name and kernel wait channel."""
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.path.exists(spy):
        r = subprocess.run([spy, "dump", "--native", "--pid", str(pid)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode == 0:
            return r.stdout
    lines = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        def read(name):
            try:
                with open(f"/proc/{pid}/task/{tid}/{name}") as f:
                    return f.read().strip()
            except OSError as exc:
                return f"({exc.strerror})"
        lines.append(f"{tid} {read('comm')}: {read('wchan')}")
    return "\n".join(lines)


def thread_policies(pid) -> dict:
    """``{thread id: (name, scheduling policy)}`` of every thread of process ``pid`` (policy
    as ``os.SCHED_*``: 0 ordinary, 1 FIFO), from /proc."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                stat = f.read()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(task)] = (name, int(fields[38]))  # field 41 of proc(5), counted from state (3)
    return out


def fifo_granted() -> bool:
    """Whether a process here may make a thread SCHED_FIFO (root or an rtprio limit): only
    then can a test tell a worker that asks for it from one that does not."""
    r = subprocess.run([sys.executable, "-c",
                        "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))"],
                       capture_output=True)
    return r.returncode == 0
