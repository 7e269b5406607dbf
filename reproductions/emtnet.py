"""Reproduce EMT-Net (ISBI 2022, arXiv 2201.04795): multitask benign/malignant classification + segmentation on BUSI.

    python reproductions/emtnet.py --profile smoke --data-dir PATH/busi    # seconds: end-to-end check
    python reproductions/emtnet.py --profile cpu --data-dir PATH/busi --resume   # our CPU protocol (resumable; time: below)
    python reproductions/emtnet.py --profile cpu --data-dir PATH/busi --external-data PATH/other   # + external rows
    python reproductions/emtnet.py --profile paper --data-dir PATH/busi --weights imagenet   # GPU, online
    python reproductions/emtnet.py --profile paper --dry-run --data-dir PATH/busi           # proves it runs

One shared encoder (MobileNetV2 from the registry) feeds a classification head (one logit, malignant positive) and
a U-Net decoder; loss = a x StableWeightedBCE(w) + Dice (docs/papers.md section 3; defaults from the same group's
benchmark code where the paper is silent). Data: BUSI benign and malignant images with their masks (normal
excluded, as in the paper's task); the audit's near-duplicate groups stay inside one fold of a stratified 5-fold
cross-validation; images in a group filed under both labels (the same image as benign and as malignant) are left
out and listed. Threshold 0.5 on the sigmoid of the logit (no tuning on test folds). With ``--set
val_fraction=0.15`` each training fold keeps a stratified, group-whole validation part: the epoch with the lowest
validation loss is kept (instead of the last; ``--set select_on=val_auc``: the highest validation AUC of the
classification output), and ``--set threshold_rule=sensitivity:0.9`` (or ``youden``) also chooses each fold's
decision threshold on that part; the table then has a second row of ours at those thresholds beside the rows at 0.5
(AUC does not depend on the threshold).

Arms: ``multitask_w{w}`` for every loss weight of the sweep (the paper's point: w trades specificity for
sensitivity) and ``cls_only_w{w}`` (no decoder) at the main weight: does segmentation help? Every arm uses the same
folds. The table compares the main arm with the paper and with the same group's re-evaluation; latency is measured
at batch 1 on this machine beside the paper's 0.35 s on a virtual mobile device.

``--external-data PATH`` (a second benign/malignant dataset in the BUSI layout; either class may be missing)
evaluates the mean of each arm's fold models on it and adds external rows to the table. Each fold's model is
saved as ``fold{k}.keras`` with its card in the run folder (``medattn-predict`` runs them). A finished fold's
predictions stay in ``<results>/parts/`` until its arm's row is written, so ``--resume`` continues after the last
finished fold even where the checkpoints are gone (the run record lists such folds under ``resumed_stages``).

Everything else (command line, strategy, checkpoints, resume, records, dry run) is the shared runner's.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np

from medattn.datasets.audit import DATASET_VERIFY
from medattn.runner.reproduction import ExternalData, Reproduction, RunSpec, UserError, check_augmentation, flat_rows
from medattn.runner.reproduction import main as run_reproduction
from medattn.training import ExperimentConfig, Stage

PAPER = {"accuracy": 0.886, "sensitivity": 0.941, "specificity": 0.853, "latency_s": 0.35}
REEVALUATION = {"accuracy": 0.839, "sensitivity": 0.873, "specificity": 0.817}  # BUSI+BUSIS, 5-fold, same group
CLASSES = ["benign", "malignant"]


@dataclasses.dataclass(frozen=True)
class EmtConfig(ExperimentConfig):
    name: str = "emtnet"
    stages: tuple[Stage, ...] = (Stage("train", epochs=50, batch_size=32, learning_rate=1e-5, image_size=224,
                                       schedule="constant"),)
    backbone: str = "mobilenetv2"
    width: float = 1.0  # MobileNet(V2)'s alpha or VGG's filter multiplier; 1.0 with ImageNet weights (_check)
    decoder_filters: tuple[int, ...] = (128, 64, 32, 16)
    folds: int = 5
    pos_weight: float = 2.0  # w of the main arm
    sweep: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    cls_loss_weight: float = 3.0  # a: total loss = a * classification + Dice
    ablation: bool = True  # add the classification-only arm at the main w
    n_boot: int = 1000
    latency_runs: int = 20
    external_data: str | None = None  # --external-data: a second benign/malignant set in the BUSI layout
    # a validation part of each training fold (fraction of it; stratified, groups whole): best validation loss kept
    val_fraction: float | None = None
    # a decision threshold chosen per fold on that validation part: "youden" or "sensitivity:X" (needs val_fraction)
    threshold_rule: str | None = None
    # which epoch of each fold is kept: "val_loss" (lowest; the default with a validation part) or "val_auc"
    # (highest AUC of the classification output on the validation part; needs val_fraction)
    select_on: str | None = None
    # test-time augmentation: none or flip (P(malignant) and the mask averaged over the image and its mirror image;
    # the models train with horizontal flips). Evaluation only: --resume --out NEW with the same --runs-dir
    # evaluates finished folds with it instead of training again
    tta: str | None = None
    # the training augmentation (medattn.datasets.pipeline.augmenter's arguments) of the multitask arms and of the
    # classification-only arm (no brightness change: it has no mask to keep aligned, and the paper names none)
    augment: dict = dataclasses.field(default_factory=lambda: {"rotation": 0.04, "zoom": 0.1, "flip": "horizontal",
                                                               "brightness": 0.1})
    cls_only_augment: dict = dataclasses.field(default_factory=lambda: {"rotation": 0.04, "zoom": 0.1,
                                                                        "flip": "horizontal", "brightness": 0.0})
    IDENTITY_IF_CHANGED: ClassVar[tuple[str, ...]] = ("augment", "cls_only_augment")
    IDENTITY_IF_SET: ClassVar[tuple[str, ...]] = ("external_data", "val_fraction", "threshold_rule", "select_on",
                                                  "tta")
    EVAL_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("tta",)
    # the stage's BatchNorm momentum (smoke and cpu 0.9: MobileNetV2's own 0.999 leaves inference outputs unusable
    # after the few hundred steps of a from-scratch CPU run, whose first cpu run scored AUC 0.50) keeps its name
    STAGE_FIELD_NAMES: ClassVar[Mapping[str, str]] = {"bn_momentum": "train.bn_momentum"}
    ARM_FIELDS: ClassVar[tuple[str, ...]] = ("sweep", "ablation")  # pos_weight also names arms; kept in


PROFILE_NOTES = {
    "smoke": "what the tests run: two folds, one epoch, 64 px, MobileNetV2 at alpha 0.35",
    "cpu": "our committed table: five arms (w = 1, 2, 4, 8 and classification only), grouped 5-fold, 30 epochs, "
           "160 px, MobileNetV2 at alpha 0.5, from scratch",
    "paper": "the paper's sizes for GPU/TPU: 224 px, 50 epochs, MobileNetV2 with ImageNet weights",
}

PROFILES = {
    "smoke": EmtConfig(profile="smoke", stages=(Stage("train", epochs=1, batch_size=8, learning_rate=1e-3,
                                                      image_size=64, bn_momentum=0.9),),
                       width=0.35, decoder_filters=(16, 16, 8, 8), folds=2, sweep=(2.0,), n_boot=50,
                       latency_runs=3),
    # from scratch on 2 cores: at 128 px 12-34 min per arm, 102 min for the five (EPYC, float32, idle, 2026-12-02);
    # 160 px, not 128, since selection run E1 (results/emtnet/selection/: validation AUC 0.836 vs 0.781), about
    # 1.6x per step: 21-52 min per arm beside another job, about 2.5-3 h for the five (the committed table)
    "cpu": EmtConfig(profile="cpu", stages=(Stage("train", epochs=30, batch_size=16, learning_rate=1e-3,
                                                  image_size=160, cosine_alpha=0.05, bn_momentum=0.9),),
                     width=0.5, decoder_filters=(64, 32, 16, 16),
                     # model selection and the threshold on a validation part of each training fold (issue 14:
                     # the run of 73f8382 kept the last epoch, monitored the training loss and cut at 0.5)
                     val_fraction=0.15, threshold_rule="sensitivity:0.9"),
    "paper": EmtConfig(profile="paper", weights="imagenet"),
}


def _arms(cfg) -> list[str]:
    """The main arm first (its table comes first if a run is cut short), then the rest of the sweep, the ablation."""
    main = f"multitask_w{cfg.pos_weight:g}"
    arms = [main] + [a for a in (f"multitask_w{w:g}" for w in cfg.sweep) if a != main]
    if cfg.ablation:
        arms.append(f"cls_only_w{cfg.pos_weight:g}")
    return arms


def plan(cfg) -> list[RunSpec]:
    return [RunSpec(arm, seed) for arm in _arms(cfg) for seed in cfg.seeds]


def load_data(ctx) -> dict:
    """Benign + malignant BUSI, decoded once; conflicting duplicate groups left out and named."""
    from medattn.datasets import busi_records, merge_groups
    from medattn.datasets.pipeline import decode_arrays

    ctx.class_names = CLASSES
    audit = ctx.audit(ctx.handful(busi_records(ctx.data.path, classes=tuple(CLASSES)), 8), ctx.data.path,
                      verify=DATASET_VERIFY["busi"])
    recs, groups = audit["_records"], audit["_near_group_indices"]
    conflict = {i for g in groups if len({recs[j].label for j in g}) > 1 for i in g}
    if conflict:
        ctx.skipped.extend(f"{recs[i].name}: same image under both labels" for i in sorted(conflict))
        ctx.log(f"! left out {len(conflict)} images filed under both labels: "
                + ", ".join(recs[i].name for i in sorted(conflict)))
    keep = [i for i in range(len(recs)) if i not in conflict]
    old_to_new = {o: n for n, o in enumerate(keep)}
    recs = [recs[i] for i in keep]
    ctx.profile_inputs(files=[r.path for r in recs])  # on every saved model's card: medattn-predict compares
    kept_groups = [[old_to_new[i] for i in g if i in old_to_new] for g in groups]
    x, masks, y = decode_arrays(recs, ctx.cfg.stage("train").image_size)  # once, shared by every arm and fold
    data = {"recs": recs, "x": x, "mask": masks, "y": y,
            "groups": merge_groups(len(recs), None, [g for g in kept_groups if len(g) > 1])}
    return data


def load_external(ctx, path: Path) -> dict:
    """The --external-data set: BUSI layout, benign and/or malignant (a ``normal`` folder is not used: the task
    has no normal class), decoded once at the training size; evaluated only, never trained on."""
    from medattn.datasets import busi_records
    from medattn.datasets.pipeline import decode_arrays

    recs = busi_records(path, classes="present")
    normal = sum(r.label_name == "normal" for r in recs)
    recs = ctx.handful([r for r in recs if r.label_name in CLASSES], 6)
    if not recs:
        raise UserError(f"--external-data {path}: no benign or malignant images (expected <path>/benign/*.png and/or "
                        "<path>/malignant/*.png with their _mask.png files, the BUSI layout)")
    present = [c for c in CLASSES if any(r.label_name == c for r in recs)]
    absent = [c for c in CLASSES if c not in present]
    x, m, _ = decode_arrays(recs, ctx.cfg.stage("train").image_size)
    y = np.array([CLASSES.index(r.label_name) for r in recs])
    return {"x": x, "mask": m, "y": y, "n": len(recs), "present": present, "absent": absent,
            "note": f"{normal} normal images not used" if normal else None}


def _model(ctx, segmentation, w, n_images):
    """The compiled model of an arm; its cross-validation folds reuse one model, reset to fresh initial weights
    (Keras traces its steps once per arm: :meth:`Context.build`)."""
    from medattn.backbones import options_for
    from medattn.evaluation.keras_metrics import dice_loss
    from medattn.losses import StableWeightedBCE
    from medattn.models.emtnet import build_emtnet

    cfg, stage = ctx.cfg, ctx.cfg.stage("train")
    opts = options_for(cfg.backbone, width=cfg.width)  # _check refuses a width it has no option for

    def builder():
        return build_emtnet(stage.image_size, cfg.backbone, weights=cfg.pretrained,
                            segmentation=segmentation, decoder_filters=cfg.decoder_filters, **opts)

    cls_loss = StableWeightedBCE(pos_weight=w)
    auc = []
    if cfg.select_on == "val_auc":  # logged as val_label_auc (multitask) or val_auc
        import keras

        auc = [keras.metrics.AUC(from_logits=True, num_thresholds=1000, name="auc")]
    precision = _precision_model(cfg, segmentation)
    if segmentation:
        return ctx.build(builder, stage, n_images, {"label": cls_loss, "mask": dice_loss},
                         {"label": auc} if auc else (), reuse=("multitask", w), precision=precision,
                         loss_weights={"label": cfg.cls_loss_weight, "mask": 1.0})
    return ctx.build(builder, stage, n_images, cls_loss, auc, reuse=("cls_only", w), precision=precision)


def _precision_model(cfg, segmentation: bool) -> tuple[str, int]:
    """The model as :mod:`medattn.training.precision` names it (``--mixed-precision auto``)."""
    return (f"emtnet:{cfg.backbone}" + ("" if segmentation else "-classifier"), cfg.stage("train").image_size)


def _monitor(cfg, segmentation: bool, validation: bool) -> tuple[str, str]:
    """The logged figure that picks each fold's epoch, and whether lower or higher is better."""
    if not validation:
        return "loss", "min"  # no validation part: the epoch with the lowest training loss
    if cfg.select_on == "val_auc":
        return ("val_label_auc" if segmentation else "val_auc"), "max"
    return "val_loss", "min"


