"""Reproduce the multi-attention LinkNet + DCNNIMAF breast-ultrasound paper (arXiv 2407.02844) on BUSI.

    python reproductions/dcnnimaf.py                      # no data found: a SYNTHETIC phantom run
    python reproductions/dcnnimaf.py --data-dir PATH/busi --profile cpu            # three seeds (time: Profiles, below)
    python reproductions/dcnnimaf.py --data-dir PATH/busi --profile paper --weights imagenet   # GPU/TPU
    python reproductions/dcnnimaf.py --profile paper --dry-run   # proves the paper profile runs, on CPU

Stage 1 segments the lesion with LinkNet (the paper: InceptionResNetV2 encoder, same padding; the cpu profile: a
quarter-width VGG16-BN, or VGG16 from HED with --weights hed) and scSE attention after each
decoder block; stage 2 classifies benign / malignant / normal with DCNNIMAF from the image stacked with the mask
PREDICTED by stage 1 (never the ground-truth mask: normal images have empty masks, which would give the label
away). The classifier's own training images get out-of-fold masks (cross-fitting: a segmenter that did not train
on them), validation and test images get masks from the segmenter trained on the whole training part. Every
mask is then cleaned the same way (``seg_postprocess``): keep its largest connected component or not, and empty
it when the lesion is smaller than a minimum area, both chosen by Dice over all VALIDATION images (normal ones
included), so a normal image can get the empty mask it should; ``seg_tta=true`` also averages each prediction with
that of the mirrored image. Tables give Dice and the false-positive rate on normal images before and after.

Two protocols side by side: ``random`` (paper-like stratified random split, duplicates ignored) and ``grouped``
(the audit's near-duplicate groups kept inside one split: leak-free), plus an ablation without attention on the
grouped split. Defaults where the paper is silent (docs/papers.md section 1): BCE + Dice, Adam, batch 8, best
validation Dice; class-weighted cross-entropy; stratified 70/10/20 split.

Two training stages with their own settings: ``seg`` (the segmenters) and ``cls`` (the classifier);
``--set seg.epochs=5`` changes one, ``--epochs 5`` both. Without data (no ``--data-dir``, no ``MEDATTN_DATA_DIR``)
the default profile is ``synthetic``: generated phantoms, every output labelled SYNTHETIC; ``smoke`` and dry runs
use phantoms too when no data is given. ``--external-data PATH`` evaluates every protocol's final models on a
second dataset in the BUSI layout (any subset of the classes) and adds external columns; the final models are
saved with their cards in each run's ``models/`` folder (``medattn-predict`` runs them). ``--set selection=true``
chooses settings without the test split: each protocol's test part is set aside unread and a quarter of its
training part is reported on instead (results under ``runs/``, never ``results/``). Everything else (command line, strategy, checkpoints, resume, records) is
the shared runner's (:mod:`medattn.runner.reproduction`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np

from medattn.datasets.audit import DATASET_VERIFY
from medattn.runner.reproduction import (
    DataSource,
    ExternalData,
    Reproduction,
    RunSpec,
    UserError,
    check_augmentation,
    flat_rows,
)
from medattn.runner.reproduction import main as run_reproduction
from medattn.training import ExperimentConfig, Stage

PAPER = {"dice_lesion": 0.972, "iou_lesion": 0.969, "pixel_accuracy": 0.981, "accuracy": 0.992,
         "f1_macro": 0.991, "precision_macro": 0.993, "recall_macro": 0.991}
CLASSES = ["benign", "malignant", "normal"]
NORMAL = CLASSES.index("normal")
DESCRIPTION = (
    "Test set: 20 % of the images, stratified; `random` ignores duplicates (paper-like), `grouped` keeps every "
    "near-duplicate group of the audit inside one part (leak-free), `grouped_no_attention` removes the scSE and "
    "DCNNIMAF attention blocks on the grouped split. Dice and IoU: mean over test images that have a lesion, per "
    "image; pixel accuracy over all test images (dominated by background). Classification from the image plus the "
    "PREDICTED mask. Masks are cleaned before both (largest component and a minimum lesion area, chosen on the "
    "validation images; `_raw`: before cleaning); false_positive_rate_empty: share of normal test images given a "
    "lesion mask. Brackets: one seed, 95 % percentile bootstrap over test images; several seeds, mean +- "
    "t(0.975, n-1) standard errors over seeds (seed-to-seed spread only; `seeds.md`). Paper: arXiv 2407.02844, "
    "own split, ImageNet-pretrained encoder.")


_SAME = object()


def _stages(seg_epochs, cls_epochs, seg_size, cls_size, seg_lr, cls_lr, patience, batch_size=8, seg_patience=_SAME,
            seg_bn_momentum=0.99, cls_bn_momentum=None):
    """The two stages: Adam with cosine decay to 5 % over the stage, early stopping after ``patience`` epochs
    (the segmenters after ``seg_patience``, if given; None: they train every epoch and keep the best one). BatchNorm
    momentum: the segmenter's set to Keras' 0.99 unless given (its encoder options may build other values), the
    classifier's own 0.99 unless given."""
    seg_patience = patience if seg_patience is _SAME else seg_patience
    return (Stage("seg", epochs=seg_epochs, batch_size=batch_size, learning_rate=seg_lr, image_size=seg_size,
                  cosine_alpha=0.05, patience=seg_patience, bn_momentum=seg_bn_momentum),
            Stage("cls", epochs=cls_epochs, batch_size=batch_size, learning_rate=cls_lr, image_size=cls_size,
                  cosine_alpha=0.05, patience=patience, bn_momentum=cls_bn_momentum))


