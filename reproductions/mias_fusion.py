"""Reproduce "Mammographic image classification with deep fusion learning" (Sci. Rep. 10, 2020) on MIAS ROIs.

    python reproductions/mias_fusion.py --profile cpu            # our cpu profile (time: Profiles, below)
    python reproductions/mias_fusion.py --profile smoke          # seconds: end-to-end check
    python reproductions/mias_fusion.py --profile paper --weights imagenet   # the authors' protocol (GPU, online)
    python reproductions/mias_fusion.py --profile paper --dry-run            # proves the paper profile runs (CPU)

Data: ``--data-dir`` (the ``mias_rois`` folder or ``MIAS_ROIs`` inside it), default ``$MEDATTN_DATA_DIR/mias_rois``.
The authors released the exact ROIs: train 197, val 65, test 64; we use their split unchanged (the audit finds no
duplicate across it: results/audits/mias.md).

Protocol (docs/papers.md section 2; where we depart, the profile says so and results record it):
* training patches: random 72x72 crops, per-class counts per ROI, re-drawn every epoch (the authors drew once);
  grey copied to 3 channels, samplewise centring (per-patch mean subtracted, no /255); augmentation rotation up to
  180 degrees, zoom 0.2, horizontal flip, nearest fill;
* validation: the 25 sliding windows of each val ROI; the checkpoint with the best validation loss is kept;
* test: 25 windows (72x72, stride 12) per test ROI; the ROI label is the majority vote of the patch labels. AUC is
  computed from the ROI's mean P(tumour) (``roc_auc``); the authors' code computed it from hard labels
  (``roc_auc_hard_labels``), reported beside it. ``--set tta=dihedral`` (or ``flip``) averages each window's
  P(tumour) over its 8 rotations and mirror images (2 for flip) before the vote, on validation and test; it changes
  only the evaluation, so ``--resume --out NEW`` with the same ``--runs-dir`` evaluates finished runs again
  without training them.

Profiles:
* ``paper``: VGG16/VGG19 + Model1/Model2 + DenseNet121/ResNet50/MobileNet baselines, frozen ImageNet backbones, SGD
  lr 1e-4 momentum 0.9, batch 32, 5 epochs, ~1,000 patches per tumour ROI and 250 per normal ROI.
* ``cpu``: ImageNet weights cannot be downloaded here, and a frozen random backbone means nothing, so the backbone
  is trained from scratch: VGG at quarter width with BatchNorm (VGG-BN, 16-32-64-128-128 filters; full-width VGG16
  trains at ~10 patches/s on 2 cores, bf16 at 0.6/s), Adam 1e-3 with cosine decay, fewer patches. Our default where
  the paper is silent.
  Mixed precision ``auto``: bfloat16 where the CPU computes it natively (AVX512_BF16/AMX: 1.1-1.5x faster training
  for these models, benchmarks/results/throughput.md), float32 elsewhere (emulated bf16 is many times slower);
  the MobileNet baseline trains in float32 on a CPU with AVX512_BF16 and no AMX (0.71x in bf16 there,
  benchmarks/results/precision_epyc.md; :mod:`medattn.training.precision`). The committed 40-epoch results ran
  every model in bf16 (their config.json), before that exception existed.
* ``smoke``: two tiny runs on a few patches; for tests.

Everything else (command line, strategy, checkpoints, resume, records, dry run) is the shared runner's
(:mod:`medattn.runner.reproduction`); this file holds only what is particular to the paper.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from medattn.runner.reproduction import Reproduction, RunSpec, UserError, check_augmentation, flat_rows
from medattn.runner.reproduction import main as run_reproduction
from medattn.training import ExperimentConfig, Stage

PAPER = {  # Table values of the paper (test set, 64 ROIs, majority vote); tumour is the positive class
    "vgg16:model1": {"accuracy": 0.8906, "recall_tumour": 0.913, "precision_tumour": 0.8077},
    "vgg16:model2": {"accuracy": 0.875, "recall_tumour": 0.9565, "precision_tumour": 0.7586},
}
PAPER_CONFUSION = {"vgg16:model1": {"tp": 21, "fn": 2, "fp": 5, "tn": 36},
                   "vgg16:model2": {"tp": 22, "fn": 1, "fp": 7, "tn": 34}}
CLASS_NAMES = ["normal", "tumour"]


@dataclasses.dataclass(frozen=True)
class MiasConfig(ExperimentConfig):
    name: str = "mias_fusion"
    # one stage; image_size is the patch size (the ROIs are 120x120)
    stages: tuple[Stage, ...] = (Stage("train", epochs=4, batch_size=32, learning_rate=1e-3, image_size=72),)
    # "<backbone>:<variant>" entries; the first `multi_seed_models` get every seed, the others only the first
    models: tuple[str, ...] = ("vgg16:model1", "vgg16:model2")
    multi_seed_models: tuple[str, ...] = ("vgg16:model1", "vgg16:model2")
    ARM_FIELDS: ClassVar[tuple[str, ...]] = ("models", "multi_seed_models")
    patches_tumour: int = 1000  # random patches per tumour ROI per epoch
    patches_normal: int = 250
    width: float = 1.0  # VGG's filter multiplier and MobileNet's alpha; ResNet50 and DenseNet121 are always full size
    batch_norm: bool = False  # VGG only (the other backbones have their own BatchNorm)
    freeze_backbone: bool = False
    units: int = 1024
    rotation: float = 0.5  # fraction of a turn: 0.5 = +-180 degrees
    zoom: float = 0.2
    # the rest of the training augmentation (medattn.datasets.pipeline.augmenter's arguments)
    augment: dict = dataclasses.field(default_factory=lambda: {"flip": "horizontal", "fill_mode": "nearest"})
    IDENTITY_IF_CHANGED: ClassVar[tuple[str, ...]] = ("augment",)
    stride: int = 12
    n_boot: int = 2000
    balance_classes: bool = False  # class weights so tumour and normal patches weigh the same in the loss
    # test-time augmentation of every evaluated window: none, flip (2 views) or dihedral (8: rotations by quarter
    # turns of the window and its mirror image; the models train with rotations of +-180 degrees and flips). It
    # changes only the evaluation, so --resume re-evaluates finished checkpoints with it instead of training again
    tta: str | None = None
    IDENTITY_IF_SET: ClassVar[tuple[str, ...]] = ("tta",)
    EVAL_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("tta",)


PROFILE_NOTES = {
    "smoke": "what the tests run: Model1 and Model2, one epoch, eighth-width VGG16-BN",
    "cpu": "our committed table: nine models (VGG16/VGG19 Model1, Model2 and baseline; MobileNet, ResNet50, "
           "DenseNet121 baselines) x three seeds, 40 epochs on 72 px patches, quarter-width VGGs, from scratch",
    "paper": "the paper's protocol for GPU/TPU: full-width ImageNet backbones, frozen, 5 epochs on 72 px patches",
}

PROFILES = {
    "smoke": MiasConfig(profile="smoke", models=("vgg16:model1", "vgg16:model2"), multi_seed_models=(),
                        stages=(Stage("train", epochs=1, batch_size=8, learning_rate=1e-3, image_size=72),),
                        patches_tumour=2, patches_normal=1, width=0.125, batch_norm=True, units=32, n_boot=100),
    "cpu": MiasConfig(profile="cpu", seeds=(0, 1, 2),
                      models=("vgg16:model1", "vgg16:model2", "vgg16:baseline", "vgg19:model1", "vgg19:model2",
                              "vgg19:baseline", "mobilenet:baseline", "resnet50:baseline", "densenet121:baseline"),
                      # 40 epochs, not 4, since the selection runs of results/mias_fusion/selection/ (mean
                      # validation loss over three seeds 0.550 vs 0.587); the committed table was made with 4
                      stages=(Stage("train", epochs=40, batch_size=32, learning_rate=1e-3, image_size=72),),
                      patches_tumour=30, patches_normal=8, width=0.25, batch_norm=True, units=256,
                      balance_classes=True, mixed_precision="auto"),
    "paper": MiasConfig(profile="paper", seeds=(0,), weights="imagenet",
                        stages=(Stage("train", epochs=5, batch_size=32, learning_rate=1e-4, image_size=72,
                                      optimizer="sgd", schedule="constant", momentum=0.9),),
                        models=("vgg16:baseline", "vgg16:model1", "vgg16:model2", "vgg19:baseline", "vgg19:model1",
                                "vgg19:model2", "densenet121:baseline", "resnet50:baseline", "mobilenet:baseline"),
                        freeze_backbone=True),
}


def samplewise_centre(batch):
    """Grey -> 3 channels, minus each patch's own mean (the authors' ``samplewise_center=True``)."""
    from keras import ops

    x = ops.repeat(batch, 3, axis=-1) if batch.shape[-1] == 1 else batch
    return x - ops.mean(x, axis=(1, 2, 3), keepdims=True)


def _roi_scores(ctx, model, rois, threshold: float = 0.5):
    """Patch probabilities of every sliding window (with ``tta``: the mean over the window's views) and the
    per-ROI vote (patch P(tumour) > threshold, majority of the 25) and mean probability."""
    from medattn.datasets import sliding_windows
    from medattn.datasets.pipeline import array_dataset
    from medattn.evaluation import tta_predict

    win, roi_idx = sliding_windows(rois, ctx.cfg.stage("train").image_size, ctx.cfg.stride)
    prob = tta_predict(lambda v: ctx.predict(model, array_dataset(v, None, 128, preprocess=samplewise_centre), 128)[:, 1],
                       win, ctx.cfg.tta)
    return prob, roi_idx, vote(prob, roi_idx, threshold), roi_mean(prob, roi_idx)


def _precision_model(cfg, spec: str) -> tuple[str, int]:
    """The model as :mod:`medattn.training.precision` names it (``--mixed-precision auto``)."""
    return f"mias_fusion:{spec}", cfg.stage("train").image_size


def roi_mean(prob, roi_idx):
    """Mean patch P(tumour) per ROI (the ROI score the AUC is computed from)."""
    return prob.reshape(-1, np.bincount(roi_idx)[0]).mean(1)


def vote(prob, roi_idx, threshold: float = 0.5):
    """Majority vote of patch labels ``prob > threshold`` per ROI (25 windows: no ties)."""
    per = np.bincount(roi_idx)[0]
    return ((prob > threshold).reshape(-1, per).mean(1) > 0.5).astype(int)


def _log_loss(y, p_tumour) -> float:
    """Mean binary cross-entropy of window labels ``y`` under P(tumour) (the sparse categorical cross-entropy of
    the two-class softmax), probabilities clipped to [1e-7, 1 - 1e-7] as Keras does."""
    p = np.clip(np.asarray(p_tumour, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def select_threshold(prob, roi_idx, y_roi) -> float:
    """Patch threshold maximising ROI accuracy on VALIDATION ROIs (ties: closest to 0.5)."""
    grid = np.round(np.linspace(0.05, 0.95, 91), 3)
    acc = np.array([np.mean(vote(prob, roi_idx, t) == y_roi) for t in grid])
    best = np.flatnonzero(acc == acc.max())
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def train_and_evaluate(ctx, run: RunSpec, data: dict) -> dict:
    model, res, train_s, n_epoch = _train_patch_model(ctx, run, data)
    sc = _roi_figures(ctx, model, data)
    row = _mias_row(ctx.cfg, run, data, model, res, train_s, n_epoch, sc)
    _save_mias_outputs(ctx, run, model, data, row, sc)
    return row


def _train_patch_model(ctx, run: RunSpec, data: dict):
    """The patch classifier (one model per architecture, reset between runs) trained on random patches drawn
    again every epoch, the checkpoint with the best validation window loss kept. Returns (model, fit result,
    seconds, patches per epoch)."""
    from medattn.datasets import random_patches, sliding_windows
    from medattn.datasets.pipeline import array_dataset
    from medattn.models.mias_fusion import build_mias_model

    cfg, stage, spec, seed = ctx.cfg, ctx.cfg.stage("train"), run.arm, run.seed
    backbone, variant = spec.split(":")
    ctx.seed(seed)
    (xtr, ytr), (xva, yva) = data["train"], data["val"]
    per_class = {0: cfg.patches_normal, 1: cfg.patches_tumour}
    n_epoch = int(sum(per_class[int(c)] for c in ytr))
    model = ctx.build(lambda: build_mias_model(
        variant, backbone, stage.image_size, weights=cfg.pretrained, width=cfg.width,
        batch_norm=cfg.batch_norm, freeze_backbone=cfg.freeze_backbone, units=cfg.units),
        stage, n_epoch, loss="sparse_categorical_crossentropy", metrics=["accuracy"], reuse=spec,
        precision=_precision_model(cfg, spec))
    aug = {"rotation": cfg.rotation, "zoom": cfg.zoom, **cfg.augment}

    def train_data(epoch):
        p, y, _ = random_patches(xtr, ytr, per_class, stage.image_size, seed=seed * 1000 + epoch)
        return array_dataset(p, y, stage.batch_size, shuffle=True, seed=seed, epoch=epoch, augment=aug,
                             preprocess=samplewise_centre)

    vwin, vidx = sliding_windows(xva, stage.image_size, cfg.stride)
    val = array_dataset(vwin, yva[vidx], 128, preprocess=samplewise_centre)
    t0 = time.time()
    class_weight = None
    if cfg.balance_classes:
        counts = {c: per_class[c] * int(np.sum(ytr == c)) for c in (0, 1)}
        class_weight = {c: sum(counts.values()) / (2.0 * counts[c]) for c in (0, 1)}
    res = ctx.fit(model, train_data, stage, ctx.run_dir(run) / "train", label=f"{spec} s{seed}",
                  class_weight=class_weight, validation_data=val, monitor="val_loss", mode="min")
    return model, res, time.time() - t0, n_epoch


def _roi_figures(ctx, model, data: dict) -> dict:
    """Window and ROI scores on validation and test ROIs, the vote threshold chosen on validation ROIs, and the
    classification figures they give."""
    from medattn.evaluation import classification_metrics

    (xva, yva), (xte, yte) = data["val"], data["test"]
    vprob, vidx2, _, _ = _roi_scores(ctx, model, xva)
    threshold = select_threshold(vprob, vidx2, yva)
    prob, roi_idx, roi_pred, roi_score = _roi_scores(ctx, model, xte)
    return {"vprob": vprob, "vidx2": vidx2, "threshold": threshold, "prob": prob, "roi_idx": roi_idx,
            "roi_pred": roi_pred, "roi_score": roi_score,
            "tuned": classification_metrics(yte, y_pred=vote(prob, roi_idx, threshold), n_classes=2,
                                            class_names=CLASS_NAMES),
            "m": classification_metrics(yte, y_pred=roi_pred, n_classes=2, class_names=CLASS_NAMES),
            "ms": classification_metrics(yte, roi_score, class_names=CLASS_NAMES),
            "patch": classification_metrics(yte[roi_idx], prob, class_names=CLASS_NAMES)}


def _mias_row(cfg, run: RunSpec, data: dict, model, res, train_s: float, n_epoch: int, sc: dict) -> dict:
    """One model's row: ROI figures by majority vote (and at the validation threshold), AUC from mean scores,
    patch figures, how it trained, Wilson and bootstrap intervals."""
    from sklearn.metrics import roc_auc_score

    from medattn.evaluation import bootstrap_ci, wilson_interval
    from medattn.training.fit import training_seconds

    spec, seed = run.arm, run.seed
    backbone, variant = spec.split(":")
    (_, yva), (_, yte) = data["val"], data["test"]
    m, ms, tuned, patch, threshold = sc["m"], sc["ms"], sc["tuned"], sc["patch"], sc["threshold"]
    roi_pred, roi_score, vprob, vidx2 = sc["roi_pred"], sc["roi_score"], sc["vprob"], sc["vidx2"]
    row = {
        "model": spec, "backbone": backbone, "variant": variant, "seed": seed, "profile": cfg.profile,
        "accuracy": m["accuracy"], "recall_tumour": m["recall_tumour"], "precision_tumour": m["precision_tumour"],
        "specificity": m["specificity"], "f1_tumour": m["f1_tumour"], "tp": m["tp"], "fn": m["fn"], "fp": m["fp"],
        "tn": m["tn"], "roc_auc": ms["roc_auc"], "average_precision": ms["average_precision"],
        "roc_auc_hard_labels": float(roc_auc_score(yte, roi_pred)) if len(set(roi_pred)) > 1 else 0.5,
        "accuracy_mean_prob": ms["accuracy"], "val_threshold": threshold,
        "accuracy_val_threshold": tuned["accuracy"], "recall_tumour_val_threshold": tuned["recall_tumour"],
        "precision_tumour_val_threshold": tuned["precision_tumour"],
        "val_roi_accuracy": float(np.mean(vote(vprob, vidx2, 0.5) == yva)), "val_window_loss": _log_loss(yva[vidx2], vprob),
        "tta": cfg.tta or "none", "patch_accuracy": patch["accuracy"], "patch_roc_auc": patch["roc_auc"],
        "best_epoch": res["best_epoch"], "best_val_loss": res["best_value"], "epochs": len(res["history"]),
        "train_patches": n_epoch * len(res["history"]), "train_time_s": round(train_s, 1),
        "train_patches_per_s": round(n_epoch * res["epochs_run"] / max(train_s, 1e-9), 1),
        "resumed_from_epoch": res["resumed_from"],
        # every epoch's training time, this process's and any earlier one's (a re-evaluation trains none)
        "train_time_all_epochs_s": round(training_seconds(res["history"]), 1),
        "params": int(model.count_params()),
    }
    n = len(yte)
    correct = int(round(m["accuracy"] * n))
    row["accuracy_wilson_low"], row["accuracy_wilson_high"] = wilson_interval(correct, n)
    tp, fn, fp = m["tp"], m["fn"], m["fp"]
    row["recall_wilson_low"], row["recall_wilson_high"] = wilson_interval(tp, tp + fn)
    row["precision_wilson_low"], row["precision_wilson_high"] = wilson_interval(tp, tp + fp) if tp + fp else (
        float("nan"), float("nan"))
    _, row["roc_auc_boot_low"], row["roc_auc_boot_high"] = bootstrap_ci(
        lambda t, s: roc_auc_score(t, s) if len(set(t)) > 1 else float("nan"), yte, roi_score, n_boot=cfg.n_boot,
        seed=seed)
    return row


def _save_mias_outputs(ctx, run: RunSpec, model, data: dict, row: dict, sc: dict) -> None:
    """The saved patch classifier with its card (the ROI rule) and the prediction file."""
    cfg, stage, spec, seed = ctx.cfg, ctx.cfg.stage("train"), run.arm, run.seed
    (_, yva), (xte, yte) = data["val"], data["test"]
    prob, roi_idx, roi_pred, roi_score, vprob, vidx2 = (sc[k] for k in ("prob", "roi_idx", "roi_pred", "roi_score",
                                                                         "vprob", "vidx2"))
    ctx.save_model(model, run, spec.replace(":", "_"), kind="patch_classifier", input_size=stage.image_size,
                   preprocessing="samplewise_centre (grey to 3 channels, minus each patch's mean)",
                   class_names=CLASS_NAMES, threshold=0.5, mc_dropout=False,
                   roi_rule=f"25 windows of {stage.image_size} px, stride {cfg.stride}, majority vote of patch labels",
                   roi_size=int(xte.shape[1]), stride=cfg.stride, tta=cfg.tta,
                   metrics={"accuracy": row["accuracy"], "roc_auc": row["roc_auc"]})
    np.savez(ctx.prediction_file(spec, seed), y_true=yte, roi_pred=roi_pred,
             roi_score=roi_score, patch_prob=prob, roi_idx=roi_idx, names=np.array(data["test_names"]),
             val_patch_prob=vprob, val_roi_idx=vidx2, val_y=yva, val_names=np.array(data["val_names"]))


def summarise(rows: list[dict], cfg: MiasConfig, mark: str = "", ensembles=()) -> tuple[list[dict], list[dict]]:
    """Mean +- std over seeds per model, and the paper comparison as the runner's blocks (with a block for each seed
    ensemble of :func:`seed_ensembles` after its model's)."""
    from medattn.evaluation import seed_interval, seeds_mark

    summary = []
    metrics = ("accuracy", "recall_tumour", "precision_tumour", "specificity", "roc_auc", "roc_auc_hard_labels",
               "accuracy_val_threshold", "recall_tumour_val_threshold", "precision_tumour_val_threshold",
               "val_threshold", "patch_accuracy", "train_patches_per_s")
    for spec in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == spec]
        s = {"model": spec, "n_seeds": len(rs), "seeds": ",".join(str(r["seed"]) for r in rs)}
        for k in metrics:
            v = np.array([r[k] for r in rs], dtype=float)
            s[f"{k}_mean"] = float(np.nanmean(v))
            s[f"{k}_std"] = float(np.nanstd(v, ddof=1)) if len(v) > 1 else float("nan")
        # 95 % interval: over seeds (mean +- t standard errors) when there are several, else the run's Wilson one
        if len(rs) > 1:
            s["accuracy_ci_low"], s["accuracy_ci_high"] = seed_interval([r["accuracy"] for r in rs])[1:]
            s["accuracy_ci_kind"] = "t over seeds"
        else:
            s["accuracy_ci_low"], s["accuracy_ci_high"] = rs[0]["accuracy_wilson_low"], rs[0]["accuracy_wilson_high"]
            s["accuracy_ci_kind"] = "Wilson (one seed)"
        summary.append(s)
    comp = []
    for s in summary:
        rs = [r for r in rows if r["model"] == s["model"]]
        paper = PAPER.get(s["model"], {"accuracy": None, "recall_tumour": None, "precision_tumour": None})
        ours = {}
        for k, lo, hi in (("accuracy", "accuracy_wilson_low", "accuracy_wilson_high"),
                          ("recall_tumour", "recall_wilson_low", "recall_wilson_high"),
                          ("precision_tumour", "precision_wilson_low", "precision_wilson_high")):
            ours[k] = (rs[0][k], rs[0][lo], rs[0][hi]) if len(rs) == 1 else seed_interval([r[k] for r in rs])
        ours["roc_auc"] = (s["roc_auc_mean"],)
        tuned = {k: (s[f"{k}_val_threshold_mean"],) for k in ("accuracy", "recall_tumour", "precision_tumour")}
        comp.append((f"{s['model']} ({len(rs)} seed{'s' * (len(rs) > 1)})", paper,
                     {f"ours ({cfg.profile}{mark}), vote at 0.5": ours,
                      f"ours ({cfg.profile}{mark}), vote at val-selected threshold": tuned}))
        for e in ensembles:
            if e["model"] == s["model"]:
                ens = {"accuracy": (e["accuracy"], e["accuracy_wilson_low"], e["accuracy_wilson_high"]),
                       "recall_tumour": (e["recall_tumour"],), "roc_auc": (e["roc_auc"],)}
                comp.append((f"{s['model']}, ensemble{seeds_mark(e['n_seeds'])}", {k: paper.get(k) for k in ens},
                             {f"ours ({cfg.profile}{mark}), vote at 0.5": ens}))
    return summary, comp


