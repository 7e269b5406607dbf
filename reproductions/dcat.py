"""Reproduce DCAT: EfficientNet + ResNet-34 bidirectional cross-attention with MC-dropout uncertainty (arXiv 2503.11851).

    python reproductions/dcat.py --profile cpu --data-dir $MEDATTN_DATA_DIR/pneumoniamnist --resume  # results/dcat/pneumoniamnist
    python reproductions/dcat.py --profile cpu --data-dir $MEDATTN_DATA_DIR/chest_xray --resume      # results/dcat/chest_xray
    python reproductions/dcat.py --profile smoke --data-dir ...                 # end-to-end check (profiles: below)
    python reproductions/dcat.py --profile paper --data-dir PATH --weights imagenet   # the paper's sizes (GPU)
    python reproductions/dcat.py --profile paper --dry-run --data-dir ...       # proves the paper profile runs (CPU)

Data: ``--data-dir`` names one dataset's folder; its kind is recognised from its layout: a MedMNIST ``.npz``
(PneumoniaMNIST: the official train/val/test splits), the chest X-ray layout ``<split>/{NORMAL,PNEUMONIA,COVID19,
TURBERCULOSIS}`` (Kermany + COVID-19; patient ids from the file names), the COVID-19 Radiography Database, the TB
Chest X-ray Database or OCT2017. Folders without official splits are split 70/10/20 by patient (or by file where
no id exists), stratified; OCT2017's official test set is kept and its training folder split 85/15 by patient.
Default: ``$MEDATTN_DATA_DIR/pneumoniamnist``.

Protocol (``docs/papers.md`` section 5): :func:`medattn.models.dcat.build_dcat` (EfficientNet and ResNet-34 on the
same image, 1x1 projections to d, bidirectional cross-attention, CBAM, GAP, MC dropout 0.5, softmax) and, on the
same split, the ablations: each backbone alone and both fused by concatenation without cross-attention. Class
weights balance the training loss; the checkpoint with the best validation loss is kept. Test predictions are the
mean of T MC-dropout passes (paper: T = 30); one pass is reported beside it (calibration before/after).

Tables: AUC and AUPR (the paper's metrics; macro one-vs-rest for more than two classes), accuracy, F1 macro,
sensitivity and specificity (two classes), ECE before and after MC averaging, accuracy on the 90 % / 80 % most
certain test images (the rest referred to a human), with 95 % bootstrap intervals; PneumoniaMNIST beside the
MedMNIST v2 baselines. Plots: reliability diagrams, risk-coverage curves, the highest-entropy test images, ROC/PR.

Everything else (command line, strategy, checkpoints, resume, records, dry run) is the shared runner's.
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

VARIANTS = {"dcat": "cross_attention", "concat": "concat", "a_only": "a_only", "b_only": "b_only"}
# the paper's AUC / AUPR per dataset kind (our chest_xray folder is Kermany pneumonia + COVID-19: no paper number)
PAPER = {"pneumoniamnist": {"roc_auc": 0.9993, "average_precision": 0.9997},
         "covid_radiography": {"roc_auc": 0.9975, "average_precision": 0.9981},
         "tb_chest": {"roc_auc": 1.0, "average_precision": 1.0},
         "oct2017": {"roc_auc": 0.9869, "average_precision": 0.9636}}
MEDMNIST_BASELINES = {"MedMNIST v2 ResNet-18 (28)": {"roc_auc": 0.944, "accuracy": 0.854},
                      "MedMNIST v2 ResNet-50 (224)": {"roc_auc": 0.962, "accuracy": 0.884}}
METRICS = ("roc_auc", "average_precision", "accuracy", "f1_macro", "sensitivity", "specificity", "ece",
           "ece_single_pass", "accuracy_refer_10", "accuracy_refer_20")


@dataclasses.dataclass(frozen=True)
class DcatConfig(ExperimentConfig):
    name: str = "dcat"
    stages: tuple[Stage, ...] = (Stage("train", epochs=30, batch_size=32, learning_rate=1e-4, image_size=224,
                                       patience=8),)
    backbone_a: str = "efficientnetb4"
    backbone_b: str = "resnet34"
    variants: tuple[str, ...] = tuple(VARIANTS)
    # the variants that get every seed of ``--seeds``; the others only the first (None: every variant, every seed)
    multi_seed_variants: tuple[str, ...] | None = None
    ARM_FIELDS: ClassVar[tuple[str, ...]] = ("variants", "multi_seed_variants")
    dim: int = 256
    num_heads: int = 8
    dropout: float = 0.5
    mc_passes: int = 30
    n_boot: int = 1000
    max_per_class: int = 0  # per class and split; 0: every image (smoke: a few)
    # the training augmentation (medattn.datasets.pipeline.augmenter's arguments)
    augment: dict = dataclasses.field(default_factory=lambda: {"rotation": 10 / 360, "zoom": 0.1, "flip": None,
                                                               "brightness": 0.1})
    IDENTITY_IF_CHANGED: ClassVar[tuple[str, ...]] = ("augment",)
    # the stage's BatchNorm momentum (smoke and cpu 0.9: with the backbones' own 0.99 a from-scratch run of a few
    # hundred steps leaves inference outputs unusable; the first cpu run on chest_xray had training accuracy 0.84,
    # validation accuracy 0.13) keeps its name
    STAGE_FIELD_NAMES: ClassVar[Mapping[str, str]] = {"bn_momentum": "train.bn_momentum"}


PROFILE_NOTES = {
    "smoke": "what the tests run: DCAT and one ablation, one epoch, 32 px, EfficientNetB0 + ResNet-34",
    "cpu": "our committed tables: four variants (DCAT, concatenation, each backbone alone), 15 epochs at 64 px, "
           "EfficientNetB0 + ResNet-34, from scratch",
    "paper": "the paper's sizes for GPU/TPU: EfficientNetB4 + ResNet-34 at 224 px, 30 epochs, ImageNet weights for "
             "the EfficientNet",
}

PROFILES = {
    "smoke": DcatConfig(profile="smoke", backbone_a="efficientnetb0", variants=("dcat", "a_only"), dim=32,
                        num_heads=4, mc_passes=3, n_boot=50, max_per_class=12,
                        stages=(Stage("train", epochs=1, batch_size=8, learning_rate=1e-3, image_size=32,
                                      bn_momentum=0.9),)),
    # from scratch on 2 cores: EfficientNetB0 for B4, 64 px (PneumoniaMNIST is 28 px), d = 128; no warm-up before
    # the cosine: rule W, fixed before its runs, judged it on validation loss over three seeds and dropped it
    # (results/dcat/pneumoniamnist/selection/); the committed tables were made with a one-epoch warm-up and are
    # made again without it. float32: the fastest precision for this model on both CPUs measured (bf16 emulated on
    # AVX2-only; 0.84x of float32 on an AVX512_BF16 AMD EPYC, benchmarks/results/throughput_epyc.md)
    "cpu": DcatConfig(profile="cpu", backbone_a="efficientnetb0", dim=128, num_heads=4, mixed_precision="off",
                      stages=(Stage("train", epochs=15, batch_size=32, learning_rate=1e-3, image_size=64,
                                    cosine_alpha=0.02, patience=6, bn_momentum=0.9),)),
    "paper": DcatConfig(profile="paper", weights="imagenet"),
}


# data --------------------------------------------------------------------------------------------------------------
def detect(path) -> str:
    """The dataset kind of folder ``path`` from its layout; UserError naming the layouts looked for."""
    from medattn.datasets import DatasetError
    from medattn.datasets.chest_xray import FOUR_CLASSES
    from medattn.datasets.covid_radiography import covid_radiography_records
    from medattn.datasets.oct2017 import oct_records
    from medattn.datasets.tb_chest import tb_records

    p = Path(path)
    if p.is_file() and p.suffix == ".npz" or p.is_dir() and list(p.glob("*.npz")):
        return "pneumoniamnist"
    for split in ("test", "train", "val"):
        if any((p / split / c).is_dir() for c in FOUR_CLASSES):
            return "chest_xray"
    for kind, fn in (("covid_radiography", covid_radiography_records), ("tb_chest", tb_records),
                     ("oct2017", oct_records)):
        try:
            fn(p)
            return kind
        except DatasetError:
            continue
    raise UserError(f"--data-dir {path}: not a dataset layout DCAT knows (a MedMNIST .npz; <split>/{{NORMAL,"
                    "PNEUMONIA,COVID19,TURBERCULOSIS}}; COVID-19 Radiography; TB Chest X-ray; OCT2017)")


def _resize(x, size):
    import tensorflow as tf

    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    out = [tf.image.resize(x[i:i + 256].astype("float32"), (size, size), method="bilinear").numpy()
           for i in range(0, len(x), 256)]
    return np.clip(np.rint(np.concatenate(out)), 0, 255).astype(np.uint8)


def _cap(idx, y, per):
    return idx if not per else np.concatenate([idx[y[idx] == c][:per] for c in np.unique(y[idx])])


def load_data(ctx) -> dict:
    from medattn.datasets import holdout_split, load_medmnist, merge_groups, validation_part

    cfg = ctx.cfg
    size = cfg.stage("train").image_size
    kind = detect(ctx.data.path)
    per = 6 if ctx.dry_run else cfg.max_per_class
    t0 = time.time()
    if kind == "pneumoniamnist":
        d = load_medmnist(ctx.data.path)
        xs, ys, idx, names, off = [], [], {}, [], 0
        for s in ("train", "val", "test"):
            x, y = d[s]
            keep = _cap(np.arange(len(y)), y, per)
            xs.append(x[keep])
            ys.append(y[keep])
            idx[s] = np.arange(off, off + len(keep))
            names += [f"{s}/{i}" for i in keep]
            off += len(keep)
        ctx.profile_inputs(images=d["train"][0])  # on every saved model's card: medattn-predict compares
        x, y = _resize(np.concatenate(xs), size), np.concatenate(ys).astype(int)
        classes = ["normal", "pneumonia"]
    else:
        from medattn.datasets import chest4_records, covid_radiography_records, oct_records, tb_records
        from medattn.datasets.pipeline import image_dataset

        loader = {"chest_xray": lambda p: chest4_records(p, split=_chest_split(p)), "tb_chest": tb_records,
                  "covid_radiography": lambda p: covid_radiography_records(p, with_masks=False),
                  "oct2017": oct_records}[kind]
        recs = loader(ctx.data.path)
        audit = ctx.audit(recs, ctx.data.path)
        recs = audit["_records"]
        y_all = np.array([r.label for r in recs])
        keep = _cap(np.arange(len(recs)), y_all, per * 3 if per else 0)
        recs = [recs[i] for i in keep]
        ctx.profile_inputs(files=[r.path for r in recs])
        classes = sorted({(r.label, r.label_name) for r in recs})
        ctx.class_names = dict(classes)
        classes = [n for _, n in classes]
        y = np.array([r.label for r in recs])
        # duplicate groups of the audit (its indices are those of the full list: only without a cap)
        groups = merge_groups(len(recs), [r.group for r in recs], [] if per else audit["_near_group_indices"])
        split = np.array([r.split for r in recs])
        if kind == "oct2017" and set(split) >= {"train", "test"}:
            tr = np.flatnonzero(split == "train")
            train, val = validation_part(y, groups, tr, 0.15, seed=0)
            idx = {"train": train, "val": val, "test": np.flatnonzero(split == "test")}
        else:
            idx = holdout_split(y, groups, (0.7, 0.1, 0.2), seed=0)
        xs = [np.clip(np.rint(b.numpy()), 0, 255).astype(np.uint8)
              for b, _ in image_dataset(recs, size, 64, channels=3, cache=False)]
        x = np.concatenate(xs)
        names = ["/".join(Path(r.path).parts[-2:]) for r in recs]
    ctx.log(f"{kind}: train {len(idx['train'])}, val {len(idx['val'])}, test {len(idx['test'])} images at {size} px, "
            f"classes {classes} ({time.time() - t0:.0f} s)")
    return {"kind": kind, "x": x, "y": y, "idx": idx, "classes": classes, "names": np.array(names)}


def _chest_split(path) -> str:
    from medattn.datasets.chest_xray import FOUR_CLASSES

    for split in ("test", "train", "val"):
        if any((Path(path) / split / c).is_dir() for c in FOUR_CLASSES):
            return split
    raise UserError(f"--data-dir {path}: no <split>/{{NORMAL,PNEUMONIA,...}} folder")


def _precision_model(cfg, arm: str) -> tuple[str, int]:
    """The model as :mod:`medattn.training.precision` names it (``--mixed-precision auto``): the benchmark timed the
    cpu profile's EfficientNetB0 + ResNet-34 pair, so another pair has another name."""
    pair = "" if (cfg.backbone_a, cfg.backbone_b) == ("efficientnetb0", "resnet34") else \
        f"{cfg.backbone_a}+{cfg.backbone_b}:"
    return f"dcat:{pair}{VARIANTS[arm]}", cfg.stage("train").image_size


