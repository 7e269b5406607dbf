"""medattn.evaluation.recompute: every committed per-run metric it knows is recomputed from the committed
prediction files alone, seed ensembles from their seeds' files, every table built from the runs' rows is derived
again from them, and a table that disagrees with its predictions or rows is caught."""

import json
import shutil
from pathlib import Path

import pytest

from medattn.evaluation.recompute import main, recompute_ablation, recompute_ensembles, recompute_folder
from medattn.evaluation.table_cells import check_comparison, check_run_tables
from tests.conftest import REPO


@pytest.mark.slow  # every committed results folder: started first, so it never ends the suite alone
def test_every_committed_table_agrees_with_its_prediction_files(capsys):
    assert main([str(REPO / "results")]) == 0
    out = capsys.readouterr().out
    checked = int(out.split("recompute: ")[1].split(" cells")[0])
    derived = int(out.split("files, ")[1].split(" cells")[0])
    assert checked > 5200 and derived > 2800 and "0 difference(s)" in out  # single runs' intervals too
    # comparison cells resting on figures no prediction file gives: among the headlines' and the papers' main
    # tables, none but the mask figures of the BUSI and EMT-Net five-arm tables written before their files kept
    # masks (the tables being made again); EMT-Net's three-seed headline has none
    untraced = {}
    for line in out.split("cannot give")[-1].splitlines()[1:]:
        folder, rest = line.strip().split(": ", 1)
        untraced[Path(folder).relative_to(REPO).as_posix()] = set(rest.split("(")[1].rstrip(")").split(", "))
    headline_folders = {"results/" + p for p in (
        "dcnnimaf", "emtnet", "emtnet/three_seeds", "mias_fusion", "brain_tumor_transfer",
        "brain_tumor_transfer/selection/VF5_PBN", "dcat/pneumoniamnist")}
    mask_fields = {"dice_lesion", "dice_lesion_raw", "false_positive_rate_empty", "false_positive_rate_empty_raw",
                   "iou_lesion", "pixel_accuracy"}
    assert headline_folders & set(untraced) == {"results/dcnnimaf", "results/emtnet"}
    assert all(untraced[f] <= mask_fields for f in headline_folders & set(untraced)), untraced
    for paper in ("brain_tumor_transfer", "mias_fusion", "emtnet", "dcnnimaf", "dcat/pneumoniamnist"):
        assert recompute_folder(REPO / "results" / paper)[0] > 0, paper  # every paper's main table is checked
        assert check_comparison(REPO / "results" / paper)[0] > 0, paper
    # the targets table's ensemble headline (MIAS) and the brain MRI headline's folder
    assert recompute_ensembles(REPO / "results" / "mias_fusion")[0] > 0
    assert recompute_ensembles(REPO / "results" / "brain_tumor_transfer" / "selection" / "VF5_PBN")[0] > 0


def test_an_edited_cell_or_prediction_is_named(tmp_path, capsys):
    folder = tmp_path / "emtnet"
    shutil.copytree(REPO / "results" / "emtnet" / "three_seeds", folder)
    assert recompute_folder(folder)[1] == []
    runs = json.loads((folder / "runs.json").read_text())
    runs["rows"][1]["sensitivity"] += 0.01
    low, high = json.loads(runs["rows"][2]["accuracy_tuned_ci"])  # a single run's bootstrap interval (its JSON
    runs["rows"][2]["accuracy_tuned_ci"] = json.dumps([low - 0.001, high])  # text) is resampled again too
    (folder / "runs.json").write_text(json.dumps(runs))
    n, problems = recompute_folder(folder)
    assert n > 0 and len(problems) == 2 and "multitask_w2 seed 1: sensitivity committed" in problems[0]
    assert "multitask_w2 seed 2: accuracy_tuned_ci committed" in problems[1]
    (folder / "predictions" / "multitask_w2_s2.npz").unlink()
    assert any("no prediction file multitask_w2_s2.npz" in p for p in recompute_folder(folder)[1])
    assert main([str(folder)]) == 1 and "sensitivity committed" in capsys.readouterr().err


def _edit(path, change) -> None:
    table = json.loads(path.read_text())
    change(table["rows"])
    path.write_text(json.dumps(table))


