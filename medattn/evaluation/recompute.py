"""Recompute the committed tables' per-run metrics from the committed prediction files alone.

    python -m medattn.evaluation.recompute results            # every results folder under results/
    python -m medattn.evaluation.recompute results/emtnet     # one

Each results folder that holds ``runs.json`` and ``predictions/<arm>_s<seed>.npz`` is checked: every metric below
is computed again from the prediction file with scikit-learn (not with the code that wrote the table) and compared
with the row's value; the script prints how many cells it checked, every difference, and exits 1 if there is one.

* brain MRI (``prob``, ``y_true``, ``dedup``): on the official test set and on the de-duplicated one, top-1 and
  weighted accuracy, macro and weighted precision, recall and F1, macro one-vs-rest AUC, ECE and the recall of each
  class; validation accuracy where the file keeps ``val_prob``;
* MIAS (``roi_pred``, ``roi_score``, ``y_true``): ROI accuracy, tumour recall, precision and F1, specificity, the four
  counts, the ROI AUC and average precision of the mean score, the accuracy of the mean score at 0.5, the AUC of the
  hard labels, Wilson intervals of accuracy, recall and precision; where the file keeps the windows
  (``patch_prob``, ``roi_idx``): window accuracy and AUC, and from the validation windows the ROI accuracy, the
  windows' cross-entropy, the vote threshold chosen on them and the test figures at that threshold;
* EMT-Net (``prob`` = P(malignant), ``pred_tuned``, ``y_true``): accuracy, sensitivity, specificity, F1 and the
  counts at 0.5, the same at the thresholds chosen on validation data, AUC and ECE; lesion Dice from the out-of-fold
  masks where the file holds them (``mask_pred``, ``mask_true``); where it keeps each image's ``fold`` and the
  folds' validation scores (``val_index``, ``val_fold``, ``val_prob``): the mean and SD over folds, the pooled
  validation AUC, and each fold's threshold chosen again by the rule ``sensitivity:X`` (the tuned figures then
  follow from those thresholds, not from ``pred_tuned``);
* BUSI (``prob``, ``y_true``): accuracy, weighted accuracy, macro and weighted precision, recall and F1, macro AUC,
  ECE and the confusion matrix; from the bit-packed test masks where the file holds them (``mask_true``,
  ``mask_pred`` after cleaning, ``mask_raw`` before it): Dice and IoU over lesion images and over all images, pixel
  accuracy, the share of normal images given a mask, and the same before cleaning; where it keeps the validation
  images (``val_prob``, ``val_y``, ``val_mask_raw``, ``val_mask_true``): the classifier's validation accuracy and
  the mask cleaning chosen again on them (largest component or not, minimum area, by mean Dice over all
  validation images), the cleaned test masks then made again from ``mask_raw``; from older files, which hold only
  per-image ``dice`` and ``lesion``, Dice over all images and over lesion images;
* DCAT (``prob`` = the mean over MC passes, ``y_true``): accuracy, macro F1, AUC and average precision (binary: of
  the positive class; else macro over classes, one against the rest), ECE and the confusion matrix; binary:
  sensitivity and specificity; from ``single`` (one pass) its accuracy and ECE; the mean ``entropy`` and
  ``mutual_information``, and the accuracy left after referring the 10 % and 20 % most uncertain images.

Not recomputed, because the files do not hold what they need: validation figures other than those above (from
files written before the validation predictions were kept: EMT-Net's spread over folds, validation AUC and
thresholds, BUSI's validation Dice and cleaning rule), and training facts (epochs, times, parameter counts).

ECE uses 15 equal-width bins of the top-1 probability, a bin's right edge inside it. Single runs' 95 % bootstrap
intervals are resampled again, with the run's seed and the folder's ``n_boot`` (``config.json``): EMT-Net
(accuracy, sensitivity, specificity, at 0.5 and tuned), DCAT (accuracy, macro F1, AUC), brain MRI (accuracy,
weighted accuracy, macro F1, official and de-duplicated), MIAS (ROI AUC) and BUSI (accuracy, macro F1, lesion
Dice and, from the masks, lesion IoU), and brain MRI's seed ensembles (with the configuration's first seed).
BUSI's lesion IoU interval is read as recorded where the file keeps only per-image Dice.

Seed ensembles (``ensembles.json``: brain MRI, MIAS) are recomputed from their seeds' prediction files: the
probabilities (MIAS: every window's P(tumour)) averaged over the seeds, then scored as one model (MIAS: the
majority vote of windows at 0.5 per ROI, its Wilson interval, the AUC of the ROI mean), on the test set and on the
validation set, and the means of the seeds' own accuracies. EMT-Net's ablation (``ablation.json``: multitask minus
classification-only at the same seed) is recomputed from the two arms' files: each difference, its paired bootstrap
interval and the exact McNemar p-value.
Every cell of ours in ``comparison.json``, and the summary, sweep, seed-spread and paired-difference tables, are
then derived again from the rows (:mod:`medattn.evaluation.table_cells`), so each table cell traces back to
committed predictions; the command then names, per folder, the comparison cells that rest on row fields no
prediction file gave (:func:`untraced_cells`; measured times are not listed).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from medattn.evaluation.table_cells import ARM_KEYS, check_comparison, check_run_tables, comparison_sources, same_value

__all__ = ["recompute_ablation", "recompute_ensembles", "recompute_folder", "recompute_row", "main"]


def _auc(y, score) -> float:
    from sklearn.metrics import roc_auc_score

    if score.ndim == 1 or score.shape[1] == 2:
        return float(roc_auc_score(y, score if score.ndim == 1 else score[:, 1]))
    return float(roc_auc_score(y, score, multi_class="ovr", average="macro", labels=list(range(score.shape[1]))))


def _two_columns(prob) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float64)
    return np.stack([1.0 - prob, prob], axis=1) if prob.ndim == 1 else prob


def _ece(y, prob, n_bins: int = 15) -> float:
    prob = _two_columns(prob)
    conf, correct = prob.max(1), (prob.argmax(1) == y)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)  # bin b holds (b/n, (b+1)/n]
    return float(sum(np.sum(bins == b) / len(y) * abs(correct[bins == b].mean() - conf[bins == b].mean())
                     for b in np.unique(bins)))


def _multiclass(y, prob) -> dict:
    """Accuracy, weighted accuracy (one-vs-rest accuracy weighted by support), macro and weighted precision, recall
    and F1, AUC, ECE and the confusion matrix of argmax predictions."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    prob = _two_columns(prob)
    k, pred = prob.shape[1], prob.argmax(1)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    ovr = np.array([(len(y) - cm[c].sum() - cm[:, c].sum() + 2 * cm[c, c]) / len(y) for c in range(k)])
    out = {"accuracy": float(np.mean(pred == y)), "weighted_accuracy": float(np.sum(ovr * cm.sum(1)) / len(y)),
           "roc_auc": _auc(y, prob), "ece": _ece(y, prob), "confusion_matrix": cm.tolist()}
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(y, pred, labels=list(range(k)), average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(pr), f"recall_{avg}": float(rc), f"f1_{avg}": float(f1)})
    return out