def plan(cfg: DcatConfig) -> list[RunSpec]:
    multi = cfg.variants if cfg.multi_seed_variants is None else cfg.multi_seed_variants
    return [RunSpec(v, s) for v in cfg.variants for s in (cfg.seeds if v in multi else cfg.seeds[:1])]


# one run -----------------------------------------------------------------------------------------------------------
def _refer_accuracy(y, prob, unc, frac: float) -> float:
    """Accuracy on the test images left after referring the ``frac`` most uncertain ones."""
    n_keep = int(round(len(y) * (1 - frac)))
    order = np.argsort(unc, kind="stable")[:n_keep]
    return float(np.mean(prob[order].argmax(1) == y[order])) if n_keep else float("nan")


def _metrics(y, prob, single, unc, n_cls, n_boot, seed) -> dict:
    from medattn.evaluation import bootstrap_ci, classification_metrics
    from medattn.evaluation.classification import expected_calibration_error, macro_f1

    m = classification_metrics(y, prob, n_classes=n_cls)
    out = {k: m.get(k, float("nan")) for k in ("roc_auc", "average_precision", "accuracy", "f1_macro",
                                                "sensitivity", "specificity", "ece")}
    out["ece_single_pass"] = float(expected_calibration_error(y, single))
    out["accuracy_single_pass"] = float(np.mean(single.argmax(1) == y))
    out["accuracy_refer_10"] = _refer_accuracy(y, prob, unc, 0.1)
    out["accuracy_refer_20"] = _refer_accuracy(y, prob, unc, 0.2)
    out["confusion_matrix"] = m["confusion_matrix"]

    def auc(t, p):
        return classification_metrics(t, p, n_classes=n_cls)["roc_auc"] if len(set(t.tolist())) > 1 else np.nan

    out["roc_auc_ci"] = list(bootstrap_ci(auc, y, prob, n_boot=min(n_boot, 300), seed=seed)[1:])
    out["accuracy_ci"] = list(bootstrap_ci(lambda t, p: float(np.mean(t == p.argmax(1))), y, prob, n_boot=n_boot,
                                           seed=seed)[1:])
    out["f1_macro_ci"] = list(bootstrap_ci(lambda t, p: macro_f1(t, p, n_cls), y, prob, n_boot=n_boot,
                                           seed=seed)[1:])
    return out