def test_an_edited_table_cell_or_ensemble_is_named(tmp_path):
    folder = tmp_path / "mias_fusion"
    shutil.copytree(REPO / "results" / "mias_fusion", folder, ignore=shutil.ignore_patterns("selection", "earlier_*"))
    assert recompute_ensembles(folder)[1] == [] and check_comparison(folder)[1] == []
    _edit(folder / "ensembles.json", lambda rows: rows[0].update(accuracy=rows[0]["accuracy"] + 1 / 64))
    found = recompute_ensembles(folder)[1]
    assert len(found) == 1 and "ensemble vgg16:model1: accuracy committed" in found[0]
    # nor does the comparison table's ensemble cell (the MIAS headline) follow from the edited row
    found = check_comparison(folder)[1]
    assert len(found) == 1 and "'vgg16:model1, ensemble (3 seeds) accuracy ours (cpu), vote at 0.5'" in found[0]
    folder = tmp_path / "dcnnimaf"
    shutil.copytree(REPO / "results" / "dcnnimaf", folder, ignore=shutil.ignore_patterns("selection", "earlier_*"))
    assert check_comparison(folder)[1] == [] and check_run_tables(folder)[1] == []
    _edit(folder / "comparison.json", lambda rows: rows[0].update(ci_high=rows[0]["ci_high"] + 0.01))
    found = check_comparison(folder)[1]
    assert len(found) == 1 and "'dice_lesion ours: random (3 seeds)'" in found[0]
    _edit(folder / "seeds.json", lambda rows: rows[0].update(sd=rows[0]["sd"] * 2))
    _edit(folder / "differences.json", lambda rows: rows[0].update(beyond_seed_spread=not rows[0]["beyond_seed_spread"]))
    found = check_run_tables(folder)[1]
    assert len(found) == 2 and "['sd'] differ" in found[0] and "['beyond_seed_spread'] differ" in found[1]
    _edit(folder / "runs.json", lambda rows: rows.pop())  # a seed fewer than the labels say
    assert any("says 3 seeds, runs.json has 2" in p for p in check_comparison(folder)[1])


def _copy(tmp_path, *parts):
    folder = tmp_path / parts[-1]
    shutil.copytree(REPO / "results" / "/".join(parts), folder, ignore=shutil.ignore_patterns("selection", "earlier_*"))
    return folder


def test_window_threshold_wilson_uncertainty_ensemble_interval_and_ablation_cells_are_checked(tmp_path):
    """An edit to one cell of each kind recompute covers beyond the headline metrics is named, and only it."""
    mias = _copy(tmp_path, "mias_fusion")
    _edit(mias / "runs.json", lambda rows: rows[0].update(accuracy_wilson_low=rows[0]["accuracy_wilson_low"] - 1e-3,
                                                          val_threshold=rows[0]["val_threshold"] + 0.01))
    _edit(mias / "ensembles.json", lambda rows: rows[0].update(accuracy_seed_mean=rows[0]["accuracy_seed_mean"] + 0.01))
    found = recompute_folder(mias)[1] + recompute_ensembles(mias)[1]
    assert len(found) == 3, found
    assert "accuracy_wilson_low committed" in found[0] and "val_threshold committed" in found[1]
    assert "ensemble vgg16:model1: accuracy_seed_mean committed" in found[2]
    dcat = _copy(tmp_path, "dcat", "pneumoniamnist")
    _edit(dcat / "runs.json", lambda rows: rows[0].update(accuracy_refer_20=rows[0]["accuracy_refer_20"] - 0.01))
    found = recompute_folder(dcat)[1]
    assert len(found) == 1 and "accuracy_refer_20 committed" in found[0]
    brain = _copy(tmp_path, "brain_tumor_transfer", "selection", "VF5_PBN")
    low, high = json.loads(json.loads((brain / "ensembles.json").read_text())["rows"][0]["dedup_accuracy_ci"])
    _edit(brain / "ensembles.json", lambda rows: rows[0].update(dedup_accuracy_ci=json.dumps([low, high + 0.002]),
                                                                dedup_ece=rows[0]["dedup_ece"] * 1.01))
    found = recompute_ensembles(brain)[1]
    assert len(found) == 2 and "dedup_ece committed" in found[0] and "dedup_accuracy_ci committed" in found[1]
    emtnet = _copy(tmp_path, "emtnet")
    assert recompute_ablation(emtnet) == (13, [])  # four differences and intervals, one McNemar p-value
    _edit(emtnet / "ablation.json", lambda rows: rows[0].update(mcnemar_p=rows[0]["mcnemar_p"] / 2))
    found = recompute_ablation(emtnet)[1]
    assert len(found) == 1 and "cls_only_w2 seed 0 accuracy: mcnemar_p committed" in found[0]