def _bits(p, key: str, shape_key: str = "mask_shape") -> np.ndarray:
    """Bit-packed masks unpacked to ``(n, H, W)`` booleans."""
    shape = tuple(int(s) for s in p[shape_key])
    return np.unpackbits(p[key], count=int(np.prod(shape))).astype(bool).reshape(shape[:3])


def _per_image_dice(t, m) -> np.ndarray:
    """Dice of each image of ``(n, ...)`` boolean masks, 1 where truth and prediction are both empty."""
    t, m = t.reshape(len(t), -1), m.reshape(len(m), -1)
    inter, size = (t & m).sum(1), t.sum(1) + m.sum(1)
    return np.where(size > 0, 2.0 * inter / np.maximum(size, 1), 1.0)


def _per_image_iou(t, m) -> np.ndarray:
    """IoU of each image of ``(n, ...)`` boolean masks, 1 where truth and prediction are both empty."""
    t, m = t.reshape(len(t), -1), m.reshape(len(m), -1)
    union = (t | m).sum(1)
    return np.where(union > 0, (t & m).sum(1) / np.maximum(union, 1), 1.0)


def _mask_cells(t, m, suffix: str = "") -> dict:
    """Dice and IoU (1 where truth and prediction are both empty) over lesion and all images, pixel accuracy and
    the share of empty truths given a non-empty mask, from ``(n, ...)`` boolean truth and predicted masks."""
    t, m = t.reshape(len(t), -1), m.reshape(len(m), -1)
    t_n, m_n = t.sum(1), m.sum(1)
    dice, iou = _per_image_dice(t, m), _per_image_iou(t, m)
    lesion = t_n > 0
    out = {"dice_lesion": dice[lesion].mean(), "iou_lesion": iou[lesion].mean(), "dice_all": dice.mean(),
           "iou_all": iou.mean(), "pixel_accuracy": (t == m).mean(1).mean(),
           "false_positive_rate_empty": (m_n[~lesion] > 0).mean() if (~lesion).any() else float("nan")}
    return {f"{k}{suffix}": float(v) for k, v in out.items()}


CLEANING_AREAS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05)  # BUSI's candidate minimum lesion areas


