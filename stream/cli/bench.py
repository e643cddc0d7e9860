"""`livestems bench` and `livestems latency`: the numbers users choose a separator by."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "bench"


def add_parser(sub) -> None:
    from livestems.model.nets.registry import default_model

    b = sub.add_parser(
        "bench",
        help="per-hop compute time, real-time factor and latency of a model (or `bench dsp`)",
        description="Stream audio through the real-time engine hop by hop, as fast as possible "
        "(no sleeping), and report per-hop compute time percentiles, the real-time factor "
        "(compute / hop duration; below 1 keeps up, and the p99 is what decides glitches), "
        "the declared latency, peak memory and threads. `livestems bench dsp --help` for the "
        "STFT kernel micro-benchmark. Absolute times hold only on the machine that measured "
        "them.",
    )
    b.add_argument("what", nargs="?", default="stream", choices=["stream", "dsp", "report"],
                   help="stream (default): a model through the engine; dsp: STFT kernels; "
                        "report: measure everything and rewrite docs/BENCHMARKS.md (minutes; "
                        "`report --offline-only`: only its offline table)")
    b.add_argument("--offline", action="store_true",
                   help="offline throughput instead: `separate` on one file for the models "
                        "(load, decode, compute, write timed apart; then one copy per core "
                        "in worker processes, wall time with everything), "
                        "beside Hybrid Demucs and Open-Unmix (random weights, published sizes) "
                        "on the same audio and threads")
    b.add_argument("--peers", default="hdemucs,umx",
                   help="with --offline: peers to run (hdemucs,umx; '' for none). Hybrid "
                        "Demucs pads to its 40 s training segment, so it is slow on short files")
    b.add_argument("--out", default="docs", help="with `report`: folder for the report")
    b.add_argument("--model", action="append", default=None, metavar="NAME|PATH",
                   help=f"model to measure; repeat for several (default: {default_model()}; $LIVESTEMS_MODEL overrides)")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the model runs (cuda needs a GPU build of torch)")
    b.add_argument("--hop", type=int, default=None,
                   help="override the model's hop where it allows it: a smaller hop lowers "
                        "latency but costs more per second of audio")
    b.add_argument("--seconds", type=float, default=None,
                   help="audio to stream (default 10; --offline: the file length, default 60): "
                        "longer gives steadier tail percentiles")
    b.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 when streaming, where a hop's small matrices "
                        "gain nothing from a second thread but its p99 suffers; all cores "
                        "with --offline)")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--shift", action="store_true",
                   help="shift consistency instead (issue 16): the error in dB between "
                        "separating real music and separating it delayed by 1, 37 and 128 "
                        "samples, aligned back (edges left out). Live, the song's position on "
                        "the model's frame grid depends on when playback starts: lower is "
                        "steadier. Uses --seconds of ../shared/data/train-real/6.Caesium "
                        "(default 20; validation song) or --shift-song FOLDER")
    b.add_argument("--shift-song", default=None, metavar="FOLDER",
                   help="with --shift: a folder of stems (mixture = their sum)")
    b.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    lat = sub.add_parser(
        "latency",
        help="measure end-to-end latency with an impulse and compare with the declared one",
        description="Send an impulse through the whole engine (input ring, worker thread, "
        "model, mixer, output ring) and find it on the output; the measured delay must equal "
        "the declared latency to the sample.",
    )
    lat.add_argument("--model", default=None, metavar="NAME|PATH", help="model to measure")
    lat.add_argument("--block", type=int, default=None, metavar="SAMPLES",
                     help="host block size (default: the model's hop)")
    lat.add_argument("--json", action="store_true", help="print JSON")
    lat.set_defaults(command="latency")


def _load(name, device, hop):
    from livestems.model.nets.registry import load_separator

    sep = load_separator(name, device=device)
    if hop is not None and hop != sep.hop:
        cfg = getattr(sep, "config", lambda: {})()
        if "hop" not in cfg:
            raise SystemExit(f"error: model {name or 'default'} has a fixed hop of {sep.hop}; "
                             "drop --hop")
        sep = type(sep)(**{**cfg, "hop": hop})
    return sep


def _table(reports) -> str:
    head = (f"{'model':14s} {'rate':>6s} {'hop':>5s} {'lat ms':>7s} {'hop ms':>7s} "
            f"{'e2e ms':>7s} {'p50':>7s} {'p90':>7s} {'p99':>7s} {'p99.9':>7s} {'max':>7s} "
            f"{'rtf50':>6s} {'rtf99':>6s} {'rss MB':>7s} {'thr':>3s}")
    lines = [head, "-" * len(head)]
    for r in reports:
        p = r["per_hop_ms"]
        lines.append(
            f"{r['model'][:14]:14s} {r['sample_rate']:6d} {r['hop']:5d} {r['latency_ms']:7.2f} "
            f"{r['hop_ms']:7.2f} {r['engine_latency_ms']:7.2f} {p['p50']:7.3f} {p['p90']:7.3f} {p['p99']:7.3f} "
            f"{p['p999']:7.3f} {p['max']:7.3f} {r['rtf_p50']:6.3f} {r['rtf_p99']:6.3f} "
            f"{r['peak_rss_mb']:7.0f} {r['threads']:3d}")
    m = reports[0]["machine"]
    lines.append("lat ms: the model's declared latency; e2e ms: end to end through the engine "
                 "with host blocks of one hop")
    lines.append(f"per-hop compute times in ms; machine: {m['cpu']}, {m['cores']} cores; "
                 f"reference computation {reports[0]['reference_ms']:.3f} ms")
    return "\n".join(lines)


def _run_shift(args) -> int:
    """`bench --shift`: shift consistency of each model on real music (model/evaluation/consistency.py)."""
    from livestems.model.evaluation.consistency import DEFAULT_SONG, load_song, shift_consistency
    from livestems.model.nets.registry import default_model

    song = args.shift_song or DEFAULT_SONG
    seconds = args.seconds or 20.0
    reports = []
    for name in args.model or [None]:
        sep = _load(name, args.device, args.hop)
        try:  # one second more at each end: the edges left out
            x, offset_s = load_song(song, sep.sample_rate, offset_s=30.0, seconds=seconds + 2.0)
            res = shift_consistency(sep, x, edge_samples=sep.sample_rate)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}; pass --shift-song FOLDER (a song of at least --seconds "
                  f"+ 2 s)", file=sys.stderr)
            return 2
        res.update(model=name or default_model(), song=str(song), offset_s=round(offset_s, 3),
                   seconds=x.shape[1] / sep.sample_rate)
        reports.append(res)
    if args.json:
        out = {"shift_consistency": reports[0] if len(reports) == 1 else reports}
        print(json.dumps(out, indent=2, default=str))
        return 0
    for r in reports:
        measured = (r["samples"] - 2 * r["edge_samples"]) / r["sample_rate"]
        print(f"shift consistency of {r['model']}: {r['song']} from {r['offset_s']:g} s, "
              f"{measured:.0f} s measured ({r['edge_samples']} samples left out at each end)")
        stems = list(next(iter(r["shifts"].values()))["stems_db"])
        print(f"{'shift':>6s} {'all dB':>7s} " + " ".join(f"{s[:9]:>9s}" for s in stems))
        for d, v in r["shifts"].items():
            print(f"{d:6d} {v['error_db']:7.1f} "
                  + " ".join(f"{v['stems_db'][s]:9.1f}" for s in stems))
    print("error of the stems of x delayed by `shift` samples (aligned back) against the "
          "stems of x, in dB of the stems' energy: lower is steadier")
    return 0


def offline_table(res: dict) -> str:
    """The offline report as a text table (x = audio seconds per wall second)."""
    base = next((r for r in res["rows"] if r["model"] == "hdemucs"), None)
    lines = [f"{'model':8s} {'params':>7s} {'load s':>6s} {'decode':>6s} {'compute':>7s} "
             f"{'write':>6s} {'compute x':>9s} {'wall x':>7s} {'+load x':>7s} "
             f"{'2 threads x':>11s} {'N files: compute x':>18s} {'wall x':>7s} "
             f"{'torch path x':>12s} {'vs hdemucs':>10s}  what"]
    for r in res["rows"]:
        ratio = f"{r['throughput'] / base['throughput']:.1f}x" if base else "-"
        lib = r.get("library")
        libs = (f"{lib['files']:>2d} on {lib['workers']}: {lib['compute_x']:10.1f} "
                f"{lib['wall_x']:7.1f}" if lib else f"{'-':>18s} {'-':>7s}")
        eng = r.get("engines")
        two = f"{eng['batched_2_threads']['x']:11.1f}" if eng else f"{'-':>11s}"
        old = f"{eng['torch']['x']:12.1f}" if eng else f"{'-':>12s}"
        if r["kind"] == "livestems":
            lines.append(f"{r['model']:8s} {r['params'] / 1e6:6.2f}M {r['load_s']:6.2f} "
                         f"{r['decode_s']:6.2f} {r['compute_s']:7.2f} {r['write_s']:6.2f} "
                         f"{r['compute_x']:9.1f} {r['throughput']:7.1f} "
                         f"{r['wall_with_load_x']:7.1f} {two} {libs} {old} {ratio:>10s}  "
                         "livestems")
        else:
            lines.append(f"{r['model']:8s} {r['params'] / 1e6:6.2f}M {'-':>6s} {'-':>6s} "
                         f"{r['wall_s']:7.2f} {'-':>6s} {r['compute_x']:9.1f} "
                         f"{r['throughput']:7.1f} {'-':>7s} {'-':>11s} {libs} {'-':>12s} "
                         f"{ratio:>10s}  {r['kind']}")
    for r in res["rows"]:
        eng = r.get("engines")
        if eng:
            lines.append(
                f"{r['model']}: batched engine {eng['batched']['x']:.1f}x vs torch path "
                f"{eng['torch']['x']:.1f}x on one thread in memory, this run: "
                f"{eng['speedup']:.2f}x faster (CPU time {eng['batched']['cpu_x']:.1f}x vs "
                f"{eng['torch']['cpu_x']:.1f}x: {eng['cpu_speedup']:.2f}x)")
    lines.append(f"{res['seconds']:g} s file; ours: one torch thread per file (2 threads x: "
                 "the same file on 2 threads of the batched engine), N files in N "
                 f"worker processes (one per core); peers: {res['threads']} torch threads; "
                 f"machine: "
                 f"{res['machine']['cpu']}, {res['machine']['cores']} cores; times in s, "
                 "x = audio seconds per wall second; wall = decode + compute + write, "
                 "+load adds the model load; 1-minute load average "
                 + "{:.1f} before, {:.1f} after".format(*res.get("loadavg_1min", (0, 0))))
    return "\n".join(lines)


def run(args) -> int:
    from livestems.stream.bench.measure import bench_stream, measure_latency

    if args.command == "latency":
        from livestems.model.nets.registry import default_model, load_separator

        sep = load_separator(args.model)
        res = measure_latency(sep, block_size=args.block)
        res["model"] = args.model or default_model()
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"{res['model']}: declared {res['declared_samples']} samples "
                  f"({res['declared_ms']:.2f} ms at {res['sample_rate']} Hz, block "
                  f"{res['block_size']}); measured {res['measured_mix_samples']} on the mix, "
                  f"{res['measured_stems_samples']} on the stems: "
                  f"{'agrees' if res['agrees'] else 'DISAGREES'}")
        return 0 if res["agrees"] else 1
    if args.shift:
        return _run_shift(args)
    if args.what == "dsp":
        from livestems.stream.bench.dsp_kernels import main as bench_dsp

        return int(bench_dsp(args.rest) or 0)
    if args.what == "report" and args.rest:
        # options after the positional `report` land in `rest` (argparse REMAINDER)
        sub = argparse.ArgumentParser(prog="livestems bench report")
        sub.add_argument("--out", default=args.out)
        sub.add_argument("--offline-only", action="store_true",
                         help="measure only the offline table and replace that section of "
                              "OUT/BENCHMARKS.md (the other sections stay as measured)")
        parsed = sub.parse_args(args.rest)
        args.out, args.offline_only = parsed.out, parsed.offline_only
        args.rest = []
    if args.rest:
        print(f"error: unexpected arguments {' '.join(args.rest)}", file=sys.stderr)
        return 2
    if args.seconds is not None and args.seconds <= 0:
        print(f"error: --seconds must be > 0, got {args.seconds}", file=sys.stderr)
        return 2
    from livestems.model.nets.registry import default_model

    import os

    import torch

    threads = args.threads or (os.cpu_count() if args.offline else 1)
    if threads < 1:
        print(f"error: --threads must be >= 1, got {threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(threads)
    from livestems.stream.core import engine as engine_mod

    engine_mod.STREAM_TORCH_THREADS = threads  # engines keep what was asked for
    if args.what == "report":
        from livestems.stream.bench.report import write_offline_section, write_report

        say = lambda m: print(m, file=sys.stderr)  # noqa: E731
        if getattr(args, "offline_only", False):
            path = write_offline_section(args.out, seconds=args.seconds or 60.0, say=say)
        else:
            path = write_report(args.out, say=say)
        print(f"wrote {path}")
        return 0
    if args.offline:
        from livestems.stream.bench.measure import PEERS, PeerMissing, bench_offline

        peers = [p for p in args.peers.split(",") if p]
        unknown = [p for p in peers if p not in PEERS]
        if unknown:
            print(f"error: unknown peer(s) {','.join(unknown)}; expected some of "
                  f"{','.join(PEERS)}", file=sys.stderr)
            return 2
        try:
            res = bench_offline(args.model or [default_model()], seconds=args.seconds or 60.0,
                                peers=peers, progress=lambda m: print(m, file=sys.stderr))
        except PeerMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 4
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(offline_table(res))
        return 0

    reports = []
    for name in args.model or [None]:
        sep = _load(name, args.device, args.hop)
        reports.append(bench_stream(sep, seconds=args.seconds or 10.0,
                                    model_name=name or default_model(),
                                    device=args.device))
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        print(_table(reports))
    return 0
ALIASES = ("latency",)