def _malignancy_prob(out) -> np.ndarray:
    """P(malignant) from a model's prediction: the sigmoid of the label logit (multitask models return a dict)."""
    logit = out["label"] if isinstance(out, dict) else out
    return 1 / (1 + np.exp(-np.asarray(logit, dtype=np.float64)[:, 0]))


def _predict(ctx, model, x, pre):
    """P(malignant) and, for a multitask model, the mask (else None) of images ``x``; with ``tta=flip`` the mean
    over the image and its mirror image (the mirror's mask mirrored back)."""
    from medattn.evaluation import tta_restore, tta_views

    mode = ctx.cfg.tta
    outs = [ctx.predict(model, np.asarray(pre(v)), 32) for v in tta_views(x, mode)]
    prob = np.mean([_malignancy_prob(o) for o in outs], axis=0)
    if not isinstance(outs[0], dict):
        return prob, None
    return prob, np.mean([tta_restore(np.asarray(o["mask"]), mode, i) for i, o in enumerate(outs)], axis=0)


def run_arm(ctx, run: RunSpec, data: dict) -> dict:
    """Cross-validate one arm: out-of-fold probabilities and masks for every image, metrics per fold and pooled."""
    from medattn.backbones import preprocess_fn, preprocessing_for
    from medattn.datasets import kfold_split

    cfg = ctx.cfg
    segmentation = run.arm.startswith("multitask")
    w = float(run.arm.split("_w")[1])
    pre = preprocess_fn(preprocessing_for(cfg.backbone, cfg.pretrained))
    y, ext = data["y"], ctx.external
    oof = {"prob": np.zeros(len(y)), "mask": np.zeros_like(data["mask"]), "hard": np.zeros(len(y), bool),
           "fold": np.full(len(y), -1, np.int8), "per_fold": [], "thresholds": [], "val_sizes": [], "best_epochs": [],
           "val_idx": [], "val_prob": [], "best_val_loss": [],
           "ext_prob": np.zeros(len(ext["y"])) if ext else None,
           "ext_mask": np.zeros(ext["mask"].shape, np.float32) if ext else None}
    model = None
    for f, fold in enumerate(kfold_split(y, data["groups"], cfg.folds, seed=run.seed)):
        model = _cross_validate_fold(ctx, run, data, f, fold, segmentation, w, pre, oof) or model
    if model is None:  # every fold restored from its saved part: the architecture gives size, FLOPs and latency
        model = _model(ctx, segmentation, w, len(y))
    row = _arm_row(cfg, run, y, oof, segmentation, w, data["mask"])
    if ext:
        row.update(_external_metrics(ext, oof["ext_prob"], oof["ext_mask"] if segmentation else None, cfg.n_boot,
                                     run.seed))
        ctx.log(f"{run.arm} on external {ext['name']} (mean of {cfg.folds} fold models): accuracy "
                f"{row['external_accuracy']:.4f} on {row['external_n']} images"
                + (f", Dice(lesion) {row['external_dice_lesion']:.4f}" if segmentation else ""))
    _arm_cost_and_outputs(ctx, run, model, row, data, oof, segmentation)
    return row


