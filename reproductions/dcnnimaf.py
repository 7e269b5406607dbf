"""Reproduce the multi-attention LinkNet + DCNNIMAF breast-ultrasound paper (arXiv 2407.02844) on BUSI.

    python reproductions/dcnnimaf.py                      # no data found: a SYNTHETIC phantom run (minutes)
    python reproductions/dcnnimaf.py --data-dir PATH/busi --profile cpu
    python reproductions/dcnnimaf.py --data-dir PATH/busi --profile paper --weights imagenet   # GPU/TPU

Stage 1 segments the lesion with LinkNet (InceptionResNetV2 encoder, same padding) and scSE attention after each
decoder block; stage 2 classifies benign / malignant / normal with DCNNIMAF from the image stacked with the mask
PREDICTED by stage 1 (never the ground-truth mask: normal images have empty masks, which would give the label
away). The classifier's own training images get out-of-fold masks (cross-fitting: a segmenter that did not train
on them), validation and test images get masks from the segmenter trained on the whole training part.

Two protocols side by side: ``random`` (paper-like stratified random split, duplicates ignored) and ``grouped``
(the audit's near-duplicate groups kept inside one split: leak-free), plus an ablation without attention on the
grouped split. Defaults where the paper is silent (shared/PAPERS.md section 1): BCE + Dice, Adam, batch 8, best
validation Dice; class-weighted cross-entropy; stratified 70/10/20 split.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medattn.training import ExperimentConfig  # noqa: E402

PAPER = {"dice_lesion": 0.972, "iou_lesion": 0.969, "pixel_accuracy": 0.981, "accuracy": 0.992,
         "f1_macro": 0.991, "precision_macro": 0.993, "recall_macro": 0.991}
CLASSES = ["benign", "malignant", "normal"]
DESCRIPTION = (
    "Test set: 20 % of the images, stratified; `random` ignores duplicates (paper-like), `grouped` keeps every "
    "near-duplicate group of the audit inside one part (leak-free), `grouped_no_attention` removes the scSE and "
    "DCNNIMAF attention blocks on the grouped split. Dice and IoU: mean over test images that have a lesion, per "
    "image; pixel accuracy over all test images (dominated by background). Classification from the image plus the "
    "PREDICTED mask. Brackets: 95 % percentile bootstrap over test images (one seed). Paper: arXiv 2407.02844, "
    "own split, ImageNet-pretrained encoder.")


@dataclasses.dataclass(frozen=True)
class DcnnimafConfig(ExperimentConfig):
    name: str = "dcnnimaf"
    seg_backbone: str = "inceptionresnetv2"
    encoder_width: float = 1.0  # VGG encoders only
    seg_size: int = 256
    cls_size: int = 224
    seg_epochs: int = 30
    cls_epochs: int = 30
    seg_lr: float = 1e-4
    cls_lr: float = 1e-4
    cls_filters: tuple[int, ...] = (32, 64, 128, 256, 256)
    crossfit_folds: int = 3
    protocols: tuple[str, ...] = ("random", "grouped", "grouped_no_attention")
    patience: int = 8
    n_boot: int = 1000
    synthetic: bool = False
    # BatchNorm moving-average momentum: Keras' 0.99 needs a few hundred steps before inference-mode outputs are
    # usable; runs with few steps per epoch (the phantoms) use 0.9
    bn_momentum: float = 0.99
    cls_bn_momentum: float | None = None  # classifier only; None: bn_momentum
    phantom_counts: tuple[int, ...] = (40, 25, 15)


PROFILES = {
    "smoke": DcnnimafConfig(profile="smoke", seg_backbone="vgg16", encoder_width=0.125, seg_size=64, cls_size=64,
                            seg_epochs=1, cls_epochs=1, batch_size=8, seg_lr=1e-3, cls_lr=1e-3,
                            cls_filters=(8, 8, 16, 16, 16), crossfit_folds=2, protocols=("grouped",), n_boot=50,
                            phantom_counts=(8, 6, 6), verbose=0),
    # the no-data default: all three protocols on 150 small phantoms in a few minutes on 2 cores
    "synthetic": DcnnimafConfig(profile="custom-synthetic", seg_backbone="vgg16", encoder_width=0.125, seg_size=64,
                                cls_size=64, seg_epochs=12, cls_epochs=12, batch_size=8, seg_lr=3e-3, cls_lr=2e-3,
                                cls_filters=(8, 16, 16, 32, 32), crossfit_folds=2, n_boot=200, verbose=2,
                                bn_momentum=0.9, phantom_counts=(70, 50, 30)),
    # cpu: about 37 min per protocol on 2 cores, ~2 h for all three (each: 2 cross-fit + 1 final segmenter + classifier).
    # The classifier uses BN momentum 0.9: with 0.99 its inference-mode outputs were constant for the first epochs
    # and early stopping on val_loss kept such an epoch (grouped split: accuracy 0.27, every image "malignant").
    "cpu": DcnnimafConfig(profile="cpu", seg_backbone="vgg16", encoder_width=0.25, seg_size=128, cls_size=128,
                          seg_epochs=15, cls_epochs=20, batch_size=8, seg_lr=1e-3, cls_lr=1e-3, crossfit_folds=2,
                          patience=6, cls_filters=(16, 32, 64, 128, 128), cls_bn_momentum=0.9, verbose=2),
    "paper": DcnnimafConfig(profile="paper", weights="imagenet", seg_epochs=100, cls_epochs=100, patience=15),
}


def _adam(lr, epochs, n_images, batch_size):
    """Adam with cosine decay over the whole run (the schedule's step lives in the optimizer: resumes exactly)."""
    import keras

    steps = max(1, epochs * -(-n_images // batch_size))
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05))


def _set_bn_momentum(model, momentum):
    import keras

    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))  # nested models
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def _seg_model(cfg, attention, n_images):
    from medattn.evaluation.keras_metrics import DiceMetric, bce_dice_loss
    from medattn.models.linknet import build_linknet

    w = None if cfg.weights == "none" else cfg.weights
    m = build_linknet(cfg.seg_backbone, cfg.seg_size, weights=w, attention=attention,
                      encoder_width=cfg.encoder_width)
    _set_bn_momentum(m, cfg.bn_momentum)
    m.compile(_adam(cfg.seg_lr, cfg.seg_epochs, n_images, cfg.batch_size), loss=bce_dice_loss,
              metrics=[DiceMetric(name="dice")])
    return m