def run_variant(ctx, run: RunSpec, data: dict) -> dict:
    import keras

    from medattn.datasets.pipeline import array_dataset
    from medattn.evaluation.uncertainty import uncertainty_from_samples

    cfg = ctx.cfg
    x, y, idx, n_cls = data["x"], data["y"], data["idx"], len(data["classes"])
    model, res, train_s = _train_variant(ctx, run, data)
    tr, va, te = idx["train"], idx["val"], idx["test"]
    keras.utils.set_random_seed(run.seed + 12345)  # the MC passes' dropout masks (seeded, reproducible)
    passes = 2 if ctx.dry_run else cfg.mc_passes
    samples = np.stack([np.asarray(ctx.predict(model, array_dataset(x[te], None, 64), 64), dtype=np.float64)
                        for _ in range(passes)])
    u = uncertainty_from_samples(samples)
    prob, ent = u["mean"], u["predictive_entropy"]
    row = {"variant": run.arm, "fusion": VARIANTS[run.arm], "seed": run.seed, "dataset": data["kind"],
           "n_train": int(len(tr)), "n_val": int(len(va)), "n_test": int(len(te)), "mc_passes": passes,
           "params": int(model.count_params()), "train_time_s": round(train_s, 1), "best_epoch": res["best_epoch"],
           "best_val_loss": None if res["best_epoch"] < 1 else float(res["best_value"]),
           "epochs_run": res["epochs_run"], "mean_entropy": float(ent.mean()),
           "mean_mutual_information": float(u["mutual_information"].mean())}
    row.update(_metrics(y[te], prob, samples[0], ent, n_cls, cfg.n_boot, run.seed))
    _save_variant_outputs(ctx, run, model, data, row, samples, u, passes)
    ctx.log(f"{data['kind']} {run.arm} seed {run.seed}{ctx.mark}: AUC {row['roc_auc']:.4f} AUPR "
            f"{row['average_precision']:.4f} accuracy {row['accuracy']:.4f} ECE {row['ece_single_pass']:.4f} -> "
            f"{row['ece']:.4f} ({train_s:.0f} s)")
    return row