@dataclasses.dataclass(frozen=True)
class DcnnimafConfig(ExperimentConfig):
    name: str = "dcnnimaf"
    stages: tuple[Stage, ...] = _stages(30, 30, 256, 224, 1e-4, 1e-4, 8)
    seg_backbone: str = "inceptionresnetv2"
    encoder_width: float = 1.0  # VGG encoders only
    # filters of the LinkNet head (transposed conv to full size + 3x3 conv); None: 32, the LinkNet paper's.
    # segmentation_models uses 16 there; at 128 px with the quarter-width encoder the 32-filter head is a quarter
    # of the segmenter's FLOPs (benchmarks/results/linknet_head.md)
    seg_final_filters: int | None = None
    seg_attention: str = "scse"  # after each LinkNet decoder block; the no_attention protocol uses none
    # --set seg_freeze_encoder=true: the segmenter's pretrained encoder (--weights hed or a file) stays fixed and only
    # the decoder trains. None: off, and no part of the run identity
    seg_freeze_encoder: bool | None = None
    cls_attention: str = "cbam"  # after each DCNNIMAF stage (channel then spatial), plus self-attention
    cls_filters: tuple[int, ...] = (32, 64, 128, 256, 256)
    crossfit_folds: int = 3
    protocols: tuple[str, ...] = ("random", "grouped", "grouped_no_attention")
    n_boot: int = 1000
    synthetic: bool = False
    phantom_counts: tuple[int, ...] = (40, 25, 15)
    external_data: str | None = None  # --external-data: a second dataset in the BUSI layout, evaluated only
    # the segmenter's masks: mean with the mirrored image's prediction (tta), and cleaned (postprocess: keep the
    # largest component or not, and empty a mask below a minimum area, both chosen on the validation images by
    # Dice over all of them, normal images included, so normal images can get empty masks)
    seg_tta: bool = False
    seg_postprocess: bool = True
    # --set seg_gate=true: an image-level lesion decision from stage 2. After classification, the mask of every image
    # the classifier calls normal is emptied, if that raises Dice over all VALIDATION images (chosen per run, like
    # the cleaning); rows then report Dice and the false-positive rate on normal images before the gate too, and
    # the saved pipeline applies it. None: off, and no part of the run identity
    seg_gate: bool | None = None
    # --set cls_tta=flip: the classifier's probabilities averaged over its input (image + predicted mask) and the
    # mirror image (it trains with horizontal flips). Evaluation only: --resume --out NEW with the same --runs-dir
    # evaluates finished checkpoints with it instead of training again. None: off, and no part of the run identity
    cls_tta: str | None = None
    # --set selection=true: choose settings without the test split. Each protocol's test part is set aside
    # unread; a quarter of its training part (groups whole, stratified) becomes the part the tables report on, so
    # models train on ~52 % of the images. Results go under runs/, never to results/. Part of every run's
    # identity (False included), unlike the optional fields below, which count only when not None.
    selection: bool = False
    # the training augmentation (medattn.datasets.pipeline.augmenter's arguments) of the segmenter and the classifier
    seg_augment: dict = dataclasses.field(default_factory=lambda: {"rotation": 0.04, "zoom": 0.1, "flip": "horizontal",
                                                                   "brightness": 0.1})
    cls_augment: dict = dataclasses.field(default_factory=lambda: {"rotation": 0.04, "zoom": 0.1, "flip": "horizontal"})
    IDENTITY_IF_CHANGED: ClassVar[tuple[str, ...]] = ("seg_augment", "cls_augment")
    IDENTITY_IF_SET: ClassVar[tuple[str, ...]] = ("external_data", "seg_final_filters", "seg_gate", "cls_tta",
                                                  "cls_precise_bn", "seg_freeze_encoder")
    EVAL_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("cls_tta",)
    # BatchNorm momentum per stage (runs with few steps per epoch, the phantoms, use 0.9) and --set
    # cls.precise_bn=true (the classifier's statistics recomputed over its training inputs, image + out-of-fold mask)
    # are stage fields; in the identity they keep the names they had as this config's fields
    STAGE_FIELD_NAMES: ClassVar[Mapping[str, str]] = {"bn_momentum": "seg.bn_momentum",
                                                      "cls_bn_momentum": "cls.bn_momentum",
                                                      "cls_precise_bn": "cls.precise_bn"}
    ARM_FIELDS: ClassVar[tuple[str, ...]] = ("protocols",)


PROFILE_NOTES = {
    "smoke": "what the tests run: one grouped protocol, one epoch per stage, 64 px, eighth-width VGG16-BN encoder",
    "synthetic": "the default without data: the grouped protocol and its ablation without attention on 150 "
                 "generated phantoms at 32 px, 6 epochs per stage, labelled SYNTHETIC (phantoms have no "
                 "near-duplicates, so the random split would repeat the grouped one)",
    "cpu": "our committed table: BUSI, three protocols x three seeds, quarter-width VGG16-BN LinkNet (60 epochs, "
           "128 px) and DCNNIMAF (30 epochs, 128 px), from scratch",
    "paper": "the paper's sizes for GPU/TPU: InceptionResNetV2 LinkNet at 256 px, DCNNIMAF at 224 px, 100 epochs "
             "each, ImageNet weights",
}

