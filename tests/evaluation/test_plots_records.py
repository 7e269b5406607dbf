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


def test_the_fingerprint_follows_the_files_content_and_checks_them_against_the_manifest(tmp_path):
    """A folder that matches its manifest keeps the manifest's hash (what committed runs recorded); a copy with one
    image changed (same name, same size), one added or one removed is other data, and the differences are named."""
    import hashlib
    import shutil

    data = tmp_path / "ds"
    (data / "benign").mkdir(parents=True)
    for name, content in (("a.png", b"\x00\x01\x02"), ("b.png", b"\x10\x11")):
        (data / "benign" / name).write_bytes(content)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./benign/{p.name}\n"
             for p in sorted((data / "benign").iterdir())]
    (data / "MANIFEST.sha256").write_text("".join(lines))
    same = dataset_fingerprint(data)
    assert same["sha256"] == hashlib.sha256((data / "MANIFEST.sha256").read_bytes()).hexdigest()
    assert "differs" not in same
    assert dataset_fingerprint(data / "benign")["sha256"] == same["sha256"]  # the manifest in the parent
    inverted = tmp_path / "inverted"
    shutil.copytree(data, inverted)
    (inverted / "benign" / "a.png").write_bytes(bytes(255 - b for b in b"\x00\x01\x02"))
    fp = dataset_fingerprint(inverted)
    assert fp["sha256"] != same["sha256"] and fp["differs"] == ["changed: benign/a.png"]
    (inverted / "benign" / "b.png").unlink()
    (inverted / "benign" / "c.png").write_bytes(b"new")
    assert dataset_fingerprint(inverted)["differs"] == ["changed: benign/a.png", "missing: benign/b.png",
                                                        "not in MANIFEST.sha256: benign/c.png"]
