import json

import numpy as np

from medattn.evaluation.plots import (
    plot_classifier_curves,
    plot_confusion_matrix,
    plot_reliability,
    plot_roc_pr,
    plot_segmentation_overlays,
)
from medattn.training import RunRecorder, dataset_fingerprint


def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), 60)
    assert _is_png(plot_confusion_matrix([[5, 1], [2, 7]], ["normal", "tumour"], tmp_path / "cm.png"))
    assert _is_png(plot_roc_pr(y, p, ["a", "b", "c"], tmp_path / "roc.png"))
    assert _is_png(plot_roc_pr(y % 2, p[:, 1], ["neg", "pos"], tmp_path / "roc2.png"))
    assert _is_png(plot_reliability(y, p, tmp_path / "rel.png"))
    paths = plot_classifier_curves(y, p, ["a", "b", "c"], tmp_path / "curves", "arm")
    assert [q.name for q in paths] == ["roc_pr_arm.png", "reliability_arm.png"] and all(map(_is_png, paths))
    img = rng.random((2, 16, 16))
    t = np.zeros((2, 16, 16))
    t[0, 4:8, 4:8] = 1
    assert _is_png(plot_segmentation_overlays(img, t, t * 0.9, tmp_path / "ov.png", titles=["a", "b"]))


def test_run_recorder_records_provenance(tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    (data / "MANIFEST.sha256").write_text("abc  x.png\n")
    rec = RunRecorder(tmp_path / "out", profile="smoke", seeds=[0, 1], data_dir=data, argv=["repro.py", "--x"])
    meta = rec.finish(extra_field=1)
    saved = json.loads((tmp_path / "out" / "run.json").read_text())
    assert saved["command"] == "python repro.py --x"
    assert saved["profile"] == "smoke" and saved["seeds"] == [0, 1]
    assert saved["data_manifest_sha256"] == dataset_fingerprint(data)["sha256"]
    assert saved["machine"]["cores"] >= 1 and "keras" in saved["packages"]
    assert meta["wall_time_s"] >= 0 and saved["extra_field"] == 1
    # without a manifest the fingerprint hashes the file list, and changes when a file is added
    (data / "MANIFEST.sha256").unlink()
    (data / "a.png").write_bytes(b"1")
    f1 = dataset_fingerprint(data)["sha256"]
    (data / "b.png").write_bytes(b"2")
    assert dataset_fingerprint(data)["sha256"] != f1