PROFILES = {
    "smoke": DcnnimafConfig(profile="smoke", seg_backbone="vgg16", encoder_width=0.125,
                            stages=_stages(1, 1, 64, 64, 1e-3, 1e-3, 8), cls_filters=(8, 8, 16, 16, 16),
                            crossfit_folds=2, protocols=("grouped",), n_boot=50, phantom_counts=(8, 6, 6)),
    # the no-data default: the grouped protocol and the ablation on 150 small phantoms at 32 px, 6 epochs per
    # stage, under a minute on 2 cores (lesion Dice about 0.8). The phantoms have no near-duplicates, so the random
    # split would only repeat the grouped one; each epoch costs about 0.4 s, mostly fixed overhead per epoch
    "synthetic": DcnnimafConfig(profile="synthetic", seg_backbone="vgg16", encoder_width=0.125,
                                protocols=("grouped", "grouped_no_attention"),
                                stages=_stages(6, 6, 32, 32, 3e-3, 2e-3, 8, seg_bn_momentum=0.9,
                                               cls_bn_momentum=0.9), cls_filters=(8, 16, 16, 32, 32),
                                crossfit_folds=2, n_boot=200, phantom_counts=(70, 50, 30)),
    # cpu: three seeds of all three protocols (each: 2 cross-fit + 1 final segmenter + classifier), about 35-45 min
    # per protocol and seed on 2 cores in bf16, 70 min or more in float32; bf16 where the CPU computes it natively
    # (1.13x for the segmenter on an AVX512_BF16 Xeon), float32 elsewhere; the classifier's BN momentum is 0.9 (with 0.99 its inference outputs
    # stayed constant for the first epochs). 40 segmenter epochs and flip TTA were chosen over 20 epochs and over a
    # half-width encoder in selection runs that never read the test split (results/dcnnimaf/selection/); the
    # segmenters train all 40 epochs (keeping the best on validation) since selection run H: with patience 8 on a
    # noisy validation Dice they often stopped early near 0.60 validation Dice instead of reaching ~0.72-0.75;
    # 60 segmenter epochs instead of 40 since selection run I (validation Dice over all images 0.773 vs 0.723)
    "cpu": DcnnimafConfig(profile="cpu", seg_backbone="vgg16", encoder_width=0.25, mixed_precision="auto",
                          stages=_stages(60, 30, 128, 128, 1e-3, 1e-3, 8, seg_patience=None, cls_bn_momentum=0.9),
                          crossfit_folds=2, seeds=(0, 1, 2), cls_filters=(16, 32, 64, 128, 128), seg_tta=True),
    "paper": DcnnimafConfig(profile="paper", weights="imagenet", stages=_stages(100, 100, 256, 224, 1e-4, 1e-4, 15)),
}


def _seg_preprocess(cfg):
    """The encoder's input transform for its weights (ImageNet InceptionResNetV2: [-1, 1]; random: [0, 1])."""
    from medattn.backbones import preprocess_fn, preprocessing_for

    return preprocess_fn(preprocessing_for(cfg.seg_backbone, cfg.pretrained))


def _precision_models(cfg) -> list[tuple[str, int]]:
    """The segmenter and the classifier as :mod:`medattn.training.precision` names them (``--mixed-precision
    auto``)."""
    return [("dcnnimaf:segmenter", cfg.stage("seg").image_size), ("dcnnimaf:classifier", cfg.stage("cls").image_size)]


def seg_predict(predict, cfg, x):
    """The segmenter's probability masks for decoded images ``x``: ``predict(batch)`` on the encoder's input
    transform, averaged with its left-right mirror when ``cfg.seg_tta`` (the augmentation it trained with)."""
    pre = _seg_preprocess(cfg)
    p = predict(pre(x))
    if cfg.seg_tta:
        p = 0.5 * (p + predict(pre(x[:, :, ::-1]))[:, :, ::-1])
    return p


def _seg_model(ctx, attention, n_images):
    """The compiled segmenter; every segmenter of a run with the same attention setting is the same model, reset
    (its steps are traced once: :meth:`Context.build`)."""
    from medattn.evaluation.keras_metrics import DiceMetric, bce_dice_loss
    from medattn.models.linknet import build_linknet

    cfg, stage = ctx.cfg, ctx.cfg.stage("seg")

    def builder():
        return build_linknet(cfg.seg_backbone, stage.image_size, weights=cfg.pretrained,
                             attention=cfg.seg_attention if attention else None, encoder_width=cfg.encoder_width,
                             freeze_encoder=bool(cfg.seg_freeze_encoder),
                             final_filters=32 if cfg.seg_final_filters is None else cfg.seg_final_filters)

    return ctx.build(builder, stage, n_images, bce_dice_loss, [DiceMetric(name="dice")], reuse=("seg", attention),
                     precision=_precision_models(cfg)[0])


def _cls_model(ctx, attention, n_images):
    """The compiled classifier (one per attention setting, reset between uses)."""
    from medattn.models.dcnnimaf import build_dcnnimaf

    cfg, stage = ctx.cfg, ctx.cfg.stage("cls")

    def builder():
        return build_dcnnimaf(stage.image_size, filters=cfg.cls_filters,
                              attention=cfg.cls_attention if attention else None)

    return ctx.build(builder, stage, n_images, "sparse_categorical_crossentropy", ["accuracy"],
                     reuse=("cls", attention), precision=_precision_models(cfg)[1])


def _train_seg(ctx, train, val, attention, ckpt, seed, label):
    """One segmenter on decoded arrays ``train = (images, masks)`` (decoded once per run, shared by every model)."""
    from medattn.datasets.pipeline import array_dataset

    cfg, stage = ctx.cfg, ctx.cfg.stage("seg")
    ctx.seed(seed)
    model = _seg_model(ctx, attention, len(train[0]))
    pre = _seg_preprocess(cfg)
    data = lambda e: array_dataset(train[0], None, stage.batch_size, masks=train[1], shuffle=True,  # noqa: E731
                                   seed=seed, epoch=e, augment=cfg.seg_augment, preprocess=pre)
    val_ds = array_dataset(val[0], None, stage.batch_size, masks=val[1], preprocess=pre)
    ctx.fit(model, data, stage, ckpt, label=label, validation_data=val_ds, monitor="val_dice", mode="max")
    return model


def _resize(a, size):
    import tensorflow as tf

    return tf.image.resize(a, (size, size)).numpy()


def protocol_split(labels, groups, seed: int, selection: bool = False) -> dict:
    """The 70/10/20 split (stratified, groups whole). ``selection``: the test part is set aside unread and a
    quarter of the training part (stratified, groups whole) takes its place, for choosing settings."""
    from medattn.datasets import holdout_split

    split = holdout_split(labels, groups, (0.7, 0.1, 0.2), seed=seed)
    if selection:
        tr = split["train"]
        sub = holdout_split(np.asarray(labels)[tr], np.asarray(groups)[tr], (0.75, 0.0, 0.25), seed=seed + 7)
        split = {"train": tr[sub["train"]], "val": split["val"], "test": tr[sub["test"]]}
    return split


