"""reproductions/brain_tumor_transfer.py: the de-duplicated test set, both test sets in every table, Grad-CAM, the
refusal of a frozen phase on random weights, the paper profile's dry run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, dataset_dir, saved_model

SCRIPT = REPO / "reproductions" / "brain_tumor_transfer.py"
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MEDATTN_DATA_DIR")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _run(args, cwd, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=_env())


def _main_in_process(args) -> tuple[int, str]:
    """The script's exit code and standard error for ``args``, run in this process (a refusal needs no process of
    its own); a refusal is one line."""
    from tests.conftest import main_in_process

    code, err = main_in_process("brain_tumor_transfer", args)
    assert code != 2 or len(err.strip().splitlines()) == 1, err
    return code, err


def _fake_release(root, per_class=6, n_test=3, copies=("glioma", "pituitary")):
    """A Brain Tumor MRI layout of random-texture JPEGs; the first Testing image of each class in ``copies`` is a
    byte copy of a Training image (an exact cross-split duplicate)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("Training", per_class), ("Testing", n_test)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = (rng.random((48, 48)) * 60 + 60 * c).astype(np.uint8)
                img[8 + 4 * i: 20 + 4 * i, 10:30] = 255 - 40 * c  # a bright block that differs per image
                Image.fromarray(img).save(d / f"{split[:2]}-{name[:2]}_{i:04d}.jpg", quality=95)
    for name in copies:
        src = root / "Training" / name / f"Tr-{name[:2]}_0002.jpg"
        (root / "Testing" / name / f"Te-{name[:2]}_0000.jpg").write_bytes(src.read_bytes())
    return root