def _cross_validate_fold(ctx, run: RunSpec, data: dict, f: int, fold: dict, segmentation: bool, w: float, pre,
                         oof: dict):
    """One fold: its validation part (groups whole), the model trained and saved, the threshold chosen on the
    validation part, and the fold's out-of-fold predictions written into ``oof`` and kept as a part of the run
    (``--resume`` takes a kept part instead of training the fold again). Returns the model, None for a kept part."""
    from medattn.backbones import preprocessing_for
    from medattn.evaluation import choose_threshold, classification_metrics

    cfg, stage = ctx.cfg, ctx.cfg.stage("train")
    x, y, te = data["x"], data["y"], fold["test"]
    part = ctx.saved_part(run, f"fold{f}")
    if part is not None:  # trained by an earlier process: its predictions, not its model
        _restore_fold(cfg, oof, part, f, te, segmentation, ctx.external)
        return None
    t0 = time.time()
    tr, va, val, train = _fold_datasets(cfg, run, data, f, fold, segmentation, pre)
    if va is not None:
        oof["val_sizes"].append(int(len(va)))
    ctx.seed(run.seed * 100 + f)
    model = _model(ctx, segmentation, w, len(tr))
    monitor, mode = _monitor(cfg, segmentation, val is not None)
    res = ctx.fit(model, train, stage, ctx.run_dir(run) / f"fold{f}", label=f"{run.arm} s{run.seed} fold "
                  f"{f + 1}/{cfg.folds}", validation_data=val, monitor=monitor, mode=mode)
    oof["best_epochs"].append(res.get("best_epoch"))
    threshold = 0.5
    if va is not None:  # validation scores: the threshold, and the figures settings are chosen by
        vp = _predict(ctx, model, x[va], pre)[0]
        oof["val_idx"].append(va)
        oof["val_prob"].append(vp)
        best = res["best_epoch"]  # the kept epoch's validation loss, whichever figure chose it
        oof["best_val_loss"].append(res["history"][best - 1].get("val_loss") if best >= 1 else None)
        if cfg.threshold_rule:
            threshold = choose_threshold(y[va], vp, cfg.threshold_rule)
            oof["thresholds"].append(threshold)
    p_te, m_te = _predict(ctx, model, x[te], pre)
    ctx.save_model(model, run, f"fold{f}", kind="multitask" if segmentation else "classifier",
                   input_size=stage.image_size, preprocessing=preprocessing_for(cfg.backbone, cfg.pretrained),
                   class_names=list(CLASSES), output="logit of malignant (sigmoid > threshold)",
                   threshold=threshold, threshold_rule=cfg.threshold_rule or "fixed 0.5",
                   mc_dropout=False, fold=f, n_test=int(len(te)), tta=cfg.tta)
    oof["prob"][te], oof["fold"][te] = p_te, f
    oof["hard"][te] = oof["prob"][te] > threshold
    if segmentation:
        oof["mask"][te] = m_te
    ext = ctx.external
    ext_pred = _predict(ctx, model, ext["x"], pre) if ext else None
    _add_external(cfg, oof, ext_pred, segmentation)
    m = classification_metrics(y[te], np.stack([1 - oof["prob"][te], oof["prob"][te]], 1), class_names=CLASSES)
    oof["per_fold"].append({k: m[k] for k in ("accuracy", "sensitivity", "specificity", "roc_auc", "f1_pos")})
    ctx.save_part(run, f"fold{f}", _fold_part(oof, te, segmentation, va, ext_pred), seconds=round(time.time() - t0, 1),
                  per_fold=oof["per_fold"][-1], best_epoch=res.get("best_epoch"),
                  **({"best_val_loss": oof["best_val_loss"][-1]} if va is not None else {}),
                  **({"threshold": threshold} if va is not None and cfg.threshold_rule else {}))
    return model