def run_protocol(ctx, run: RunSpec, data: dict) -> dict:
    """Train segmenter (with cross-fitting) and classifier on one split; metrics, predictions and plots."""
    cfg, name, seed = ctx.cfg, run.arm, run.seed
    recs, groups = data["recs"], data["own"] if run.arm == "random" else data["grouped"]
    attention = not name.endswith("no_attention")
    labels = np.array([r.label for r in recs])
    split = protocol_split(labels, groups, seed, selection=cfg.selection)
    part = {k: [recs[i] for i in v] for k, v in split.items()}
    ctx.log(f"{name}: train {len(part['train'])}, val {len(part['val'])}, test {len(part['test'])} images; "
            f"segmenter ({'with' if attention else 'without'} attention)")
    xs = {k: tuple(a[idx] for a in data["arrays"]) for k, idx in split.items()}  # decoded once in load_data
    seg, pred, masks = _segment(ctx, run, xs, labels[split["train"]], np.asarray(groups)[split["train"]], attention)
    cls, prob, vprob, pbn = _classify_protocol(ctx, run, xs, pred, attention)
    yt = xs["test"][2]
    gate_row = {}
    seg_sum = masks["summary"]
    if cfg.seg_gate:  # empty the masks of images the classifier calls normal, if validation Dice says so
        pred["test"], seg_sum, gate_row = _classifier_gate((xs["val"][1], pred["val"], vprob),
                                                           (xs["test"][1], pred["test"], prob), seg_sum)
    gated = bool(gate_row.get("seg_gate_applied"))
    _save_pipeline(ctx, run, seg, cls, seg_sum, prob, yt, masks["post_row"], gated)
    external = (_evaluate_external(ctx, ctx.external, seg, cls,
                                   lambda m, x: masks["post"](_predict_masks(ctx, m, x)), seed, gated)
                if ctx.external is not None else {})
    row = _protocol_row(cfg, name, seed, yt, prob, vprob, xs, seg_sum, masks, gate_row, pbn, external)
    names = [part["test"][i].name for i in range(len(yt))]
    _save_protocol_outputs(ctx, name, seed, row, xs, (masks["raw_test"], pred["test"]), seg_sum, names,
                           (prob, vprob, masks["raw_val"]))
    return row


def _predict_masks(ctx, model, x):
    return seg_predict(lambda batch: ctx.predict(model, batch, 8), ctx.cfg, x)


def _segment(ctx, run: RunSpec, xs: dict, tr_labels, tr_groups, attention: bool):
    """The segmenters of one split: out-of-fold masks for the classifier's training images (cross-fitting), the
    final segmenter's masks for validation and test, all cleaned by the rule chosen on validation images."""
    from medattn.datasets import kfold_split
    from medattn.evaluation import segmentation_summary

    cfg, name, seed, ckroot = ctx.cfg, run.arm, run.seed, ctx.run_dir(run)
    oof = np.zeros_like(xs["train"][1])
    for f, fold in enumerate(kfold_split(tr_labels, tr_groups, cfg.crossfit_folds, seed=seed)):
        fit_part = tuple(a[fold["train"]] for a in xs["train"][:2])
        m = _train_seg(ctx, fit_part, xs["val"][:2], attention, ckroot / f"seg_fold{f}", seed + f,
                       f"{name} s{seed} seg fold {f + 1}/{cfg.crossfit_folds}")
        oof[fold["test"]] = _predict_masks(ctx, m, xs["train"][0][fold["test"]])
    seg = _train_seg(ctx, xs["train"][:2], xs["val"][:2], attention, ckroot / "seg_final", seed, f"{name} s{seed} seg")
    pred = {"train": oof, "val": _predict_masks(ctx, seg, xs["val"][0]),
            "test": _predict_masks(ctx, seg, xs["test"][0])}
    raw_sum = segmentation_summary(xs["test"][1], pred["test"])
    post, post_row = _choose_postprocess(cfg, xs["val"][1], pred["val"])
    raw_test, raw_val = pred["test"] > 0.5, pred["val"] > 0.5
    pred = {k: post(v) for k, v in pred.items()}  # the classifier sees the cleaned masks everywhere
    summary = segmentation_summary(xs["test"][1], pred["test"])
    return seg, pred, {"raw": raw_sum, "raw_test": raw_test, "raw_val": raw_val, "summary": summary, "post": post,
                       "post_row": post_row}


def _classify_protocol(ctx, run: RunSpec, xs: dict, pred: dict, attention: bool):
    """DCNNIMAF on the image stacked with the cleaned predicted mask: trained (class-weighted, early stopping on
    validation loss), optionally with precise BatchNorm statistics; its test and validation probabilities."""
    from medattn.datasets.pipeline import array_dataset

    cfg, name, seed = ctx.cfg, run.arm, run.seed
    cls_stage = cfg.stage("cls")

    def cls_input(k):
        img = _resize(xs[k][0], cls_stage.image_size) / 255.0
        return np.concatenate([img, _resize(pred[k], cls_stage.image_size)], axis=-1).astype("float32")

    ctx.seed(seed)
    cls = _cls_model(ctx, attention, len(xs["train"][2]))
    counts = np.bincount(xs["train"][2], minlength=3)
    cw = {c: len(xs["train"][2]) / (3.0 * max(counts[c], 1)) for c in range(3)}
    xin = cls_input("train")
    ctx.fit(cls, lambda e: array_dataset(xin, xs["train"][2], cls_stage.batch_size, shuffle=True, seed=seed, epoch=e,
                                         augment=ctx.cfg.cls_augment),
            cls_stage, ctx.run_dir(run) / "classifier", label=f"{name} s{seed} cls",
            validation_data=(cls_input("val"), xs["val"][2]), class_weight=cw, monitor="val_loss", mode="min")
    pbn = ctx.precise_bn(cls, cls_stage, xin, seed=seed, label=f"{name} s{seed} classifier")
    return cls, _classify(ctx, cls, cls_input("test")), _classify(ctx, cls, cls_input("val")), pbn