@pytest.fixture
def brain_smoke(tmp_path_factory, tmp_path):
    """The default smoke run (MobileNetV2 and VGG16, seed 0) on a fake release, made once per pytest run and
    copied here: ``brain_tumor_mri/`` (the data), ``out/`` (its results) and ``runs/`` (its run folders)."""
    import shutil

    from tests.conftest import run_once

    def make(folder):
        data = _fake_release(folder / "brain_tumor_mri")
        r = _run(["--profile", "smoke", "--data-dir", data, "--out", folder / "out", "--runs-dir", folder / "runs"],
                 folder)
        assert r.returncode == 0, r.stderr[-3000:]

    shutil.copytree(run_once("brain_smoke", make, tmp_path_factory), tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.mark.slow
@pytest.mark.subprocess
def test_smoke_reports_official_and_deduplicated_test_sets(brain_smoke):
    tmp_path = brain_smoke
    data, out = tmp_path / "brain_tumor_mri", tmp_path / "out"
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert [row["backbone"] for row in runs] == ["mobilenetv2", "vgg16"]
    row = runs[0]
    assert row["n_test_official"] == 12
    assert row["n_test_dedup"] <= 10  # at least the two byte copies are gone
    pred = np.load(out / "predictions" / "mobilenetv2_s0.npz")
    names = list(pred["names"])
    for copy in ("Testing/glioma/Te-gl_0000.jpg", "Testing/pituitary/Te-pi_0000.jpg"):
        assert copy in names and not pred["dedup"][names.index(copy)], copy
    assert int(pred["dedup"].sum()) == row["n_test_dedup"]
    assert np.allclose(pred["prob"].sum(1), 1, atol=1e-4)
    # weighted accuracy is the support-weighted one-vs-rest accuracy of the confusion matrix
    cm = row["official_confusion_matrix"]
    cm = np.array(json.loads(cm) if isinstance(cm, str) else cm)  # runs.json holds lists as JSON text
    n = cm.sum()
    ovr = [(n - cm[c].sum() - cm[:, c].sum() + 2 * cm[c, c]) / n for c in range(4)]
    assert row["official_weighted_accuracy"] == pytest.approx(np.dot(ovr, cm.sum(1)) / n)
    assert row["official_accuracy"] == pytest.approx(np.trace(cm) / n)
    comp = json.loads((out / "comparison.json").read_text())
    sources = {x["source"] for x in comp["rows"]}
    assert any("official Testing (n=12)" in s for s in sources)
    assert any(f"de-duplicated Testing (n={row['n_test_dedup']})" in s for s in sources)
    for name in ("accuracy_official_vs_dedup.png", "gradcam_mobilenetv2.png", "confusion_vgg16_dedup.png",
                 "confusion_vgg16_official.png", "roc_pr_vgg16_dedup.png", "reliability_mobilenetv2_official.png"):
        assert (out / "plots" / name).exists(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stages"]["frozen"]["epochs"] == 0 and cfg["backbones"] == ["mobilenetv2", "vgg16"]
    assert all(r["epochs_run"] == cfg["stages"]["train"]["epochs"] and r["resumed_from"] is None for r in runs)
    from medattn.saving import read_model_card

    card = read_model_card(tmp_path / "runs" / "brain_tumor_transfer-smoke" / "vgg16_s0" / "models" / "vgg16.keras")
    assert card["class_names"] == list(CLASSES) and card["input_size"] == 32 and card["preprocessing"] == "unit"
    assert card["metrics"]["dedup_accuracy"] == runs[1]["dedup_accuracy"]  # the vgg16 row
    # the profile's BatchNorm momentum reached every BatchNormalization layer (MobileNetV2's own is 0.999)
    import keras

    from medattn.saving import load_model

    m = load_model(tmp_path / "runs" / "brain_tumor_transfer-smoke" / "mobilenetv2_s0" / "models" /
                   "mobilenetv2.keras", compile=False)
    stack, bns = list(m.layers), []
    while stack:
        la = stack.pop()
        stack.extend(getattr(la, "layers", []))
        bns += [la] if isinstance(la, keras.layers.BatchNormalization) else []
    assert len(bns) > 10 and all(la.momentum == 0.9 for la in bns)
    # flip TTA only changes the evaluation: the finished vgg16 checkpoint is evaluated again, not trained
    out2 = tmp_path / "tta"
    code, err = _main_in_process(["--profile", "smoke", "--data-dir", data, "--out", out2, "--runs-dir",
                                  tmp_path / "runs", "--resume", "--set", "backbones=vgg16", "--set", "tta=flip"])
    assert code == 0, err[-3000:]
    again = json.loads((out2 / "runs.json").read_text())["rows"][0]
    assert again["tta"] == "flip" and runs[1]["tta"] == "none"
    assert again["epochs_run"] == runs[1]["epochs_run"] and again["resumed_from"] == {"train": 1}
    assert again["train_time_all_epochs_s"] == runs[1]["train_time_all_epochs_s"] > 0
    p_plain, p_flip = np.load(out / "predictions" / "vgg16_s0.npz")["prob"], np.load(out2 / "predictions" /
                                                                                      "vgg16_s0.npz")["prob"]
    assert np.allclose(p_flip.sum(1), 1, atol=1e-4) and not np.allclose(p_plain, p_flip, atol=1e-6)
    # the re-evaluation saves its model in its own run folder (listed in its run.json); the first run's is kept
    saved = saved_model(out2, "vgg16.keras")
    assert "/vgg16_s0-" in str(saved) and read_model_card(saved)["tta"] == "flip"
    assert read_model_card(tmp_path / "runs" / "brain_tumor_transfer-smoke" / "vgg16_s0" / "models" /
                           "vgg16.keras")["tta"] != "flip"


@pytest.mark.slow
@pytest.mark.subprocess
def test_precise_bn_re_evaluates_a_finished_checkpoint_with_recomputed_statistics(brain_smoke):
    """precise_bn changes only the evaluation: a finished checkpoint is evaluated again (nothing trains), every
    BatchNorm layer's moving statistics are recomputed over the train images in whole batches, on two replicas too,
    and the row records it; the model saved from the run carries the new statistics."""
    import keras

    from medattn.saving import load_model

    tmp_path, data = brain_smoke, brain_smoke / "brain_tumor_mri"
    base = ["--profile", "smoke", "--data-dir", data, "--runs-dir", tmp_path / "runs", "--set", "backbones=mobilenetv2"]
    saved = tmp_path / "runs" / "brain_tumor_transfer-smoke" / "mobilenetv2_s0" / "models" / "mobilenetv2.keras"

    def bns(path):
        stack, out = list(load_model(path, compile=False).layers), []
        while stack:
            la = stack.pop()
            stack.extend(getattr(la, "layers", []))
            out += [la] if isinstance(la, keras.layers.BatchNormalization) else []
        return out

    before = {la.name: np.array(la.moving_mean) for la in bns(saved)}
    env = {**_env(), "MEDATTN_CPU_REPLICAS": "2"}
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, [*base, "--out", tmp_path / "pbn", "--resume",
                                                                "--strategy", "mirrored", "--set", "precise_bn=true"])],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    plain = json.loads((tmp_path / "out" / "runs.json").read_text())["rows"][0]
    assert plain["backbone"] == "mobilenetv2"
    pbn = json.loads((tmp_path / "pbn" / "runs.json").read_text())["rows"][0]
    assert plain["precise_bn"] is False and "precise_bn_layers" not in plain
    assert pbn["precise_bn"] is True and pbn["precise_bn_layers"] == len(before) > 10
    n_train = pbn["precise_bn_images"]
    assert n_train > 0 and n_train % 8 == 0  # whole batches of the smoke profile's 8
    assert pbn["epochs_run"] == plain["epochs_run"] and pbn["resumed_from"] == {"train": 1}  # evaluated, not trained
    after = {la.name: np.array(la.moving_mean) for la in bns(saved_model(tmp_path / "pbn", "mobilenetv2.keras"))}
    assert all(not np.allclose(before[k], after[k]) for k in before)
    kept = {la.name: np.array(la.moving_mean) for la in bns(saved)}  # the first run's model is not overwritten
    assert all(np.array_equal(before[k], kept[k]) for k in before)
    p0, p1 = (np.load(tmp_path / d / "predictions" / "mobilenetv2_s0.npz")["val_prob"] for d in ("out", "pbn"))
    assert np.allclose(p1.sum(1), 1, atol=1e-4) and not np.allclose(p0, p1, atol=1e-6)
    assert json.loads((tmp_path / "pbn" / "config.json").read_text())["stages"]["train"]["precise_bn"] is True