def _train_variant(ctx, run: RunSpec, data: dict):
    """The variant built and trained with class weights, the best validation loss kept.
    Returns (model, fit result, training seconds)."""
    from medattn.datasets.pipeline import array_dataset
    from medattn.models.dcat import build_dcat

    cfg, stage = ctx.cfg, ctx.cfg.stage("train")
    x, y, idx, n_cls = data["x"], data["y"], data["idx"], len(data["classes"])
    ctx.seed(run.seed)

    def builder():
        return build_dcat(stage.image_size, n_cls, backbone_a=cfg.backbone_a, backbone_b=cfg.backbone_b,
                          fusion=VARIANTS[run.arm], dim=cfg.dim, num_heads=cfg.num_heads, dropout=cfg.dropout,
                          weights_a=cfg.pretrained, weights_b=None)

    # one model per variant, reset for each seed: its steps are traced once (Context.build's reuse)
    model = ctx.build(builder, stage, len(idx["train"]), "sparse_categorical_crossentropy", ["accuracy"],
                      reuse=("dcat", run.arm), precision=_precision_model(cfg, run.arm))
    tr, va = idx["train"], idx["val"]
    counts = np.bincount(y[tr], minlength=n_cls)
    cw = {c: len(tr) / (n_cls * max(counts[c], 1)) for c in range(n_cls)}
    t0 = time.time()
    res = ctx.fit(model, lambda e: array_dataset(x[tr], y[tr], stage.batch_size, shuffle=True, seed=run.seed,
                                                 epoch=e, augment=cfg.augment),
                  stage, ctx.run_dir(run) / "train", label=f"{run.arm} s{run.seed}",
                  validation_data=array_dataset(x[va], y[va], 64), class_weight=cw, monitor="val_loss", mode="min")
    return model, res, time.time() - t0