def _protocol_row(cfg, name, seed, yt, prob, vprob, xs, seg_sum, masks, gate_row, pbn, external) -> dict:
    """One protocol's row: segmentation (before and after cleaning), classification, bootstrap intervals."""
    from medattn.evaluation import bootstrap_ci, classification_metrics
    from medattn.evaluation.classification import macro_f1

    raw_sum = masks["raw"]
    cm = classification_metrics(yt, prob, class_names=CLASSES)
    lesion = seg_sum["per_image"]["lesion"]
    row = {"protocol": name, "n_test": int(len(yt)), **{k: seg_sum[k] for k in (
        "dice_lesion", "iou_lesion", "dice_all", "iou_all", "pixel_accuracy", "false_positive_rate_empty")}}
    row.update({"dice_lesion_raw": raw_sum["dice_lesion"], "dice_all_raw": raw_sum["dice_all"],
                "false_positive_rate_empty_raw": raw_sum["false_positive_rate_empty"], **masks["post_row"],
                **gate_row})
    row.update({k: cm[k] for k in ("accuracy", "weighted_accuracy", "precision_macro", "recall_macro", "f1_macro",
                                   "precision_weighted", "recall_weighted", "f1_weighted", "roc_auc", "ece")})
    row["dice_lesion_ci"] = bootstrap_ci(np.mean, seg_sum["per_image"]["dice"][lesion], n_boot=cfg.n_boot,
                                         seed=seed)[1:]
    row["iou_lesion_ci"] = bootstrap_ci(np.mean, seg_sum["per_image"]["iou"][lesion], n_boot=cfg.n_boot,
                                        seed=seed)[1:]
    row["accuracy_ci"] = bootstrap_ci(lambda t, p: np.mean(t == p.argmax(1)), yt, prob, n_boot=cfg.n_boot,
                                      seed=seed)[1:]
    row["f1_macro_ci"] = bootstrap_ci(lambda t, p: macro_f1(t, p, 3), yt, prob, n_boot=cfg.n_boot, seed=seed)[1:]
    row["confusion_matrix"] = cm["confusion_matrix"]
    # the classifier on the validation images (what chose its epoch), and how it was read
    row["val_accuracy_cls"] = float(np.mean(vprob.argmax(1) == xs["val"][2]))
    row["cls_tta"] = cfg.cls_tta or "none"
    row["cls_precise_bn"] = cfg.stage("cls").precise_bn
    if pbn is not None:
        row["cls_precise_bn_images"] = pbn["images"]
    row.update(external)
    return row


def _save_protocol_outputs(ctx, name, seed, row, xs, test_masks, seg_sum, names, probs) -> None:
    """The prediction file (the test masks before and after cleaning, bit-packed, so every segmentation figure can
    be recomputed from it; the validation images' classifier probabilities and masks before cleaning, so the
    cleaning rule chosen on them can be chosen again) and, for the first seed, the confusion matrix and overlay
    plots. ``probs``: test and validation class probabilities, validation masks before cleaning."""
    from medattn.evaluation.plots import plot_confusion_matrix, plot_segmentation_overlays

    yt, (raw, cleaned), (prob, vprob, raw_val) = xs["test"][2], test_masks, probs
    np.savez_compressed(ctx.prediction_file(name, seed), y_true=yt, prob=prob, names=np.array(names),
                        dice=seg_sum["per_image"]["dice"], lesion=seg_sum["per_image"]["lesion"],
                        mask_shape=np.array(cleaned.shape), mask_pred=np.packbits(cleaned > 0.5),
                        mask_raw=np.packbits(raw), mask_true=np.packbits(xs["test"][1] > 0.5),
                        val_y=xs["val"][2], val_prob=vprob, val_mask_shape=np.array(raw_val.shape),
                        val_mask_raw=np.packbits(raw_val), val_mask_true=np.packbits(xs["val"][1] > 0.5))
    ctx.log(f"{name} seed {seed}{ctx.mark}: Dice(lesion) {row['dice_lesion']:.4f} accuracy {row['accuracy']:.4f} "
            f"F1 {row['f1_macro']:.4f}")
    if seed == ctx.cfg.seeds[0]:
        plot_confusion_matrix(np.array(row["confusion_matrix"]), CLASSES, ctx.out / "plots" / f"confusion_{name}.png",
                              title=f"{name}{ctx.mark}")
        pick = _overlay_picks(yt, seg_sum["per_image"]["dice"], seg_sum["per_image"]["lesion"])
        plot_segmentation_overlays(xs["test"][0][pick, ..., 0], xs["test"][1][pick], cleaned[pick],
                                   ctx.out / "plots" / f"overlays_{name}.png",
                                   titles=[f"{names[i]}{ctx.mark}" for i in pick])


def _classifier_gate(val, test, seg_sum):
    """The image-level gate: ``val`` and ``test`` are (true masks, cleaned predicted masks, class probabilities).
    Chosen on the validation images (mean Dice over all of them, :func:`choose_gate`); when applied, the test masks
    of images called normal are emptied and summarised again. Returns (test masks, test summary, row entries: the
    choice, the validation Dice with the gate, and the test figures without it when applied)."""
    from medattn.evaluation import segmentation_summary
    from medattn.evaluation.segmentation import choose_gate, gate_masks

    applied, scores = choose_gate(val[0], val[1], np.asarray(val[2]).argmax(1) == NORMAL)
    row = {"seg_gate_applied": applied, "val_dice_all_gated": scores["with"]}
    if not applied:
        return test[1], seg_sum, row
    row.update({f"{k}_ungated": seg_sum[k] for k in ("dice_lesion", "dice_all", "false_positive_rate_empty")})
    masks = gate_masks(test[1], np.asarray(test[2]).argmax(1) == NORMAL)
    return masks, segmentation_summary(test[0], masks), row