def test_precise_bn_with_pretrained_weights_is_refused(tmp_path, capsys):
    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    assert mod.main(["--profile", "paper", "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path / "r"),
                     "--set", "precise_bn=true"]) == 2
    assert "nothing to recompute: use it with --weights none" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_accuracy_bars_draw_the_seed_mean_and_every_seed(tmp_path, monkeypatch):
    """The official-vs-de-duplicated bar plot: bars at the mean over a backbone's seeds, each seed drawn beside."""
    import matplotlib.pyplot as plt

    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    row = {"n_test_official": 20, "n_test_dedup": 10}
    rows = [{**row, "backbone": "vgg16", "seed": 0, "official_accuracy": 0.5, "dedup_accuracy": 0.8}]  # one seed first:
    rows += [{**row, "backbone": "xception", "seed": s, "official_accuracy": o, "dedup_accuracy": d}  # the dots still
             for s, o, d in ((0, 0.9, 0.8), (1, 0.8, 0.6))]                                            # get their label
    seen = []
    orig = plt.Axes.legend
    monkeypatch.setattr(plt.Axes, "legend",
                        lambda ax, *a, **k: seen.extend(ax.get_legend_handles_labels()[1]) or orig(ax, *a, **k))
    drawn = mod._plot_bars(rows, tmp_path / "bars.png", "")
    assert drawn == {"vgg16": {"official": [0.5], "dedup": [0.8]},
                     "xception": {"official": [0.9, 0.8], "dedup": [0.8, 0.6]}}
    assert seen.count("each seed") == 1 and all("mean over seeds" in x for x in seen if "Testing" in x)
    assert (tmp_path / "bars.png").stat().st_size > 0