def seed_ensembles(ctx, rows) -> list[dict]:
    """One row per model trained with several seeds: the seed ensemble (every window's P(tumour) averaged over the
    seeds, then the same majority vote at 0.5) on the validation and test ROIs, beside the seeds' mean validation
    ROI accuracy. Models whose prediction files are missing, or older than the saved validation probabilities,
    are logged and get no validation figure."""
    from medattn.evaluation import classification_metrics, seed_ensemble, seed_groups, wilson_interval

    out = []
    for spec, rs, files in seed_groups(rows, "model", ctx.prediction_file, ctx.log):
        ens = seed_ensemble(files, [("patch_prob", "names", "y_true"), ("val_patch_prob", "val_names", "val_y")])
        p0 = np.load(files[0])
        roi_idx = p0["roi_idx"]
        y = ens["y_true"]
        # scored as train_and_evaluate scores one model: the vote at 0.5, the AUC of the ROI mean probability
        m = classification_metrics(y, y_pred=vote(ens["patch_prob"], roi_idx), n_classes=2, class_names=CLASS_NAMES)
        auc = classification_metrics(y, roi_mean(ens["patch_prob"], roi_idx), class_names=CLASS_NAMES)["roc_auc"]
        low, high = wilson_interval(m["tp"] + m["tn"], len(y))
        row = {"model": spec, "seeds": ", ".join(str(r["seed"]) for r in rs), "n_seeds": len(rs),
               "val_roi_accuracy_seed_mean": float(np.mean([r["val_roi_accuracy"] for r in rs])),
               "val_roi_accuracy": None, "accuracy": m["accuracy"], "accuracy_wilson_low": low,
               "accuracy_wilson_high": high, "accuracy_seed_mean": float(np.mean([r["accuracy"] for r in rs])),
               "recall_tumour": m["recall_tumour"], "specificity": m["specificity"], "roc_auc": auc, "n_test": len(y)}
        if ens["val_patch_prob"] is None:
            ctx.log(f"! seed ensemble of {spec}: a prediction file has no validation probabilities (written before "
                    "they were saved); its validation accuracy is left empty")
        else:
            row["val_roi_accuracy"] = float(np.mean(vote(ens["val_patch_prob"], p0["val_roi_idx"]) == ens["val_y"]))
        out.append(row)
    return out