def _add_external(cfg, oof: dict, ext_pred, segmentation: bool) -> None:
    """A fold model's share of the external set's ensemble: mean probability and mean mask over folds."""
    if ext_pred is None:
        return
    ep, em = ext_pred
    oof["ext_prob"] += ep / cfg.folds
    if segmentation:
        oof["ext_mask"] += np.asarray(em, dtype=oof["ext_mask"].dtype) / cfg.folds


def _fold_part(oof: dict, te, segmentation: bool, va, ext_pred) -> dict:
    """A finished fold's arrays for :meth:`Context.save_part`: its test images' scores and decisions, their masks
    bit-packed at 0.5 (every figure and file reads masks at 0.5), its validation part and external predictions."""
    arrays = {"prob": oof["prob"][te], "hard": oof["hard"][te]}
    if segmentation:
        arrays["mask_bits"] = np.packbits(oof["mask"][te] > 0.5)
    if va is not None:
        arrays.update(val_idx=np.asarray(va), val_prob=oof["val_prob"][-1])
    if ext_pred is not None:
        arrays["ext_prob"] = ext_pred[0]
        if segmentation:
            arrays["ext_mask"] = np.asarray(ext_pred[1], dtype=np.float32)
    return arrays


def _restore_fold(cfg, oof: dict, part: dict, f: int, te, segmentation: bool, ext) -> None:
    """A fold an earlier process finished (:func:`_fold_part`), written into ``oof`` as training it would."""
    facts = part["facts"]
    oof["prob"][te], oof["hard"][te], oof["fold"][te] = part["prob"], part["hard"], f
    if segmentation:
        shape = (len(te), *oof["mask"].shape[1:])
        oof["mask"][te] = np.unpackbits(part["mask_bits"], count=int(np.prod(shape))).reshape(shape)
    oof["best_epochs"].append(facts["best_epoch"])
    oof["per_fold"].append(facts["per_fold"])
    if "val_idx" in part:
        oof["val_sizes"].append(int(len(part["val_idx"])))
        oof["val_idx"].append(part["val_idx"])
        oof["val_prob"].append(part["val_prob"])
        oof["best_val_loss"].append(facts["best_val_loss"])
    if "threshold" in facts:
        oof["thresholds"].append(facts["threshold"])
    if ext:
        _add_external(cfg, oof, (part["ext_prob"], part.get("ext_mask")), segmentation)