@pytest.mark.slow
def test_two_seeds_give_the_spread_and_a_seed_ensemble_of_the_saved_probabilities(tmp_path):
    """Two seeds of one backbone (trained with label smoothing, translation, a smaller rotation and no zoom, weight
    decay and a moving average of the weights, which this run also checks)."""
    data = _fake_release(tmp_path / "brain_tumor_mri")
    out = tmp_path / "out"
    code, err = _main_in_process(["--profile", "smoke", "--data-dir", data, "--out", out, "--runs-dir",
                                  tmp_path / "runs", "--set", "backbones=mobilenetv2", "--seeds", "0,1", "--set",
                                  "label_smoothing=0.1", "--set", "translate=0.1", "--set", "train.weight_decay=0.5",
                                  "--set", "train.ema=0.99", "--set", "rotation=0.02", "--set", "zoom=0"])
    assert code == 0, err[-3000:]
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert [(x["backbone"], x["seed"]) for x in runs] == [("mobilenetv2", 0), ("mobilenetv2", 1)]
    assert all(x["rotation"] == 0.02 and x["zoom"] == 0.0 for x in runs)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["rotation"], cfg["zoom"]) == (0.02, 0.0)
    assert all(x["ema"] == 0.99 for x in runs)
    assert json.loads((out / "config.json").read_text())["stages"]["train"]["ema"] == 0.99
    # trained with the smoothed loss, and the saved model says so
    from medattn.saving import load_model

    assert all(x["label_smoothing"] == 0.1 and x["translate"] == 0.1 and x["weight_decay"] == 0.5 for x in runs)
    assert json.loads((out / "config.json").read_text())["stages"]["train"]["weight_decay"] == 0.5
    saved = load_model(next((tmp_path / "runs").glob("*/mobilenetv2_s0/models/mobilenetv2.keras")))
    assert type(saved.loss).__name__ == "SmoothedSparseCategoricalCrossentropy" and saved.loss.label_smoothing == 0.1
    p0, p1 = (np.load(out / "predictions" / f"mobilenetv2_s{s}.npz") for s in (0, 1))
    assert list(p0["val_names"]) == list(p1["val_names"]) and len(p0["val_names"]) == runs[0]["n_val"]
    for p, row in ((p0, runs[0]), (p1, runs[1])):  # the saved validation probabilities give the row's figure
        assert np.mean(p["val_prob"].argmax(1) == p["val_y"]) == pytest.approx(row["val_accuracy"])
    assert not np.allclose(p0["prob"], p1["prob"])  # two seeds, two models
    ens = json.loads((out / "ensembles.json").read_text())["rows"]
    assert len(ens) == 1 and ens[0]["seeds"] == "0, 1" and ens[0]["n_seeds"] == 2
    mean_val, mean_test = (p0["val_prob"] + p1["val_prob"]) / 2, (p0["prob"] + p1["prob"]) / 2
    assert ens[0]["val_accuracy"] == pytest.approx(np.mean(mean_val.argmax(1) == p0["val_y"]))
    assert ens[0]["official_accuracy"] == pytest.approx(np.mean(mean_test.argmax(1) == p0["y_true"]))
    keep = p0["dedup"]
    assert ens[0]["dedup_accuracy"] == pytest.approx(np.mean(mean_test[keep].argmax(1) == p0["y_true"][keep]))
    assert ens[0]["val_accuracy_seed_mean"] == pytest.approx((runs[0]["val_accuracy"] + runs[1]["val_accuracy"]) / 2)
    from medattn.evaluation.recompute import recompute_ensembles, recompute_folder, recompute_row

    assert recompute_folder(out)[1] == [] and recompute_ensembles(out)[1] == []
    cells = {f for f, _, _ in recompute_row("brain_tumor_transfer", out / "predictions" / "mobilenetv2_s0.npz",
                                            runs[0], cfg["n_boot"])}
    assert {"dedup_ece", "official_precision_weighted", "val_accuracy", "dedup_accuracy_ci"} <= cells
    assert recompute_ensembles(out)[0] >= len(cells)  # the ensemble's figures, intervals and seed mean
    spread = json.loads((out / "seeds.json").read_text())["rows"]
    dd = next(x for x in spread if x["metric"] == "dedup_accuracy")
    assert dd["n_seeds"] == 2 and dd["mean"] == pytest.approx((runs[0]["dedup_accuracy"] + runs[1]["dedup_accuracy"]) / 2)
    metrics = {x["metric"] for x in json.loads((out / "comparison.json").read_text())["rows"]}
    assert "mobilenetv2 (32 px) (2 seeds) accuracy" in metrics
    assert "mobilenetv2 (32 px), ensemble (2 seeds) accuracy" in metrics


