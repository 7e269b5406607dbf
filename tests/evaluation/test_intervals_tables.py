import json
import math

import numpy as np
import pytest

from medattn.evaluation import bootstrap_ci, comparison_rows, wilson_interval, write_table
from medattn.evaluation.report import regenerate


def test_wilson_known_values():
    # 57/64 = 0.8906 (the MIAS Model1 accuracy): Wilson 95 % interval [0.7910, 0.9460] (computed by hand from the formula)
    lo, hi = wilson_interval(57, 64)
    assert lo == pytest.approx(0.7910, abs=1e-4) and hi == pytest.approx(0.9460, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ValueError, match="11 of 10"):
        wilson_interval(11, 10)


def test_bootstrap_seeded_and_covers_point():
    rng = np.random.default_rng(0)
    correct = (rng.random(200) < 0.8).astype(float)
    a = bootstrap_ci(np.mean, correct, seed=3)
    b = bootstrap_ci(np.mean, correct, seed=3)
    assert a == b
    point, lo, hi = a
    assert lo < point < hi and hi - lo < 0.15


def test_bootstrap_groups_move_together():
    # two groups of identical values: resampling groups can only give 0, 0.5 or 1
    x = np.array([0, 0, 0, 1, 1, 1.0])
    g = np.array([0, 0, 0, 1, 1, 1])
    _, lo, hi = bootstrap_ci(np.mean, x, groups=g, seed=0, n_boot=200)
    assert lo == 0.0 and hi == 1.0


def test_comparison_table_written_and_regenerated(tmp_path):
    rows = comparison_rows({"accuracy": 0.8906, "recall": 0.913},
                           {"ours": {"accuracy": (0.80, 0.7, 0.9), "recall": 0.85}}, extra={"seed": 0})
    assert rows[0]["delta"] == pytest.approx(0.80 - 0.8906)
    assert math.isnan(rows[1]["ci_low"])
    paths = write_table(tmp_path, "cmp", rows, kind="comparison", meta={"command": "python x.py"})
    md = paths["md"].read_text()
    assert "| accuracy | 0.8906 | 0.8000 [0.7000, 0.9000] (Δ -0.0906) |" in md
    assert "python x.py" in md
    data = json.loads(paths["json"].read_text())
    assert data["rows"][0]["value"] == 0.8
    assert paths["csv"].read_text().splitlines()[0].startswith("metric,source,paper,value")
    paths["md"].write_text("stale")
    assert regenerate(tmp_path) == [paths["md"]]
    assert paths["md"].read_text() == md


def test_readme_table_blocks_are_generated(tmp_path):
    from medattn.evaluation.report import update_readme

    rows = comparison_rows({"accuracy": 0.9}, {"ours": {"accuracy": 0.8}})
    write_table(tmp_path / "results", "cmp", rows, kind="comparison", title="T")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table: results/cmp.json -->\nstale numbers\n<!-- /table -->\nend\n")
    assert update_readme(readme, tmp_path) == 1
    text = readme.read_text()
    assert "stale numbers" not in text and "| accuracy | 0.9000 | 0.8000 (Δ -0.1000) |" in text
    assert text.startswith("intro\n") and text.endswith("<!-- /table -->\nend\n")
    readme.write_text("<!-- table: results/missing.json -->\nx\n<!-- /table -->\n")
    with pytest.raises(ValueError, match="missing.json"):
        update_readme(readme, tmp_path)


def test_mcnemar_exact_known_values():
    """Discordant pairs 2 vs 9: p = 2 P(X <= 2 | n=11, 1/2) = 2 (1 + 11 + 55) / 2^11 = 0.06543 (by hand); no
    discordant pairs and a 1-1 tie give 1."""
    from medattn.evaluation import mcnemar_exact

    a = np.array([1] * 20 + [1] * 2 + [0] * 9 + [0] * 5, bool)
    b = np.array([1] * 20 + [0] * 2 + [1] * 9 + [0] * 5, bool)
    assert abs(mcnemar_exact(a, b) - 2 * (1 + 11 + 55) / 2 ** 11) < 1e-12
    assert abs(mcnemar_exact(a, b) - 0.0654296875) < 1e-12 and mcnemar_exact(b, a) == mcnemar_exact(a, b)
    assert mcnemar_exact(a, a) == 1.0
    assert mcnemar_exact([1, 0], [0, 1]) == 1.0


def test_seed_interval_is_mean_plus_minus_t_standard_errors():
    import numpy as np
    from scipy.stats import t

    from medattn.evaluation import seed_interval

    v = [0.80, 0.84, 0.86]
    m, lo, hi = seed_interval(v)
    half = t.ppf(0.975, 2) * np.std(v, ddof=1) / np.sqrt(3)
    assert m == pytest.approx(0.8333333) and lo == pytest.approx(m - half) and hi == pytest.approx(min(1, m + half))
    assert seed_interval([0.99, 0.95, 1.0])[2] == 1.0  # clipped to [0, 1]
    assert seed_interval([-0.05, -0.06, -0.04], clip=None)[2] < 0  # differences are not clipped
    m1, lo1, hi1 = seed_interval([0.7])
    assert m1 == 0.7 and np.isnan(lo1) and np.isnan(hi1)  # one seed: no spread to speak of
    assert seed_interval([0.7, float("nan"), 0.9])[0] == pytest.approx(0.8)