def _choose_postprocess(cfg, val_true, val_prob):
    """The mask cleaning chosen on the validation images (never the test split): keep the largest component or
    not, and the minimum lesion area, by mean Dice over all validation images. Returns the cleaning function and
    the row entries that record the choice and its validation Dice before and after."""
    from medattn.evaluation.segmentation import choose_min_area, per_image_dice, postprocess_masks

    raw = float(np.mean(per_image_dice(val_true, val_prob)))
    if not cfg.seg_postprocess:
        return (lambda p: p), {"seg_post_min_area": None, "seg_post_largest_component": None,
                               "val_dice_all_raw": raw, "val_dice_all_post": raw}
    options = []  # (validation Dice, keep the largest component, min area); ties: no component rule first
    for lcc in (False, True):
        area, scores = choose_min_area(val_true, val_prob, largest_component=lcc)
        options.append((scores[area], lcc, area))
    score, lcc, area = max(options, key=lambda o: (round(o[0], 12), -o[1]))
    return (lambda p: postprocess_masks(p, area, lcc)), {
        "seg_post_min_area": area, "seg_post_largest_component": lcc, "val_dice_all_raw": raw,
        "val_dice_all_post": score}


def _classify(ctx, cls, x):
    """Class probabilities of the classifier (with ``cls_tta``: the mean over the input and its mirror image)."""
    from medattn.evaluation import tta_predict

    return tta_predict(lambda v: ctx.predict(cls, v, 32), x, ctx.cfg.cls_tta)


def _evaluate_external(ctx, ext, seg, cls, predict_masks, seed, gated=False) -> dict:
    """The protocol's final segmenter and classifier on the external set: Dice/IoU on its lesion images and
    classification metrics over the classes it has (a class it lacks has no recall, and AUC is averaged over the
    present classes), with bootstrap intervals; ``gated``: masks of images called normal emptied, as on the test
    split. Keys ``external_*``."""
    from sklearn.metrics import f1_score, roc_auc_score

    from medattn.evaluation import bootstrap_ci, segmentation_summary

    cfg, size = ctx.cfg, ctx.cfg.stage("cls").image_size
    x, m, y = ext["arrays"]
    pred = predict_masks(seg, x)
    xin = np.concatenate([_resize(x, size) / 255.0, _resize(pred, size)], axis=-1).astype("float32")
    prob = _classify(ctx, cls, xin)
    if gated:
        from medattn.evaluation.segmentation import gate_masks

        pred = gate_masks(pred, prob.argmax(1) == NORMAL)
    ss = segmentation_summary(m, pred)
    present = [CLASSES.index(c) for c in ext["present"]]
    out = {"external_name": ext["name"], "external_n": int(len(y)), "external_classes": ",".join(ext["present"]),
           "external_absent": ",".join(ext["absent"]), "external_dice_lesion": ss["dice_lesion"],
           "external_iou_lesion": ss["iou_lesion"],
           "external_false_positive_rate_empty": ss["false_positive_rate_empty"],
           "external_accuracy": float(np.mean(prob.argmax(1) == y)),
           "external_f1_macro_present": float(f1_score(y, prob.argmax(1), labels=present, average="macro",
                                                       zero_division=0))}
    aucs = [roc_auc_score(y == c, prob[:, c]) for c in present if 0 < np.sum(y == c) < len(y)]
    out["external_roc_auc_present"] = float(np.mean(aucs)) if aucs else float("nan")
    for c in present:
        out[f"external_recall_{CLASSES[c]}"] = float(np.mean(prob[y == c].argmax(1) == c))
    lesion = ss["per_image"]["lesion"]
    if lesion.any():
        out["external_dice_lesion_ci"] = bootstrap_ci(np.mean, ss["per_image"]["dice"][lesion], n_boot=cfg.n_boot,
                                                      seed=seed)[1:]
    out["external_accuracy_ci"] = bootstrap_ci(lambda t, p: np.mean(t == p.argmax(1)), y, prob, n_boot=cfg.n_boot,
                                               seed=seed)[1:]
    ctx.log(f"external {ext['name']}: Dice(lesion) {out['external_dice_lesion']:.4f} accuracy "
            f"{out['external_accuracy']:.4f} on {len(y)} images")
    return out


def _save_pipeline(ctx, run, seg, cls, seg_sum, prob, yt, post_row, gated=False):
    """The protocol's final segmenter and classifier as .keras files with their cards (the two-stage pipeline:
    the classifier takes the image in [0, 1] with the segmenter's predicted mask as a 4th channel; ``gated``: the
    mask of an image the classifier calls normal is emptied afterwards, which the classifier's card says)."""
    from medattn.backbones import preprocessing_for

    cfg = ctx.cfg
    s, c = cfg.stage("seg"), cfg.stage("cls")
    ctx.save_model(seg, run, "segmenter", kind="segmenter", input_size=s.image_size,
                   preprocessing=preprocessing_for(cfg.seg_backbone, cfg.pretrained), class_names=["lesion"],
                   threshold=0.5, mc_dropout=False, tta_flip=cfg.seg_tta,
                   postprocess=({"min_area": post_row["seg_post_min_area"],
                                 "largest_component": post_row["seg_post_largest_component"]}
                                if cfg.seg_postprocess else None),
                   metrics={"dice_lesion": seg_sum["dice_lesion"], "iou_lesion": seg_sum["iou_lesion"]})
    ctx.save_model(cls, run, "classifier", kind="classifier", input_size=c.image_size, preprocessing="unit",
                   class_names=list(CLASSES), threshold=None, mc_dropout=False,
                   extra_input="the segmenter's predicted mask (probabilities, resized) as channel 4",
                   segmenter="segmenter.keras", metrics={"accuracy": float(np.mean(prob.argmax(1) == yt))},
                   tta=cfg.cls_tta,
                   **({"empty_mask_when": "normal"} if gated else {}))


def _overlay_picks(y, dice, lesion, n=4):
    """Test images to draw: the first of each class, then the lesion image with the worst Dice (failures show)."""
    picks = [int(np.flatnonzero(y == c)[0]) for c in range(len(CLASSES)) if np.any(y == c)]
    les = np.flatnonzero(lesion)
    if len(les):
        worst = int(les[np.argmin(np.asarray(dice)[les])])
        if worst not in picks:
            picks.append(worst)
    return picks[:n]