def plots(rows, out: Path, mark: str = ""):
    from medattn.evaluation.plots import plot_confusion_matrix, plot_roc_pr

    for spec in dict.fromkeys(r["model"] for r in rows):
        r0 = [r for r in rows if r["model"] == spec][0]
        p = np.load(out / "predictions" / f"{RunSpec(spec, r0['seed']).key}.npz")
        cm = [[r0["tn"], r0["fp"]], [r0["fn"], r0["tp"]]]
        tag = spec.replace(":", "_")
        plot_confusion_matrix(cm, CLASS_NAMES, out / "plots" / f"confusion_{tag}.png",
                              title=f"{spec} seed {r0['seed']}: {len(p['y_true'])} test ROIs (majority vote){mark}")
        plot_roc_pr(p["y_true"], p["roi_score"], CLASS_NAMES, out / "plots" / f"roc_pr_{tag}.png",
                    title=f"{spec} (ROI mean P(tumour)){mark}")


def load_data(ctx) -> dict:
    """The authors' train/val/test ROIs; a dry run takes two ROIs per class of each split."""
    from medattn.datasets import load_rois, mias_records

    recs = mias_records(ctx.data.path)
    recs = [r for s in ("train", "val", "test") for r in ctx.handful([r for r in recs if r.split == s], 2)]
    data = {s: load_rois([r for r in recs if r.split == s]) for s in ("train", "val", "test")}
    ctx.profile_inputs(files=[r.path for r in recs if r.split == "train"])  # on every saved model's card
    data["test_names"] = [r.name for r in recs if r.split == "test"]
    data["val_names"] = [r.name for r in recs if r.split == "val"]
    return data