def _largest_blob(mask) -> np.ndarray:
    """The largest 8-connected component of an ``(H, W)`` mask (SciPy's labelling; ties: the first in raster
    order), or the mask itself when empty."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def _cleaned(raw, min_area: float, largest: bool, kept=None) -> np.ndarray:
    """``(n, H, W)`` masks cleaned as BUSI's rule says: the largest component alone (``largest``; ``kept``: those
    components, when already found), and emptied when what is kept covers less than ``min_area`` of the image."""
    if kept is None:
        kept = np.stack([_largest_blob(m) for m in raw]) if largest else raw
    return kept & (kept.reshape(len(kept), -1).mean(1) >= min_area)[:, None, None]


def _cleaning_chosen_again(t, raw) -> dict:
    """The cleaning rule chosen again on the validation masks: of every (largest component or not, minimum area),
    the one with the highest mean Dice over all images (compared to 12 decimals; ties: without the component rule,
    then the smaller area), its Dice and the Dice before cleaning."""
    best = None
    for largest in (False, True):
        kept = np.stack([_largest_blob(m) for m in raw]) if largest else raw
        for area in CLEANING_AREAS:
            score = float(np.mean(_per_image_dice(t, _cleaned(raw, area, largest, kept))))
            if best is None or round(score, 12) > round(best[0], 12):
                best = (score, largest, area)
    return {"val_dice_all_raw": float(np.mean(_per_image_dice(t, raw))), "val_dice_all_post": best[0],
            "seg_post_largest_component": best[1], "seg_post_min_area": best[2]}


def _f1_macro(y, pred, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", labels=list(range(n_classes)), zero_division=0))


def _brain(p, row) -> dict:
    """Every figure of :func:`_multiclass` and each class's recall, on the official and the de-duplicated test set;
    validation accuracy where the file keeps the validation probabilities."""
    from sklearn.metrics import recall_score

    out = {}
    classes = ("glioma", "meningioma", "notumor", "pituitary")
    for prefix, keep in (("official", np.ones(len(p["y_true"]), bool)), ("dedup", p["dedup"].astype(bool))):
        y, prob = p["y_true"][keep], p["prob"][keep]
        pred = prob.argmax(1)
        out.update({f"{prefix}_{k}": v for k, v in _multiclass(y, prob).items() if k != "confusion_matrix"})
        out[f"{prefix}_f1_macro"] = _f1_macro(y, pred, prob.shape[1])
        recalls = recall_score(y, pred, average=None, labels=list(range(prob.shape[1])), zero_division=0)
        out.update({f"{prefix}_recall_{c}": float(r) for c, r in zip(classes, recalls)})
    if "val_prob" in p.files:
        out["val_accuracy"] = float(np.mean(p["val_prob"].argmax(1) == p["val_y"]))
    return out


def _rates(c: dict) -> dict:
    """Recall (sensitivity), precision and specificity from the four counts (0 where a denominator is 0)."""
    return {"recall": c["tp"] / max(c["tp"] + c["fn"], 1), "precision": c["tp"] / max(c["tp"] + c["fp"], 1),
            "specificity": c["tn"] / max(c["tn"] + c["fp"], 1)}


def _counts(y, pred) -> dict:
    tp, fp = int(np.sum((pred == 1) & (y == 1))), int(np.sum((pred == 1) & (y == 0)))
    fn, tn = int(np.sum((pred == 0) & (y == 1))), int(np.sum((pred == 0) & (y == 0)))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _wilson(successes: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval, from SciPy (NaN for no trials)."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(successes, n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _mias(p, row) -> dict:
    """ROI figures of the majority vote, the mean score's, Wilson intervals; window and validation figures where
    the file keeps the windows' probabilities."""
    from sklearn.metrics import average_precision_score, f1_score

    y, pred, score = p["y_true"].astype(int), p["roi_pred"].astype(int), p["roi_score"].astype(np.float64)
    c = _counts(y, pred)
    r = _rates(c)
    out = {**c, "accuracy": float(np.mean(pred == y)), "recall_tumour": r["recall"],
           "precision_tumour": r["precision"], "specificity": r["specificity"],
           "f1_tumour": float(f1_score(y, pred, zero_division=0)), "roc_auc": _auc(y, score),
           "average_precision": float(average_precision_score(y, score)),
           "roc_auc_hard_labels": _auc(y, pred) if len(set(pred.tolist())) > 1 else 0.5,
           "accuracy_mean_prob": float(np.mean((score > 0.5) == y))}
    for name, k, n in (("accuracy", c["tp"] + c["tn"], len(y)), ("recall", c["tp"], c["tp"] + c["fn"]),
                       ("precision", c["tp"], c["tp"] + c["fp"])):
        out[f"{name}_wilson_low"], out[f"{name}_wilson_high"] = _wilson(k, n)
    if "patch_prob" in p.files:
        out.update(_mias_windows(p))
    return out


def _roi_vote(patch_prob, roi_idx, threshold: float = 0.5) -> np.ndarray:
    """Each ROI's label: more than half of its windows above ``threshold``."""
    per_roi = np.bincount(roi_idx)
    above = np.bincount(roi_idx, weights=(patch_prob > threshold).astype(float))
    return (above / per_roi > 0.5).astype(int)


def _mias_windows(p) -> dict:
    """Window accuracy and AUC on the test ROIs; from the validation windows: the ROI accuracy of the vote, the
    windows' cross-entropy (clipped as Keras clips), the vote threshold that maximises validation ROI accuracy (grid
    0.05..0.95 by 0.01, ties to the one nearest 0.5), and the test figures at that threshold."""
    y, prob, idx = p["y_true"].astype(int), p["patch_prob"].astype(np.float64), p["roi_idx"]
    y_win = y[idx]
    out = {"patch_accuracy": float(np.mean((prob > 0.5) == y_win)), "patch_roc_auc": _auc(y_win, prob)}
    if "val_patch_prob" not in p.files:
        return out
    vy, vprob, vidx = p["val_y"].astype(int), p["val_patch_prob"].astype(np.float64), p["val_roi_idx"]
    out["val_roi_accuracy"] = float(np.mean(_roi_vote(vprob, vidx) == vy))
    clipped = np.clip(vprob, 1e-7, 1 - 1e-7)
    out["val_window_loss"] = float(-np.mean(np.where(vy[vidx] == 1, np.log(clipped), np.log(1 - clipped))))
    grid = np.round(np.arange(5, 96) / 100, 3)
    val_acc = np.array([np.mean(_roi_vote(vprob, vidx, t) == vy) for t in grid])
    best = grid[val_acc == val_acc.max()]
    threshold = float(best[np.argmin(np.abs(best - 0.5))])
    tuned = _roi_vote(prob, idx, threshold)
    r = _rates(_counts(y, tuned))
    out.update(val_threshold=threshold, accuracy_val_threshold=float(np.mean(tuned == y)),
               recall_tumour_val_threshold=r["recall"], precision_tumour_val_threshold=r["precision"])
    return out