def _save_variant_outputs(ctx, run: RunSpec, model, data: dict, row: dict, samples, u: dict, passes: int) -> None:
    """The saved model with its card, the prediction file, and (first seed) the calibration, ROC/PR, entropy and
    risk-coverage plots."""
    from medattn.evaluation.plots import plot_reliability, plot_roc_pr

    cfg, stage = ctx.cfg, ctx.cfg.stage("train")
    x, y, te = data["x"], data["y"], data["idx"]["test"]
    prob, ent = u["mean"], u["predictive_entropy"]
    ctx.save_model(model, run, f"{data['kind']}_{run.arm}", kind="classifier", input_size=stage.image_size,
                   preprocessing="inside", class_names=list(data["classes"]), threshold=None, mc_dropout=True,
                   mc_passes=cfg.mc_passes, metrics={k: row[k] for k in ("roc_auc", "average_precision", "accuracy",
                                                                          "n_test")})
    names = data["names"][te]
    np.savez(ctx.prediction_file(run.arm, run.seed), names=names, y_true=y[te], prob=prob, single=samples[0],
             entropy=ent, mutual_information=u["mutual_information"])
    if run.seed != cfg.seeds[0]:
        return
    cls, plots = data["classes"], ctx.out / "plots"
    plot_reliability(y[te], prob, plots / f"reliability_{run.arm}.png",
                     title=f"{run.arm}: MC mean of {passes} passes{ctx.mark}")
    plot_reliability(y[te], samples[0], plots / f"reliability_{run.arm}_single_pass.png",
                     title=f"{run.arm}: one pass{ctx.mark}")
    plot_roc_pr(y[te], prob, cls, plots / f"roc_pr_{run.arm}.png", title=f"{run.arm}{ctx.mark}")
    _plot_entropy_grid(x[te], y[te], prob, ent, names, cls, plots / f"highest_entropy_{run.arm}.png",
                       f"{run.arm}: highest predictive entropy{ctx.mark}")
    _plot_risk_coverage(y[te], prob, ent, plots / f"risk_coverage_{run.arm}.png",
                        f"{run.arm}: referring the most uncertain{ctx.mark}")


