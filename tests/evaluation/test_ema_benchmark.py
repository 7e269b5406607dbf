"""benchmarks/ema.py runs on a small model and writes its figures."""

import json

import pytest

from tests.conftest import load_script


@pytest.mark.slow  # trains a small model twice: started first, with the other long tests
def test_ema_benchmark_writes_its_figures(tmp_path):
    bench = load_script("benchmarks", "ema")
    out = tmp_path / "ema.json"
    assert bench.main(["--backbone", "mobilenetv2", "--size", "32", "--batch", "2", "--steps", "2", "--json",
                       str(out), "--markdown", str(tmp_path / "ema.md")]) == 0
    res = json.loads(out.read_text())
    assert res["train_step_s"] > 0 and res["ema_update_s"] > 0 and res["averaged_values"] > 2_000_000
    assert res["ema_update_pct_of_step"] == 100 * res["ema_update_s"] / res["train_step_s"]
    assert "mobilenetv2 32 px" in (tmp_path / "ema.md").read_text()