def load_data(ctx) -> dict:
    """BUSI records after the audit (unreadable files named and listed in the tables), with the audit's
    near-duplicate groups; a dry run takes six images per class."""
    from medattn.datasets import busi_records, merge_groups
    from medattn.datasets.pipeline import decode_arrays

    ctx.class_names = CLASSES
    audit = ctx.audit(ctx.handful(busi_records(ctx.data.path), 6), ctx.data.path, verify=DATASET_VERIFY["busi"])
    recs = audit["_records"]
    ctx.profile_inputs(files=[r.path for r in recs])  # on every saved model's card: medattn-predict compares
    t0 = time.time()
    arrays = decode_arrays(recs, ctx.cfg.stage("seg").image_size)  # decoded and resized once, shared by every model
    ctx.log(f"decoded {len(recs)} images and masks at {ctx.cfg.stage('seg').image_size} px once "
            f"({time.time() - t0:.0f} s)")
    data = {"recs": recs, "arrays": arrays, "grouped": merge_groups(len(recs), None, audit["_near_group_indices"]),
            "own": np.arange(len(recs))}
    return data


def load_external(ctx, path: Path) -> dict:
    """The --external-data set: BUSI layout, any subset of the classes (BUSI's labels kept), decoded once."""
    from medattn.datasets import busi_records
    from medattn.datasets.pipeline import decode_arrays

    recs = ctx.handful(busi_records(path, classes="present"), 6)
    present = sorted({r.label_name for r in recs}, key=CLASSES.index)
    return {"recs": recs, "arrays": decode_arrays(recs, ctx.cfg.stage("seg").image_size), "n": len(recs),
            "present": present, "absent": [c for c in CLASSES if c not in present]}


def plan(cfg) -> list[RunSpec]:
    """Seed-major: every protocol at the first seed, then the next seed, so a run stopped part-way has whole
    tables (and the paired-by-seed differences) for the seeds it finished."""
    return [RunSpec(proto, seed) for seed in cfg.seeds for proto in cfg.protocols]


