"""reproductions/dcat.py: dataset kinds recognised from the layout, the smoke profile end to end (MC dropout,
uncertainty, referral, MedMNIST baselines, plots), the paper profile's dry run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, dataset_dir
from tests.datasets import synth

SCRIPT = REPO / "reproductions" / "dcat.py"


def _run(args, cwd, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MEDATTN_DATA_DIR")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def test_dataset_kind_from_layout(tmp_path):
    sys.path.insert(0, str(REPO / "reproductions"))
    import dcat

    synth.make_medmnist(tmp_path / "pm" / "pneumoniamnist.npz")
    assert dcat.detect(tmp_path / "pm") == "pneumoniamnist"
    (tmp_path / "cx" / "test" / "NORMAL").mkdir(parents=True)
    assert dcat.detect(tmp_path / "cx") == "chest_xray"
    (tmp_path / "other" / "images").mkdir(parents=True)
    with pytest.raises(dcat.UserError, match="not a dataset layout DCAT knows"):
        dcat.detect(tmp_path / "other")


@pytest.mark.slow
@pytest.mark.subprocess
def test_smoke_on_a_medmnist_file(tmp_path):
    data = synth.make_medmnist(tmp_path / "pneumoniamnist" / "pneumoniamnist.npz", n=(24, 8, 16)).parent
    out = tmp_path / "out"
    # more seeds for one variant only (multi_seed_variants): dcat trains seeds 0 and 1, a_only seed 0; the table
    # averages the two dcat seeds with an interval over seeds, and a_only keeps its one seed's bootstrap interval
    r = _run(["--profile", "smoke", "--data-dir", data, "--out", out, "--runs-dir", tmp_path / "runs", "--seeds", "0,1",
              "--set", "multi_seed_variants=dcat"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert [(row["variant"], row["seed"]) for row in runs] == [("dcat", 0), ("dcat", 1), ("a_only", 0)]
    row = runs[0]
    assert row["n_test"] == 16 and row["mc_passes"] == 3 and row["dataset"] == "pneumoniamnist"
    for k in ("roc_auc", "average_precision", "ece", "ece_single_pass", "accuracy_refer_10", "accuracy_refer_20"):
        assert 0 <= row[k] <= 1, k
    pred = np.load(out / "predictions" / "dcat_s0.npz")
    assert pred["prob"].shape == (16, 2) and np.all(pred["entropy"] >= 0) and np.all(pred["entropy"] <= np.log(2))
    # the referral accuracy is the accuracy on the most certain 80 %, recomputed from the saved predictions
    keep = np.argsort(pred["entropy"], kind="stable")[: int(round(16 * 0.8))]
    assert row["accuracy_refer_20"] == pytest.approx(np.mean(pred["prob"][keep].argmax(1) == pred["y_true"][keep]))
    from medattn.evaluation.recompute import recompute_folder

    n, problems = recompute_folder(out)  # every metric and single-run interval, again from the prediction files
    assert problems == [] and n >= 3 * 16, (n, problems)
    comp = json.loads((out / "comparison.json").read_text())
    sources = {x["source"] for x in comp["rows"]}
    assert "MedMNIST v2 ResNet-50 (224)" in sources and "ours (smoke): dcat (2 seeds)" in sources
    from medattn.saving import load_model, read_model_card

    saved = tmp_path / "runs" / "dcat-smoke-pneumoniamnist" / "dcat_s0" / "models" / "pneumoniamnist_dcat.keras"
    card = read_model_card(saved)
    assert card["mc_dropout"] is True and card["preprocessing"] == "inside" and card["input_size"] == 32
    assert card["input_profile"]["n"] == 24 and card["input_profile"]["height"] == [28, 28]  # MedMNIST as read
    back = load_model(saved, compile=False)
    assert back(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 2)
    for name in ("reliability_dcat.png", "reliability_dcat_single_pass.png", "risk_coverage_dcat.png",
                 "highest_entropy_dcat.png", "roc_pr_a_only.png"):
        assert (out / "plots" / name).exists(), name
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]  # lists as lists
    rows = sorted(rows, key=lambda x: (x["variant"] != "dcat", x["seed"]))
    from medattn.evaluation import seed_interval

    comp = {(x["metric"], x["source"]): x for x in json.loads((out / "comparison.json").read_text())["rows"]}
    two = comp[("roc_auc", "ours (smoke): dcat (2 seeds)")]
    m, lo, hi = seed_interval([rows[0]["roc_auc"], rows[1]["roc_auc"]])
    assert two["value"] == pytest.approx(m)
    assert (two["ci_low"], two["ci_high"]) == pytest.approx((lo, hi), nan_ok=True)
    one = comp[("roc_auc", "ours (smoke): a_only")]
    assert one["value"] == pytest.approx(rows[2]["roc_auc"])
    assert (one["ci_low"], one["ci_high"]) == pytest.approx(tuple(rows[2]["roc_auc_ci"]))
    from tests.conftest import main_in_process

    code, err = main_in_process("dcat", ["--profile", "smoke", "--data-dir", data, "--out", tmp_path / "o2",
                                         "--runs-dir", tmp_path / "r2", "--set", "multi_seed_variants=concat"])
    assert code == 2 and "multi_seed_variants: 'concat'" in err and not (tmp_path / "r2").exists()


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.subprocess
def test_paper_profile_dry_run(tmp_path):
    """EfficientNetB4 + ResNet-34 at 224 with cross-attention (the full model; the ablations share its parts)."""
    r = _run(["--profile", "paper", "--dry-run", "--data-dir", dataset_dir("pneumoniamnist"), "--runs-dir",
              tmp_path / "runs", "--set", "variants=dcat", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / "dcat-paper-pneumoniamnist-dryrun" / "results"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backbone_a"] == "efficientnetb4" and cfg["stages"]["train"]["image_size"] == 224
    row = json.loads((out / "runs.json").read_text())["rows"][0]
    assert row["params"] > 35_000_000 and "DRY RUN" in json.loads((out / "comparison.json").read_text())["title"]


def test_weights_for_a_second_branch_that_ignores_them_are_refused():
    """--weights loads into the EfficientNet branch only; the second branch trains from scratch (the paper's ResNet-34
    has no Keras ImageNet weights). With another second backbone that would pass silently: refused, as are unknown
    backbone names, while every profile passes."""
    import dataclasses

    from medattn.runner.reproduction import UserError
    from tests.conftest import load_script

    mod = load_script("reproductions", "dcat")
    for cfg in mod.PROFILES.values():
        mod._check(cfg)
    paper = mod.PROFILES["paper"]
    with pytest.raises(UserError, match=r"backbone_b \(resnet50\) always trains from scratch"):
        mod._check(dataclasses.replace(paper, backbone_b="resnet50"))
    mod._check(dataclasses.replace(mod.PROFILES["cpu"], backbone_b="resnet50"))  # from scratch: nothing ignored
    with pytest.raises(UserError, match="backbone_a=efficientnetb7: backbone must be one of"):
        mod._check(dataclasses.replace(paper, backbone_a="efficientnetb7"))
    # the registry's ImageNet rule, before any data is read (ResNet-34 has no Keras ImageNet weights)
    with pytest.raises(UserError, match="backbone_a=resnet34: .*no ImageNet weights"):
        mod._check(dataclasses.replace(paper, backbone_a="resnet34"))
    mod._check(dataclasses.replace(mod.PROFILES["cpu"], backbone_a="resnet34"))