def _binary(y, pred, suffix: str = "") -> dict:
    r = _rates(_counts(y, pred))
    return {f"accuracy{suffix}": float(np.mean(pred == y)), f"sensitivity{suffix}": r["recall"],
            f"specificity{suffix}": r["specificity"]}


def _emtnet(p, row) -> dict:
    """Pooled out-of-fold figures at 0.5 and at the validation thresholds; from files that keep each image's fold
    and the folds' validation scores: the spread over folds, the pooled validation AUC and the thresholds chosen
    again (rule ``sensitivity:X``), the tuned figures then following from them rather than from ``pred_tuned``."""
    from sklearn.metrics import f1_score

    y, prob = p["y_true"].astype(int), p["prob"].astype(np.float64)
    pred = (prob > 0.5).astype(int)
    out = {**_counts(y, pred), **_binary(y, pred), "roc_auc": _auc(y, prob), "ece": _ece(y, prob),
           "f1_pos": float(f1_score(y, pred, zero_division=0))}
    tuned = p["pred_tuned"].astype(int) if "pred_tuned" in p.files else None
    if "fold" in p.files:
        out.update(_fold_spread(y, prob, p["fold"]))
    if "val_prob" in p.files:
        val_y, val_prob = y[p["val_index"]], p["val_prob"].astype(np.float64)
        out["val_roc_auc"] = _auc(val_y, val_prob)
        rule = str(row.get("threshold_rule") or "")
        if rule.startswith("sensitivity:") and "fold" in p.files:
            folds = np.unique(p["fold"])
            out["thresholds"] = [_sensitivity_threshold(val_y[p["val_fold"] == f], val_prob[p["val_fold"] == f],
                                                        float(rule.split(":")[1])) for f in folds]
            tuned = (prob > np.asarray(out["thresholds"])[np.searchsorted(folds, p["fold"])]).astype(int)
    if tuned is not None and row.get("accuracy_tuned") is not None:
        out.update(_binary(y, tuned, "_tuned"))
        out["f1_pos_tuned"] = float(f1_score(y, tuned, zero_division=0))
    if "mask_pred" in p.files:
        out["dice_lesion"] = _mask_cells(_bits(p, "mask_true"), _bits(p, "mask_pred"))["dice_lesion"]
    return out