def _plot_entropy_grid(x, y, prob, ent, names, classes, path, title, n=12):
    from medattn.evaluation.plots import _plt, _save

    plt = _plt()
    order = np.argsort(-ent, kind="stable")[:n]
    cols = min(6, len(order))
    rows = (len(order) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order):
        ax.imshow(x[i].mean(-1), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{names[i]}\ntrue {classes[y[i]]}, pred {classes[int(prob[i].argmax())]}\nH = {ent[i]:.2f}",
                     fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _plot_risk_coverage(y, prob, ent, path, title):
    from medattn.evaluation.plots import _plt, _save

    plt = _plt()
    order = np.argsort(ent, kind="stable")
    correct = (prob.argmax(1) == y)[order]
    k = np.arange(1, len(y) + 1)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(k / len(y), np.cumsum(correct) / k)
    ax.axhline(correct.mean(), color="k", ls=":", lw=1, label="no referral")
    ax.set(xlabel="coverage (fraction kept, most certain first)", ylabel="accuracy on kept", title=title,
           ylim=(max(0.0, correct.mean() - 0.2), 1.01))
    ax.legend(fontsize=8)
    return _save(fig, path)


# report ------------------------------------------------------------------------------------------------------------
def report(ctx, rows, final: bool) -> None:
    from medattn.evaluation import seed_cell, seeds_mark, write_table

    cfg, out, mark = ctx.cfg, ctx.out, ctx.mark
    meta = ctx.meta
    kind = rows[0]["dataset"]
    sources = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == v]
        sources[f"ours ({cfg.profile}{mark}): {v}{seeds_mark(len(rs))}"] = {k: seed_cell(rs, k) for k in METRICS}
    if kind == "pneumoniamnist":
        sources.update({k: {m: (val,) for m, val in d.items()} for k, d in MEDMNIST_BASELINES.items()})
    paper = {k: PAPER.get(kind, {}).get(k) for k in METRICS}
    n_test = rows[0]["n_test"]
    ctx.write_comparison([(None, paper, sources)], meta=meta,
                         title=f"DCAT on {kind}: paper vs ours ({cfg.profile} profile){mark}",
                         description=f"{n_test} test images; probabilities are the mean of {rows[0]['mc_passes']} MC-dropout "
                                     "passes (ece_single_pass: one pass). accuracy_refer_10/20: accuracy on the test images "
                                     "left after referring the 10 % / 20 % with the highest predictive entropy. Brackets: one "
                                     "seed, 95 % bootstrap over test images; several seeds (the column says how many), mean "
                                     "+- t(0.975, n-1) standard errors over seeds (seed-to-seed spread only). "
                                     + ("Paper column: the paper's pneumonia chest X-ray result (Kermany images at full "
                                        "resolution, not PneumoniaMNIST's 28 px). " if kind == "pneumoniamnist" else "")
                                     + ("Trained from scratch (no ImageNet weights offline)." if cfg.weights == "none" else
                                        "EfficientNet with ImageNet weights; ResNet-34 from scratch (Keras has no ImageNet "
                                        "ResNet-34)."))
    write_table(out, "runs", flat_rows(rows), title=f"DCAT on {kind}: every run{mark}", meta=meta)
    if final:
        print((out / "comparison.md").read_text())