def test_a_seed_ensemble_refuses_predictions_of_other_cases(tmp_path):
    from medattn.evaluation import seed_ensemble

    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    np.savez(a, names=np.array(["x", "y"]), y_true=np.array([0, 1]), prob=np.array([[0.8, 0.2], [0.4, 0.6]]))
    np.savez(b, names=np.array(["x", "y"]), y_true=np.array([0, 1]), prob=np.array([[0.6, 0.4], [0.2, 0.8]]))
    np.savez(c, names=np.array(["y", "x"]), y_true=np.array([1, 0]), prob=np.array([[0.5, 0.5], [0.5, 0.5]]))
    parts = [("prob", "names", "y_true"), ("val_prob", "val_names", "val_y")]
    got = seed_ensemble([a, b], parts)
    assert np.allclose(got["prob"], [[0.7, 0.3], [0.3, 0.7]]) and list(got["y_true"]) == [0, 1]
    assert got["val_prob"] is None and got["val_y"] is None  # files written before validation probabilities
    with pytest.raises(ValueError, match="c.npz: 'names' differs"):
        seed_ensemble([a, c], parts)
    with pytest.raises(ValueError, match="at least two"):
        seed_ensemble([a], parts)

    from medattn.evaluation import seed_groups

    rows = [{"m": "x", "seed": 1}, {"m": "x", "seed": 0}, {"m": "y", "seed": 0}, {"m": "z", "seed": 0},
            {"m": "z", "seed": 1}]
    paths = {("x", 0): a, ("x", 1): b, ("z", 0): a, ("z", 1): tmp_path / "gone.npz"}
    said = []
    got = list(seed_groups(rows, "m", lambda m, s: paths[(m, s)], said.append))
    assert [(n, [r["seed"] for r in rs], fs) for n, rs, fs in got] == [("x", [0, 1], [a, b])]  # y: one seed
    assert said == [f"! no seed ensemble for z: missing {tmp_path / 'gone.npz'}"]