def test_seed_spread_groups_by_a_field_in_seed_order_and_skips_missing_values():
    import numpy as np

    from medattn.evaluation import seed_interval, seed_spread

    rows = [{"arm": "a", "seed": 2, "acc": 0.9, "auc": None}, {"arm": "b", "seed": 0, "acc": 0.5},
            {"arm": "a", "seed": 0, "acc": 0.8, "auc": 0.7}, {"arm": "a", "seed": 1, "acc": 0.85}]
    got = seed_spread(rows, "arm", ("acc", "auc", "f1"))
    assert [(g["arm"], g["metric"], g["n_seeds"]) for g in got] == [("a", "acc", 3), ("a", "auc", 1), ("b", "acc", 1)]
    a = got[0]
    assert a["per_seed"] == "0.8000, 0.8500, 0.9000" and (a["min"], a["max"]) == (0.8, 0.9)
    assert a["sd"] == pytest.approx(np.std([0.8, 0.85, 0.9], ddof=1))
    assert (a["mean"], a["ci_low"], a["ci_high"]) == pytest.approx(seed_interval([0.8, 0.85, 0.9]))
    assert got[1]["sd"] is None and np.isnan(got[1]["ci_low"])  # one seed has no spread


def test_seed_cell_one_row_keeps_its_bootstrap_several_rows_get_the_interval_over_seeds():
    from medattn.evaluation import seed_cell, seed_interval, seeds_mark
    from medattn.evaluation.report import _seeds_marked, _unmarked

    one = [{"auc": 0.9, "auc_ci": [0.85, 0.95], "ece": 0.03}]
    assert seed_cell(one, "auc") == (0.9, 0.85, 0.95) and seed_cell(one, "ece") == (0.03,)
    three = [{"auc": 0.9, "auc_ci": [0.8, 1.0]}, {"auc": 0.94}, {"auc": 0.92}]
    assert seed_cell(three, "auc") == seed_interval([0.9, 0.94, 0.92])  # the rows' own bootstraps are not used
    label = "ours: dcat" + seeds_mark(3)
    assert label == "ours: dcat (3 seeds)" and _seeds_marked(label) == 3 and _unmarked(label) == "ours: dcat"
    assert seeds_mark(1) == ""


def test_combine_runs_takes_columns_from_each_folder_with_its_provenance(tmp_path):
    from medattn.evaluation.report import main as report_main

    for name, dice in (("A", 0.61), ("B", 0.70)):
        d = tmp_path / name
        d.mkdir()
        (d / "runs.jsonl").write_text(json.dumps({"seed": 0, "dice": dice, "other": 1}) + "\n")
        (d / "run.json").write_text(json.dumps({"command": f"python x.py --run {name}", "git_commit": "abc",
                                                "profile": "cpu", "seeds": [0]}))
    out = tmp_path / "out"
    assert report_main([str(out), "--combine", str(tmp_path / "A"), str(tmp_path / "B"), "--name", "sel",
                        "--columns", "seed,dice"]) == 0
    table = json.loads((out / "sel.json").read_text())
    assert [(r["run"], r["dice"]) for r in table["rows"]] == [("A", 0.61), ("B", 0.70)]
    assert "other" not in table["rows"][0]
    assert [s["command"] for s in table["meta"]["sources"]] == ["python x.py --run A", "python x.py --run B"]
    md = (out / "sel.md").read_text()
    assert "0.7000" in md and "- B: `python x.py --run B` (git_commit `abc`" in md
    with pytest.raises(SystemExit):  # a column the rows lack is named, not dropped
        report_main([str(out), "--combine", str(tmp_path / "A"), "--columns", "dice,nope"])
    # a field only the later folder's rows have (added to the script since the first ran) is empty in the first
    (tmp_path / "B" / "runs.jsonl").write_text(json.dumps({"seed": 0, "dice": 0.7, "tta": "dihedral"}) + "\n")
    assert report_main([str(out), "--combine", str(tmp_path / "A"), str(tmp_path / "B"), "--name", "sel",
                        "--columns", "seed,dice,tta"]) == 0
    rows = json.loads((out / "sel.json").read_text())["rows"]
    assert [r["tta"] for r in rows] == [None, "dihedral"]