def plan(cfg: MiasConfig) -> list[RunSpec]:
    return [RunSpec(spec, seed) for spec in cfg.models
            for seed in (cfg.seeds if spec in cfg.multi_seed_models else cfg.seeds[:1])]


def write_results(ctx, rows, final: bool):
    from medattn.evaluation import write_table

    cfg, out, mark = ctx.cfg, ctx.out, ctx.mark
    ensembles = seed_ensembles(ctx, rows)
    summary, comp = summarise(rows, cfg, mark, ensembles)
    meta = ctx.meta
    n_test = rows[0]["tp"] + rows[0]["fn"] + rows[0]["fp"] + rows[0]["tn"]
    write_table(out, "runs", flat_rows(rows), title=f"MIAS deep fusion: every run ({n_test} test ROIs){mark}",
                meta=meta)
    write_table(out, "summary", summary, title=f"MIAS deep fusion: mean and std over seeds{mark}", meta=meta)
    ctx.write_comparison(comp, meta=meta,
                         title=f"MIAS deep fusion: paper vs ours ({cfg.profile} profile){mark}",
                         description="Test set: the authors' 64 ROIs, ROI label by majority vote of 25 patches; tumour "
                                     "positive. Paper numbers are from the abstract (ImageNet-pretrained frozen VGG); ours "
                                     "are trained from scratch unless the profile says otherwise. Brackets: Wilson 95 % "
                                     "interval for one seed; over several seeds, mean +- t(0.975, n-1) standard errors "
                                     "(seed-to-seed spread only, clipped to [0, 1]). The second column votes with the "
                                     "patch threshold that maximised ROI accuracy on the 65 validation ROIs (never the test "
                                     "set).")
    if ensembles:
        write_table(out, "ensembles", ensembles, title=f"MIAS deep fusion: seed ensembles{mark}", meta=meta,
                    description="Every window's P(tumour) averaged over the seeds of one model, then the majority "
                                "vote at 0.5 per ROI, as for one model; val_roi_accuracy_seed_mean and "
                                "accuracy_seed_mean are the seeds' own means. Wilson 95 % interval over the test ROIs.")
    plots(rows, out, mark)
    last = rows[-1]
    if not final and cfg.verbose:
        print(f"[mias_fusion] {last['model']} seed {last['seed']}: accuracy {last['accuracy']:.4f} recall "
              f"{last['recall_tumour']:.4f} precision {last['precision_tumour']:.4f} AUC {last['roc_auc']:.4f} "
              f"({last['train_time_s']} s)", flush=True)
    if final:
        print((out / "comparison.md").read_text())