def _fold_datasets(cfg, run: RunSpec, data: dict, f: int, fold: dict, segmentation: bool, pre):
    """A fold's training images less its validation part (groups whole, stratified; none without val_fraction),
    the validation dataset and the augmented training data per epoch: ``(train idx, val idx, val, train(epoch))``."""
    from medattn.datasets import validation_part
    from medattn.datasets.pipeline import array_dataset

    stage = cfg.stage("train")
    x, masks, y = data["x"], data["mask"], data["y"]
    tr, va, val = fold["train"], None, None
    if cfg.val_fraction:
        tr, va = validation_part(y, data["groups"], tr, cfg.val_fraction, seed=run.seed * 100 + f)
        val = (array_dataset(x[va], None, stage.batch_size, masks=masks[va], labels=y[va].astype("float32"),
                             preprocess=pre) if segmentation else
               array_dataset(x[va], y[va].astype("float32"), stage.batch_size, preprocess=pre))
    if segmentation:
        def train(e, tr=tr):
            return array_dataset(x[tr], None, stage.batch_size, masks=masks[tr], labels=y[tr].astype("float32"),
                                 shuffle=True, seed=run.seed, epoch=e, augment=cfg.augment, preprocess=pre)
    else:
        def train(e, tr=tr):
            return array_dataset(x[tr], y[tr].astype("float32"), stage.batch_size, shuffle=True,
                                 seed=run.seed, epoch=e, augment=cfg.cls_only_augment, preprocess=pre)
    return tr, va, val, train