def test_targets_table_reads_each_cell_and_judges_both_directions(tmp_path):
    from medattn.evaluation.report import main as report_main
    from medattn.evaluation.report import targets_table

    rows = comparison_rows({"dice": 0.97, "fpr": None},
                           {"ours: grouped": {"dice": (0.70, 0.65, 0.75), "fpr": 0.15},
                            "ours: random (2 seeds)": {"dice": (0.72, 0.58, 0.86), "fpr": 0.24}})
    write_table(tmp_path / "results" / "p", "comparison", rows, kind="comparison",
                meta={"seeds": [0, 1, 2], "git_commit": "abcdef123456", "profile": "cpu", "machine": {"cpu": "X"}})
    spec = {"description": "d", "targets": [
        {"paper": "P", "what": "Dice", "table": "results/p/comparison.json", "metric": "dice",
         "source": "ours: grouped", "target": 0.8, "direction": ">="},
        {"paper": "P", "what": "FPR", "table": "results/p/comparison.json", "metric": "fpr",
         "source": "ours: grouped", "target": 0.2, "direction": "<="}]}
    (tmp_path / "results" / "target_spec.json").write_text(json.dumps(spec))
    targets_table(tmp_path / "results" / "target_spec.json", base=tmp_path)
    out = json.loads((tmp_path / "results" / "targets.json").read_text())["rows"]
    assert [r["reached"] for r in out] == ["no", "yes"]  # 0.70 < 0.8; 0.15 <= 0.2
    assert out[0]["ours"] == "0.7000 [0.6500, 0.7500]" and out[0]["paper value"] == "0.9700"
    # seeds behind the cell, not the seeds the run was configured for (a one-seed column of a 3-seed plan)
    assert out[0]["seeds"] == 1 and out[0]["commit"] == "abcdef1" and out[0]["machine"] == "X"
    assert out[0]["judged on validation"] == "—"  # no selection folder named
    # the candidates judged are counted from the selection folder's decisions.json; a withdrawn rule judged none
    (tmp_path / "results" / "p" / "selection").mkdir()
    (tmp_path / "results" / "p" / "selection" / "decisions.json").write_text(json.dumps({"decisions": [
        {"candidate": "A", "folder": "A", "adopted": True}, {"candidate": "B", "folder": "B", "adopted": False},
        {"candidate": "C", "folder": None, "adopted": False, "note": "withdrawn before it finished"}]}))
    spec["targets"][0]["selection"] = "results/p/selection"
    (tmp_path / "results" / "target_spec.json").write_text(json.dumps(spec))
    targets_table(tmp_path / "results" / "target_spec.json", base=tmp_path)
    out = json.loads((tmp_path / "results" / "targets.json").read_text())["rows"]
    assert out[0]["judged on validation"] == "2 (1 adopted)"
    # a column averaged over seeds is found without its " (N seeds)" mark, which changes as seeds land
    spec["targets"].append({"paper": "P", "what": "Dice random", "table": "results/p/comparison.json",
                            "metric": "dice", "source": "ours: random", "target": 0.8, "direction": ">="})
    (tmp_path / "results" / "target_spec.json").write_text(json.dumps(spec))
    targets_table(tmp_path / "results" / "target_spec.json", base=tmp_path)
    out = json.loads((tmp_path / "results" / "targets.json").read_text())["rows"]
    assert out[2]["ours"] == "0.7200 [0.5800, 0.8600]" and out[2]["seeds"] == 2
    spec["targets"].pop()
    # a cell that is not there is an error naming the table and the cell, not a silent dash
    spec["targets"][1]["source"] = "ours: other"
    (tmp_path / "results" / "target_spec.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="no row metric='fpr', source='ours: other'"):
        targets_table(tmp_path / "results" / "target_spec.json", base=tmp_path)
    # the report command writes it before the README blocks (run from the repository root: paths are relative)
    spec["targets"][1]["source"] = "ours: grouped"
    (tmp_path / "results" / "target_spec.json").write_text(json.dumps(spec))
    (tmp_path / "results" / "targets.json").unlink()
    import os

    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert report_main(["results"]) == 0
    finally:
        os.chdir(cwd)
    assert (tmp_path / "results" / "targets.md").read_text().count("| P |") == 2


def test_markdown_writes_the_datasets_folder_as_the_variable_readers_set(tmp_path):
    """The generated provenance names the folder holding the datasets ``$MEDATTN_DATA_DIR`` (every dataset under
    it, a sub-folder of a dataset too); the JSON keeps the path as recorded, and a path without a ``datasets``
    folder is shown as it is."""
    import json

    from medattn.evaluation.tables import write_table

    meta = {"command": "python reproductions/emtnet.py --data-dir ../data/datasets/busi/x --external-data "
                       "../data/datasets/busis --out runs/o", "data_dir": "../data/datasets/busi/x"}
    paths = write_table(tmp_path, "t", [{"a": 1}], meta=meta)
    md = paths["md"].read_text()
    assert "--data-dir $MEDATTN_DATA_DIR/busi/x --external-data $MEDATTN_DATA_DIR/busis --out runs/o" in md
    assert "- data_dir: `$MEDATTN_DATA_DIR/busi/x`" in md and "../data" not in md
    assert json.loads(paths["json"].read_text())["meta"]["data_dir"] == "../data/datasets/busi/x"
    other = write_table(tmp_path, "u", [{"a": 1}], meta={"command": "x --data-dir /tmp/busi", "data_dir": "/tmp/busi"})
    assert "--data-dir /tmp/busi" in other["md"].read_text()
