"""`livestems bench` and `livestems latency`, and the benchmark regression guard (ratios only)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livestems.model.nets.registry import load_separator
from livestems.stream.bench.measure import bench_stream, measure_latency

BASELINE = Path(__file__).parent / "bench_baseline.json"


def test_bench_json_report_has_every_figure():
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "bench", "--json",
                           "--seconds", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    for key in ("model", "device", "sample_rate", "hop", "latency_samples", "latency_ms",
                "hop_ms", "per_hop_ms", "rtf_p50", "rtf_p99", "peak_rss_mb", "threads"):
        assert key in r, key
    p = r["per_hop_ms"]
    assert 0 < p["p50"] <= p["p90"] <= p["p99"] <= p["p999"] <= p["max"]
    assert r["rtf_p99"] == pytest.approx(p["p99"] / r["hop_ms"])
    assert r["latency_ms"] == pytest.approx(1000 * r["latency_samples"] / r["sample_rate"])
    assert r["latency_samples"] == 256  # the default model's declared latency
    assert r["engine_latency_samples"] == 256 + 2 * r["hop"]  # + hop + block of one hop
    assert r["threads"] == 1
    # every hop of the 2 s, plus those that flush the latency tail
    total = int(2 * r["sample_rate"]) // r["hop"] * r["hop"] + r["engine_latency_samples"]
    assert r["hops"] == -(-total // r["hop"])


def test_hop_override_where_the_model_allows_it():
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "bench", "--hop", "128",
                           "--seconds", "0.5", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout)["hop"] == 128


@pytest.mark.parametrize("block", [1, 64, 256, 1000])
@pytest.mark.parametrize("threaded", [False, True])
def test_measured_latency_equals_declared(block, threaded):
    res = measure_latency(load_separator("center"), block_size=block, threaded=threaded)
    assert res["measured_mix_samples"] == res["declared_samples"]
    assert res["measured_stems_samples"] == res["declared_samples"]
    assert res["agrees"] and res["deadline_misses"] == 0


def test_latency_command_exit_code():
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "latency"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "agrees" in proc.stdout


def test_regression_guard_compares_ratios_not_times(tmp_path):
    """Per-hop cost relative to a fixed numpy computation timed in the same run.

    The figures go to a JSON file (LIVESTEMS_BENCH_FIGURES, else this test's own temporary
    folder: a fixed /tmp name was shared by concurrent runs and other users); the check fails
    only if the ratio grew more than 3x over the committed baseline (set
    LIVESTEMS_UPDATE_BASELINE=1 to rewrite it after a deliberate change)."""
    figures = {}
    for name in ("center",):
        r = bench_stream(load_separator(name), seconds=3.0, model_name=name)
        figures[name] = {"p50_ms": r["per_hop_ms"]["p50"], "reference_ms": r["reference_ms"],
                         "ratio": r["per_hop_ms"]["p50"] / r["reference_ms"]}
    out = os.environ.get("LIVESTEMS_BENCH_FIGURES") or tmp_path / "bench-figures.json"
    Path(out).write_text(json.dumps(figures, indent=2))
    if os.environ.get("LIVESTEMS_UPDATE_BASELINE") == "1" or not BASELINE.exists():
        BASELINE.write_text(json.dumps({k: {"ratio": v["ratio"]} for k, v in figures.items()},
                                       indent=2) + "\n")
    base = json.loads(BASELINE.read_text())
    for name, fig in figures.items():
        assert fig["ratio"] <= 3.0 * base[name]["ratio"], (name, fig, base[name])


def test_offline_throughput_table_has_ours_and_a_peer():
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "bench", "--offline",
                           "--seconds", "2", "--peers", "umx", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"center", "umx"}
    assert rows["umx"]["params"] > 10_000_000  # UMX-HQ size: four 512-unit LSTM nets
    for r in rows.values():
        assert r["throughput"] == pytest.approx(2.0 / r["wall_s"])
    lib = rows["center"].get("library")
    if (os.cpu_count() or 1) > 1:  # a library: several files per worker, one worker per core
        assert lib["workers"] == os.cpu_count() and lib["files"] == 4 * lib["workers"]
        assert lib["audio_s"] == pytest.approx(2.0 * lib["files"], rel=1e-3)
        assert lib["compute_x"] > 0 and lib["wall_x"] > 0


def test_unknown_peer_is_refused():
    proc = subprocess.run([sys.executable, "-m", "livestems.stream", "bench", "--offline",
                           "--peers", "spleeter"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "hdemucs,umx" in proc.stderr