def test_frozen_phase_on_random_weights_is_refused(tmp_path, capsys):
    """Refused in one line before any data is read (in process: the runner's exit code and message)."""
    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    data = _fake_release(tmp_path / "brain_tumor_mri", per_class=2, n_test=1, copies=())
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")]
    assert mod.main([*base, "--set", "frozen.epochs=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "frozen.epochs=2" in err and "frozen.epochs=0" in err and len(err.splitlines()) == 1
    assert mod.main([*base, "--set", "tta=dihedral"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tta 'dihedral'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_unfreeze_fraction_without_pretrained_weights_is_refused(tmp_path, capsys):
    """unfreeze_fraction only chooses which pretrained layers fine-tune; from scratch every layer trains, so setting
    it there would change nothing, silently: the runner refuses it (the script's ``not_used`` names it), while the
    profiles themselves pass. Its default is left out of a from-scratch run's config.json (named under "not_used"),
    which records only what ran."""
    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    for cfg in mod.PROFILES.values():
        mod._check(cfg)
    assert mod.main(["--profile", "cpu", "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path / "r"),
                     "--set", "unfreeze_fraction=0.5"]) == 2
    err = capsys.readouterr().err
    assert "unfreeze_fraction=0.5 is not read by this run" in err and "--weights none" in err
    assert not (tmp_path / "r").exists()
    assert list(mod.REPRODUCTION.not_used(mod.PROFILES["cpu"])) == ["unfreeze_fraction"]
    assert not mod.REPRODUCTION.not_used(mod.PROFILES["paper"])


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.subprocess
def test_paper_profile_dry_run(tmp_path):
    """The paper profile end to end, both phases, six images per class and split, at its two input sizes: Xception
    at 299 (the largest input) and MobileNetV2 at 224 (the cheapest of the four backbones at that size). That all
    six build at their paper sizes and split into the phases' trainable parts:
    test_every_paper_backbone_builds_at_its_size_and_unfreezes_its_top_part."""
    r = _run(["--profile", "paper", "--dry-run", "--data-dir", dataset_dir("brain_tumor_mri"), "--runs-dir",
              tmp_path / "runs", "--set", "backbones=xception,mobilenetv2", "--quiet"], tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / "brain_tumor_transfer-paper-dryrun" / "results"
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert [row["backbone"] for row in runs] == ["xception", "mobilenetv2"]
    assert {row["backbone"]: row["image_size"] for row in runs} == {"xception": 299, "mobilenetv2": 224}
    assert all(row["epochs_run"] == 2 for row in runs)  # one dry-run epoch in each phase
    assert "DRY RUN" in json.loads((out / "comparison.json").read_text())["title"]


def test_every_paper_backbone_builds_at_its_size_and_unfreezes_its_top_part():
    """Each of the paper's six backbones with the paper's head at the paper profile's input size (Xception and
    InceptionV3 at 299): the frozen phase trains the head alone, the fine-tuning phase the top 30 % of the
    backbone's layers besides, its BatchNorm layers kept frozen."""
    import keras

    from medattn.models.transfer import backbone_layers, build_transfer_classifier, set_backbone_trainable
    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    cfg = mod.PROFILES["paper"]
    sizes = {}
    for backbone in cfg.backbones:
        size = mod.image_size(cfg, backbone)
        model = build_transfer_classifier(backbone, size, len(mod.CLASSES), weights=None)
        sizes[backbone] = size
        assert model.output_shape == (None, len(mod.CLASSES)), backbone
        layers = [la for la in backbone_layers(model) if not isinstance(la, keras.layers.InputLayer)]
        assert set_backbone_trainable(model, 0.0) == 0 and all(not la.trainable for la in layers), backbone
        n = set_backbone_trainable(model, cfg.unfreeze_fraction)
        top = layers[len(layers) - int(round(cfg.unfreeze_fraction * len(layers))):]
        assert 0 < n == sum(not isinstance(la, keras.layers.BatchNormalization) for la in top), backbone
        assert not any(la.trainable for la in layers if isinstance(la, keras.layers.BatchNormalization)), backbone
        keras.backend.clear_session()
    assert sizes == {"xception": 299, "mobilenetv2": 224, "inceptionv3": 299, "resnet50": 224, "vgg16": 224,
                     "densenet121": 224}


@pytest.mark.parametrize("field, good, bad, message", [
    ("label_smoothing", 0.1, "1.5", "label_smoothing must lie in [0, 1)"),
    ("translate", 0.1, "0.6", "translate must lie in [0, 0.5)"),
    ("rotation", 0.0, "15", "rotation must lie in [0, 0.5] (a fraction of a full turn)"),
    ("zoom", 0.0, "1.5", "zoom must lie in [0, 1)"),
])
def test_option_enters_the_identity_only_when_set_and_is_checked(field, good, bad, message, tmp_path, capsys):
    """Runs made before the option existed keep their identity (so --resume finds them); a run with it is another
    configuration; a value out of range is refused (by the loss's or the augmenter's own check) before any data is
    read."""
    import dataclasses

    from medattn.training.config import config_hash
    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    cpu = mod.PROFILES["cpu"]
    assert getattr(cpu, field) is None
    with_it = dataclasses.replace(cpu, **{field: good})
    assert config_hash(with_it) != config_hash(cpu)
    assert config_hash(dataclasses.replace(cpu, **{field: None})) == config_hash(cpu)
    mod._check(with_it)
    assert mod.main(["--profile", "cpu", "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path / "r"),
                     "--set", f"{field}={bad}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_translate_is_added_to_the_augmentation_only_when_set():
    import dataclasses

    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    cpu = mod.PROFILES["cpu"]
    assert "translate" not in mod.augmentation(cpu)
    assert mod.augmentation(dataclasses.replace(cpu, translate=0.1)) == {**mod.augmentation(cpu), "translate": 0.1}


def test_rotation_and_zoom_default_to_the_papers_and_can_be_turned_off():
    import dataclasses

    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    cpu = mod.PROFILES["cpu"]
    assert mod.augmentation(cpu) == {"rotation": 15 / 360, "zoom": 0.1, "flip": "horizontal", "brightness": 0.1}
    off = mod.augmentation(dataclasses.replace(cpu, rotation=0.0, zoom=0.0))
    assert off == {"rotation": 0.0, "zoom": 0.0, "flip": "horizontal", "brightness": 0.1}
    assert mod.augmentation(dataclasses.replace(cpu, rotation=0.25))["rotation"] == 0.25  # a fraction of a turn


@pytest.mark.slow
@pytest.mark.subprocess  # its fixture's run
def test_a_student_distils_from_a_teachers_train_probabilities_and_a_leaky_teacher_is_refused(brain_smoke):
    """A smoke run saves every train image's probabilities; a second run trains with them as a soft target
    (DistillationLoss, validation loss the plain cross-entropy); a teacher whose train images include this run's
    validation images is refused, naming the file."""
    tmp_path, data = brain_smoke, brain_smoke / "brain_tumor_mri"
    base = ["--profile", "smoke", "--data-dir", data, "--runs-dir", tmp_path / "runs", "--set",
            "backbones=mobilenetv2"]
    teacher = tmp_path / "out" / "predictions" / "mobilenetv2_s0.npz"
    p = np.load(teacher)
    assert len(p["train_names"]) == len(p["train_y"]) == len(p["train_prob"]) > 0
    assert all(str(n).startswith("Training/") for n in p["train_names"])
    assert not set(p["train_names"].tolist()) & set(p["val_names"].tolist())
    assert np.allclose(p["train_prob"].sum(1), 1, atol=1e-4)
    code, err = _main_in_process([*base, "--out", tmp_path / "student", "--set", f"teachers={teacher}", "--set",
                                  "distill_temperature=2", "--seeds", "1"])
    assert code == 0, err[-3000:]
    row = json.loads((tmp_path / "student" / "runs.json").read_text())["rows"][0]
    assert row["teachers_train_accuracy"] == pytest.approx(np.mean(p["train_prob"].argmax(1) == p["train_y"]))
    assert (row["distill_temperature"], row["distill_weight"]) == (2.0, 0.9)
    teachers = json.loads(row["teachers"]) if isinstance(row["teachers"], str) else row["teachers"]
    assert teachers[0]["file"] == str(teacher) and len(teachers[0]["sha256"]) == 64
    cfg = json.loads((tmp_path / "student" / "config.json").read_text())
    assert cfg["teachers"] == [str(teacher)] and cfg["distill_temperature"] == 2.0
    from medattn.losses import DistillationLoss
    from medattn.saving import load_model

    saved = load_model(next((tmp_path / "runs").glob("*/mobilenetv2_s1/models/mobilenetv2.keras")))
    assert isinstance(saved.loss, DistillationLoss) and saved.loss.temperature == 2.0
    log = json.loads(next((tmp_path / "runs").glob("*/mobilenetv2_s1/train/log.json")).read_text())
    assert "val_accuracy" in json.dumps(log)
    # a teacher that trained on this run's validation images
    leaky = tmp_path / "leaky.npz"
    np.savez(leaky, **{**{k: p[k] for k in p.files},
                       "train_names": np.concatenate([p["train_names"], p["val_names"][:1]]),
                       "train_prob": np.concatenate([p["train_prob"], p["val_prob"][:1]])})
    code, err = _main_in_process([*base, "--out", tmp_path / "bad", "--set", f"teachers={leaky}", "--seeds", "2"])
    assert code == 2 and f"teachers: {leaky} trained on 1 of this run's validation or test images" in err


def test_distillation_options_are_checked_before_any_data_is_read(tmp_path, capsys):
    import dataclasses

    from medattn.training.config import config_hash
    from tests.conftest import load_script

    mod = load_script("reproductions", "brain_tumor_transfer")
    cpu = mod.PROFILES["cpu"]
    f = tmp_path / "t.npz"
    np.savez(f, x=np.zeros(1))
    with_it = dataclasses.replace(cpu, teachers=(str(f),))
    mod._check(with_it)
    assert config_hash(with_it) != config_hash(cpu)
    assert config_hash(dataclasses.replace(with_it, distill_weight=0.5)) != config_hash(with_it)
    assert mod.distillation(with_it) == (4.0, 0.9)
    assert mod.parse_fold("2/3") == (2, 3)
    assert config_hash(dataclasses.replace(cpu, teacher_fold="1/2")) != config_hash(cpu)
    for sets, message in ((["distill_temperature=2"], "distill_temperature is set but teachers is not"),
                          ([f"teachers={tmp_path / 'gone.npz'}"], "gone.npz: no such file"),
                          ([f"teachers={f}", "distill_weight=1.5"], "distill_weight must lie in [0, 1]"),
                          ([f"teachers={f}", "distill_temperature=0"], "distill_temperature must be > 0"),
                          (["teacher_fold=3/2"], "needs k >= 2 and 1 <= i <= k"),
                          (["teacher_fold=half"], "teacher_fold must be i/k"),
                          (["teacher_fold=1/2", f"teachers={f}"], "a cross-fitting teacher trains on labels only")):
        args = ["--profile", "cpu", "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path / "r")]
        for s in sets:
            args += ["--set", s]
        assert mod.main(args) == 2, sets
        assert message in capsys.readouterr().err, sets
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cross_fitting_teachers_give_every_train_image_a_held_out_soft_target(tmp_path):
    """teacher_fold 1/2 and 2/2 train on complementary halves of the train part (groups whole) and score the half
    they never saw; a student distils from both, each train image's target from the teacher that did not train on
    it; one fold alone leaves half the images without a target and is refused."""
    data = _fake_release(tmp_path / "brain_tumor_mri")
    base = ["--profile", "smoke", "--data-dir", data, "--runs-dir", tmp_path / "runs", "--set",
            "backbones=mobilenetv2"]
    files = []
    for i in (1, 2):  # in this process: three runs of one script need not pay for three TensorFlow imports
        code, err = _main_in_process([*base, "--out", tmp_path / f"fold{i}", "--set", f"teacher_fold={i}/2"])
        assert code == 0, err[-3000:]
        files.append(tmp_path / f"fold{i}" / "predictions" / "mobilenetv2_s0.npz")
    a, b = (np.load(f) for f in files)
    assert list(a["val_names"]) == list(b["val_names"])
    for p, q in ((a, b), (b, a)):
        assert not set(p["train_names"].tolist()) & set(p["heldout_names"].tolist())  # scored what it never saw
        assert set(p["heldout_names"].tolist()) == set(q["train_names"].tolist())  # the other fold's training set
        assert np.allclose(p["heldout_prob"].sum(1), 1, atol=1e-4)
    full = set(a["train_names"].tolist()) | set(a["heldout_names"].tolist())
    rows = [json.loads((tmp_path / f"fold{i}" / "runs.json").read_text())["rows"][0] for i in (1, 2)]
    assert [r["teacher_fold"] for r in rows] == ["1/2", "2/2"]
    assert rows[0]["n_train"] + rows[1]["n_train"] == len(full)
    assert rows[0]["heldout_accuracy"] == pytest.approx(np.mean(a["heldout_prob"].argmax(1) == a["heldout_y"]))
    code, err = _main_in_process([*base, "--out", tmp_path / "student", "--set", f"teachers={files[0]},{files[1]}",
                                  "--seeds", "1"])
    assert code == 0, err[-3000:]
    row = json.loads((tmp_path / "student" / "runs.json").read_text())["rows"][0]
    held = np.concatenate([a["heldout_prob"], b["heldout_prob"]]).argmax(1)
    truth = np.concatenate([a["heldout_y"], b["heldout_y"]])
    assert len(truth) == len(full)
    assert row["teachers_train_accuracy"] == pytest.approx(np.mean(held == truth))
    code, err = _main_in_process([*base, "--out", tmp_path / "half", "--set", f"teachers={files[0]}", "--seeds", "2"])
    missing = len(full) - len(a["heldout_names"])  # the images only the absent fold-2 teacher scored
    assert code == 2 and f"teachers: {missing} of the {len(full)} train images have no teacher probabilities" in err
