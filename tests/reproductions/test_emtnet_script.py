import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, main_in_process, saved_model


@pytest.mark.slow
@pytest.mark.subprocess
def test_smoke_on_benign_malignant_phantoms_end_to_end(tmp_path):
    """Two arms (multitask at w=2 and classification-only), two folds, on phantoms in the BUSI layout: tables with
    the paper column, the sweep, latency, plots, predictions with image names; the normal folder is not used.
    External validation on another phantom set with only benign (and normal) images: the fold models' mean is
    evaluated, malignant named absent, no sensitivity or AUC invented."""
    import shutil

    from medattn.datasets.phantom import make_phantom_busi

    data = make_phantom_busi(tmp_path / "busi", counts=(10, 8, 3), seed=5)
    ext = make_phantom_busi(tmp_path / "hospital_b", counts=(4, 3, 2), seed=21)
    shutil.rmtree(ext / "Dataset_BUSI_with_GT" / "malignant")
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run([sys.executable, str(REPO / "reproductions" / "emtnet.py"), "--profile", "smoke", "--data-dir",
                        str(data), "--external-data", str(ext), "--out", str(out), "--runs-dir", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads((out / "runs.json").read_text())["rows"]
    for row in runs:
        assert row["external_n"] == 4 and row["external_classes"] == "benign" and row["external_absent"] == "malignant"
        assert 0 <= row["external_specificity"] == row["external_accuracy"] <= 1
        assert "external_sensitivity" not in row and "external_roc_auc" not in row
    assert 0 <= runs[0]["external_dice_lesion"] <= 1 and "external_dice_lesion" not in runs[1]
    ext_src = "ours (smoke): multitask_w2 on external hospital_b (n=4; absent: malignant)"
    ext_rows = {x["metric"] for x in json.loads((out / "comparison.json").read_text())["rows"] if x["source"] == ext_src}
    assert ext_rows >= {"accuracy", "specificity", "dice_lesion"} and "sensitivity" not in ext_rows
    assert json.loads((out / "config.json").read_text())["external_data"] == str(ext)
    assert [row["arm"] for row in runs] == ["multitask_w2", "cls_only_w2"]
    assert runs[0]["n"] == 18 and runs[0]["tp"] + runs[0]["fn"] == 8  # benign + malignant only
    assert 0 <= runs[0]["dice_lesion"] <= 1 and "dice_lesion" not in runs[1]
    assert runs[0]["latency_median_ms"] > 0 and runs[0]["forward_gflop"] > 0 and runs[0]["params"] > 0
    comp = {(row["metric"], row["source"]): row for row in json.loads((out / "comparison.json").read_text())["rows"]}
    assert comp[("sensitivity", "ours (smoke): multitask_w2")]["paper"] == 0.941
    assert ("accuracy", "re-evaluation (Shi et al., BUSI+BUSIS)") in comp
    abl = json.loads((out / "ablation.json").read_text())["rows"]
    assert [a["metric"] for a in abl] == ["accuracy", "sensitivity", "specificity", "roc_auc"]
    assert abl[0]["comparison"] == "multitask_w2 - cls_only_w2" and 0 <= abl[0]["mcnemar_p"] <= 1
    assert abl[0]["ci_low"] <= abl[0]["difference"] <= abl[0]["ci_high"]
    for name in ("sweep.png", "roc_pr_multitask_w2.png", "reliability_multitask_w2.png", "overlays.png"):
        assert (out / "plots" / name).exists()
    import numpy as np

    pred = np.load(out / "predictions" / "multitask_w2_s0.npz")
    assert len(pred["names"]) == 18 and pred["prob"].min() >= 0 and pred["prob"].max() <= 1
    from medattn.evaluation.recompute import recompute_ablation, recompute_folder, recompute_row

    assert "dice_lesion" in {f for f, _, _ in recompute_row("emtnet", out / "predictions" / "multitask_w2_s0.npz",
                                                            runs[0])}  # from the out-of-fold masks it saved
    # counts, rates, F1, AUC, ECE, three bootstrap intervals and the spread over folds of both arms; Dice of the
    # multitask one
    assert recompute_folder(out) == (24 + 23, [])
    assert recompute_ablation(out) == (13, [])  # the paired differences, intervals and McNemar p-value


def _refused_in_process(args: list[str], message: str, tmp_path) -> None:
    """The script refuses ``args`` in one line naming ``message``, before anything runs (in process: a refusal
    needs no process of its own)."""
    from tests.conftest import main_in_process

    code, err = main_in_process("emtnet", args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_validation_part_thresholds_and_epochs_chosen_on_it(tmp_path):
    """``val_fraction`` keeps a validation part of each training fold and ``threshold_rule`` chooses each fold's
    threshold on it: the fold models' cards carry those thresholds, the saved decisions are the test probabilities
    above their fold's threshold, and the table gets the second row. ``select_on=val_auc`` keeps, in every fold of
    both kinds of arm, the epoch with the highest validation AUC of the classification output (``val_label_auc``
    for the multitask model, ``val_auc`` without the decoder). Options that need a validation part, or another
    value, are refused before anything runs; flip TTA re-reads the finished folds."""
    import numpy as np

    from medattn.datasets.phantom import make_phantom_busi

    data = make_phantom_busi(tmp_path / "busi", counts=(10, 8, 3), seed=5)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    base = [sys.executable, str(REPO / "reproductions" / "emtnet.py"), "--profile", "smoke", "--data-dir", str(data),
            "--runs-dir", str(tmp_path / "runs"), "--set", "threshold_rule=sensitivity:0.9"]
    for extra, message in (([], "also set val_fraction"),
                           (["--set", "select_on=val_auc"], "also set val_fraction"),
                           (["--set", "select_on=auc", "--set", "val_fraction=0.25"], "val_loss or val_auc")):
        _refused_in_process(base[2:] + extra + ["--out", str(tmp_path / "refused")], message, tmp_path)
    base += ["--set", "val_fraction=0.25", "--set", "select_on=val_auc", "--set", "train.epochs=3"]
    out = tmp_path / "out"
    r = subprocess.run(base + ["--out", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {r["arm"]: r for r in json.loads((out / "runs.json").read_text())["rows"]}
    assert set(rows) == {"multitask_w2", "cls_only_w2"}
    for arm, key in (("multitask_w2", "val_label_auc"), ("cls_only_w2", "val_auc")):
        assert rows[arm]["select_on"] == "val_auc"
        for f, best in enumerate(json.loads(rows[arm]["best_epochs"])):
            log = json.loads((tmp_path / "runs" / "emtnet-smoke" / f"{arm}_s0" / f"fold{f}" / "log.json").read_text())
            assert best == int(np.argmax([h[key] for h in log])) + 1
    assert json.loads((out / "config.json").read_text())["select_on"] == "val_auc"
    row = rows["multitask_w2"]
    thresholds, val_n = json.loads(row["thresholds"]), json.loads(row["val_n"])
    assert len(thresholds) == len(val_n) == 2 and all(n >= 2 for n in val_n)
    cards = [json.loads((tmp_path / "runs" / "emtnet-smoke" / "multitask_w2_s0" / "models" / f"fold{f}.json")
                        .read_text()) for f in (0, 1)]
    assert [c["threshold"] for c in cards] == thresholds and cards[0]["threshold_rule"] == "sensitivity:0.9"
    pred = np.load(out / "predictions" / "multitask_w2_s0.npz")
    tuned, prob, y = pred["pred_tuned"].astype(bool), pred["prob"], pred["y_true"]
    assert all(np.any(tuned == (prob > t)) for t in thresholds)
    assert np.all((prob > max(thresholds))[~tuned] == False) and np.all((prob > min(thresholds))[tuned])  # noqa: E712
    assert row["sensitivity_tuned"] == np.mean(tuned[y == 1]) and row["accuracy_tuned"] == np.mean(tuned == (y == 1))
    sources = {x["source"] for x in json.loads((out / "comparison.json").read_text())["rows"]}
    assert "ours (smoke): multitask_w2, thresholds from validation (sensitivity:0.9)" in sources
    assert json.loads((out / "config.json").read_text())["val_fraction"] == 0.25
    assert 0 <= row["val_roc_auc"] <= 1 and row["val_loss_mean"] > 0  # what settings are chosen by
    # the file keeps each image's fold and the folds' validation scores: the spread over folds, the validation AUC,
    # the thresholds chosen again and the tuned figures that follow from them are recomputed from it
    from medattn.evaluation.recompute import recompute_folder, recompute_row

    assert sorted(set(pred["fold"].tolist())) == [0, 1] and len(pred["val_index"]) == sum(val_n)
    cells = {f for f, _, _ in recompute_row("emtnet", out / "predictions" / "multitask_w2_s0.npz", row)}
    assert {"val_roc_auc", "thresholds", "accuracy_fold_mean", "roc_auc_fold_sd", "f1_pos_tuned"} <= cells
    assert recompute_folder(out)[1] == []
    # flip TTA changes only the evaluation: the finished folds are read again (validation, thresholds, test)
    out2 = tmp_path / "tta"
    r = subprocess.run(base + ["--out", str(out2), "--resume", "--set", "tta=flip", "--set", "ablation=false"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out2 / "runs.json").read_text())["rows"][0]
    assert again["tta"] == "flip" and row["tta"] == "none" and len(json.loads(again["resumed_stages"])) == 2
    assert again["best_epochs"] == row["best_epochs"]  # the same kept epochs: nothing trained
    p2 = np.load(out2 / "predictions" / "multitask_w2_s0.npz")["prob"]
    assert p2.shape == prob.shape and 0 <= p2.min() and p2.max() <= 1  # (a one-epoch smoke model barely varies)
    card = json.loads(saved_model(out2, "fold0.keras").with_suffix(".json").read_text())
    assert card["tta"] == "flip"


def test_cpu_profile_is_the_configuration_the_selection_run_chose():
    """results/emtnet/selection/: E1 (160 px) cleared the amended bar on validation AUC; its row carries the cpu
    profile's identity (so the profile's table resumed from it), as does every row of the committed table since it
    was rerun at 160 px; the 128 px table's rows (earlier_e2fdc7f/) do not."""
    from medattn.training.config import config_hash
    from tests.conftest import load_script

    cfg = load_script("reproductions", "emtnet").PROFILES["cpu"]
    assert cfg.stage("train").image_size == 160
    sel = REPO / "results" / "emtnet" / "selection"
    chosen = [json.loads(line) for line in (sel / "E1" / "runs.jsonl").read_text().splitlines()]
    assert chosen[0]["val_roc_auc"] >= 0.821  # the bar of the amended rule in selection/README.md
    assert {r["identity"]["config_sha256"] for r in chosen} == {config_hash(cfg)}
    committed = [json.loads(line) for line in (REPO / "results" / "emtnet" / "runs.jsonl").read_text().splitlines()]
    assert {r["identity"]["config_sha256"] for r in committed} == {config_hash(cfg)} and len(committed) == 5
    assert committed[0] == chosen[0]  # the main arm's row is E1's
    earlier = REPO / "results" / "emtnet" / "earlier_e2fdc7f" / "runs.jsonl"
    assert config_hash(cfg) not in {json.loads(line)["identity"]["config_sha256"]
                                    for line in earlier.read_text().splitlines()}


def test_flip_tta_averages_probability_and_mirrored_back_mask():
    """``_predict`` with tta=flip: P(malignant) is the mean of the image's and the mirror image's; the mask is the
    mean of the image's and the mirror's mask mirrored back. Checked on a model that is not mirror-symmetric."""
    import types

    import keras
    import numpy as np

    from tests.conftest import load_script

    emt = load_script("reproductions", "emtnet")
    inp = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inp)
    model = keras.Model(inp, {"label": keras.layers.Dense(1, kernel_initializer="glorot_normal")(flat),
                              "mask": keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)})
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")

    def run(tta):
        ctx = types.SimpleNamespace(cfg=types.SimpleNamespace(tta=tta), predict=lambda m, v, b: m.predict(v, verbose=0))
        return emt._predict(ctx, model, x, lambda v: v)

    (p0, m0), (pf, mf) = run(None), run("flip")
    out = model.predict(x[:, :, ::-1], verbose=0)
    p_mirror = 1 / (1 + np.exp(-out["label"][:, 0].astype(np.float64)))
    assert np.allclose(pf, 0.5 * (p0 + p_mirror)) and not np.allclose(pf, p0, atol=1e-4)
    assert np.allclose(mf, 0.5 * (m0 + out["mask"][:, :, ::-1]), atol=1e-6)


def test_width_is_refused_where_it_would_be_ignored():
    """``width`` scales VGG and MobileNet encoders; with another backbone, or with ImageNet weights (the alpha 1.0
    file), it used to be dropped silently (the cpu profile's 0.5 with ``--set backbone=resnet50``): now refused."""
    import dataclasses

    from medattn.runner.reproduction import UserError
    from tests.conftest import load_script

    mod = load_script("reproductions", "emtnet")
    cfg = mod.PROFILES["cpu"]
    mod._check(cfg)
    mod._check(dataclasses.replace(cfg, backbone="vgg16"))  # VGG takes a width
    mod._check(dataclasses.replace(cfg, backbone="resnet50", width=1.0))
    with pytest.raises(UserError, match="resnet50 has no width option"):
        mod._check(dataclasses.replace(cfg, backbone="resnet50"))
    with pytest.raises(UserError, match="only at width 1.0"):
        mod._check(dataclasses.replace(cfg, weights="imagenet"))
    with pytest.raises(UserError, match="backbone must be one of"):
        mod._check(dataclasses.replace(cfg, backbone="resnet18"))
    mod._check(mod.PROFILES["paper"])


@pytest.mark.slow
def test_resume_takes_finished_folds_from_their_saved_parts_without_checkpoints(tmp_path, monkeypatch, capsys):
    """A run stopped in its second fold keeps the first fold's predictions in ``<out>/parts`` (a run without
    ``--resume`` drops them and trains its own). With the checkpoints
    gone (another machine), ``--resume`` takes that fold from its part instead of training it, says so in the run
    record, and the finished file holds the part's figures; the parts go once the row is written. A part of another
    run (here another TTA: a part holds predictions) stops the run in one line naming the setting."""
    import shutil

    import numpy as np

    from medattn.datasets.phantom import make_phantom_busi
    from medattn.evaluation.recompute import recompute_folder
    from tests.conftest import load_script

    data = make_phantom_busi(tmp_path / "busi", counts=(10, 8, 3), seed=5)
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--profile", "smoke", "--data-dir", data, "--out", out, "--runs-dir", runs, "--set", "val_fraction=0.25",
            "--set", "threshold_rule=sensitivity:0.9", "--set", "ablation=false"]
    mod = load_script("reproductions", "emtnet")
    fold_once = mod._cross_validate_fold

    class Stopped(Exception):
        pass

    def stop_in_second_fold(ctx, run, data, f, *rest):
        if f == 1:
            raise Stopped
        return fold_once(ctx, run, data, f, *rest)

    def stop_at_once(*_):
        raise Stopped

    part = out / "parts" / "multitask_w2_s0" / "fold0.npz"
    monkeypatch.setattr(mod, "_cross_validate_fold", stop_in_second_fold)
    with pytest.raises(Stopped):
        mod.main([str(a) for a in args])
    assert part.is_file()
    monkeypatch.setattr(mod, "_cross_validate_fold", stop_at_once)
    with pytest.raises(Stopped):  # without --resume a run trains every part itself: the old parts go
        mod.main([str(a) for a in args])
    assert not (out / "parts").exists()
    monkeypatch.setattr(mod, "_cross_validate_fold", stop_in_second_fold)
    with pytest.raises(Stopped):
        mod.main([str(a) for a in args])
    kept = dict(np.load(part))
    assert set(kept) >= {"prob", "hard", "mask_bits", "val_idx", "val_prob", "facts"}
    shutil.rmtree(runs)  # the checkpoints are gone; the results folder stays
    code, err = main_in_process("emtnet", args + ["--resume", "--set", "tta=flip"])
    assert code == 2 and "part of another run" in err and "tta" in err and len(err.strip().splitlines()) == 1, err
    capsys.readouterr()
    code, err = main_in_process("emtnet", args + ["--resume"])
    assert code == 0, err[-3000:]
    assert f"multitask_w2 s0 fold0: taken from {part} (trained at" in capsys.readouterr().out
    assert not (runs / "emtnet-smoke" / "multitask_w2_s0" / "fold0").exists()  # taken from its part, not trained
    assert (runs / "emtnet-smoke" / "multitask_w2_s0" / "fold1").exists()
    row = json.loads((out / "runs.json").read_text())["rows"][0]
    assert json.loads(row["resumed_stages"])[0].startswith("fold0: its saved part")
    facts = json.loads(str(kept["facts"]))
    assert json.loads(row["thresholds"])[0] == facts["threshold"]
    assert json.loads(row["best_epochs"])[0] == facts["best_epoch"]
    pred = np.load(out / "predictions" / "multitask_w2_s0.npz")
    first = pred["fold"] == 0
    np.testing.assert_array_equal(pred["prob"][first], kept["prob"])
    np.testing.assert_array_equal(pred["val_prob"][pred["val_fold"] == 0], kept["val_prob"])
    n, shape = len(pred["fold"]), tuple(pred["mask_shape"])
    masks = np.unpackbits(pred["mask_pred"], count=int(np.prod(shape))).reshape(shape)
    np.testing.assert_array_equal(masks[first].ravel(), np.unpackbits(kept["mask_bits"], count=masks[first].size))
    assert n == 18 and not (out / "parts").exists()
    assert recompute_folder(out)[1] == []
