"""`livestems bench dsp` runs every path, and every path reconstructs the stream it times."""

import json

from livestems.stream.bench.dsp_kernels import main


def test_bench_json_has_every_path_and_all_reconstruct(capsys):
    assert main(["--configs", "512:128,256:128", "--hops", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    results = report["results"]
    paths = {r["path"] for r in results}
    assert paths == {"livestems", "livestems-npfft", "torch.stft/istft", "torch.fft+OLA", "scipy ShortTimeFFT"}
    assert {(r["n_fft"], r["hop"]) for r in results} == {(512, 128), (256, 128)}
    for r in results:
        assert r["hops"] == 30
        assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"]
        assert r["max_err"] < 1e-4, r  # a path that does not reconstruct is not a fair baseline
    assert report["machine"]["cores"] >= 1


def test_bench_table(capsys):
    assert main(["--configs", "256:64", "--hops", "10", "--paths", "livestems"]) == 0
    out = capsys.readouterr().out
    assert "livestems" in out and "p99 us" in out and "256/64" in out
