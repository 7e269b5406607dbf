"""The scripts on the shared runner: tf.distribute (two CPU replicas, two workers), paper-profile dry runs, user
errors in one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, dataset_dir, run_two_workers

SCRIPTS = REPO / "reproductions"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MEDATTN_DATA_DIR")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def _run(args, tmp_path, timeout=900, **env):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path, env=_env(**env))


@pytest.mark.slow
@pytest.mark.subprocess
def test_dcnnimaf_smoke_under_two_worker_multiworker_strategy(tmp_path):
    """Two real workers on localhost: Keras' fit cannot run there, the runner's custom loop does; the chief writes
    the results, both end with the same numbers."""
    results = run_two_workers(
        lambda i: [sys.executable, str(SCRIPTS / "dcnnimaf.py"), "--profile", "smoke", "--out", str(tmp_path / "out"),
                   "--runs-dir", str(tmp_path / "runs"), "--strategy", "multiworker"],
        lambda i, tf_config: _env(TF_CONFIG=tf_config), cwd=tmp_path)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text())
    assert run["strategy"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")
    assert run["replicas"] == 2
    assert json.loads((out / "runs.json").read_text())["rows"][0]["n_test"] > 0
    # the worker trained too, in its own checkpoint folders
    assert list((tmp_path / "runs").rglob("worker1/last.npz"))


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.subprocess
def test_mias_paper_profile_dry_run(tmp_path):
    """The paper profile end to end with its three VGG16 variants (the three heads) and one other backbone (the
    cheapest, MobileNet); that all nine of its models build as the profile says:
    test_every_mias_paper_model_builds_frozen."""
    models = "vgg16:model1,vgg16:model2,vgg16:baseline,mobilenet:baseline"
    r = _run([SCRIPTS / "mias_fusion.py", "--profile", "paper", "--dry-run", "--data-dir", dataset_dir("mias_rois"),
              "--runs-dir", tmp_path / "runs", "--set", f"models={models}", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / "mias_fusion-paper-dryrun" / "results"
    comp = json.loads((out / "comparison.json").read_text())
    assert "DRY RUN" in comp["title"] and comp["meta"]["dry_run"] is True
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert [row["model"] for row in runs] == models.split(",")  # one seed each
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stages"]["train"]["optimizer"] == "sgd" and cfg["freeze_backbone"] is True


def test_every_mias_paper_model_builds_frozen():
    """Each of the paper profile's nine models at its patch size with a frozen backbone: only BatchNorm, the 1x1
    fusion convolutions and the head are trainable."""
    import keras

    from medattn.models.mias_fusion import build_mias_model
    from tests.conftest import load_script

    cfg = load_script("reproductions", "mias_fusion").PROFILES["paper"]
    size = cfg.stage("train").image_size
    for spec in cfg.models:
        backbone, variant = spec.split(":")
        model = build_mias_model(variant, backbone, size, weights=None, width=cfg.width, batch_norm=cfg.batch_norm,
                                 freeze_backbone=cfg.freeze_backbone, units=cfg.units)
        assert model.output_shape == (None, 2), spec
        frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert frozen > trainable > 0, spec  # the backbone (millions of weights) frozen, the head trains
        keras.backend.clear_session()


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.subprocess
def test_dcnnimaf_paper_profile_dry_run(tmp_path):
    """The paper profile's InceptionResNetV2 LinkNet at 256 and DCNNIMAF at 224, two steps per stage. One protocol
    here for CI time; the README gives the timing of all three."""
    r = _run([SCRIPTS / "dcnnimaf.py", "--profile", "paper", "--dry-run", "--data-dir", dataset_dir("busi"),
              "--runs-dir", tmp_path / "runs", "--set", "protocols=grouped", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / "dcnnimaf-paper-dryrun" / "results"
    comp = json.loads((out / "comparison.json").read_text())
    assert "DRY RUN" in comp["title"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seg_backbone"] == "inceptionresnetv2" and cfg["stages"]["seg"]["image_size"] == 256
    assert cfg["stages"]["cls"]["image_size"] == 224 and cfg["dry_run"] is True
    assert (tmp_path / "runs" / "dcnnimaf-paper-dryrun" / "grouped_s0" / "seg_final" / "last.npz").exists()


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.subprocess
def test_emtnet_paper_profile_dry_run(tmp_path):
    """The paper profile's full-width MobileNetV2 EMT-Net at 224, batch 32, on two folds of two steps: the main arm,
    one more arm of the sweep (the others differ from it only by the loss weight) and the ablation; what a GPU user
    runs with --profile paper, minus the ImageNet download."""
    r = _run([SCRIPTS / "emtnet.py", "--profile", "paper", "--dry-run", "--data-dir", dataset_dir("busi"),
              "--runs-dir", tmp_path / "runs", "--set", "sweep=1,2", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / "emtnet-paper-dryrun" / "results"
    comp = json.loads((out / "comparison.json").read_text())
    assert "DRY RUN" in comp["title"] and comp["meta"]["dry_run"] is True
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert [row["arm"] for row in runs] == ["multitask_w2", "multitask_w1", "cls_only_w2"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stages"]["train"]["image_size"] == 224 and cfg["stages"]["train"]["batch_size"] == 32
    assert cfg["width"] == 1.0 and cfg["dry_run"] is True and cfg["weights"] in ("none", "imagenet")
    assert (out / "plots" / "sweep.png").exists() and (out / "plots" / "roc_pr_multitask_w2.png").exists()


def test_user_errors_are_one_line(tmp_path):
    """A refusal is one line on standard error and exit code 2: as a process once, then in this one."""
    from tests.conftest import main_in_process

    r = _run([SCRIPTS / "dcnnimaf.py", "--profile", "cpu", "--runs-dir", tmp_path / "runs"], tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no BUSI data found" in r.stderr and "SYNTHETIC" in r.stderr
    code, err = main_in_process("dcnnimaf", ["--profile", "smoke", "--seeds", "-1"])
    assert code == 2 and "non-negative" in err.strip().splitlines()[-1]  # the parser's usage line, then it
    code, err = main_in_process("mias_fusion", ["--data-dir", tmp_path / "missing"])
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "wrong").mkdir()
    code, err = main_in_process("mias_fusion", ["--data-dir", tmp_path / "wrong", "--runs-dir", tmp_path / "r"])
    assert code == 2 and "expected layout" in err
