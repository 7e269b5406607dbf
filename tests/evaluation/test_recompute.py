"""medattn.evaluation.recompute: every committed per-run metric it knows is recomputed from the committed
prediction files alone, and a table that disagrees with its predictions is caught."""

import json
import shutil

from medattn.evaluation.recompute import main, recompute_folder
from tests.conftest import REPO


def test_every_committed_table_agrees_with_its_prediction_files(capsys):
    assert main([str(REPO / "results")]) == 0
    out = capsys.readouterr().out
    checked = int(out.split("recompute: ")[1].split(" cells")[0])
    assert checked > 2000 and "0 difference(s)" in out
    for paper in ("brain_tumor_transfer", "mias_fusion", "emtnet", "dcnnimaf", "dcat/pneumoniamnist"):
        assert recompute_folder(REPO / "results" / paper)[0] > 0, paper  # every paper's main table is checked


def test_an_edited_cell_or_prediction_is_named(tmp_path, capsys):
    folder = tmp_path / "emtnet"
    shutil.copytree(REPO / "results" / "emtnet" / "three_seeds", folder)
    assert recompute_folder(folder)[1] == []
    runs = json.loads((folder / "runs.json").read_text())
    runs["rows"][1]["sensitivity"] += 0.01
    (folder / "runs.json").write_text(json.dumps(runs))
    n, problems = recompute_folder(folder)
    assert n > 0 and len(problems) == 1 and "multitask_w2 seed 1: sensitivity committed" in problems[0]
    (folder / "predictions" / "multitask_w2_s2.npz").unlink()
    assert any("no prediction file multitask_w2_s2.npz" in p for p in recompute_folder(folder)[1])
    assert main([str(folder)]) == 1 and "sensitivity committed" in capsys.readouterr().err