def test_the_threshold_chosen_again_is_the_rules_on_scores_with_and_without_ties():
    import numpy as np

    from medattn.evaluation.classification import choose_threshold
    from medattn.evaluation.recompute import _sensitivity_threshold

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(4, 40))
        y = np.r_[1, 0, rng.integers(0, 2, n - 2)]
        score = rng.random(n) if trial % 2 else np.round(rng.random(n), 1)  # every other trial with ties
        for target in (0.5, 0.9, 1.0):
            assert _sensitivity_threshold(y, score, target) == choose_threshold(y, score, f"sensitivity:{target}")


def test_the_cleaning_rule_chosen_again_is_the_scripts_on_masks_with_several_blobs():
    from types import SimpleNamespace

    import numpy as np

    from medattn.evaluation.recompute import _cleaned, _cleaning_chosen_again
    from tests.conftest import load_script

    choose = load_script("reproductions", "dcnnimaf")._choose_postprocess
    rng = np.random.default_rng(1)
    for trial in range(6):
        truth = np.zeros((10, 32, 32), bool)
        raw = np.zeros((10, 32, 32), bool)
        for i in range(10):
            if i % 3:  # a lesion image; the others have no lesion
                truth[i, 8:18, 8:20] = True
            for _ in range(int(rng.integers(0, 4))):  # predicted blobs of several sizes, some specks
                y, x, h = int(rng.integers(0, 28)), int(rng.integers(0, 28)), int(rng.integers(1, 9))
                raw[i, y:y + h, x:x + h] = True
        clean, row = choose(SimpleNamespace(seg_postprocess=True), truth[..., None].astype("float32"),
                            raw[..., None].astype("float32"))
        again = _cleaning_chosen_again(truth, raw)
        assert again == pytest.approx({k: row[k] for k in again}), trial
        made = _cleaned(raw, again["seg_post_min_area"], again["seg_post_largest_component"])
        assert np.array_equal(made, clean(raw[..., None].astype("float32"))[..., 0] > 0.5), trial


def test_a_folder_that_is_missing_or_holds_no_results_stops_in_one_line(tmp_path, capsys):
    """Nothing to check is an error naming the folder, never ``0 cells ... 0 difference(s)`` and exit 0."""
    for folder, why in ((tmp_path / "nowhere", "no such folder"), (tmp_path, "no runs.json below it")):
        assert main([str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{folder}: {why}" in err


def test_report_names_a_missing_results_folder(tmp_path, capsys):
    from medattn.evaluation.report import main as report_main

    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path / "nowhere")])
    assert stop.value.code == 2 and "nowhere: no such folder" in capsys.readouterr().err


def test_cells_resting_on_figures_no_prediction_file_gives_are_named(tmp_path):
    """EMT-Net's three-seed table as it was before its files kept the masks: its Dice rests on per-run Dice the
    files cannot give; every other cell of ours is recomputed (its latency is a measurement, not listed). The table
    made again with masks has no such cell. With a seed's file gone, every cell of that run rests on figures not
    recomputed."""
    from medattn.evaluation.recompute import untraced_cells

    recomputed: dict = {}
    recompute_folder(REPO / "results" / "emtnet" / "three_seeds", recomputed=recomputed)
    assert untraced_cells(REPO / "results" / "emtnet" / "three_seeds", recomputed) == []
    folder = tmp_path / "three_seeds"
    shutil.copytree(REPO / "results" / "emtnet" / "earlier_3e85988" / "three_seeds", folder)
    recomputed = {}
    recompute_folder(folder, recomputed=recomputed)
    assert sorted(recomputed) == [("run", "multitask_w2", s) for s in (0, 1, 2)]
    assert untraced_cells(folder, recomputed) == [("dice_lesion ours (cpu): multitask_w2 (3 seeds)", ["dice_lesion"])]
    (folder / "predictions" / "multitask_w2_s1.npz").unlink()
    recomputed = {}
    recompute_folder(folder, recomputed=recomputed)
    cells = untraced_cells(folder, recomputed)
    labels = [label for label, _ in cells]
    assert len(cells) > 5 and any(label.startswith("accuracy ours") for label in labels)
    assert not any(label.startswith("latency_s") for label in labels)