def _check(cfg: DcatConfig) -> None:
    check_augmentation(augment=cfg.augment)
    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad:
        raise UserError(f"variants: {bad[0]!r} is not one of {tuple(VARIANTS)}")
    bad = [v for v in cfg.multi_seed_variants or () if v not in cfg.variants]
    if bad:
        raise UserError(f"multi_seed_variants: {bad[0]!r} is not one of the run's variants {cfg.variants}")
    if cfg.stage("train").image_size % 32:
        raise UserError(f"--image-size {cfg.stage('train').image_size}: must be a multiple of 32 (both backbones "
                        "have stride 32)")
    if cfg.dim % cfg.num_heads:
        raise UserError(f"dim {cfg.dim} must be divisible by num_heads {cfg.num_heads}")
    if cfg.mc_passes < 1:
        raise UserError(f"mc_passes must be >= 1, got {cfg.mc_passes}")
    from medattn.backbones import check_backbone

    # the registry's own refusals (an unknown backbone, ImageNet weights it has none for); backbone_b never loads
    # weights (below)
    for field, weights in (("backbone_a", cfg.weights), ("backbone_b", "none")):
        try:
            check_backbone(getattr(cfg, field), weights)
        except ValueError as e:
            raise UserError(f"{field}={getattr(cfg, field)}: {e}") from None
    if cfg.weights != "none" and cfg.backbone_b != "resnet34":
        raise UserError(f"--weights {cfg.weights} loads into backbone_a ({cfg.backbone_a}) only; backbone_b "
                        f"({cfg.backbone_b}) always trains from scratch, as the paper's ResNet-34 (Keras has no "
                        "ImageNet ResNet-34): keep backbone_b=resnet34 with weights, or use --weights none")


REPRODUCTION = Reproduction(
    profile_notes=PROFILE_NOTES, name="dcat", script=__file__, description=__doc__, profiles=PROFILES, paper=PAPER, dataset="pneumoniamnist",
    load_data=load_data, plan=plan, run_one=run_variant, report=report,
    backbones=lambda cfg: [cfg.backbone_a],
    no_data="no data: pass --data-dir PATH to one dataset (pneumoniamnist .npz folder, chest_xray, COVID-19 "
            "Radiography, TB Chest X-ray or OCT2017) or set MEDATTN_DATA_DIR (default: its pneumoniamnist)",
    dry_run_overrides=lambda cfg: {"n_boot": 20, "mc_passes": 2}, check=_check,
    dataset_tag=lambda cfg, source: detect(source.path),  # runs/dcat-cpu-<kind>/, results/dcat/<kind>/
    models=lambda cfg, arm: [_precision_model(cfg, arm)],
)


def main(argv=None) -> int:
    return run_reproduction(REPRODUCTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
