"""benchmarks/throughput.py: the table names the machine's bf16 support and writes the measured ratios."""

from __future__ import annotations

from tests.conftest import load_script


def _result(native):
    rows = [{"reproduction": "r", "model": "m", "profile": "cpu", "input": "8x8x3", "batch": 2, "precision": p,
             "forward_gflop_per_image": 1.0, "train_images_per_s": t, "train_gflop_per_s": 3.0 * t,
             "train_pct_of_peak": 3.0 * t, "infer_images_per_s": 4 * t} for p, t in (("float32", 10.0), ("bf16", 5.0))]
    rows[1]["bf16_speedup_train"] = 0.5
    machine = {"cpu": "AMD EPYC", "cores": 2, "onednn": True}
    if native is not None:
        machine["native_bf16"] = native
    return {"machine": machine, "peak_gflop_per_s": {"float32": 100.0, "bf16": 200.0}, "rows": rows,
            "pipeline": {"what": "arrays", "images_per_s": 7.0}, "command": "c", "date": "d"}


def test_render_says_whether_bf16_is_native_and_keeps_the_ratio():
    bench = load_script("benchmarks", "throughput")
    native = bench.render(_result(True))
    assert "native bf16 (AVX512_BF16/AMX)" in native and "oneDNN kernels on" in native
    assert "no native bf16 (emulated)" in bench.render(_result(False))
    old = bench.render(_result(None))  # records made before the field existed: nothing claimed
    assert "bf16 (" not in old.splitlines()[0]
    bf16_row = next(line for line in native.splitlines() if "| bf16 |" in line)
    assert bf16_row.rstrip(" |").endswith("| 0.50")


def test_models_filter_times_only_the_named_model_and_keeps_every_step(tmp_path, monkeypatch):
    bench = load_script("benchmarks", "throughput")
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, **kw: 100.0)  # the peak is not under test
    monkeypatch.setattr(bench, "pipeline_rate", lambda busi: {"what": "skipped", "images_per_s": 1.0})
    out = tmp_path / "t.json"
    assert bench.main(["--only", "mias_fusion", "--models", "BASELINE", "--precisions", "float32", "--steps", "2",
                       "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["vgg16 baseline (w0.25, BN)"]
    steps = rows[0]["train_step_times_s"]
    assert len(steps) == 2 and all(t > 0 for t in steps)
    assert abs(rows[0]["train_images_per_s"] * sum(steps) / 2 / 32 - 1) < 0.01  # the median of the two steps