def _fold_spread(y, prob, fold) -> dict:
    """Mean and sample SD over the test folds of accuracy, sensitivity, specificity, AUC and F1 at 0.5."""
    from sklearn.metrics import f1_score

    per_fold = {k: [] for k in ("accuracy", "sensitivity", "specificity", "roc_auc", "f1_pos")}
    for f in np.unique(fold):
        t, s = y[fold == f], prob[fold == f]
        d = (s > 0.5).astype(int)
        c = _counts(t, d)
        per_fold["accuracy"].append(np.mean(d == t))
        per_fold["sensitivity"].append(c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else np.nan)
        per_fold["specificity"].append(c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else np.nan)
        per_fold["roc_auc"].append(_auc(t, s) if 0 < t.sum() < len(t) else np.nan)
        per_fold["f1_pos"].append(f1_score(t, d, zero_division=0))
    out = {}
    for k, v in per_fold.items():
        v = np.asarray(v, dtype=np.float64)
        out[f"{k}_fold_mean"] = float(v.mean())
        out[f"{k}_fold_sd"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return out


def _sensitivity_threshold(y, score, target: float) -> float:
    """The highest cut (``score > cut`` is positive) that keeps at least ``target`` of the positives above it, the
    cut halfway between the k-th highest positive score and the next lower score (1e-6 below it when none is)."""
    k = int(np.ceil(target * int(y.sum()) - 1e-9))
    if k <= 0:
        return float(score.max() + 1e-6)
    kth = np.sort(score[y == 1])[::-1][k - 1]
    lower = score[score < kth]
    return float((lower.max() + kth) / 2) if len(lower) else float(kth - 1e-6)


def _busi(p, row) -> dict:
    """Classification figures; segmentation figures from the test masks. Where the file keeps the validation images
    (``val_prob``, ``val_mask_raw``): the classifier's validation accuracy, the cleaning rule chosen again on them
    and, unless the classifier gate emptied some masks, the cleaned test masks made again from ``mask_raw`` with
    that rule (the test figures then follow from it rather than from ``mask_pred``)."""
    out = _multiclass(p["y_true"].astype(int), p["prob"])
    if "mask_pred" not in p.files:
        out.update(dice_all=float(np.mean(p["dice"])), dice_lesion=float(np.mean(p["dice"][p["lesion"].astype(bool)])))
        return out
    truth, cleaned = _bits(p, "mask_true"), _bits(p, "mask_pred")
    if "val_prob" in p.files:
        out["val_accuracy_cls"] = float(np.mean(p["val_prob"].argmax(1) == p["val_y"]))
    if "val_mask_raw" in p.files:
        val_truth, val_raw = (_bits(p, k, "val_mask_shape") for k in ("val_mask_true", "val_mask_raw"))
        if row.get("seg_post_min_area") is None:  # no cleaning
            raw_dice = float(np.mean(_per_image_dice(val_truth, val_raw)))
            out.update(val_dice_all_raw=raw_dice, val_dice_all_post=raw_dice)
        else:
            out.update(_cleaning_chosen_again(val_truth, val_raw))
            if not row.get("seg_gate_applied"):
                cleaned = _cleaned(_bits(p, "mask_raw"), out["seg_post_min_area"], out["seg_post_largest_component"])
    out.update(_mask_cells(truth, cleaned))
    if "mask_raw" in p.files:
        raw = _mask_cells(truth, _bits(p, "mask_raw"), "_raw")
        out.update({k: raw[k] for k in ("dice_lesion_raw", "dice_all_raw", "false_positive_rate_empty_raw")})
    return out


def _dcat(p, row) -> dict:
    """The figures of the mean over MC passes; average precision (binary: of the positive class; else the macro
    mean); binary: sensitivity and specificity; the first pass alone (``single``); the mean entropy and mutual
    information; the accuracy left after referring the 10 % and 20 % most uncertain images (highest entropy; ties in
    file order)."""
    from sklearn.metrics import average_precision_score

    y, prob = p["y_true"].astype(int), p["prob"].astype(np.float64)
    cells = _multiclass(y, prob)
    out = {k: cells[k] for k in ("accuracy", "f1_macro", "roc_auc", "ece", "confusion_matrix")}
    if prob.shape[1] == 2:
        out.update({k: v for k, v in _binary(y, prob.argmax(1)).items() if k != "accuracy"},
                   average_precision=float(average_precision_score(y == 1, prob[:, 1])))
    else:  # the macro mean over the classes present, each against the rest
        out["average_precision"] = float(np.mean([average_precision_score(y == c, prob[:, c])
                                                  for c in range(prob.shape[1]) if np.any(y == c)]))
    if "single" in p.files:
        single = p["single"].astype(np.float64)
        out.update(accuracy_single_pass=float(np.mean(single.argmax(1) == y)), ece_single_pass=_ece(y, single))
    if "entropy" in p.files:
        entropy = p["entropy"].astype(np.float64)
        out["mean_entropy"] = float(entropy.mean())
        for share in (10, 20):
            kept = np.argsort(entropy, kind="stable")[: int(round(len(y) * (100 - share) / 100))]
            out[f"accuracy_refer_{share}"] = float(np.mean(prob[kept].argmax(1) == y[kept]))
    if "mutual_information" in p.files:
        out["mean_mutual_information"] = float(p["mutual_information"].astype(np.float64).mean())
    return out


PAPERS: dict[str, Callable] = {"brain_tumor_transfer": _brain, "mias_fusion": _mias, "emtnet": _emtnet,
                               "dcnnimaf": _busi, "dcat": _dcat}


def _bootstrap(metric, *arrays, n_boot: int, seed: int) -> list[float]:
    """A row's 95 % percentile bootstrap interval, resampled as the scripts do (``intervals.bootstrap_ci``, the
    run's seed and the folder's ``n_boot``) around a metric written here."""
    from medattn.evaluation.intervals import bootstrap_ci

    return [float(v) for v in bootstrap_ci(metric, *arrays, n_boot=n_boot, seed=seed)[1:]]


def _resampler(row: dict, n_boot: int) -> Callable:
    """:func:`_bootstrap` with the run's seed and the folder's ``n_boot`` (a call may pass another ``n_boot``)."""
    return functools.partial(_bootstrap, n_boot=n_boot, seed=int(row.get("seed", 0)))


def _label_intervals(boot: Callable, y, pred, n_classes: int, prefix: str = "") -> dict:
    """Accuracy and macro F1 (``classification.macro_f1``, in NumPy; its full-set value is checked against
    scikit-learn above) intervals from predicted labels: the resampled indices depend on the count alone, so they
    are those the scripts drew with the probabilities."""
    from medattn.evaluation.classification import macro_f1

    return {f"{prefix}accuracy_ci": boot(lambda t, d: np.mean(t == d), y, pred),
            f"{prefix}f1_macro_ci": boot(lambda t, d: macro_f1(t, d, n_classes), y, pred)}


def _emtnet_intervals(p, row, n_boot: int) -> dict:
    boot, y, prob = _resampler(row, n_boot), p["y_true"].astype(int), p["prob"]
    pos, neg = y == 1, y == 0
    out = {"accuracy_ci": boot(lambda t, s: np.mean(t == (s > 0.5)), y, prob),
           "sensitivity_ci": boot(lambda s: np.mean(s > 0.5), prob[pos]),
           "specificity_ci": boot(lambda s: np.mean(s <= 0.5), prob[neg])}
    if "pred_tuned" in p.files and row.get("accuracy_tuned_ci") is not None:
        hard = p["pred_tuned"].astype(float)
        out.update(accuracy_tuned_ci=boot(lambda t, d: np.mean(t == (d > 0.5)), y, hard),
                   sensitivity_tuned_ci=boot(lambda d: np.mean(d > 0.5), hard[pos]),
                   specificity_tuned_ci=boot(lambda d: np.mean(d < 0.5), hard[neg]))
    return out


def _rank_auc(positive, score) -> float:
    """The area under the ROC curve as the Mann-Whitney statistic (ties share their mean rank): what
    ``roc_auc_score`` returns, cheap enough to run on every resample; NaN with one class."""
    from scipy.stats import rankdata

    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((rankdata(score)[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _dcat_intervals(p, row, n_boot: int) -> dict:
    """Accuracy, macro F1 and AUC (binary: of the positive class; else the macro mean over classes, one against the
    rest) intervals; the AUC's over at most 300 resamples, as the script draws them."""
    boot, y, prob = _resampler(row, n_boot), p["y_true"].astype(int), p["prob"]
    n_classes = prob.shape[1]

    def auc(t, s):  # undefined on a resample with one class: bootstrap_ci drops it
        if len(set(t.tolist())) < 2:
            return float("nan")
        if n_classes == 2:
            return _rank_auc(t == 1, s[:, 1])
        return float(np.mean([_rank_auc(t == c, s[:, c]) for c in range(n_classes)]))

    return {**_label_intervals(boot, y, prob.argmax(1), n_classes),
            "roc_auc_ci": boot(auc, y, prob, n_boot=min(n_boot, 300))}


def _brain_intervals(p, row, n_boot: int) -> dict:
    """Accuracy, weighted accuracy (each class's one-vs-rest accuracy weighted by its support) and macro F1
    intervals on the official and the de-duplicated test set."""
    boot, n_classes, out = _resampler(row, n_boot), p["prob"].shape[1], {}

    def weighted_accuracy(t, d):
        cm = np.bincount(t * n_classes + d, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        wrong_as = cm.sum(0) + cm.sum(1) - 2 * np.diag(cm)  # class c's one-vs-rest errors: FP_c + FN_c
        return float(np.sum((1 - wrong_as / len(t)) * cm.sum(1)) / len(t))

    for prefix, keep in (("official", np.ones(len(p["y_true"]), bool)), ("dedup", p["dedup"].astype(bool))):
        y, pred = p["y_true"][keep].astype(int), p["prob"][keep].argmax(1)
        out.update(_label_intervals(boot, y, pred, n_classes, f"{prefix}_"))
        out[f"{prefix}_weighted_accuracy_ci"] = boot(weighted_accuracy, y, pred)
    return out


def _mias_intervals(p, row, n_boot: int) -> dict:
    """The ROI AUC's interval (its two ends are separate cells)."""
    low, high = _resampler(row, n_boot)(lambda t, s: _rank_auc(t == 1, s), p["y_true"].astype(int), p["roi_score"])
    return {"roc_auc_boot_low": low, "roc_auc_boot_high": high}


def _busi_intervals(p, row, n_boot: int) -> dict:
    """Accuracy and macro F1 intervals; lesion Dice's and IoU's from the test masks (from older files, which keep
    only per-image Dice, lesion Dice's alone)."""
    boot = _resampler(row, n_boot)
    out = _label_intervals(boot, p["y_true"].astype(int), p["prob"].argmax(1), 3)
    if "mask_pred" in p.files:
        t, m = (_bits(p, k).reshape(len(p["y_true"]), -1) for k in ("mask_true", "mask_pred"))
        lesion = t.any(1)
        out.update(dice_lesion_ci=boot(np.mean, _per_image_dice(t, m)[lesion]),
                   iou_lesion_ci=boot(np.mean, _per_image_iou(t, m)[lesion]))
    elif "dice" in p.files and "lesion" in p.files:
        out["dice_lesion_ci"] = boot(np.mean, p["dice"][p["lesion"].astype(bool)])
    return out


INTERVALS: dict[str, Callable] = {"emtnet": _emtnet_intervals, "dcat": _dcat_intervals,
                                  "brain_tumor_transfer": _brain_intervals, "mias_fusion": _mias_intervals,
                                  "dcnnimaf": _busi_intervals}


def _paper_of(folder: Path) -> str | None:
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    script = Path(str(run.get("command", "")).split()[1]).stem if len(str(run.get("command", "")).split()) > 1 else ""
    return script if script in PAPERS else next((p for p in PAPERS if p in folder.parts), None)


def _prediction_file(folder: Path, arm, seed) -> Path:
    return folder / "predictions" / f"{str(arm).replace(':', '_')}_s{seed}.npz"


class _Arrays(dict):
    """A prediction file read into memory; ``files`` names its arrays, as an open npz file does."""

    @property
    def files(self) -> list[str]:
        return list(self)


def _arrays(file: Path) -> _Arrays:
    with np.load(file, allow_pickle=False) as p:
        return _Arrays({k: p[k] for k in p.files})


def _mean_of(loaded: list[_Arrays], key: str):
    """The mean over seeds of one array, or None when a seed's file lacks it."""
    if any(key not in a for a in loaded):
        return None
    return np.mean([a[key].astype(np.float64) for a in loaded], axis=0)


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}


def _ensemble_cells(paper: str, files: list[Path], row: dict, config: dict) -> dict:
    """A seed ensemble's cells from its seeds' prediction files (see the module doc), and the means of its seeds'
    own figures; brain MRI's bootstrap intervals drawn as the script draws them (the configuration's first seed,
    its ``n_boot``)."""
    loaded = [_arrays(f) for f in files]
    seeds, p0 = [PAPERS[paper](a, row) for a in loaded], loaded[0]
    if paper == "brain_tumor_transfer":
        mean = _Arrays({**p0, "prob": _mean_of(loaded, "prob")})
        out = _brain(mean, row)
        if config.get("n_boot") and config.get("seeds"):
            out.update(_brain_intervals(mean, {"seed": config["seeds"][0]}, config["n_boot"]))
        val = _mean_of(loaded, "val_prob")
        if val is not None:
            out["val_accuracy"] = float(np.mean(val.argmax(1) == p0["val_y"]))
            out["val_accuracy_seed_mean"] = float(np.mean([s["val_accuracy"] for s in seeds]))
        return out
    patch = _mean_of(loaded, "patch_prob")
    y, pred = p0["y_true"].astype(int), _roi_vote(patch, p0["roi_idx"])
    c = _counts(y, pred)
    r = _rates(c)
    out = {"accuracy": float(np.mean(pred == y)), "recall_tumour": r["recall"], "specificity": r["specificity"],
           "roc_auc": _auc(y, np.bincount(p0["roi_idx"], weights=patch) / np.bincount(p0["roi_idx"])),
           "accuracy_seed_mean": float(np.mean([s["accuracy"] for s in seeds]))}
    out["accuracy_wilson_low"], out["accuracy_wilson_high"] = _wilson(c["tp"] + c["tn"], len(y))
    val = _mean_of(loaded, "val_patch_prob")
    if val is not None:
        out["val_roi_accuracy"] = float(np.mean(_roi_vote(val, p0["val_roi_idx"]) == p0["val_y"]))
        out["val_roi_accuracy_seed_mean"] = float(np.mean([s["val_roi_accuracy"] for s in seeds]))
    return out


def recompute_ensembles(folder: Path, rtol: float = 1e-9, recomputed: dict | None = None) -> tuple[int, list[str]]:
    """Cells checked and differences found in ``folder/ensembles.json``, recomputed from the seeds' files;
    ``recomputed`` as in :func:`recompute_folder`, keyed ``("ensemble", name, None)``."""
    folder, paper = Path(folder), _paper_of(Path(folder))
    if paper not in ("brain_tumor_transfer", "mias_fusion") or not (folder / "ensembles.json").exists() or not (
            folder / "predictions").is_dir():
        return 0, []  # as in recompute_folder: a folder that kept no predictions has nothing to recompute from
    checked, problems = 0, []
    for row in json.loads((folder / "ensembles.json").read_text())["rows"]:
        name = row.get("backbone") or row.get("model")
        files = [_prediction_file(folder, name, int(s)) for s in str(row["seeds"]).split(", ")]
        if not all(f.exists() for f in files):
            problems.append(f"{folder}: ensemble {name}: missing {[f.name for f in files if not f.exists()]}")
            continue
        cells = {k: v for k, v in _ensemble_cells(paper, files, row, _config(folder)).items() if row.get(k) is not None}
        if recomputed is not None:
            recomputed[("ensemble", str(name), None)] = set(cells)
        for field, value in cells.items():
            checked += 1
            if not same_value(row[field], value, rtol):
                problems.append(f"{folder}: ensemble {name}: {field} committed {row[field]!r}, recomputed {value!r}")
    return checked, problems


def recompute_row(paper: str, prediction_file: Path, row: dict, n_boot: int | None = None
                  ) -> list[tuple[str, object, float]]:
    """``(field, committed, recomputed)`` for every field of ``row`` the paper's check recomputes; with ``n_boot``
    (the folder's ``config.json``) also the single run's bootstrap intervals, where the paper has them here."""
    with np.load(prediction_file, allow_pickle=False) as p:
        values = PAPERS[paper](p, row)
        if n_boot and paper in INTERVALS:
            values.update(INTERVALS[paper](p, row, n_boot))
    return [(k, row[k], v) for k, v in values.items() if row.get(k) is not None]


def recompute_folder(folder: Path, rtol: float = 1e-9, recomputed: dict | None = None) -> tuple[int, list[str]]:
    """Cells checked and the differences found (one line each) in one results folder; ``recomputed``, when given,
    receives the fields recomputed for each run, ``{("run", arm, seed): {field, ...}}``."""
    folder = Path(folder)
    paper = _paper_of(folder)
    if paper is None or not (folder / "runs.json").exists() or not (folder / "predictions").is_dir():
        return 0, []  # a folder that kept no predictions (some selection runs) has nothing to recompute from
    checked, problems = 0, []
    config = _config(folder)
    for row in json.loads((folder / "runs.json").read_text())["rows"]:
        arm = next((row[k] for k in ARM_KEYS if row.get(k) is not None), None)
        pred = _prediction_file(folder, arm, row.get("seed", 0))
        if not pred.exists():
            problems.append(f"{folder}: {arm} seed {row.get('seed')}: no prediction file {pred.name}")
            continue
        cells = recompute_row(paper, pred, row, config.get("n_boot"))
        if recomputed is not None:
            recomputed[("run", str(arm), row.get("seed", 0))] = {field for field, _, _ in cells}
        for field, committed, value in cells:
            checked += 1
            if not same_value(committed, value, rtol):
                problems.append(f"{folder}: {arm} seed {row.get('seed')}: {field} committed {committed!r}, "
                                f"recomputed {value!r}")
    return checked, problems


def untraced_cells(folder: Path, recomputed: dict) -> list[tuple[str, list[str]]]:
    """``(label, fields)`` for each cell of ours in ``folder/comparison.json`` that rests on no field recomputed
    from prediction files (``recomputed`` as :func:`recompute_folder` and :func:`recompute_ensembles` filled it):
    the rows' fields it is derived from, which the files do not hold what they need for. Measured times
    (``latency_s`` from ``latency_median_ms``) are measurements, not predictions, and are not listed."""
    out = []
    for label, kind, name, seeds, fields in comparison_sources(folder):
        if any(f.endswith("_ms") for f in fields):
            continue
        if not any(all(f in recomputed.get((kind, name, seed), ()) for seed in seeds) for f in fields):
            out.append((label, fields))
    return out


def _untraced_summary(untraced: dict[Path, list]) -> list[str]:
    """One line per folder: how many comparison cells rest on figures not recomputed, and their rows' fields."""
    lines = []
    for folder, cells in untraced.items():
        metrics = sorted({fields[0] for _, fields in cells})
        lines.append(f"  {folder}: {len(cells)} ({', '.join(metrics)})")
    return lines


def _paired_cells(t, pa, pb, seed: int, n_boot: int) -> dict:
    """One EMT-Net ablation pair's cells per metric (accuracy, sensitivity, specificity at 0.5; AUC): the
    difference, its paired bootstrap interval (the same images resampled for both) and, for accuracy, the exact
    McNemar p-value (SciPy's binomial test on the discordant images)."""
    from scipy.stats import binomtest

    def metric(name):
        def difference(y, a, b):
            if name == "roc_auc":
                return _rank_auc(y == 1, a) - _rank_auc(y == 1, b)
            keep = {"accuracy": np.ones(len(y), bool), "sensitivity": y == 1, "specificity": y == 0}[name]
            if not keep.any():
                return float("nan")
            return float(np.mean((a[keep] > 0.5) == (y[keep] == 1)) - np.mean((b[keep] > 0.5) == (y[keep] == 1)))
        return difference

    right_a, right_b = (pa > 0.5) == (t == 1), (pb > 0.5) == (t == 1)
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    mcnemar = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    out = {}
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        low, high = _bootstrap(metric(name), t, pa, pb, n_boot=n_boot, seed=seed)
        out[name] = {"difference": metric(name)(t, pa, pb), "ci_low": low, "ci_high": high,
                     "mcnemar_p": float(mcnemar) if name == "accuracy" else None}
    return out


def recompute_ablation(folder: Path, rtol: float = 1e-9) -> tuple[int, list[str]]:
    """Cells checked and differences found in an EMT-Net folder's ``ablation.json`` (multitask minus
    classification-only), recomputed from the two arms' prediction files."""
    folder = Path(folder)
    if _paper_of(folder) != "emtnet" or not (folder / "ablation.json").exists():
        return 0, []
    checked, problems, pairs = 0, [], {}
    for row in json.loads((folder / "ablation.json").read_text())["rows"]:
        key = (row["comparison"], int(row["seed"]))
        if key not in pairs:
            files = [_prediction_file(folder, arm, key[1]) for arm in row["comparison"].split(" - ")]
            if not all(f.exists() for f in files):
                problems.append(f"{folder}: ablation {key[0]} seed {key[1]}: no prediction files")
                continue
            (a, b) = (_arrays(f) for f in files)
            pairs[key] = _paired_cells(a["y_true"].astype(int), a["prob"].astype(np.float64),
                                       b["prob"].astype(np.float64), key[1], _config(folder).get("n_boot", 1000))
        if key not in pairs:
            continue
        for field, value in pairs[key][row["metric"]].items():
            if row.get(field) is None and value is None:
                continue
            checked += 1
            if not same_value(row.get(field), value, rtol):
                problems.append(f"{folder}: ablation {key[0]} seed {key[1]} {row['metric']}: {field} committed "
                                f"{row.get(field)!r}, recomputed {value!r}")
    return checked, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="results folders (searched for runs.json below them)")
    ap.add_argument("--rtol", type=float, default=1e-9)
    args = ap.parse_args(argv)
    found = {root: sorted(root.rglob("runs.json")) if root.is_dir() else [] for root in map(Path, args.folders)}
    for root, runs_files in found.items():
        if not runs_files:
            print(f"recompute: {root}: {'no runs.json below it' if root.is_dir() else 'no such folder'} "
                  f"(give a results folder, e.g. results or results/emtnet)", file=sys.stderr)
            return 2
    total, cells, problems, folders, untraced = 0, 0, [], 0, {}
    for runs_files in found.values():
        for runs in runs_files:
            recomputed: dict = {}
            n, found = recompute_folder(runs.parent, args.rtol, recomputed)
            n_ens, found_ens = recompute_ensembles(runs.parent, args.rtol, recomputed)
            untraced[runs.parent] = untraced_cells(runs.parent, recomputed)
            n_abl, found_abl = recompute_ablation(runs.parent, args.rtol)
            n_cells, found_cells = check_comparison(runs.parent)
            n_tables, found_tables = check_run_tables(runs.parent)
            total, folders = total + n + n_ens + n_abl, folders + bool(n)
            problems += found + found_ens + found_abl + found_cells + found_tables
            cells += n_cells + n_tables
    for line in problems:
        print(line, file=sys.stderr)
    print(f"recompute: {total} cells in {folders} results folder(s) checked against their prediction files, "
          f"{cells} cells of the tables built from those rows derived again; {len(problems)} difference(s)")
    untraced = {folder: cells for folder, cells in untraced.items() if cells}
    if untraced:  # not differences: figures whose prediction files do not hold what they need
        print(f"recompute: {sum(map(len, untraced.values()))} comparison cell(s) in {len(untraced)} folder(s) rest on "
              f"figures their prediction files cannot give (kept no predictions, or written before they kept masks):")
        print("\n".join(_untraced_summary(untraced)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
