"""Reproduce the six-backbone transfer-learning study of brain tumour MRI (Cancers 17(1):121, 2025).

    python reproductions/brain_tumor_transfer.py --profile cpu --data-dir $MEDATTN_DATA_DIR/brain_tumor_mri
    python reproductions/brain_tumor_transfer.py --profile smoke --data-dir ...   # two small backbones (profiles: below)
    python reproductions/brain_tumor_transfer.py --profile paper --weights imagenet   # the paper's protocol (GPU)
    python reproductions/brain_tumor_transfer.py --profile paper --dry-run --data-dir ...   # proves it runs (CPU)

Data: ``--data-dir`` (the ``brain_tumor_mri`` folder, or the release folder inside it), default
``$MEDATTN_DATA_DIR/brain_tumor_mri``: ``Training/<class>`` and ``Testing/<class>``, four classes (glioma,
meningioma, notumor, pituitary).

Protocol (``docs/papers.md`` section 4; where we depart, the profile says so and the results record it):

* Xception, MobileNetV2, InceptionV3, ResNet50, VGG16 and DenseNet121 from the backbone registry, each with its
  own preprocessing and the paper's head (GAP -> Dropout 0.3 -> Dense 256 ReLU -> Dropout 0.3 -> softmax 4:
  :func:`medattn.models.transfer.build_transfer_classifier`); augmentation rotation +-15 degrees, zoom 0.1,
  horizontal flip, brightness.
* With ImageNet weights two phases: stage ``frozen`` trains the head on the frozen backbone, stage ``train``
  unfreezes the top ``unfreeze_fraction`` of the backbone's layers (BatchNorm kept frozen) at a lower rate. Without
  them (the cpu profile) stage ``frozen`` has 0 epochs and ``train`` trains everything from scratch.
* ``Training`` is split 85/15 into train and validation, stratified and with every near-duplicate group of the
  audit inside one part; the checkpoint with the best validation loss is kept; the "best backbone" (Grad-CAM) is
  the one with the best validation accuracy, never chosen on a test set.
* Every trained model is evaluated on two test sets side by side: the official ``Testing`` folder, and the same
  folder without every test image whose exact or near-duplicate group (the leakage audit, pHash <= 6 bits of 64)
  contains a ``Training`` image. Their sizes are in the tables.
* Metrics: top-1 accuracy; the paper's "weighted accuracy" (support-weighted mean of the per-class one-vs-rest
  accuracies, which counts every true negative of every class and so sits far above top-1 when there are four
  classes: it is probably what the paper's 98.73 % is); precision, recall, F1 macro and weighted; per-class
  recall; macro one-vs-rest AUC; ECE; 95 % bootstrap intervals over test images.

Everything else (command line, strategy, checkpoints, resume, records, dry run) is the shared runner's
(:mod:`medattn.runner.reproduction`); this file holds only what is particular to the paper.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np

from medattn.runner.reproduction import Reproduction, RunSpec, UserError, check_augmentation, flat_rows
from medattn.runner.reproduction import main as run_reproduction
from medattn.training import ExperimentConfig, Stage

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
BACKBONES = ("xception", "mobilenetv2", "inceptionv3", "resnet50", "vgg16", "densenet121")
LARGE_INPUT = ("xception", "inceptionv3")
# the paper's best model (Xception); it gives no per-backbone table we can read these metrics from for the others
PAPER = {"xception": {"weighted_accuracy": 0.9873, "f1_weighted": 0.9529}}
METRICS = ("accuracy", "weighted_accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
           "recall_weighted", "f1_weighted", *(f"recall_{c}" for c in CLASSES), "roc_auc", "ece")
CI_METRICS = ("accuracy", "weighted_accuracy", "f1_macro")
TEST_SETS = ("official", "dedup")


@dataclasses.dataclass(frozen=True)
class BrainConfig(ExperimentConfig):
    name: str = "brain_tumor_transfer"
    stages: tuple[Stage, ...] = (
        Stage("frozen", epochs=10, batch_size=32, learning_rate=1e-3, image_size=224, schedule="constant"),
        Stage("train", epochs=20, batch_size=32, learning_rate=1e-5, image_size=224, schedule="constant",
              patience=5),
    )
    backbones: tuple[str, ...] = BACKBONES
    ARM_FIELDS: ClassVar[tuple[str, ...]] = ("backbones",)
    large_input_size: int = 299  # Xception and InceptionV3 get at least this (the paper's 299); 0: no minimum
    unfreeze_fraction: float = 0.3  # stage "train" with pretrained weights: top fraction of backbone layers
    val_fraction: float = 0.15
    max_per_class: int = 0  # per class and split; 0: every image (smoke profile: a few)
    n_boot: int = 1000
    gradcam_per_class: int = 2
    # test-time augmentation: none or flip (class probabilities averaged over the image and its mirror image; the
    # models train with horizontal flips). It changes only the evaluation, so --resume --out NEW with the same
    # --runs-dir evaluates finished checkpoints with it instead of training again
    tta: str | None = None
    # label smoothing of the training loss (medattn.losses.SmoothedSparseCategoricalCrossentropy); None: the plain
    # sparse categorical cross-entropy, as every committed run so far
    label_smoothing: float | None = None
    # random translation added to the training augmentation, +- this fraction of the size in x and y (one warp with
    # the rotation and zoom); None: none, as every committed run so far
    translate: float | None = None
    # the training augmentation's random rotation (+- fraction of a full turn, as mias_fusion's and the augmenter's:
    # 15 degrees = 15/360) and zoom (+- fraction of the size); None: the paper's 15 degrees and 0.1, as every
    # committed run so far; 0 turns either off (both 0: flips and brightness only)
    rotation: float | None = None
    zoom: float | None = None
    # the rest of the training augmentation (medattn.datasets.pipeline.augmenter's arguments)
    augment: dict = dataclasses.field(default_factory=lambda: {"flip": "horizontal", "brightness": 0.1})
    IDENTITY_IF_CHANGED: ClassVar[tuple[str, ...]] = ("augment",)
    # knowledge distillation (medattn.losses.DistillationLoss): prediction files (predictions/<run>.npz) of earlier
    # runs of this script on the same data and split, whose class probabilities on the train images
    # (train_names/train_prob), softened with distill_temperature and averaged over the files, are a soft target
    # beside the labels; None: plain labels, as every committed run so far
    teachers: tuple[str, ...] | None = None
    distill_temperature: float | None = None  # with teachers; None: 4
    distill_weight: float | None = None  # the soft term's share, with teachers; None: 0.9
    # "i/k": a cross-fitting teacher, trained on the train part without fold i of k (stratified, duplicate groups
    # whole, the same folds for every i) and scoring fold i, which it never saw (heldout_names/heldout_prob in its
    # prediction file); k such teachers give every train image a held-out soft target. None: the whole train part
    teacher_fold: str | None = None
    IDENTITY_IF_SET: ClassVar[tuple[str, ...]] = ("tta", "label_smoothing", "translate", "rotation", "zoom",
                                                  "teachers",
                                                  "distill_temperature", "distill_weight", "teacher_fold",
                                                  "precise_bn")
    EVAL_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("tta",)
    # stage "train"'s BatchNorm momentum (the smoke and cpu profiles' 0.9: from scratch, each backbone's own 0.99 or
    # 0.999 lags so far behind the weights that the first cpu run's Xception had validation accuracy 0.23-0.33 at
    # training accuracy 0.67-0.81 over its first three epochs; the paper profile fine-tunes with BatchNorm frozen)
    # and precise BatchNorm statistics over the train images (off in every committed table) keep their names
    STAGE_FIELD_NAMES: ClassVar[Mapping[str, str]] = {"bn_momentum": "train.bn_momentum",
                                                      "precise_bn": "train.precise_bn"}


PROFILE_NOTES = {
    "smoke": "what the tests run: MobileNetV2 and VGG16, one epoch, 32 px",
    "cpu": "our committed table: six backbones, one seed, 12 epochs at 64 px (Xception 80 px), from scratch",
    "paper": "the paper's protocol for GPU/TPU: six ImageNet backbones at 224 px, 10 frozen then 20 fine-tuning "
             "epochs",
}

PROFILES = {
    "smoke": BrainConfig(profile="smoke", backbones=("mobilenetv2", "vgg16"), large_input_size=0,
                         stages=(Stage("frozen", epochs=0, batch_size=8, learning_rate=1e-3, image_size=32),
                                 Stage("train", epochs=1, batch_size=8, learning_rate=1e-3, image_size=32,
                                       bn_momentum=0.9)),
                         max_per_class=8, n_boot=50, gradcam_per_class=1),
    # from scratch on 2 cores: 64 px (80 for Xception and InceptionV3, whose Keras builders refuse less than 71
    # and 75), 12 epochs. Measured training speed in bf16 on the 2-core Xeon (batch 32): MobileNetV2 126 img/s,
    # ResNet50 55, VGG16 33, DenseNet121 62 at 64 px; Xception 47, InceptionV3 82 at 80 px: about 9 min per epoch
    # for the six, about 2 h in all. At 96 px the six need 15 min per epoch (8 epochs in 2 h).
    # auto: bf16 where native, but MobileNetV2 in float32 on a CPU with AVX512_BF16 and no AMX (0.71x in bf16 there:
    # benchmarks/results/precision_epyc.md); the committed table ran all six in bf16 on an AMX Xeon
    "cpu": BrainConfig(profile="cpu", large_input_size=80, mixed_precision="auto",
                       stages=(Stage("frozen", epochs=0, batch_size=32, learning_rate=1e-3, image_size=64),
                               Stage("train", epochs=12, batch_size=32, learning_rate=1e-3, image_size=64,
                                     cosine_alpha=0.02, patience=6, bn_momentum=0.9))),
    "paper": BrainConfig(profile="paper", weights="imagenet"),
}


def _precision_model(cfg: BrainConfig, backbone: str) -> tuple[str, int]:
    """The model as :mod:`medattn.training.precision` names it (``--mixed-precision auto``)."""
    return f"brain_tumor_transfer:{backbone}", image_size(cfg, backbone)


def image_size(cfg: BrainConfig, backbone: str) -> int:
    """The input size of ``backbone``: the stages' size (``--image-size``), and at least ``large_input_size`` for
    Xception and InceptionV3."""
    size = cfg.stage("train").image_size
    return max(size, cfg.large_input_size) if backbone in LARGE_INPUT else size


def _decode(recs, size: int) -> np.ndarray:
    """Every image decoded (3 channels: greyscale files are repeated), resized once, kept as uint8."""
    from medattn.datasets.pipeline import image_dataset

    xs = [np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8)
          for x, _ in image_dataset(recs, size, 64, channels=3, cache=False)]
    return np.concatenate(xs)


def load_data(ctx) -> dict:
    """Training and Testing records after the audit, their duplicate groups, the leak-free test subset, the
    train/val split and the decoded images at every size the backbones need."""
    from medattn.datasets import brain_mri_records, merge_groups, validation_part

    cfg = ctx.cfg
    ctx.class_names = list(CLASSES)
    recs = brain_mri_records(ctx.data.path)
    per = 6 if ctx.dry_run else cfg.max_per_class
    if per:
        recs = [r for s in ("train", "test") for c in range(len(CLASSES))
                for r in [r for r in recs if r.split == s and r.label == c][:per]]
    t0 = time.time()
    audit = ctx.audit(recs, ctx.data.path)
    recs = audit["_records"]
    groups = merge_groups(len(recs), None, audit["_near_group_indices"])
    split = np.array([r.split for r in recs])
    labels = np.array([r.label for r in recs])
    train_groups = set(groups[split == "train"].tolist())
    test_idx = np.flatnonzero(split == "test")
    leaky = np.array([groups[i] in train_groups for i in test_idx])
    tr_idx = np.flatnonzero(split == "train")
    train, val = validation_part(labels, groups, tr_idx, cfg.val_fraction, seed=0)
    ctx.log(f"audit and split in {time.time() - t0:.0f} s: Training {len(tr_idx)} (train {len(train)}, "
            f"val {len(val)}, groups kept whole); Testing {len(test_idx)} official, "
            f"{int((~leaky).sum())} after removing {int(leaky.sum())} with a duplicate in Training")
    ctx.profile_inputs(files=[recs[i].path for i in tr_idx])  # on every saved model's card: medattn-predict compares
    sizes = sorted({image_size(cfg, b) for b in cfg.backbones})
    t0 = time.time()
    x = {s: _decode(recs, s) for s in sizes}
    ctx.log(f"decoded {len(recs)} images at {', '.join(f'{s} px' for s in sizes)} once ({time.time() - t0:.0f} s)")
    return {"recs": recs, "x": x, "y": labels, "train": train, "val": val,
            "test": test_idx, "dedup": test_idx[~leaky], "n_leaky": int(leaky.sum()), "groups": groups}


def plan(cfg: BrainConfig) -> list[RunSpec]:
    return [RunSpec(b, seed) for b in cfg.backbones for seed in cfg.seeds]


def _weighted_accuracy(t, p, n=len(CLASSES)) -> float:
    from medattn.evaluation.classification import confusion_matrix, one_vs_rest_accuracy

    cm = confusion_matrix(t, p, n)
    support = cm.sum(axis=1)
    return float(np.sum(one_vs_rest_accuracy(cm) * support) / support.sum())


def _metrics(y, prob, n_boot, seed) -> dict:
    from medattn.evaluation import bootstrap_ci, classification_metrics
    from medattn.evaluation.classification import macro_f1

    m = classification_metrics(y, prob, class_names=list(CLASSES))
    out = {k: m[k] for k in METRICS}
    out["n"] = int(len(y))
    out["confusion_matrix"] = m["confusion_matrix"]
    fns = {"accuracy": lambda t, p: float(np.mean(t == p.argmax(1))),
           "weighted_accuracy": lambda t, p: _weighted_accuracy(t, p.argmax(1)),
           "f1_macro": lambda t, p: macro_f1(t, p, len(CLASSES))}
    for k in CI_METRICS:
        out[f"{k}_ci"] = list(bootstrap_ci(fns[k], y, prob, n_boot=n_boot, seed=seed)[1:])
    return out


def _phase(ctx, model, stage, name, data, run, pre, aug, fraction):
    """Compile ``model`` for ``stage`` with the top ``fraction`` of the backbone trainable, then fit."""
    from medattn.datasets.pipeline import array_dataset
    from medattn.models.transfer import set_backbone_trainable

    set_backbone_trainable(model, fraction)
    loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    tr, va, y = data["train"], data["val"], data["y"]
    y_tr, y_va = y[tr], y[va]
    if ctx.cfg.label_smoothing is not None:
        from medattn.losses import SmoothedSparseCategoricalCrossentropy

        loss = SmoothedSparseCategoricalCrossentropy(label_smoothing=ctx.cfg.label_smoothing)
    if ctx.cfg.teachers is not None:
        from medattn.losses import DistillationLoss, pack_targets, packed_accuracy

        t, w = distillation(ctx.cfg)
        loss, metrics = DistillationLoss(temperature=t, weight=w), [packed_accuracy()]
        # validation rows carry no soft target: their loss is the plain cross-entropy the checkpoint is chosen on
        y_tr, y_va = pack_targets(y_tr, teacher_targets(ctx, data)), pack_targets(y_va, None, len(CLASSES))
    model = ctx.build(lambda: model, stage, len(data["train"]), loss, metrics)
    x = data["x"][image_size(ctx.cfg, run.arm)]
    val = array_dataset(x[va], y_va, 64, preprocess=pre)
    return model, ctx.fit(model, lambda e: array_dataset(x[tr], y_tr, stage.batch_size, shuffle=True, seed=run.seed,
                                                         epoch=e, augment=aug, preprocess=pre),
                          stage, ctx.run_dir(run) / name, label=f"{run.arm} s{run.seed} {name}", validation_data=val,
                          monitor="val_loss", mode="min")


def distillation(cfg: BrainConfig) -> tuple[float, float]:
    """The temperature and soft-term weight of distillation (defaults 4 and 0.9, Hinton et al.'s range)."""
    t = 4.0 if cfg.distill_temperature is None else cfg.distill_temperature
    return t, 0.9 if cfg.distill_weight is None else cfg.distill_weight


def _rel_names(recs, idx) -> np.ndarray:
    """``<split folder>/<class>/<file>`` of ``recs[idx]``, the names prediction files use."""
    return np.array(["/".join(Path(recs[i].path).parts[-3:]) for i in idx])


def parse_fold(spec: str) -> tuple[int, int]:
    """``"i/k"`` -> ``(i, k)`` with 1 <= i <= k and k >= 2; ValueError otherwise."""
    try:
        i, k = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ValueError(f"teacher_fold must be i/k (fold i of k, e.g. 1/2), got {spec!r}") from None
    if k < 2 or not 1 <= i <= k:
        raise ValueError(f"teacher_fold {spec!r}: needs k >= 2 and 1 <= i <= k")
    return i, k


def fold_data(cfg: BrainConfig, data: dict) -> dict:
    """``data`` for a cross-fitting teacher (``teacher_fold`` i/k): ``train`` without fold i of the train part's k
    stratified group folds (:func:`medattn.datasets.kfold_split`, seed 0: the same folds for every i), and
    ``heldout``, fold i. Without ``teacher_fold``: ``data`` itself."""
    if cfg.teacher_fold is None:
        return data
    from medattn.datasets.splits import kfold_split

    i, k = parse_fold(cfg.teacher_fold)
    tr = data["train"]
    fold = kfold_split(data["y"][tr], data["groups"][tr], k, seed=0)[i - 1]
    return {**data, "train": tr[fold["train"]], "heldout": tr[fold["test"]]}


def teacher_targets(ctx, data: dict) -> np.ndarray:
    """The soft targets of the train images, in the order of ``data["train"]``: per image, the teachers'
    probabilities softened with the temperature (:func:`medattn.losses.soften`) and averaged over the teachers that
    give one. A cross-fitting teacher (``teacher_fold``) gives only its held-out fold's (``heldout_prob``), any
    other its own train images' (``train_prob``). Computed once per process. A teacher is refused (UserError naming
    the file) if any validation or test image of this run is among the images it trained on (it would leak them
    into the student), and the teachers together must cover every train image."""
    from medattn.losses import soften

    if "_soft" in data:
        return data["_soft"]
    train = _rel_names(data["recs"], data["train"])
    held_out = set(_rel_names(data["recs"], data["val"]).tolist()) | set(
        _rel_names(data["recs"], data["test"]).tolist())
    t, _ = distillation(ctx.cfg)
    total, count = np.zeros((len(train), len(CLASSES))), np.zeros(len(train))
    for f in ctx.cfg.teachers:
        p = np.load(f)
        if "train_prob" not in p.files:
            raise UserError(f"teachers: {f} has no train_prob (prediction files hold the train images' "
                            "probabilities since distillation was added; evaluate the teacher's checkpoint again "
                            "with --resume and a new --out)")
        seen = sorted(held_out.intersection(str(n) for n in p["train_names"]))
        if seen:
            raise UserError(f"teachers: {f} trained on {len(seen)} of this run's validation or test images "
                            f"(first: {seen[0]}); a teacher must share this run's split")
        part = "heldout" if "heldout_prob" in p.files else "train"
        prob = p[f"{part}_prob"]
        if prob.shape[1] != len(CLASSES):
            raise UserError(f"teachers: {f} has {prob.shape[1]} classes, not {len(CLASSES)}")
        pos = {str(n): i for i, n in enumerate(p[f"{part}_names"])}
        have = np.array([n in pos for n in train])
        total[have] += soften(prob[[pos[n] for n in train[have]]], t)
        count[have] += 1
    if not count.all():
        missing = train[count == 0]
        raise UserError(f"teachers: {len(missing)} of the {len(train)} train images have no teacher probabilities "
                        f"(first: {missing[0]}); cross-fitting teachers need every fold (teacher_fold 1/k ... k/k)")
    data["_soft"] = (total / count[:, None]).astype(np.float32)
    data["_teachers_train_accuracy"] = agree = float(np.mean(data["_soft"].argmax(1) == data["y"][data["train"]]))
    ctx.log(f"distillation: {len(ctx.cfg.teachers)} teacher(s), temperature {t:g}; their averaged top-1 on the "
            f"{len(train)} train images {agree:.4f}")
    return data["_soft"]


def augmentation(cfg: BrainConfig) -> dict:
    """The training augmentation (:func:`medattn.datasets.pipeline.augmenter` arguments): rotation +-15 degrees,
    zoom 0.1 (or ``rotation``/``zoom`` where set), ``augment`` (horizontal flips, brightness 0.1), and translation
    when ``translate`` is set."""
    aug = {"rotation": 15 / 360 if cfg.rotation is None else cfg.rotation, "zoom": 0.1 if cfg.zoom is None else cfg.zoom,
           **cfg.augment}
    if cfg.translate is not None:
        aug["translate"] = cfg.translate
    return aug


def run_backbone(ctx, run: RunSpec, data: dict) -> dict:
    from medattn.backbones import preprocess_fn, preprocessing_for

    cfg, backbone = ctx.cfg, run.arm
    data = fold_data(cfg, data)
    size = image_size(cfg, backbone)
    pre = preprocess_fn(preprocessing_for(backbone, cfg.pretrained))
    t0 = time.time()
    model, history = _train_backbone(ctx, run, data, size, pre)
    train_s = time.time() - t0
    x = data["x"][size]
    bn = ctx.precise_bn(model, cfg.stage("train"), x, rows=data["train"], seed=run.seed, preprocess=pre,
                        label=f"{backbone} s{run.seed}")
    pred = _backbone_predictions(ctx, model, data, x, pre)
    row = _backbone_row(cfg, run, data, model, history, train_s, size, pred, bn)
    _save_backbone_outputs(ctx, run, model, data, x, pre, pred, row, size)
    ctx.log(f"{backbone} seed {run.seed}{ctx.mark}: top-1 official {row['official_accuracy']:.4f} "
            f"de-duplicated {row['dedup_accuracy']:.4f} (val {row['val_accuracy']:.4f}; {train_s:.0f} s)")
    return row


def _train_backbone(ctx, run: RunSpec, data: dict, size: int, pre):
    """The classifier built and trained: with pretrained weights a frozen phase first,
    then the top ``unfreeze_fraction`` of the backbone; from scratch, everything. Returns (model, histories)."""
    from medattn.models.transfer import build_transfer_classifier

    cfg, backbone = ctx.cfg, run.arm
    aug = augmentation(cfg)
    ctx.seed(run.seed)
    with ctx.scope(), ctx.precision_scope(*_precision_model(cfg, backbone)):
        model = build_transfer_classifier(backbone, size, len(CLASSES), weights=cfg.pretrained)
    history = {}
    frozen, train = cfg.stage("frozen"), cfg.stage("train")
    if frozen.epochs > 0:
        model, history["frozen"] = _phase(ctx, model, frozen, "frozen", data, run, pre, aug, 0.0)
    fraction = cfg.unfreeze_fraction if cfg.pretrained is not None else 1.0
    model, history["train"] = _phase(ctx, model, train, "train", data, run, pre, aug, fraction)
    return model, history


def _backbone_predictions(ctx, model, data: dict, x, pre) -> dict:
    """Validation and test probabilities (with the run's TTA), the train images' (no augmentation, no TTA: what a
    later run distils from) and, for a cross-fitting teacher, the fold it never saw."""
    from medattn.datasets.pipeline import array_dataset
    from medattn.evaluation import tta_predict

    y = data["y"]

    def plain(idx):
        return ctx.predict(model, array_dataset(x[idx], None, 64, preprocess=pre), 64)

    def probs(idx):
        return tta_predict(lambda v: ctx.predict(model, array_dataset(v, None, 64, preprocess=pre), 64), x[idx],
                           ctx.cfg.tta)

    pv, pt, ptr = probs(data["val"]), probs(data["test"]), plain(data["train"])
    heldout = {}
    if "heldout" in data:  # a cross-fitting teacher: the fold it never saw
        h = data["heldout"]
        heldout = {"heldout_names": _rel_names(data["recs"], h), "heldout_y": y[h], "heldout_prob": plain(h)}
    return {"val": pv, "test": pt, "train": ptr, "heldout": heldout, "dedup": np.isin(data["test"], data["dedup"])}


def _backbone_row(cfg, run: RunSpec, data: dict, model, history: dict, train_s: float, size: int, pred: dict,
                  bn) -> dict:
    """One backbone's row: how it trained, validation accuracy, and every metric on the official and the
    de-duplicated test sets."""
    from medattn.training.fit import training_seconds

    y, pv, pt, keep = data["y"], pred["val"], pred["test"], pred["dedup"]
    aug = augmentation(cfg)
    row = {"backbone": run.arm, "seed": run.seed, "image_size": size, "weights": cfg.weights,
           "params": int(model.count_params()), "train_time_s": round(train_s, 1),
           # every epoch of the model, over all processes of a resumed run (train_time_s: this process only;
           # resumed_from says where it took over)
           "epochs_run": sum(len(h["history"]) for h in history.values()),
           "resumed_from": {k: h["resumed_from"] for k, h in history.items() if h["resumed_from"]} or None,
           "train_time_all_epochs_s": round(sum(training_seconds(h["history"]) for h in history.values()), 1),
           "best_epoch": history["train"]["best_epoch"], "val_accuracy": float(np.mean(pv.argmax(1) == y[data["val"]])),
           "n_val": int(len(data["val"])), "n_test_official": int(len(pt)), "n_test_dedup": int(keep.sum()),
           "tta": cfg.tta or "none", "label_smoothing": cfg.label_smoothing or 0.0, "translate": cfg.translate or 0.0,
           "rotation": aug["rotation"], "zoom": aug["zoom"],  # fractions (of a turn, of the size)
           "weight_decay": cfg.stage("train").weight_decay,  # stage "train"; "frozen": config.json
           "ema": cfg.stage("train").ema, "precise_bn": cfg.stage("train").precise_bn}
    if bn is not None:
        row["precise_bn_layers"], row["precise_bn_images"] = bn["layers"], bn["images"]
    if cfg.teachers is not None:
        from medattn.utils import file_sha256

        row["distill_temperature"], row["distill_weight"] = distillation(cfg)
        row["teachers"] = [{"file": str(f), "sha256": file_sha256(f)} for f in cfg.teachers]
        row["teachers_train_accuracy"] = data["_teachers_train_accuracy"]  # their averaged soft target's top-1
    if cfg.teacher_fold is not None:
        heldout = pred["heldout"]
        row["teacher_fold"], row["n_train"] = cfg.teacher_fold, int(len(data["train"]))
        row["heldout_accuracy"] = float(np.mean(heldout["heldout_prob"].argmax(1) == heldout["heldout_y"]))
    for name, mask in (("official", np.ones(len(pt), bool)), ("dedup", keep)):
        for k, v in _metrics(y[data["test"]][mask], pt[mask], cfg.n_boot, run.seed).items():
            row[f"{name}_{k}"] = v
    return row


def _save_backbone_outputs(ctx, run: RunSpec, model, data: dict, x, pre, pred: dict, row: dict, size: int) -> None:
    """The saved model with its card, the prediction file, and Grad-CAM on the first de-duplicated test images of
    each class (the same images for every backbone)."""
    from medattn.backbones import preprocessing_for
    from medattn.evaluation.saliency import grad_cam, plot_grad_cam
    from medattn.models.transfer import last_feature_layer

    cfg, backbone, y, pt, keep = ctx.cfg, run.arm, data["y"], pred["test"], pred["dedup"]
    ctx.save_model(model, run, backbone, kind="classifier", input_size=size,
                   preprocessing=preprocessing_for(backbone, cfg.pretrained), class_names=list(CLASSES),
                   threshold=None, mc_dropout=False, tta=cfg.tta,
                   metrics={k: row[k] for k in ("val_accuracy", "official_accuracy", "dedup_accuracy", "n_test_dedup")})
    names = _rel_names(data["recs"], data["test"])  # Testing/<class>/file
    np.savez(ctx.prediction_file(run.arm, run.seed), names=names, y_true=y[data["test"]], prob=pt, dedup=keep,
             val_names=_rel_names(data["recs"], data["val"]), val_y=y[data["val"]], val_prob=pred["val"],
             train_names=_rel_names(data["recs"], data["train"]), train_y=y[data["train"]], train_prob=pred["train"],
             **pred["heldout"])
    pick = [int(i) for c in range(len(CLASSES))
            for i in np.flatnonzero((y[data["test"]] == c) & keep)[:cfg.gradcam_per_class]]
    if pick and run.seed == cfg.seeds[0]:
        idx = data["test"][pick]
        cams = grad_cam(model, np.asarray(pre(x[idx].astype("float32"))), last_feature_layer(model))
        titles = [f"{names[i]}\ntrue {CLASSES[y[data['test']][i]]}, pred {CLASSES[int(pt[i].argmax())]} "
                  f"{pt[i].max():.2f}" for i in pick]
        plot_grad_cam(x[idx], cams, ctx.out / "plots" / f"gradcam_{backbone}.png", titles=titles,
                      title=f"Grad-CAM {backbone} ({last_feature_layer(model)}){ctx.mark}")


def _source(cfg, ts: str, n: int, mark: str) -> str:
    label = "official Testing" if ts == "official" else "de-duplicated Testing"
    return f"ours ({cfg.profile}{mark}): {label} (n={n})"


def seed_ensembles(ctx, rows) -> list[dict]:
    """One row per backbone trained with several seeds: the seed ensemble (class probabilities averaged over the
    seeds' prediction files) scored like a single model on validation and both test sets, beside the seeds' mean
    validation accuracy. A backbone whose prediction files are missing or older than the validation
    probabilities is logged and has no ensemble validation figure."""
    from medattn.evaluation import seed_ensemble, seed_groups

    out = []
    for b, rs, files in seed_groups(rows, "backbone", ctx.prediction_file,
                                    ctx.log):
        ens = seed_ensemble(files, [("prob", "names", "y_true"), ("val_prob", "val_names", "val_y")])
        keep = np.load(files[0])["dedup"]
        row = {"backbone": b, "image_size": rs[0]["image_size"], "seeds": ", ".join(str(r["seed"]) for r in rs),
               "n_seeds": len(rs), "val_accuracy_seed_mean": float(np.mean([r["val_accuracy"] for r in rs])),
               "val_accuracy": None, "n_val": rs[0]["n_val"]}
        if ens["val_prob"] is None:
            ctx.log(f"! seed ensemble of {b}: a prediction file has no validation probabilities (written before "
                    "they were saved); its validation accuracy is left empty")
        else:
            row["val_accuracy"] = float(np.mean(ens["val_prob"].argmax(1) == ens["val_y"]))
        for name, mask in (("official", np.ones(len(keep), bool)), ("dedup", keep)):
            m = _metrics(ens["y_true"][mask], ens["prob"][mask], ctx.cfg.n_boot, ctx.cfg.seeds[0])
            row[f"n_test_{name}"] = int(mask.sum())
            for k, v in m.items():
                if k not in ("n", "confusion_matrix"):
                    row[f"{name}_{k}"] = v
        out.append(row)
    return out


def report(ctx, rows, final: bool) -> None:

    cfg, out, mark = ctx.cfg, ctx.out, ctx.mark
    meta = ctx.meta
    ensembles = {e["backbone"]: e for e in seed_ensembles(ctx, rows)}
    n_off, n_dd = rows[0]["n_test_official"], rows[0]["n_test_dedup"]
    ctx.write_comparison(_comparison(cfg, rows, ensembles, mark), meta=meta,
                         title=f"Brain tumour MRI, six backbones: paper vs ours ({cfg.profile} profile){mark}",
                         description=f"Four classes; test sets: the official Testing folder ({n_off} images) and the same "
                                     f"folder without every image whose exact or near-duplicate group contains a Training "
                                     f"image ({n_dd} images). Weighted accuracy = support-weighted mean of per-class "
                                     "one-vs-rest accuracies (counts true negatives of every class; probably the paper's "
                                     "'accuracy'). The paper reports Xception's weighted accuracy and weighted F1 only. "
                                     "Brackets: one seed, 95 % bootstrap over test images; several seeds, mean +- "
                                     "t(0.975, n-1) standard errors over seeds (accuracy, weighted accuracy, F1 macro; the "
                                     "other metrics are plain means); a seed ensemble, bootstrap over test images. "
                                     + ("ImageNet weights, two phases." if cfg.weights == "imagenet" else
                                        "Trained from scratch (no ImageNet weights offline)." if cfg.weights == "none" else
                                        f"Pretrained weights ({meta.get('weights_source') or cfg.weights}), the top "
                                        f"{cfg.unfreeze_fraction:g} of the backbone fine-tuned."))
    _side_tables(ctx, rows, ensembles)
    _backbone_plots(ctx, rows, final)
    best = max(rows, key=lambda r: r["val_accuracy"])
    if final:
        ctx.log(f"best backbone on validation accuracy: {best['backbone']} ({best['val_accuracy']:.4f}); Grad-CAM: "
                f"plots/gradcam_{best['backbone']}.png")
        print((out / "summary.md").read_text())


def _comparison(cfg, rows, ensembles: dict, mark: str) -> list[tuple]:
    """Paper vs ours per backbone on both test sets, as the runner's comparison blocks: one seed, the value and its
    bootstrap interval; several, the mean over seeds (with the t interval over seeds for CI_METRICS); a seed
    ensemble beside them."""
    from medattn.evaluation import seed_cell, seeds_mark

    comp = []
    for b in dict.fromkeys(r["backbone"] for r in rows):
        rs = [r for r in rows if r["backbone"] == b]
        sources, ens_sources = {}, {}
        for ts in TEST_SETS:
            # one seed: the value and its bootstrap interval; several: the mean over seeds and, for CI_METRICS,
            # the t interval over seeds
            sources[_source(cfg, ts, rs[0][f"n_test_{ts}"], mark)] = {
                k: seed_cell(rs, f"{ts}_{k}") if len(rs) == 1 or k in CI_METRICS
                else (float(np.mean([r[f"{ts}_{k}"] for r in rs])),) for k in METRICS}
            if b in ensembles:
                e = ensembles[b]
                ens_sources[_source(cfg, ts, e[f"n_test_{ts}"], mark)] = {
                    k: (e[f"{ts}_{k}"], *e.get(f"{ts}_{k}_ci", ())) for k in METRICS}
        paper = {k: PAPER.get(b, {}).get(k) for k in METRICS}
        comp.append((f"{b} ({rs[0]['image_size']} px){seeds_mark(len(rs))}", paper, sources))
        if ens_sources:
            comp.append((f"{b} ({rs[0]['image_size']} px), ensemble{seeds_mark(len(rs))}", paper, ens_sources))
    return comp


def _side_tables(ctx, rows, ensembles: dict) -> None:
    """The summary, every run, the spread over seeds and the seed ensembles."""
    from medattn.evaluation import seed_spread, write_table

    out, mark, meta = ctx.out, ctx.mark, ctx.meta
    summary = [{k: r.get(k) for k in ("backbone", "seed", "image_size", "params", "val_accuracy", "official_accuracy",
                                      "dedup_accuracy", "official_weighted_accuracy", "dedup_weighted_accuracy",
                                      "official_f1_macro", "dedup_f1_macro", "n_test_official", "n_test_dedup",
                                      "epochs_run", "train_time_s")} for r in rows]
    write_table(out, "summary", summary, title=f"Brain tumour MRI: top-1 on both test sets{mark}", meta=meta)
    write_table(out, "runs", flat_rows(rows), title=f"Brain tumour MRI: every run{mark}", meta=meta)
    spread = seed_spread(rows, "backbone", ("val_accuracy", *(f"{ts}_{k}" for ts in TEST_SETS for k in CI_METRICS)))
    if any(r["n_seeds"] > 1 for r in spread):
        write_table(out, "seeds", spread, title=f"Brain tumour MRI: spread over seeds{mark}", meta=meta,
                    description="Per backbone trained with several seeds (same split): mean, sample sd, min and max "
                                "over seeds, the 95 % interval mean +- t(0.975, n-1) standard errors, and every "
                                "seed's value.")
    if ensembles:
        write_table(out, "ensembles", flat_rows(list(ensembles.values())),
                    title=f"Brain tumour MRI: seed ensembles{mark}", meta=meta,
                    description="Class probabilities averaged over the seeds of one backbone, scored as one model; "
                                "val_accuracy_seed_mean is the seeds' own mean on the same validation images. "
                                "Brackets (_ci): 95 % bootstrap over test images.")


def _backbone_plots(ctx, rows, final: bool) -> None:
    """Per backbone and test set (first seed): confusion matrix, ROC/PR and reliability; the accuracy bars."""
    from medattn.evaluation.plots import plot_classifier_curves, plot_confusion_matrix

    cfg, out, mark = ctx.cfg, ctx.out, ctx.mark
    for r in rows:  # per backbone and test set (first seed): confusion matrix, ROC/PR and reliability
        if r["seed"] != cfg.seeds[0]:
            continue
        # the curves from the prediction file: at the end of a process and in --report-only, not after every run
        path = ctx.prediction_file(r["backbone"], r["seed"])
        p = np.load(path) if final and path.exists() else None
        for ts in TEST_SETS:
            what = f"{r['backbone']}: {ts} Testing (n={r[f'n_test_{ts}']}){mark}"
            plot_confusion_matrix(np.array(r[f"{ts}_confusion_matrix"]), list(CLASSES),
                                  out / "plots" / f"confusion_{r['backbone']}_{ts}.png", title=what)
            if p is not None:
                keep = p["dedup"].astype(bool) if ts == "dedup" else slice(None)
                plot_classifier_curves(p["y_true"][keep], p["prob"][keep], list(CLASSES), out / "plots",
                                       f"{r['backbone']}_{ts}", title=what)
    _plot_bars(rows, out / "plots" / "accuracy_official_vs_dedup.png", mark)


def _plot_bars(rows, path, mark):
    """Official vs de-duplicated top-1 per backbone: bars at the mean over seeds, a dot for each seed when a backbone
    has several; returns what was drawn ({backbone: {test set: per-seed values}})."""
    from medattn.evaluation.plots import _plt, _save

    plt = _plt()
    names = list(dict.fromkeys(r["backbone"] for r in rows))
    drawn = {b: {ts: [r[f"{ts}_accuracy"] for r in rows if r["backbone"] == b] for ts in TEST_SETS} for b in names}
    many = max(len(v["official"]) for v in drawn.values()) > 1
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3.6))
    pos = np.arange(len(names))
    dot_label = "each seed"  # on the first dots drawn, whichever backbone has them
    for shift, ts, label in ((-0.2, "official", f"official Testing (n={rows[0]['n_test_official']})"),
                             (0.2, "dedup", f"de-duplicated (n={rows[0]['n_test_dedup']})")):
        ax.bar(pos + shift, [np.mean(drawn[b][ts]) for b in names], 0.4,
               label=label + (", mean over seeds" if many else ""))
        for i, b in enumerate(names):
            if len(drawn[b][ts]) > 1:
                ax.plot([pos[i] + shift] * len(drawn[b][ts]), drawn[b][ts], "k.", ms=4, label=dot_label)
                dot_label = None
    ax.set_xticks(pos, names, rotation=20)
    ax.set(ylabel="top-1 accuracy", ylim=(0, 1), title=f"Official vs de-duplicated test set{mark}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8)  # below the axes, off the bars
    _save(fig, path)
    return drawn


def _check(cfg: BrainConfig) -> None:
    bad = [b for b in cfg.backbones if b not in BACKBONES]
    if bad:
        raise UserError(f"backbones: {bad[0]!r} is not one of the study's {BACKBONES}")
    if cfg.stage("frozen").image_size != cfg.stage("train").image_size:
        raise UserError(f"frozen.image_size {cfg.stage('frozen').image_size} differs from train.image_size "
                        f"{cfg.stage('train').image_size}: both phases train one model at one input size "
                        "(--image-size sets both)")
    for b in cfg.backbones:
        s = image_size(cfg, b)
        low = 75 if b in LARGE_INPUT else 32
        if s < low:
            raise UserError(f"{b} needs an input of at least {low} px, got {s} (--image-size, large_input_size)")
    if cfg.weights == "none" and cfg.stage("frozen").epochs > 0 and not cfg.dry_run:
        raise UserError(f"--weights none with frozen.epochs={cfg.stage('frozen').epochs}: the frozen phase would "
                        "train a head on a random backbone; pass --set frozen.epochs=0 to train from scratch (as "
                        "the cpu profile does) or give pretrained weights")
    if not 0.0 < cfg.unfreeze_fraction <= 1.0:
        raise UserError(f"unfreeze_fraction must lie in (0, 1], got {cfg.unfreeze_fraction}")
    if not 0.0 < cfg.val_fraction < 0.5:
        raise UserError(f"val_fraction must lie in (0, 0.5), got {cfg.val_fraction}")
    if cfg.label_smoothing is not None:  # the loss's own check, before any data is read
        from medattn.losses import SmoothedSparseCategoricalCrossentropy

        try:
            SmoothedSparseCategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
        except ValueError as e:
            raise UserError(f"{e} (or none: the plain loss)") from None
    check_augmentation(augmentation=augmentation(cfg))  # the augmenter's own checks, before any data is read
    _check_distillation(cfg)
    if cfg.stage("train").precise_bn and cfg.weights != "none":
        raise UserError("precise_bn recomputes the statistics of BatchNorm layers that train; with pretrained weights "
                        "(the paper profile) the backbone's BatchNorm layers stay frozen at their pretrained "
                        "statistics, so there is nothing to recompute: use it with --weights none")
    from medattn.evaluation import tta_refusal

    if refusal := tta_refusal("tta", cfg.tta, ("flip",), "the models train with horizontal flips and small rotations, "
                              "not with quarter turns"):
        raise UserError(refusal)


def _check_distillation(cfg: BrainConfig) -> None:
    """Refusals of the teacher and distillation settings (files present, values the loss accepts)."""
    if cfg.teacher_fold is not None:
        try:
            parse_fold(cfg.teacher_fold)
        except ValueError as e:
            raise UserError(str(e)) from None
        if cfg.teachers is not None:
            raise UserError("teacher_fold and teachers together: a cross-fitting teacher trains on labels only")
    if cfg.teachers is None:
        unused = [k for k in ("distill_temperature", "distill_weight") if getattr(cfg, k) is not None]
        if unused:
            raise UserError(f"{unused[0]} is set but teachers is not: distillation needs teacher prediction files "
                            "(--set teachers=A.npz,B.npz)")
    else:
        from medattn.losses import DistillationLoss

        if not cfg.teachers:
            raise UserError("teachers: give at least one prediction file (or none: no distillation)")
        for f in cfg.teachers:
            if not Path(f).is_file():
                raise UserError(f"teachers: {f}: no such file (a predictions/<run>.npz of an earlier run)")
        try:
            DistillationLoss(*distillation(cfg))
        except ValueError as e:
            raise UserError(f"distill_{e}") from None


REPRODUCTION = Reproduction(
    profile_notes=PROFILE_NOTES, name="brain_tumor_transfer", script=__file__, description=__doc__, profiles=PROFILES, paper=PAPER,
    dataset="brain_tumor_mri", load_data=load_data, plan=plan, run_one=run_backbone, report=report,
    backbones=lambda cfg: list(cfg.backbones),
    models=lambda cfg, arm: [_precision_model(cfg, arm)],
    no_data="no data: download the Brain Tumor MRI Dataset (Nickparvar, Kaggle) and pass --data-dir "
            "PATH/brain_tumor_mri (Training/ and Testing/ inside) or set MEDATTN_DATA_DIR",
    dry_run_overrides=lambda cfg: {"n_boot": 20, "gradcam_per_class": 1}, check=_check,
    # the runner refuses a user-set unfreeze_fraction here, and leaves it out of config.json
    not_used=lambda cfg: ({"unfreeze_fraction": "it picks the pretrained layers to fine-tune; with --weights none "
                                               "every layer trains from scratch"}
                          if cfg.weights == "none" else {}),
)


def main(argv=None) -> int:
    return run_reproduction(REPRODUCTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