def _cls_model(cfg, attention, n_images):
    from medattn.models.dcnnimaf import build_dcnnimaf

    m = build_dcnnimaf(cfg.cls_size, filters=cfg.cls_filters, attention=attention)
    _set_bn_momentum(m, cfg.bn_momentum if cfg.cls_bn_momentum is None else cfg.cls_bn_momentum)
    m.compile(_adam(cfg.cls_lr, cfg.cls_epochs, n_images, cfg.batch_size), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def _images(recs, size):
    from medattn.datasets.pipeline import image_dataset

    xs, ms, ys = [], [], []
    for x, (m, y) in image_dataset(recs, size, 32, with_masks=True):
        xs.append(x.numpy())
        ms.append(m.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ms), np.concatenate(ys)


def _train_seg(cfg, recs, val_recs, attention, ckpt, seed):
    from medattn.datasets.pipeline import image_dataset
    from medattn.training import fit, set_seed

    set_seed(seed)
    model = _seg_model(cfg, attention, len(recs))
    aug = {"rotation": 0.04, "zoom": 0.1, "flip": "horizontal", "brightness": 0.1}
    data = lambda e: image_dataset(recs, cfg.seg_size, cfg.batch_size, with_masks=True, with_labels=False,  # noqa
                                   shuffle=True, seed=seed, epoch=e, augment=aug, preprocess=lambda t: t / 255.0)
    val = image_dataset(val_recs, cfg.seg_size, cfg.batch_size, with_masks=True, with_labels=False,
                        preprocess=lambda t: t / 255.0)
    fit(model, data, epochs=cfg.seg_epochs, ckpt_dir=ckpt, validation_data=val, resume=cfg.resume,
        monitor="val_dice", mode="max", patience=cfg.patience, verbose=cfg.verbose)
    return model


def _predict_masks(model, x):
    return model.predict(x / 255.0, batch_size=8, verbose=0)


def _resize(a, size):
    import tensorflow as tf

    return tf.image.resize(a, (size, size)).numpy()


def run_protocol(name, cfg, recs, groups, out, seed):
    """Train segmenter (with cross-fitting) and classifier on one split; return metrics and predictions."""
    from medattn.datasets import holdout_split, kfold_split
    from medattn.datasets.pipeline import array_dataset
    from medattn.evaluation import bootstrap_ci, classification_metrics, segmentation_summary
    from medattn.training import fit, set_seed

    attention = not name.endswith("no_attention")
    labels = np.array([r.label for r in recs])
    split = holdout_split(labels, groups, (0.7, 0.1, 0.2), seed=seed)
    part = {k: [recs[i] for i in v] for k, v in split.items()}
    ckroot = Path("runs") / f"{cfg.name}-{cfg.profile}" / name
    print(f"[dcnnimaf] {name}: train {len(part['train'])}, val {len(part['val'])}, test {len(part['test'])} "
          f"images; segmenter ({'with' if attention else 'without'} attention)", flush=True)
    xs = {k: _images(v, cfg.seg_size) for k, v in part.items()}
    # out-of-fold masks for the classifier's training images
    oof = np.zeros_like(xs["train"][1])
    tr_labels, tr_groups = labels[split["train"]], np.asarray(groups)[split["train"]]
    for f, fold in enumerate(kfold_split(tr_labels, tr_groups, cfg.crossfit_folds, seed=seed)):
        fit_recs = [part["train"][i] for i in fold["train"]]
        m = _train_seg(cfg, fit_recs, part["val"], attention, ckroot / f"seg_fold{f}", seed + f)
        oof[fold["test"]] = _predict_masks(m, xs["train"][0][fold["test"]])
    seg = _train_seg(cfg, part["train"], part["val"], attention, ckroot / "seg_final", seed)
    pred = {"train": oof, "val": _predict_masks(seg, xs["val"][0]), "test": _predict_masks(seg, xs["test"][0])}
    seg_sum = segmentation_summary(xs["test"][1], pred["test"])

    def cls_input(k):
        img = _resize(xs[k][0], cfg.cls_size) / 255.0
        return np.concatenate([img, _resize(pred[k], cfg.cls_size)], axis=-1).astype("float32")

    set_seed(seed)
    cls = _cls_model(cfg, attention, len(xs["train"][2]))
    counts = np.bincount(xs["train"][2], minlength=3)
    cw = {c: len(xs["train"][2]) / (3.0 * max(counts[c], 1)) for c in range(3)}
    xin = cls_input("train")
    aug = {"rotation": 0.04, "zoom": 0.1, "flip": "horizontal"}
    fit(cls, lambda e: array_dataset(xin, xs["train"][2], cfg.batch_size, shuffle=True, seed=seed, epoch=e,
                                     augment=aug),
        epochs=cfg.cls_epochs, ckpt_dir=ckroot / "classifier", validation_data=(cls_input("val"), xs["val"][2]),
        class_weight=cw, resume=cfg.resume, monitor="val_loss", mode="min", patience=cfg.patience,
        verbose=cfg.verbose)
    prob = cls.predict(cls_input("test"), verbose=0)
    yt = xs["test"][2]
    cm = classification_metrics(yt, prob, class_names=CLASSES)
    dice_lesion = seg_sum["per_image"]["dice"][seg_sum["per_image"]["lesion"]]
    row = {"protocol": name, "seed": seed, "n_test": int(len(yt)), **{k: seg_sum[k] for k in (
        "dice_lesion", "iou_lesion", "dice_all", "iou_all", "pixel_accuracy", "false_positive_rate_empty")}}
    row.update({k: cm[k] for k in ("accuracy", "weighted_accuracy", "precision_macro", "recall_macro", "f1_macro",
                                   "precision_weighted", "recall_weighted", "f1_weighted", "roc_auc", "ece")})
    row["dice_lesion_ci"] = bootstrap_ci(np.mean, dice_lesion, n_boot=cfg.n_boot, seed=seed)[1:]
    iou_lesion = seg_sum["per_image"]["iou"][seg_sum["per_image"]["lesion"]]
    row["iou_lesion_ci"] = bootstrap_ci(np.mean, iou_lesion, n_boot=cfg.n_boot, seed=seed)[1:]
    row["accuracy_ci"] = bootstrap_ci(lambda t, p: np.mean(t == p.argmax(1)), yt, prob, n_boot=cfg.n_boot,
                                      seed=seed)[1:]
    row["f1_macro_ci"] = bootstrap_ci(
        lambda t, p: classification_metrics(t, p, n_classes=3)["f1_macro"], yt, prob, n_boot=cfg.n_boot,
        seed=seed)[1:]
    row["confusion_matrix"] = cm["confusion_matrix"]
    np.savez(out / "predictions" / f"{name}_s{seed}.npz", y_true=yt, prob=prob,
             dice=seg_sum["per_image"]["dice"], lesion=seg_sum["per_image"]["lesion"])
    return row, (xs["test"][0], xs["test"][1], pred["test"], [part["test"][i].name for i in range(len(yt))],
                 _overlay_picks(yt, seg_sum["per_image"]["dice"], seg_sum["per_image"]["lesion"]))


def _overlay_picks(y, dice, lesion, n=4):
    """Test images to draw: the first of each class, then the lesion image with the worst Dice (failures show)."""
    picks = [int(np.flatnonzero(y == c)[0]) for c in range(len(CLASSES)) if np.any(y == c)]
    les = np.flatnonzero(lesion)
    if len(les):
        worst = int(les[np.argmin(np.asarray(dice)[les])])
        if worst not in picks:
            picks.append(worst)
    return picks[:n]


def main(argv=None) -> int:
    from medattn.datasets import busi_records, merge_groups
    from medattn.datasets.audit import audit_records
    from medattn.datasets.phantom import make_phantom_busi
    from medattn.evaluation import comparison_rows, write_table
    from medattn.evaluation.plots import plot_confusion_matrix, plot_segmentation_overlays
    from medattn.training import RunRecorder, parse_config, save_config, set_mixed_precision

    cfg, _ = parse_config(PROFILES, argv, description=__doc__, dataset="busi")
    synthetic = cfg.data_dir is None or cfg.synthetic
    tmp = None
    if synthetic:
        if cfg.profile not in ("smoke",):
            cfg = dataclasses.replace(PROFILES["synthetic"], resume=cfg.resume, out=cfg.out)
        tmp = tempfile.TemporaryDirectory(prefix="medattn_phantom_")
        data_dir = make_phantom_busi(tmp.name, counts=cfg.phantom_counts, seed=0)
        print("[dcnnimaf] SYNTHETIC: no BUSI data found (--data-dir or MEDATTN_DATA_DIR); running on generated "
              "ultrasound-like phantoms. Every number below is SYNTHETIC.", flush=True)
    else:
        data_dir = cfg.data_dir
    if cfg.verbose == 2 and sys.stdout.isatty():  # a terminal gets Keras progress bars, a log file epoch lines
        cfg = dataclasses.replace(cfg, verbose=1)
    tag = "synthetic" if synthetic else cfg.profile
    out = Path(cfg.out or f"results/dcnnimaf{'-synthetic' if synthetic else ''}")
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rec = RunRecorder(out, profile=cfg.profile, seeds=cfg.seeds, data_dir=None if synthetic else data_dir,
                      argv=["reproductions/dcnnimaf.py"] + list(sys.argv[1:] if argv is None else argv),
                      extra={"synthetic": synthetic})
    save_config(dataclasses.replace(cfg, data_dir=str(data_dir), synthetic=synthetic), out / "config.json")
    set_mixed_precision(cfg.mixed_precision)
    recs = busi_records(data_dir)
    audit = audit_records(recs, Path(data_dir))
    recs = audit["_records"]
    grouped = merge_groups(len(recs), None, audit["_near_group_indices"])
    own = np.arange(len(recs))
    rows, sources = [], {}
    title = f"Multi-attention LinkNet + DCNNIMAF: paper vs ours ({tag}{', SYNTHETIC DATA' if synthetic else ''})"
    for proto in cfg.protocols:
        for seed in cfg.seeds:
            t0 = time.time()
            row, show = run_protocol(proto, cfg, recs, own if proto == "random" else grouped, out, seed)
            row["wall_time_s"] = round(time.time() - t0, 1)
            row["synthetic"] = synthetic
            rows.append(row)
            print(f"[dcnnimaf] {proto} seed {seed}{' SYNTHETIC' if synthetic else ''}: Dice(lesion) "
                  f"{row['dice_lesion']:.4f} accuracy {row['accuracy']:.4f} F1 {row['f1_macro']:.4f}", flush=True)
            if seed == cfg.seeds[0]:
                plot_confusion_matrix(np.array(row["confusion_matrix"]), CLASSES,
                                      out / "plots" / f"confusion_{proto}.png",
                                      title=f"{proto}{' (SYNTHETIC)' if synthetic else ''}")
                imgs, truth, pred, names, pick = show
                plot_segmentation_overlays(imgs[pick, ..., 0], truth[pick], pred[pick],
                                           out / "plots" / f"overlays_{proto}.png",
                                           titles=[f"{names[i]}{' SYNTHETIC' if synthetic else ''}" for i in pick])
        rs = [r for r in rows if r["protocol"] == proto]
        src = {}
        for k in ("dice_lesion", "iou_lesion", "pixel_accuracy", "accuracy", "f1_macro", "precision_macro",
                  "recall_macro"):
            v = float(np.mean([r[k] for r in rs]))
            ci = rs[0].get(f"{k}_ci") if len(rs) == 1 else None
            src[k] = (v, *ci) if ci else (v,)
        sources[f"ours: {proto}{' (SYNTHETIC)' if synthetic else ''}"] = src
        # tables after every protocol, so an interrupted run keeps what it finished
        meta = {**rec.snapshot(), "synthetic": synthetic, "protocols_done": list(dict.fromkeys(
            r["protocol"] for r in rows))}
        write_table(out, "comparison", comparison_rows(PAPER, sources), kind="comparison", title=title, meta=meta,
                    description=DESCRIPTION)
        flat = [{k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in r.items()} for r in rows]
        write_table(out, "runs", flat, title=f"Every run ({tag})", meta=meta)
    rec.finish(n_runs=len(rows))
    print((out / "comparison.md").read_text())
    if synthetic:
        print("[dcnnimaf] These results are SYNTHETIC. To run on BUSI: download Dataset_BUSI_with_GT (Al-Dhabyani "
              "et al., Data in Brief 2020), then: python reproductions/dcnnimaf.py --data-dir PATH/busi --profile cpu")
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
