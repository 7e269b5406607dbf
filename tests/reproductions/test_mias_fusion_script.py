import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, dataset_dir


@pytest.mark.slow
@pytest.mark.data
def test_smoke_profile_end_to_end(tmp_path):
    """Trained under MirroredStrategy on two CPU replicas, then evaluated again (and a second seed trained) under
    the default strategy from the same checkpoint: the strategy says how to run, not what is computed."""
    data = dataset_dir("mias_rois")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "reproductions" / "mias_fusion.py"), "--profile", "smoke", "--data-dir",
           str(data), "--out", str(out), "--set", "models=vgg16:model2", "--quiet", "--runs-dir", str(tmp_path / "runs")]
    env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run(cmd + ["--strategy", "mirrored"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**env, "MEDATTN_CPU_REPLICAS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["strategy"] == "MirroredStrategy" and run["replicas"] == 2
    comp = json.loads((out / "comparison.json").read_text())
    metrics = {row["metric"]: row for row in comp["rows"]}
    assert metrics["vgg16:model2 (1 seed) accuracy"]["paper"] == 0.875
    assert 0 <= metrics["vgg16:model2 (1 seed) accuracy"]["value"] <= 1
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert runs[0]["tp"] + runs[0]["fn"] + runs[0]["fp"] + runs[0]["tn"] == 64
    assert json.loads((out / "config.json").read_text())["profile"] == "smoke"
    assert json.loads((out / "run.json").read_text())["data_manifest_sha256"]
    assert (out / "plots" / "confusion_vgg16_model2.png").exists()
    assert runs[0]["tta"] == "none" and runs[0]["val_window_loss"] > 0 and runs[0]["train_time_all_epochs_s"] > 0
    # test-time augmentation only changes the evaluation, and more seeds add runs: one process re-evaluates the
    # finished seed-0 checkpoint with flipped views (not trained again) and trains seed 1 (the dihedral views:
    # tests/evaluation/test_tta.py)
    out2 = tmp_path / "tta"
    cmd2 = [str(out2) if c == str(out) else c for c in cmd] + ["--resume", "--set", "tta=flip", "--seeds", "0,1",
                                                                "--set", "multi_seed_models=vgg16:model2"]
    r = subprocess.run(cmd2, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((out2 / "runs.json").read_text())["rows"]
    tta = rows[0]
    assert [x["seed"] for x in rows] == [0, 1] and all(x["tta"] == "flip" for x in rows)
    assert tta["resumed_from_epoch"] == 1 and tta["epochs"] == 1
    assert tta["train_time_all_epochs_s"] == runs[0]["train_time_all_epochs_s"]
    assert tta["val_window_loss"] != runs[0]["val_window_loss"]  # two views per window, another mean
    s0 = [Path(m) for m in json.loads((out2 / "run.json").read_text())["models"] if "vgg16_model2_s0" in m]
    card = json.loads(s0[0].with_suffix(".json").read_text())
    assert card["tta"] == "flip"  # the re-evaluation's model, in its own run folder (the first run's is kept)
    first = json.loads(next((tmp_path / "runs").glob("mias_fusion-smoke/vgg16_model2_s0/models/*.json")).read_text())
    assert first["tta"] != "flip"
    # the seed ensemble averages the saved window probabilities and votes as one model does
    import numpy as np

    p0, p1 = (np.load(out2 / "predictions" / f"vgg16_model2_s{s}.npz") for s in (0, 1))
    assert len(p0["val_names"]) == 65 and len(p0["val_patch_prob"]) == 65 * 25
    per = 25

    def vote(prob, y):
        return float(np.mean(((prob > 0.5).reshape(-1, per).mean(1) > 0.5) == y))

    assert vote(p0["val_patch_prob"], p0["val_y"]) == pytest.approx(rows[0]["val_roi_accuracy"])
    ens = json.loads((out2 / "ensembles.json").read_text())["rows"]
    assert len(ens) == 1 and ens[0]["model"] == "vgg16:model2" and ens[0]["seeds"] == "0, 1"
    assert ens[0]["val_roi_accuracy"] == pytest.approx(vote((p0["val_patch_prob"] + p1["val_patch_prob"]) / 2,
                                                            p0["val_y"]))
    assert ens[0]["accuracy"] == pytest.approx(vote((p0["patch_prob"] + p1["patch_prob"]) / 2, p0["y_true"]))
    assert ens[0]["accuracy_seed_mean"] == pytest.approx((rows[0]["accuracy"] + rows[1]["accuracy"]) / 2)
    from medattn.evaluation.recompute import recompute_ensembles, recompute_folder, recompute_row

    assert recompute_folder(out)[1] == [] and recompute_folder(out2)[1] == []  # under both strategies
    cells = {f for f, _, _ in recompute_row("mias_fusion", out / "predictions" / "vgg16_model2_s0.npz", runs[0])}
    assert {"accuracy_wilson_low", "val_threshold", "accuracy_val_threshold", "val_window_loss", "patch_roc_auc",
            "f1_tumour", "average_precision"} <= cells
    assert recompute_ensembles(out2)[1] == [] and recompute_ensembles(out2)[0] >= 8
    comp = {row["metric"]: row for row in json.loads((out2 / "comparison.json").read_text())["rows"]}
    assert comp["vgg16:model2, ensemble (2 seeds) accuracy"]["value"] == pytest.approx(ens[0]["accuracy"])
    assert comp["vgg16:model2, ensemble (2 seeds) accuracy"]["paper"] == 0.875


def test_no_data_prints_instructions(tmp_path, monkeypatch):
    from tests.conftest import main_in_process

    monkeypatch.delenv("MEDATTN_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    code, err = main_in_process("mias_fusion", ["--profile", "smoke", "--out", tmp_path / "o"])
    assert code == 2 and "MIAS_ROIs.zip" in err


def test_an_unknown_tta_is_refused(tmp_path):
    from tests.conftest import main_in_process

    code, err = main_in_process("mias_fusion", ["--profile", "smoke", "--data-dir", tmp_path, "--set", "tta=rotate",
                                                "--out", tmp_path / "o"])
    assert code == 2 and "tta 'rotate'" in err and "dihedral" in err


def test_imagenet_weights_with_a_scaled_backbone_are_refused_before_anything_runs():
    """The cpu profile's quarter-width VGG-BN and MobileNet have no ImageNet weights: --weights imagenet with it is
    refused up front (it failed at the first model before, and MobileNet silently became alpha 1.0)."""
    import dataclasses

    from medattn.runner.reproduction import UserError
    from tests.conftest import load_script

    mod = load_script("reproductions", "mias_fusion")
    cpu = mod.PROFILES["cpu"]
    with pytest.raises(UserError, match="width=0.25, batch_norm=True"):
        mod._check(dataclasses.replace(cpu, weights="imagenet"))
    mod._check(dataclasses.replace(cpu, weights="imagenet", width=1.0, batch_norm=False))
    mod._check(dataclasses.replace(cpu, weights="imagenet", models=("resnet50:baseline",)))
    mod._check(mod.PROFILES["paper"])


def test_cpu_profile_is_the_configuration_the_selection_runs_chose():
    """results/mias_fusion/selection/: 40 epochs (M40) won on validation; its rows (bf16, as `auto` resolved on that
    machine) carry the cpu profile's identity, so the profile's table resumes from them and no setting drifted."""
    import dataclasses

    from medattn.training.config import config_hash
    from tests.conftest import load_script

    cfg = load_script("reproductions", "mias_fusion").PROFILES["cpu"]
    assert cfg.stage("train").epochs == 40 and cfg.mixed_precision == "auto"
    sel = REPO / "results" / "mias_fusion" / "selection"
    chosen = [json.loads(line) for line in (sel / "M40" / "runs.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (sel / "R" / "runs.jsonl").read_text().splitlines()]
    bf16 = config_hash(dataclasses.replace(cfg, mixed_precision="bf16"))
    assert {r["identity"]["config_sha256"] for r in chosen} == {bf16}
    assert {r["identity"]["config_sha256"] for r in reference} != {bf16}  # the 4-epoch profile differs


def test_committed_table_is_the_cpu_profile_complete():
    """results/mias_fusion/ is the cpu profile's whole plan: every model of the profile with the three seeds the README
    gives, each row with the profile's identity (bf16, as `auto` resolved), and the provenance says complete."""
    import dataclasses

    from medattn.training.config import config_hash
    from tests.conftest import load_script

    mod = load_script("reproductions", "mias_fusion")
    cfg = mod.PROFILES["cpu"]
    res = REPO / "results" / "mias_fusion"
    rows = [json.loads(line) for line in (res / "runs.jsonl").read_text().splitlines() if line.strip()]
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted((arm, s) for arm in cfg.models for s in (0, 1, 2))
    assert {r["identity"]["config_sha256"] for r in rows} == {
        config_hash(dataclasses.replace(cfg, mixed_precision="bf16"))}
    assert json.loads((res / "run.json").read_text())["complete"] is True


def test_a_rotation_given_in_degrees_is_refused_before_anything_runs():
    """The MIAS rotation is a fraction of a turn (0.5 = +-180 degrees); 15 (meant as degrees) is refused up front
    by the augmenter's range check instead of failing at the first model."""
    import dataclasses

    from medattn.runner.reproduction import UserError
    from tests.conftest import load_script

    mod = load_script("reproductions", "mias_fusion")
    cpu = mod.PROFILES["cpu"]
    with pytest.raises(UserError, match=r"rotation must lie in \[0, 0.5\]"):
        mod._check(dataclasses.replace(cpu, rotation=15.0))
    with pytest.raises(UserError, match=r"zoom must lie in \[0, 1\)"):
        mod._check(dataclasses.replace(cpu, zoom=1.0))
    mod._check(dataclasses.replace(cpu, rotation=0.0, zoom=0.0))