def _check(cfg: MiasConfig) -> None:
    size = cfg.stage("train").image_size
    if not 32 <= size <= 120:
        raise UserError(f"--image-size {size}: the patch size must lie between 32 and the ROIs' 120 pixels")
    from medattn.evaluation import TTA_MODES, tta_refusal

    if refusal := tta_refusal("tta", cfg.tta, TTA_MODES):
        raise UserError(refusal)
    bad = [m for m in cfg.models if m.count(":") != 1]
    if bad:
        raise UserError(f"models must be BACKBONE:VARIANT entries, got {bad[0]!r}")
    # the augmenter's own range checks (rotation: a fraction of a turn), before any data is read
    check_augmentation(augmentation={"rotation": cfg.rotation, "zoom": cfg.zoom, **cfg.augment})
    from medattn.models.mias_fusion import backbone_settings

    for name in dict.fromkeys(m.split(":")[0] for m in cfg.models):
        try:  # the registry's own refusals (ImageNet weights for the cpu profile's scaled VGG-BN or MobileNet)
            backbone_settings(name, cfg.weights, cfg.width, cfg.batch_norm)
        except ValueError as e:
            hint = ": use --profile paper, or add --set width=1.0 --set batch_norm=false" if cfg.weights == "imagenet" else ""
            raise UserError(f"{e}{hint}") from None


def _backbones(cfg: MiasConfig) -> list[str]:
    return [m.split(":")[0] for m in cfg.models]


REPRODUCTION = Reproduction(
    profile_notes=PROFILE_NOTES, name="mias_fusion", script=__file__, description=__doc__, profiles=PROFILES, paper=PAPER, dataset="mias_rois",
    load_data=load_data, plan=plan, run_one=train_and_evaluate, report=write_results, backbones=_backbones,
    no_data="no data. Download the MIAS ROIs released with the paper's code (MIAS_ROIs.zip, see README 'Data'), "
            "then run with --data-dir PATH/mias_rois or set MEDATTN_DATA_DIR.",
    dry_run_overrides=lambda cfg: {"n_boot": 20}, check=_check,
    models=lambda cfg, arm: [_precision_model(cfg, arm)],
)


def main(argv=None) -> int:
    return run_reproduction(REPRODUCTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
