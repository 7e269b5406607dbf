"""benchmarks/onednn.py: the on/off table pairs each model's rows and divides the right way round."""

from __future__ import annotations

from tests.conftest import load_script


def _run(rates):
    rows = [{"reproduction": "r", "model": m, "profile": "cpu", "input": "8x8x3", "batch": 2,
             "train_images_per_s": t, "infer_images_per_s": i} for m, (t, i) in rates.items()]
    return {"machine": {"cpu": "X", "cores": 2}, "peak_gflop_per_s": {"float32": 100.0}, "rows": rows}


def test_render_pairs_models_and_divides_on_by_off():
    off = _run({"a": (10.0, 40.0), "b": (5.0, 20.0)})
    on = _run({"b": (12.5, 20.0), "a": (20.0, 30.0)})  # another order: rows are matched by model
    md = load_script("benchmarks", "onednn").render(off, on, "python benchmarks/onednn.py", "today")
    row_a = next(line for line in md.splitlines() if line.startswith("| r | a |"))
    row_b = next(line for line in md.splitlines() if line.startswith("| r | b |"))
    assert row_a.rstrip(" |").split(" | ")[5:11] == ["10.0", "20.0", "2.00", "40.0", "30.0", "0.75"]
    assert row_b.split(" | ")[7] == "2.50"