def _arm_row(cfg, run: RunSpec, y, oof: dict, segmentation: bool, w: float, masks) -> dict:
    """The pooled out-of-fold figures with bootstrap intervals, the per-fold spread, the validation figures settings
    are chosen by, the figures at the validation-chosen thresholds, and lesion Dice."""
    from medattn.evaluation import bootstrap_ci, classification_metrics, segmentation_summary

    prob, per_fold = oof["prob"], oof["per_fold"]
    p2 = np.stack([1 - prob, prob], 1)
    m = classification_metrics(y, p2, class_names=CLASSES)
    row = {"pos_weight": w, "segmentation": segmentation, "n": int(len(y)), "folds": cfg.folds, "tta": cfg.tta or "none",
           **{k: m[k] for k in ("accuracy", "sensitivity", "specificity", "roc_auc", "f1_pos", "tp", "fn", "fp",
                                "tn", "ece")}}
    for k in ("accuracy", "sensitivity", "specificity", "roc_auc", "f1_pos"):
        v = np.array([pf[k] for pf in per_fold], dtype=float)
        row[f"{k}_fold_mean"], row[f"{k}_fold_sd"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 \
            else float("nan")
    pos, neg = y == 1, y == 0
    row["accuracy_ci"] = bootstrap_ci(lambda t, p: np.mean(t == (p > 0.5)), y, prob, n_boot=cfg.n_boot,
                                      seed=run.seed)[1:]
    row["sensitivity_ci"] = bootstrap_ci(lambda p: np.mean(p > 0.5), prob[pos], n_boot=cfg.n_boot,
                                         seed=run.seed)[1:]
    row["specificity_ci"] = bootstrap_ci(lambda p: np.mean(p <= 0.5), prob[neg], n_boot=cfg.n_boot,
                                         seed=run.seed)[1:]
    if cfg.val_fraction:
        row.update(_validation_figures(cfg, y, oof))
    if cfg.threshold_rule:  # the same out-of-fold predictions, each fold at its validation-chosen threshold
        mt = classification_metrics(y, p2, y_pred=oof["hard"].astype(int), class_names=CLASSES)
        row.update(threshold_rule=cfg.threshold_rule, thresholds=oof["thresholds"])
        for k in ("accuracy", "sensitivity", "specificity", "f1_pos"):
            row[f"{k}_tuned"] = mt[k]
        h = oof["hard"].astype(float)
        row["accuracy_tuned_ci"] = bootstrap_ci(lambda t, d: np.mean(t == (d > 0.5)), y, h, n_boot=cfg.n_boot,
                                                seed=run.seed)[1:]
        row["sensitivity_tuned_ci"] = bootstrap_ci(np.mean, h[pos], n_boot=cfg.n_boot, seed=run.seed)[1:]
        row["specificity_tuned_ci"] = bootstrap_ci(lambda d: np.mean(d < 0.5), h[neg], n_boot=cfg.n_boot,
                                                   seed=run.seed)[1:]
    if segmentation:
        seg = segmentation_summary(masks, oof["mask"])
        row["dice_lesion"] = seg["dice_lesion"]
        row["dice_lesion_ci"] = bootstrap_ci(np.mean, seg["per_image"]["dice"][seg["per_image"]["lesion"]],
                                             n_boot=cfg.n_boot, seed=run.seed)[1:]
    return row


def _validation_figures(cfg, y, oof: dict) -> dict:
    """What settings are chosen by (never the test folds): AUC over the pooled validation parts, each scored by its
    own fold's model, and the mean of the folds' best validation losses."""
    from sklearn.metrics import roc_auc_score

    vy, vp = y[np.concatenate(oof["val_idx"])], np.concatenate(oof["val_prob"])
    losses = [v for v in oof["best_val_loss"] if v is not None]
    return dict(val_fraction=cfg.val_fraction, val_n=oof["val_sizes"], best_epochs=oof["best_epochs"],
                select_on=cfg.select_on or "val_loss",
                val_roc_auc=float(roc_auc_score(vy, vp)) if 0 < vy.sum() < len(vy) else float("nan"),
                val_loss_mean=float(np.mean(losses)) if losses else float("nan"))


def _arm_cost_and_outputs(ctx, run: RunSpec, model, row: dict, data: dict, oof: dict, segmentation: bool) -> None:
    """The last fold model's size, FLOPs and latency; the prediction file (each image's test fold, the out-of-fold
    masks bit-packed, every fold's validation scores and thresholds, so the row can be recomputed from it); the log
    line and the overlay plot."""
    from medattn.evaluation.cost import forward_flops, latency_ms

    cfg, stage = ctx.cfg, ctx.cfg.stage("train")
    y, x, masks, prob, thresholds = data["y"], data["x"], data["mask"], oof["prob"], oof["thresholds"]
    shape = (stage.image_size, stage.image_size, 3)
    row["params"] = int(model.count_params())
    row["forward_gflop"] = forward_flops(model, shape) / 1e9
    row.update({f"latency_{k}": v for k, v in latency_ms(model, shape, runs=cfg.latency_runs).items()})
    names = np.array([r.name for r in data["recs"]])
    np.savez_compressed(ctx.prediction_file(run.arm, run.seed), names=names, y_true=y, prob=prob, fold=oof["fold"],
                        **_validation_arrays(oof),
                        **({"pred_tuned": oof["hard"].astype(np.int8), "thresholds": np.array(thresholds)}
                           if cfg.threshold_rule else {}),
                        **({"mask_shape": np.array(masks.shape), "mask_pred": np.packbits(oof["mask"] > 0.5),
                            "mask_true": np.packbits(masks > 0.5)} if segmentation else {}))
    ctx.log(f"{run.arm} seed {run.seed}{ctx.mark}: accuracy {row['accuracy']:.4f} sensitivity "
            f"{row['sensitivity']:.4f} specificity {row['specificity']:.4f} AUC {row['roc_auc']:.4f}"
            + (f"; at thresholds from validation ({cfg.threshold_rule}: "
               f"{', '.join(f'{t:.3f}' for t in thresholds)}): accuracy {row['accuracy_tuned']:.4f} sensitivity "
               f"{row['sensitivity_tuned']:.4f} specificity {row['specificity_tuned']:.4f}"
               if cfg.threshold_rule else ""))
    if segmentation and run.seed == cfg.seeds[0] and run.arm == f"multitask_w{cfg.pos_weight:g}":
        from medattn.evaluation.plots import plot_segmentation_overlays

        pick = [int(np.flatnonzero(y == c)[0]) for c in (0, 1) if np.any(y == c)]
        plot_segmentation_overlays(x[pick, ..., 0], masks[pick], oof["mask"][pick],
                                   ctx.out / "plots" / "overlays.png", titles=[f"{names[i]}{ctx.mark}" for i in pick])


def _validation_arrays(oof: dict) -> dict:
    """Every fold's validation part: the images (indices into the file's rows), their fold and their scores by that
    fold's model; none without a validation part."""
    if not oof["val_idx"]:
        return {}
    return {"val_index": np.concatenate(oof["val_idx"]).astype(np.int32),
            "val_fold": np.concatenate([np.full(len(v), f, np.int8) for f, v in enumerate(oof["val_idx"])]),
            "val_prob": np.concatenate(oof["val_prob"])}


def _external_metrics(ext, prob, pred_mask, n_boot, seed) -> dict:
    """Metrics of the fold-model ensemble on the external set, keys ``external_*``: accuracy and F1 always;
    sensitivity / specificity only when that class is present, AUC only when both are; Dice on its lesion images."""
    from medattn.evaluation import bootstrap_ci, segmentation_summary

    y = ext["y"]
    pos, neg = y == 1, y == 0
    hard = prob > 0.5
    tp, fp = int(np.sum(hard & pos)), int(np.sum(hard & neg))
    out = {"external_name": ext["name"], "external_n": int(len(y)), "external_classes": ",".join(ext["present"]),
           "external_absent": ",".join(ext["absent"]), "external_accuracy": float(np.mean(hard == pos)),
           "external_f1_pos": float(2 * tp / (2 * tp + fp + np.sum(pos) - tp)) if pos.any() or fp else float("nan"),
           "external_accuracy_ci": bootstrap_ci(lambda t, p: np.mean(t == (p > 0.5)), y, prob, n_boot=n_boot,
                                                seed=seed)[1:]}
    if pos.any():
        out["external_sensitivity"] = float(np.mean(hard[pos]))
        out["external_sensitivity_ci"] = bootstrap_ci(lambda p: np.mean(p > 0.5), prob[pos], n_boot=n_boot,
                                                      seed=seed)[1:]
    if neg.any():
        out["external_specificity"] = float(np.mean(~hard[neg]))
        out["external_specificity_ci"] = bootstrap_ci(lambda p: np.mean(p <= 0.5), prob[neg], n_boot=n_boot,
                                                      seed=seed)[1:]
    if pos.any() and neg.any():
        from sklearn.metrics import roc_auc_score

        out["external_roc_auc"] = float(roc_auc_score(pos, prob))
    if pred_mask is not None:
        ss = segmentation_summary(ext["mask"], pred_mask)
        lesion = ss["per_image"]["lesion"]
        out["external_dice_lesion"] = ss["dice_lesion"]
        if lesion.any():
            out["external_dice_lesion_ci"] = bootstrap_ci(np.mean, ss["per_image"]["dice"][lesion], n_boot=n_boot,
                                                          seed=seed)[1:]
    return out


def _seed_cells(rows, keys, suffix: str = "", prefix: str = "") -> dict:
    """Table cells of ``keys`` (read as ``<prefix><key><suffix>``) over one arm's seeds: :func:`seed_cell`."""
    from medattn.evaluation.intervals import seed_cell

    return {k: seed_cell(rows, f"{prefix}{k}{suffix}") for k in keys if f"{prefix}{k}{suffix}" in rows[0]}


def report(ctx, rows, final: bool) -> None:
    from medattn.evaluation.intervals import seeds_mark
    from medattn.evaluation.plots import plot_classifier_curves

    cfg = ctx.cfg
    main_arm = f"multitask_w{cfg.pos_weight:g}"
    main = [r for r in rows if r["arm"] == main_arm]
    sources = {}
    for arm in [a for a in dict.fromkeys(r["arm"] for r in rows) if a == main_arm or a.startswith("cls_only")]:
        rs = [r for r in rows if r["arm"] == arm]
        n = seeds_mark(len(rs))  # several seeds: mean with its t interval over seeds (seed_cell)
        src = _seed_cells(rs, ("accuracy", "sensitivity", "specificity", "roc_auc", "f1_pos", "dice_lesion"))
        src["latency_s"] = (rs[0]["latency_median_ms"] / 1e3,)
        sources[f"ours ({cfg.profile}): {arm}{n}{ctx.mark}"] = src
        if "accuracy_tuned" in rs[0]:
            sources[f"ours ({cfg.profile}): {arm}, thresholds from validation ({rs[0]['threshold_rule']}){n}"
                    f"{ctx.mark}"] = _seed_cells(rs, ("accuracy", "sensitivity", "specificity", "f1_pos"), "_tuned")
        if "external_n" in rs[0]:
            absent = f"; absent: {rs[0]['external_absent']}" if rs[0]["external_absent"] else ""
            sources[f"ours ({cfg.profile}): {arm} on external {rs[0]['external_name']} (n={rs[0]['external_n']}"
                    f"{absent}){n}{ctx.mark}"] = _seed_cells(
                        rs, ("accuracy", "sensitivity", "specificity", "roc_auc", "f1_pos", "dice_lesion"),
                        prefix="external_")
    sources["re-evaluation (Shi et al., BUSI+BUSIS)"] = dict(REEVALUATION)
    _write_comparison(ctx, rows, sources, main)
    _side_tables(ctx, rows)
    multi = sorted((r for r in rows if r["segmentation"]), key=lambda r: r["pos_weight"])
    if multi:
        _plot_sweep(multi, ctx.out / "plots" / "sweep.png", ctx.mark)
    if main and final:  # at the end of a process and in --report-only, not after every arm
        p = np.load(ctx.prediction_file(main[0]["arm"], main[0]["seed"]))
        plot_classifier_curves(p["y_true"], p["prob"], CLASSES, ctx.out / "plots", main[0]["arm"],
                               title=f"EMT-Net {main[0]['arm']} (out-of-fold){ctx.mark}")
    if final:
        print((ctx.out / "comparison.md").read_text())




def _write_comparison(ctx, rows, sources: dict, main: list[dict]) -> None:
    """The paper-vs-ours table with its description (how folds, thresholds and intervals were made)."""
    cfg = ctx.cfg
    ctx.write_comparison(sources, title=f"EMT-Net: paper vs ours ({cfg.profile} profile){ctx.mark}",
                         description=f"BUSI benign vs malignant (malignant positive), {cfg.folds}-fold cross-validation with "
                                     "near-duplicate groups inside one fold; metrics on the pooled out-of-fold predictions "
                                     "at threshold 0.5; brackets: 95 % bootstrap over images"
                                     + ("; columns over several seeds: mean +- t(0.975, n-1) standard errors over seeds. "
                                        if len({r["seed"] for r in main}) > 1 else ". ")
                                     + (f"Each training fold kept {cfg.val_fraction:g} of its images (stratified, groups "
                                        "whole) as validation data; the epoch with the "
                                        + ("highest validation AUC" if cfg.select_on == "val_auc" else "lowest validation loss")
                                        + " was kept. "
                                        if cfg.val_fraction else "")
                                     + ("Rows 'thresholds from validation': each fold's decision threshold was chosen on its "
                                        f"validation part ({cfg.threshold_rule}), never on the test fold. "
                                        if cfg.threshold_rule else "")
                                     + "Latency: median seconds per "
                                     "image at batch 1 on this machine's CPU (the paper: 0.35 s on a virtual mobile device). "
                                     "The re-evaluation row is the same group's later 5-fold result on BUSI+BUSIS."
                                     + (" External rows: the mean probability (and mask) of the fold models on a second "
                                        "dataset never trained on, at threshold 0.5." if any("external_n" in r for r in rows) else "")
                                     + (f" Left out: {'; '.join(ctx.skipped)}." if ctx.skipped else ""))


def _side_tables(ctx, rows) -> None:
    """The loss-weight sweep, every run, and the multitask - classification-only ablation."""
    from medattn.evaluation import write_table

    meta = ctx.meta
    keys = ("arm", "seed", "pos_weight", "segmentation", "accuracy", "sensitivity", "specificity", "roc_auc",
            "sensitivity_fold_mean", "sensitivity_fold_sd", "specificity_fold_mean", "specificity_fold_sd")
    if any("accuracy_tuned" in r for r in rows):
        keys += ("accuracy_tuned", "sensitivity_tuned", "specificity_tuned")
    sweep = [{k: r.get(k) for k in keys} for r in rows]
    write_table(ctx.out, "sweep", sweep, title=f"EMT-Net: loss weight w vs sensitivity and specificity{ctx.mark}",
                meta=meta)
    write_table(ctx.out, "runs", flat_rows(rows), title=f"EMT-Net: every run{ctx.mark}", meta=meta)
    ablation = _ablation_rows(ctx, rows)
    if ablation:
        write_table(ctx.out, "ablation", ablation, meta=meta,
                    title=f"EMT-Net: does the segmentation decoder help? multitask - classification only{ctx.mark}",
                    description="Same folds, same images, same w: the difference of each metric (multitask minus "
                                "classification-only) on the pooled out-of-fold predictions at threshold 0.5, with a "
                                "paired 95 % bootstrap interval (the same images resampled for both); exact McNemar "
                                "p-value on per-image correctness.")


def _ablation_rows(ctx, rows) -> list[dict]:
    """Multitask minus classification-only at the same w and seed, paired over images (from the saved
    out-of-fold predictions)."""
    from sklearn.metrics import roc_auc_score

    from medattn.evaluation import bootstrap_ci, mcnemar_exact

    def metric(name):
        def f(t, pa, pb):
            if name == "roc_auc":
                return roc_auc_score(t, pa) - roc_auc_score(t, pb) if 0 < t.sum() < len(t) else float("nan")
            ha, hb = pa > 0.5, pb > 0.5
            sel = {"accuracy": np.ones(len(t), bool), "sensitivity": t == 1, "specificity": t == 0}[name]
            if not sel.any():
                return float("nan")
            return float(np.mean(ha[sel] == t[sel].astype(bool)) - np.mean(hb[sel] == t[sel].astype(bool)))
        return f

    out = []
    for r in rows:
        if not r["arm"].startswith("cls_only"):
            continue
        multi = f"multitask_w{r['pos_weight']:g}"
        if not any(m["arm"] == multi and m["seed"] == r["seed"] for m in rows):
            continue
        a = np.load(ctx.prediction_file(multi, r["seed"]))
        b = np.load(ctx.prediction_file(r["arm"], r["seed"]))
        if list(a["names"]) != list(b["names"]):
            raise UserError(f"{multi} and {r['arm']}: predictions are not of the same images")
        t = a["y_true"].astype(int)
        p_mc = mcnemar_exact((a["prob"] > 0.5) == t.astype(bool), (b["prob"] > 0.5) == t.astype(bool))
        for name in ("accuracy", "sensitivity", "specificity", "roc_auc"):
            d, lo, hi = bootstrap_ci(metric(name), t, a["prob"], b["prob"], n_boot=ctx.cfg.n_boot, seed=r["seed"])
            out.append({"comparison": f"{multi} - {r['arm']}", "seed": r["seed"], "metric": name, "difference": d,
                        "ci_low": lo, "ci_high": hi, "mcnemar_p": p_mc if name == "accuracy" else None,
                        "n": int(len(t))})
    return out


def _plot_sweep(rows, path, mark):
    from medattn.evaluation.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([1 - r["specificity"] for r in rows], [r["sensitivity"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"w={r['pos_weight']:g}", (1 - r["specificity"], r["sensitivity"]), textcoords="offset points",
                    xytext=(4, -10))
    ax.plot([1 - PAPER["specificity"]], [PAPER["sensitivity"]], "r*", label="paper")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Loss weight sweep{mark}")
    ax.legend(loc="lower right")
    _save(fig, path)


def _check(cfg) -> None:
    check_augmentation(augment=cfg.augment, cls_only_augment=cfg.cls_only_augment)
    if cfg.stage("train").image_size % 32:
        raise UserError(f"--image-size {cfg.stage('train').image_size}: must be a multiple of 32 (five halvings)")
    if cfg.folds < 2:
        raise UserError(f"folds must be >= 2, got {cfg.folds}")
    from medattn.backbones import check_backbone

    try:  # the registry's own refusals (unknown backbone, a width it has no option for or no ImageNet weights at)
        check_backbone(cfg.backbone, cfg.weights, **({"width": cfg.width} if cfg.width != 1.0 else {}))
    except ValueError as e:
        raise UserError(f"backbone={cfg.backbone}, width={cfg.width:g}: {e}"
                        + ("; add --set width=1.0 (the cpu profile sets 0.5 for its MobileNetV2), or train from "
                           "scratch (--weights none)" if cfg.width != 1.0 else "")) from None
    from medattn.evaluation import tta_refusal

    if refusal := tta_refusal("tta", cfg.tta, ("flip",), "the models train with horizontal flips and small rotations, "
                              "not with quarter turns"):
        raise UserError(refusal)
    if not cfg.sweep or min(cfg.sweep) <= 0 or cfg.pos_weight <= 0:
        raise UserError("loss weights (sweep, pos_weight) must be > 0")
    if cfg.val_fraction is not None and not 0 < cfg.val_fraction < 0.5:
        raise UserError(f"val_fraction must be between 0 and 0.5 (a part of each training fold), got "
                        f"{cfg.val_fraction}")
    if cfg.threshold_rule is not None:
        from medattn.evaluation.classification import parse_threshold_rule

        try:
            parse_threshold_rule(cfg.threshold_rule)
        except ValueError as e:
            raise UserError(str(e)) from None
        if not cfg.val_fraction:
            raise UserError(f"threshold_rule={cfg.threshold_rule} chooses thresholds on validation data: also set "
                            "val_fraction (e.g. --set val_fraction=0.15); the test folds are never used for it")
    if cfg.select_on is not None:
        if cfg.select_on not in ("val_loss", "val_auc"):
            raise UserError(f"select_on must be val_loss or val_auc, got {cfg.select_on!r}")
        if not cfg.val_fraction:
            raise UserError(f"select_on={cfg.select_on} picks epochs on validation data: also set val_fraction "
                            "(e.g. --set val_fraction=0.15)")


REPRODUCTION = Reproduction(
    profile_notes=PROFILE_NOTES, name="emtnet", script=__file__, description=__doc__, profiles=PROFILES, paper=PAPER, dataset="busi",
    load_data=load_data, plan=plan, run_one=run_arm, report=report, backbones=lambda cfg: [cfg.backbone],
    models=lambda cfg, arm: [_precision_model(cfg, not arm.startswith("cls_only"))],
    no_data="no BUSI data found: pass --data-dir PATH/busi (Dataset_BUSI_with_GT, Al-Dhabyani et al. 2020) or set "
            "MEDATTN_DATA_DIR", check=_check,
    dry_run_overrides=lambda cfg: {"n_boot": 20, "folds": 2, "latency_runs": 3},
    external=ExternalData(load_external, "a second benign/malignant dataset in the BUSI layout (either "
                                           "class may be absent; normal/ is not used): the fold models' "
                                           "mean is evaluated on it and the table gets external rows"),
)


def main(argv=None) -> int:
    return run_reproduction(REPRODUCTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
