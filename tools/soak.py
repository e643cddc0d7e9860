"""A live soak measured against a baseline in the same run (issue 16, docs/LIVE.md).

    .venv/bin/python tools/soak.py [--minutes 10] [--rate 48000] [--period 128] [--python]
                                   [--shim] [--safety-ms MS] [--no-beside] [--json OUT]

One JACK server (dummy driver, ``--no-realtime``, as the tests use), then phases of equal
length on it:

1. **baseline**: a native audio source (``jack_metro``, a click every beat) feeding a native
   do-nothing client (``jack_thru``, input copied to output); nothing of ours.
2. **livestems jack**: the same two, plus ``livestems jack`` with its defaults (model, safety
   margin chosen at start-up, low-delay resampler at 48 kHz, the process callback in C when
   the bridge library is built), its inputs fed by the metronome.
3. with ``--python``: ``livestems jack --callback python`` (JACK-Client's callback, which
   takes the GIL every period), the same defaults otherwise.
4. with ``--shim``: the same with the C++ shim ``bridge/build/livestems-jack`` instead
   (``make -C bridge`` first), given the safety margin phase 2 chose and ``--quality LD``
   (the shim has no start-up choice of its own).

Beside that server a second one (``--no-beside``: none) runs the baseline's two clients
through every phase, so each phase also has a baseline counted over the same minutes: two
identical servers side by side differ by a few xruns in a few minutes on a 2-core VM (their
xruns mostly fall at different moments), so one sequential baseline phase says little on its
own. A phase passes against the server beside it when that ran, else against the baseline
phase.

Xruns are counted by a client of this script that registers only an xrun callback (it has no
process callback, so it adds nothing to the cycle); each server's own log says which client
was late for each ("jack_thru was not finished": woken, but no CPU before the next cycle) or
that its timer thread woke late. For our phases it also reads the app's own
statistics (deadline misses, the process callback's xruns, skipped cycles) and samples the
process's resident memory every second: the growth is the fitted slope over the run after a
30 s warm-up, times the run's length. Prints one line per phase and a verdict per phase: no
more xruns than the baseline, 0 deadline misses, RSS growth < 1 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "bridge" / "build" / "livestems-jack"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for {pid}")


def _jack_tool(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    """A JACK command-line tool, with an error instead of a hang when the server is wedged."""
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} did not answer in 20 s: a JACK server killed with -9 can "
                           "leave its shared memory behind (stop every jackd, remove "
                           "/dev/shm/jack*, retry)") from None


def _wait_ports(server: str, want, proc, what: str, timeout: float = 60.0) -> list[str]:
    """The server's ports that ``want`` (a list of names, or a predicate on a name) selects,
    once there are any (all of them, for a list); an error if ``proc`` exits first."""
    env = dict(os.environ, JACK_DEFAULT_SERVER=server)
    pick = (lambda p: p in want) if isinstance(want, list) else want
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = _jack_tool(["jack_lsp"], env).stdout
        found = [p for p in out.split("\n") if p and pick(p)]
        if found and (not isinstance(want, list) or len(found) == len(want)):
            return found
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before its ports "
                               f"appeared: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    raise TimeoutError(f"{what}'s ports did not appear on {server} within {timeout:g} s")


def _connect(server: str, src: str, dst: str, timeout: float = 60.0) -> None:
    """Connect, retrying while the client registers its ports but is not active yet."""
    env = dict(os.environ, JACK_DEFAULT_SERVER=server)
    deadline = time.monotonic() + timeout
    while True:
        r = _jack_tool(["jack_connect", src, dst], env)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"jack_connect {src} {dst} failed: {r.stdout}{r.stderr}")
        time.sleep(0.3)


class XrunCounter:
    """A JACK client with an xrun callback only (no process callback)."""

    def __init__(self, server: str, log: Path | None = None):
        import jack

        self.log = log  # the server's output, where it names the clients that were late
        self.count = 0
        self.times: list[float] = []  # time.monotonic() of each xrun
        self.client = jack.Client("lssoak-xruns", servername=server, no_start_server=True)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _xrun(self, delay):
        self.count += 1
        self.times.append(time.monotonic())

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log is not None and self.log.exists() else 0

    def causes(self, start: int) -> dict:
        """What the server logged since byte ``start``: for each xrun, either a client "not
        finished" when the next cycle began (it was woken but got no CPU in time), or its own
        timer thread waking late ("driver late")."""
        if self.log is None or not self.log.exists():
            return {}
        with open(self.log, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        out: dict[str, int] = {}
        for m in re.finditer(r"client = (\S+) was not finished", text):
            out[m.group(1)] = out.get(m.group(1), 0) + 1
        late = [int(d) for d in re.findall(r"JackTimedDriver::Process XRun = (\d+) usec", text)]
        if late:
            out["driver late"] = len(late)
            out["driver late max us"] = max(late)
        return out

    def close(self):
        self.client.deactivate()
        self.client.close()


def _phase(name, seconds, counter, start=None, stop=None, stats=None, beside=None):
    """Run ``seconds``; returns the phase's figures (``beside``: the second server's xrun
    counter, read over the same window)."""
    proc = start() if start else None
    rss = []
    try:
        x0 = counter.count
        b0 = beside.count if beside is not None else 0
        l0 = counter.log_size()
        lb0 = beside.log_size() if beside is not None else 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            if proc is not None:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name}: the process exited early ({proc.returncode})")
                rss.append((time.monotonic() - t0, _rss_mb(proc.pid)))
        xruns = counter.count - x0
        when = [round(t - t0, 1) for t in counter.times[x0:x0 + xruns]]
        causes = counter.causes(l0)
        if beside is not None:
            nb = beside.count - b0
            bwhen = [round(t - t0, 1) for t in beside.times[b0:b0 + nb]]
            bcauses = beside.causes(lb0)
    finally:
        out = stop(proc) if proc is not None else ""
    res = {"phase": name, "seconds": seconds, "xruns": xruns, "xrun_times_s": when,
           "xrun_causes": causes}
    if beside is not None:
        res.update(beside_xruns=nb, beside_xrun_times_s=bwhen, beside_xrun_causes=bcauses)
    if stats is not None:
        st = json.loads(Path(stats).read_text())
        res.update({k: st.get(k) for k in ("deadline_misses", "xruns", "frame_gaps",
                                            "latency_samples", "hops_processed", "safety_ms",
                                            "lead_ms")})
        res["missed_frames"] = st.get("missed_frames", st.get("missed_samples"))
        res["app_xruns"] = res.pop("xruns")
        res["xruns"] = xruns
    if rss:
        import numpy as np

        t, m = np.array(rss).T
        keep = t >= min(30.0, seconds / 4)
        slope = float(np.polyfit(t[keep], m[keep], 1)[0])  # MB per second
        res.update({"rss_start_mb": float(m[keep][0]), "rss_end_mb": float(m[-1]),
                    "rss_growth_mb": slope * seconds})
    if out:
        res["output"] = out[-2000:]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--period", type=int, default=128)
    ap.add_argument("--python", action="store_true",
                    help="also soak `livestems jack --callback python` (the process callback "
                         "in Python)")
    ap.add_argument("--safety-ms", default=None, metavar="MS",
                    help="give our apps this margin instead of their start-up choice (to "
                         "measure misses against the margin)")
    ap.add_argument("--shim", action="store_true", help="also soak the C++ shim")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the baseline phase (when only our deadline misses matter)")
    ap.add_argument("--no-beside", action="store_true",
                    help="no second server: by default a second JACK server runs the "
                         "baseline's two clients through every phase, so that each phase has "
                         "a baseline measured over the same minutes (their xruns mostly "
                         "fall at different moments, but a stall of the whole machine hits "
                         "both)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    for tool in ("jackd", "jack_metro", "jack_thru", "jack_lsp", "jack_connect"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found: install Debian's jackd2 (make deps)")
    if args.shim and not SHIM.exists():
        ap.error(f"{SHIM.relative_to(REPO)} not found: build it with `make -C bridge`")
    seconds = args.minutes * 60.0
    server = f"lssoak{os.getpid()}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=server)
    tmp = Path(tempfile.mkdtemp(prefix="lssoak"))
    procs = []

    def spawn(cmd, env=env, log=None, **kw):
        """``log``: a file for the output (servers and baseline clients run for the whole soak
        and nobody reads a pipe of theirs: once full, it would block their writes)."""
        out = subprocess.PIPE if log is None else open(log, "w")
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if log else
                             subprocess.PIPE, text=True, **kw)
        if log is not None:
            out.close()
        procs.append(p)
        return p

    results = []
    counter = beside = None

    def baseline_server(name):
        """A server with the baseline's clients (metronome into jack_thru) and an xrun
        counter."""
        e = dict(env, JACK_DEFAULT_SERVER=name)
        spawn(["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", str(args.rate),
               "-p", str(args.period)], env=e, log=tmp / f"{name}.jackd.log")
        time.sleep(1.0)
        metro = spawn(["jack_metro", "-n", "lsmetro", "-b", "120", "-f", "660", "-D", "60",
                       "-A", "0.5"], env=e, log=tmp / f"{name}.metro.log")
        thru = spawn(["jack_thru"], env=e, log=tmp / f"{name}.thru.log")
        _wait_ports(name, ["lsmetro:120_bpm"], metro, "jack_metro")
        # jack_thru names its client itself (jack_thru:input_1 here)
        thru_in = _wait_ports(name, lambda p: p.startswith("jack_thru:input"), thru,
                              "jack_thru")[0]
        _connect(name, "lsmetro:120_bpm", thru_in)
        return XrunCounter(name, tmp / f"{name}.jackd.log")

    try:
        counter = baseline_server(server)
        if not args.no_beside:
            beside = baseline_server(server + "b")
        print(f"server {server}: {args.rate} Hz, {args.period}-frame periods, "
              f"{args.minutes:g} min per phase"
              + ("" if beside is None else f"; beside it {server}b with the baseline's "
                                           "clients only, through every phase"), flush=True)

        if not args.no_baseline:
            results.append(_phase("baseline (metronome + do-nothing client)", seconds,
                                  counter, beside=beside))
            print(_line(results[-1]), flush=True)

        stats = tmp / "app.json"

        def start_app(*extra):
            def start():
                p = spawn([sys.executable, "-m", "livestems.stream", "jack", "--name", "lsapp",
                           "--server", server, "--stats", str(stats), *extra])
                _wait_ports(server, ["lsapp:in_L", "lsapp:in_R", "lsapp:karaoke_L"], p,
                            "livestems jack")
                _connect(server, "lsmetro:120_bpm", "lsapp:in_L")
                _connect(server, "lsmetro:120_bpm", "lsapp:in_R")
                return p
            return start

        def stop(p):
            p.send_signal(signal.SIGTERM)  # as a service manager would (SIGINT may be ignored)
            out, err = p.communicate(timeout=60)
            procs.remove(p)
            return out + err

        given = ("--safety-ms", args.safety_ms) if args.safety_ms is not None else ()
        label = f"--safety-ms {args.safety_ms}" if given else "defaults"
        results.append(_phase(f"livestems jack ({label})", seconds, counter,
                              start_app(*given), stop, stats, beside))
        print(_line(results[-1]), flush=True)
        margin = _margin(results[-1].get("output", ""))

        if args.python:
            results.append(_phase(f"livestems jack --callback python ({label})", seconds,
                                  counter, start_app("--callback", "python", *given), stop,
                                  stats, beside))
            print(_line(results[-1]), flush=True)

        if args.shim:
            sstats = tmp / "shim.json"

            def start_shim():
                p = spawn([str(SHIM), "--name", "lsshim", "--server", server, "--quality", "LD",
                           "--safety-ms", str(margin), "--stats", str(sstats)])
                _wait_ports(server, ["lsshim:in_L", "lsshim:in_R"], p, "the C++ shim")
                _connect(server, "lsmetro:120_bpm", "lsshim:in_L")
                _connect(server, "lsmetro:120_bpm", "lsshim:in_R")
                return p

            results.append(_phase(f"C++ shim (--quality LD --safety-ms {margin})",
                                  seconds, counter, start_shim, stop, sstats, beside))
            print(_line(results[-1]), flush=True)
    finally:
        for c in (counter, beside):
            if c is not None:
                c.close()
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    base = None if args.no_baseline else results[0]["xruns"]
    ok = True
    for r in results[0 if base is None else 1:]:
        # the baseline to beat: the server beside, over the same minutes, when it ran; else
        # the baseline phase before
        ref = r.get("beside_xruns", base)
        good = ((ref is None or r["xruns"] <= ref) and r.get("deadline_misses") == 0
                and r.get("rss_growth_mb", 0.0) < 1.0)
        ok &= good
        vs = (f"baseline beside {ref}" if "beside_xruns" in r else
              f"baseline {'not run' if base is None else base}")
        print(f"{r['phase']}: {'PASS' if good else 'FAIL'} (xruns {r['xruns']} vs {vs}"
              + ("" if "beside_xruns" not in r or base is None else
                 f"; the baseline phase had {base}")
              + f", deadline misses {r.get('deadline_misses')}, RSS growth "
              f"{r.get('rss_growth_mb', float('nan')):+.2f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rate": args.rate, "period": args.period,
                                               "minutes": args.minutes, "phases": results},
                                              indent=1))
    return 0 if ok else 1


def _margin(output: str) -> int:
    m = re.search(r"safety margin: (\d+) ms", output)
    return int(m.group(1)) if m else 0


def _causes(c: dict) -> str:
    """``jack_thru not finished 2, driver late 3 (by up to 3827 us)``."""
    c = dict(c)
    late_us = c.pop("driver late max us", None)
    return ", ".join(f"{k} {v}" + (f" (by up to {late_us} us)" if late_us is not None else "")
                     if k == "driver late" else f"{k} not finished {v}"
                     for k, v in sorted(c.items(), key=lambda kv: -kv[1]))


def _line(r: dict) -> str:
    parts = [f"{r['phase']}: {r['seconds'] / 60:g} min, xruns {r['xruns']}"]
    if "deadline_misses" in r:
        parts.append(f"deadline misses {r['deadline_misses']} ({r['missed_frames']} frames), "
                     f"app-seen xruns {r['app_xruns']}, skipped cycles {r['frame_gaps']}, "
                     f"latency {r['latency_samples']} samples, hops {r['hops_processed']}")
        if r.get("lead_ms"):  # the C++ shim has no Python engine: no lead figures
            parts.append(f"margin {r.get('safety_ms')} ms, output lead min "
                         f"{r['lead_ms']['min']:.1f} ms (p1 {r['lead_ms']['p1']:.1f}): "
                         f"{r['safety_ms'] - r['lead_ms']['min']:.1f} ms of margin needed")
    if r.get("xrun_times_s"):
        parts.append("xruns at " + ", ".join(f"{t:g}" for t in r["xrun_times_s"][:20]) + " s")
    if r.get("xrun_causes"):
        parts.append("the server's log: " + _causes(r["xrun_causes"]))
    if "beside_xruns" in r:
        parts.append(f"the baseline server beside: xruns {r['beside_xruns']}"
                     + (" at " + ", ".join(f"{t:g}" for t in r["beside_xrun_times_s"][:20])
                        + " s" if r["beside_xrun_times_s"] else "")
                     + (f" ({_causes(r['beside_xrun_causes'])})"
                        if r.get("beside_xrun_causes") else ""))
    if "rss_growth_mb" in r:
        parts.append(f"RSS {r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} MB "
                     f"(fitted growth {r['rss_growth_mb']:+.2f} MB)")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
