"""The LinkNet benchmarks' tables from given timings (no model is built): ratios per round against
segmentation_models, a run cut short says so, the head-width table's speed-ups."""

import argparse

from tests.conftest import load_script


def _round(scale):
    # (name, params, s/step, s/image); the last row is segmentation_models'
    return [("bare", 10, 1.0 * scale, 0.1), ("ours + scSE", 12, 1.6 * scale, 0.2), ("ours", 11, 1.5 * scale, 0.2),
            ("ours head 16", 11, 1.2 * scale, 0.2), ("sm", 11, 1.3 * scale, 0.2)]


def test_linknet_table_ratios_per_round_and_short_runs():
    bench = load_script("benchmarks", "linknet")
    args = argparse.Namespace(batch=4, size=256, repeats=3, rounds=3, sm_python="/x/python")
    text = bench._table(args, [_round(1.0), _round(2.0)], ["--rounds", "3"], "m")
    assert "median over 2 round(s) of 3 asked for" in text
    line = next(x for x in text.splitlines() if x.startswith("ours, no attention, 16-filter head / "))
    assert "0.923, 0.923" in line  # 1.2 / 1.3 in both rounds, whatever the machine's speed in each
    assert "| ours + scSE | 12 | 2400 | 1.67 | 1.60 | 200 |" in text  # median of 1.6 s and 3.2 s per step
    full = bench._table(argparse.Namespace(**{**vars(args), "rounds": 2}), [_round(1.0), _round(2.0)], [], "m")
    assert "asked for" not in full


def test_linknet_head_table():
    bench = load_script("benchmarks", "linknet_head")
    rows = []
    for w, gf, t in ((32, 1.0, 0.5), (16, 0.75, 0.4), (8, 0.7, 0.25)):
        rows.append({"backbone": "vgg16", "input": 128, "batch": 8, "final_filters": w, "params": 1000,
                     "forward_gflop": gf, "gflop_share_vs_32": gf / 1.0, "ms_per_step": t * 1e3,
                     "images_per_s": 8 / t, "speedup_vs_32": 0.5 / t})
    text = bench.render({"machine": {"cpu": "cpu", "cores": 2, "onednn": True}, "command": "c", "started": "s",
                         "rounds": 5, "rows": rows})
    assert "| LinkNet VGG16-BN/4 + scSE (cpu) | 128 | 8 | 8 | 1,000 | 0.700 | 0.70 | 250 | 32.0 | 2.00 |" in text
    assert "oneDNN on" in text