def report(ctx, rows, final: bool) -> None:
    from medattn.evaluation import seed_cell, seeds_mark, write_table

    sources = {}
    for proto in dict.fromkeys(r["protocol"] for r in rows):
        rs = [r for r in rows if r["protocol"] == proto]
        src = {}
        for k in ("dice_lesion", "iou_lesion", "pixel_accuracy", "accuracy", "f1_macro", "precision_macro",
                  "recall_macro"):
            # several seeds: an interval over seeds for SEED_METRICS, the plain mean for the others
            src[k] = seed_cell(rs, k) if len(rs) == 1 or k in SEED_METRICS else (float(np.mean([r[k] for r in rs])),)
        # beside Dice: how often a normal image gets a lesion mask, and the masks before the cleaning
        for k in ("false_positive_rate_empty", "dice_lesion_raw", "false_positive_rate_empty_raw"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                src[k] = (float(np.mean(vals)),)
        sources[f"ours: {proto}{seeds_mark(len(rs))}{ctx.mark}"] = src
        if "external_n" in rs[0]:
            ext = {}
            for k in ("dice_lesion", "iou_lesion", "accuracy"):
                v = float(np.mean([r[f"external_{k}"] for r in rs]))
                ci = rs[0].get(f"external_{k}_ci") if len(rs) == 1 else None
                ext[k] = (v, *ci) if ci else (v,)
            ext["f1_macro"] = (float(np.mean([r["external_f1_macro_present"] for r in rs])),)
            absent = f"; absent: {rs[0]['external_absent']}" if rs[0]["external_absent"] else ""
            sources[f"ours: {proto} on external {rs[0]['external_name']} (n={rs[0]['external_n']}{absent})"
                    f"{ctx.mark}"] = ext
    meta = {**ctx.meta, "protocols_done": list(dict.fromkeys(r["protocol"] for r in rows))}
    tag = ("synthetic" if ctx.synthetic else ctx.cfg.profile) + (
        ", SELECTION run: a quarter of the training part, never the test split" if ctx.cfg.selection else "")
    title = f"Multi-attention LinkNet + DCNNIMAF: paper vs ours ({tag}{ctx.mark.replace(' (', ', ').replace(')', '')})"
    description = DESCRIPTION + (f" Skipped unreadable files: {'; '.join(ctx.skipped)}." if ctx.skipped else "")
    ctx.write_comparison(sources, title=title, description=description, meta=meta)
    write_table(ctx.out, "runs", flat_rows(rows), title=f"Every run ({tag}){ctx.mark}", meta=meta)
    spread, diffs = seed_tables(rows)
    if diffs or any(r["n_seeds"] > 1 for r in spread):
        write_table(ctx.out, "seeds", spread, title=f"Spread over seeds ({tag}){ctx.mark}", meta=meta,
                    description="Per protocol: mean, sample sd, min and max over seeds, the 95 % interval mean +- "
                                "t(0.975, n-1) standard errors, and every seed's value.")
        if diffs:
            write_table(ctx.out, "differences", diffs, title=f"Differences between protocols, paired by seed ({tag})"
                        f"{ctx.mark}", meta=meta,
                        description="Each seed's difference (the two protocols of a seed share the seed, not the "
                                    "split: grouped and random split differently), its mean and the 95 % t interval "
                                    "over seeds; `beyond_seed_spread` is true when the interval excludes 0.")
    if final:
        _plot_curves(ctx, rows)
        print((ctx.out / "comparison.md").read_text())
        if ctx.synthetic:
            print("[dcnnimaf] These results are SYNTHETIC. To run on BUSI: download Dataset_BUSI_with_GT "
                  "(Al-Dhabyani et al., Data in Brief 2020), then: python reproductions/dcnnimaf.py --data-dir "
                  "PATH/busi --profile cpu")


def _plot_curves(ctx, rows) -> None:
    """ROC/PR and reliability of the classifier on each protocol's test images, from the prediction file of its
    first seed: drawn once at the end of a training process and by ``--report-only`` (for a finished table too),
    not after every run as the tables are (a second apiece; the no-data default has a time target)."""
    from medattn.evaluation.plots import plot_classifier_curves

    for proto in dict.fromkeys(r["protocol"] for r in rows):
        seed = next(r["seed"] for r in rows if r["protocol"] == proto)
        path = ctx.prediction_file(proto, seed)
        if path.exists():
            p = np.load(path)
            plot_classifier_curves(p["y_true"], p["prob"], CLASSES, ctx.out / "plots", proto,
                                   title=f"{proto} seed {seed} (n={len(p['y_true'])}){ctx.mark}")


SEED_METRICS = ("dice_lesion", "iou_lesion", "accuracy", "f1_macro", "false_positive_rate_empty", "roc_auc")
PAIRS = (("grouped", "random"), ("grouped_no_attention", "grouped"))


def seed_tables(rows) -> tuple[list[dict], list[dict]]:
    """Spread over seeds per protocol and metric, and the paired-by-seed differences of :data:`PAIRS` (only seeds
    both protocols have; none when fewer than two)."""
    from medattn.evaluation import seed_interval, seed_spread

    spread, diffs = seed_spread(rows, "protocol", SEED_METRICS), []
    by = {}
    for r in rows:
        by.setdefault(r["protocol"], {})[r["seed"]] = r
    for a, b in PAIRS:
        common = sorted(set(by.get(a, {})) & set(by.get(b, {})))
        if len(common) < 2:
            continue
        for k in SEED_METRICS:
            d = [by[a][s][k] - by[b][s][k] for s in common
                 if by[a][s].get(k) is not None and by[b][s].get(k) is not None]
            if len(d) < 2:
                continue
            m, lo, hi = seed_interval(d, clip=None)
            diffs.append({"difference": f"{a} - {b}", "metric": k, "n_seeds": len(d), "mean": m, "ci_low": lo,
                          "ci_high": hi, "beyond_seed_spread": bool(lo > 0 or hi < 0),
                          "per_seed": ", ".join(f"{x:+.4f}" for x in d)})
    return spread, diffs


NO_DATA = ("no BUSI data found (--data-dir or MEDATTN_DATA_DIR). Download Dataset_BUSI_with_GT (Al-Dhabyani et al., "
           "Data in Brief 2020) and pass --data-dir PATH/busi, or run without --profile for the SYNTHETIC phantom demo")


def _check(cfg) -> None:
    check_augmentation(seg_augment=cfg.seg_augment, cls_augment=cfg.cls_augment)
    from medattn.backbones import check_input_size

    try:
        check_input_size(cfg.stage("seg").image_size)
    except ValueError as e:
        raise UserError(f"seg.image_size: {e}") from None
    bad = [p for p in cfg.protocols if p not in ("random", "grouped", "grouped_no_attention")]
    if bad:
        raise UserError(f"protocols must be random, grouped or grouped_no_attention, got {bad[0]!r}")
    if cfg.crossfit_folds < 2:
        raise UserError(f"crossfit_folds must be >= 2, got {cfg.crossfit_folds}")
    from medattn.backbones import check_backbone

    try:  # the registry's own refusals (a width for a non-VGG encoder, ImageNet weights for a scaled one), up front
        check_backbone(cfg.seg_backbone, cfg.weights, **({"width": cfg.encoder_width} if cfg.encoder_width != 1.0
                                                         else {}))
    except ValueError as e:
        raise UserError(f"seg_backbone={cfg.seg_backbone}, encoder_width={cfg.encoder_width:g}: {e}"
                        + ("; add --set encoder_width=1.0, or use --profile paper" if cfg.encoder_width != 1.0
                           else "")) from None
    if cfg.seg_freeze_encoder and cfg.weights == "none":
        raise UserError("seg_freeze_encoder=true keeps the encoder's weights fixed; with --weights none they are "
                        "random: give pretrained weights (--weights hed, imagenet or a file) or drop it")
    from medattn.evaluation import tta_refusal

    if refusal := tta_refusal("cls_tta", cfg.cls_tta, ("flip",), "the classifier trains with horizontal flips and "
                              "small rotations, not with quarter turns"):
        raise UserError(refusal)


def resolve_data(cfg):
    """BUSI from --data-dir; without it, generated phantoms for the synthetic and smoke profiles and dry runs."""
    if cfg.data_dir is not None and not cfg.synthetic:
        return cfg, DataSource(cfg.data_dir)
    if cfg.profile not in ("synthetic", "smoke") and not cfg.dry_run and not cfg.synthetic:
        raise UserError(NO_DATA)
    import tempfile

    from medattn.datasets.phantom import make_phantom_busi

    tmp = tempfile.TemporaryDirectory(prefix="medattn_phantom_")
    counts = (6, 6, 6) if cfg.dry_run else cfg.phantom_counts
    path = make_phantom_busi(tmp.name, counts=counts, seed=0)
    print("[dcnnimaf] SYNTHETIC: no BUSI data found (--data-dir or MEDATTN_DATA_DIR); running on generated "
          "ultrasound-like phantoms. Every number below is SYNTHETIC.", flush=True)
    return dataclasses.replace(cfg, synthetic=True, data_dir=None), DataSource(str(path), True, tmp.cleanup)


REPRODUCTION = Reproduction(
    profile_notes=PROFILE_NOTES, name="dcnnimaf", script=__file__, description=__doc__, profiles=PROFILES, paper=PAPER, dataset="busi",
    load_data=load_data, plan=plan, run_one=run_protocol, report=report, resolve_data=resolve_data,
    profile_without_data="synthetic", no_data=NO_DATA, check=_check,
    backbones=lambda cfg: [cfg.seg_backbone],
    models=lambda cfg, arm: _precision_models(cfg),
    # a dry run trains two cross-fit folds (a third repeats the same code) on a handful of images
    dry_run_overrides=lambda cfg: {"n_boot": 20, "crossfit_folds": 2},
    external=ExternalData(load_external, "a second dataset in the BUSI layout (any subset of benign/"
                                           "malignant/normal): every protocol's final models are "
                                           "evaluated on it and the tables get external columns"),
)


def main(argv=None) -> int:
    return run_reproduction(REPRODUCTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
