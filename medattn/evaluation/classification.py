"""Classification metrics as pure functions of labels and probabilities.

Conventions used everywhere in medattn:

* ``y_true`` is a 1-D array of integer class ids, ``y_prob`` is ``(n, n_classes)`` probabilities (a 1-D array
  is read as P(class 1) of a binary task) and ``y_pred`` is a 1-D array of integer ids.
* "macro" averages classes with equal weight; "weighted" weights each class by its support (its number of
  true cases); "per class" keeps one value per class.
* "weighted accuracy" is the support-weighted mean of the per-class one-vs-rest accuracies
  ``(TP_c + TN_c) / n``. It is NOT balanced accuracy and it is always >= top-1 accuracy for more than two
  classes; the brain-MRI paper reports it, so we report it beside top-1 accuracy.
* For binary tasks ``positive`` names the positive class id (default 1); sensitivity = recall of the positive
  class, specificity = recall of the negative class.

scikit-learn computes what it already does well (precision/recall/F1, ROC AUC, average precision).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "confusion_matrix",
    "one_vs_rest_accuracy",
    "classification_metrics",
    "binary_metrics_from_confusion",
    "expected_calibration_error",
    "reliability_bins",
    "as_probabilities",
    "choose_threshold",
    "parse_threshold_rule",
]


def as_probabilities(y_prob, n_classes: int | None = None) -> np.ndarray:
    """Return ``y_prob`` as an ``(n, n_classes)`` float array; a 1-D input is P(class 1) of a binary task."""
    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"y_prob must be 1-D or 2-D, got shape {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"y_prob has {p.shape[1]} columns, expected {n_classes}")
    return p


def _check_labels(y_true, y_pred=None) -> tuple[np.ndarray, np.ndarray | None]:
    t = np.asarray(y_true).astype(int).ravel()
    if y_pred is None:
        return t, None
    p = np.asarray(y_pred).astype(int).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} cases but y_pred has {p.shape[0]}")
    return t, p


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` = cases of true class ``i`` predicted as ``j``."""
    t, p = _check_labels(y_true, y_pred)
    return skm.confusion_matrix(t, p, labels=list(range(n_classes)))


def macro_f1(y_true, y_prob_or_pred, n_classes: int) -> float:
    """Macro-averaged F1 (a class absent from both truth and prediction counts 0, as sklearn's ``zero_division=0``)
    from labels or probabilities, in NumPy: cheap enough to bootstrap (``classification_metrics`` also computes
    AUCs)."""
    p = np.asarray(y_prob_or_pred)
    pred = p.argmax(1) if p.ndim == 2 else p.astype(int)
    t = np.asarray(y_true).astype(int)
    cm = np.bincount(t * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def one_vs_rest_accuracy(cm: np.ndarray) -> np.ndarray:
    """Per-class one-vs-rest accuracy ``(TP_c + TN_c) / n`` from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    return (tp + tn) / n if n else np.full(len(cm), np.nan)


def binary_metrics_from_confusion(tp: int, fn: int, fp: int, tn: int) -> dict[str, float]:
    """Accuracy, sensitivity (recall), specificity, precision (PPV), NPV and F1 of a binary confusion matrix."""

    def div(a, b):
        return float(a) / float(b) if b else float("nan")

    precision = div(tp, tp + fp)
    recall = div(tp, tp + fn)
    f1 = div(2 * precision * recall, precision + recall) if precision == precision and recall == recall else float("nan")
    return {
        "accuracy": div(tp + tn, tp + tn + fp + fn),
        "sensitivity": recall,
        "recall": recall,
        "specificity": div(tn, tn + fp),
        "precision": precision,
        "npv": div(tn, tn + fn),
        "f1": f1,
    }


def _checked_inputs(y_true, y_prob, y_pred, n_classes, class_names):
    """``(labels, predictions, probabilities or None, class names)``, checked against each other (ValueError
    naming the mismatch); predictions default to the most probable class."""
    t, _ = _check_labels(y_true)
    prob = None
    if y_prob is not None:
        prob = as_probabilities(y_prob, n_classes)
        n_classes = prob.shape[1]
        if len(prob) != len(t):
            raise ValueError(f"y_true has {len(t)} cases but y_prob has {len(prob)}")
    if y_pred is None:
        if prob is None:
            raise ValueError("give y_prob or y_pred")
        y_pred = prob.argmax(axis=1)
    t, p = _check_labels(t, y_pred)
    if n_classes is None:
        n_classes = int(max(t.max(initial=0), p.max(initial=0)) + 1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names given for {n_classes} classes: {names}")
    return t, p, prob, names


def classification_metrics(
    y_true,
    y_prob=None,
    *,
    y_pred=None,
    n_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    positive: int = 1,
) -> dict:
    """All classification metrics medattn reports, as one flat dict of floats plus the confusion matrix.

    Either ``y_prob`` (then ``y_pred = argmax``) or ``y_pred`` must be given; AUC, average precision and ECE need
    ``y_prob``. Keys: ``accuracy``, ``weighted_accuracy``, ``balanced_accuracy``, ``precision_macro``,
    ``recall_macro``, ``f1_macro``, ``precision_weighted``, ``recall_weighted``, ``f1_weighted``,
    ``recall_<class>``/``precision_<class>``/``f1_<class>``/``ovr_accuracy_<class>``, ``roc_auc`` (macro
    one-vs-rest for multiclass), ``average_precision`` (macro), ``ece``, ``n``; for binary tasks also
    ``sensitivity``, ``specificity``, ``npv``, and the raw counts ``tp``, ``fn``, ``fp``, ``tn``.
    """
    t, p, prob, names = _checked_inputs(y_true, y_prob, y_pred, n_classes, class_names)
    n_classes = len(names)
    labels = list(range(n_classes))
    cm = confusion_matrix(t, p, n_classes)
    out: dict = {"n": int(len(t)), "accuracy": float(skm.accuracy_score(t, p))}
    ovr = one_vs_rest_accuracy(cm)
    support = cm.sum(axis=1)
    out["weighted_accuracy"] = float(np.sum(ovr * support) / support.sum()) if support.sum() else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class_recall = np.diag(cm) / support
    present = support > 0
    out["balanced_accuracy"] = float(np.mean(per_class_recall[present])) if present.any() else float("nan")
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(t, p, labels=labels, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(pr), float(rc), float(f1)
    pr, rc, f1, _ = skm.precision_recall_fscore_support(t, p, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(names):
        out[f"precision_{name}"] = float(pr[i])
        out[f"recall_{name}"] = float(rc[i])
        out[f"f1_{name}"] = float(f1[i])
        out[f"ovr_accuracy_{name}"] = float(ovr[i])
    if n_classes == 2:
        neg = 1 - positive
        tp, fn = int(cm[positive, positive]), int(cm[positive, neg])
        fp, tn = int(cm[neg, positive]), int(cm[neg, neg])
        b = binary_metrics_from_confusion(tp, fn, fp, tn)
        out.update(tp=tp, fn=fn, fp=fp, tn=tn, sensitivity=b["sensitivity"], specificity=b["specificity"],
                   npv=b["npv"], precision_pos=b["precision"], recall_pos=b["recall"], f1_pos=b["f1"])
    if prob is not None:
        out["roc_auc"] = _auc(t, prob, positive)
        out["average_precision"] = _average_precision(t, prob, positive)
        out["ece"] = expected_calibration_error(t, prob)
        clipped = np.clip(prob.astype("float64"), 1e-12, 1.0)  # float32 softmax rows sum to 1 +- 1e-7
        out["log_loss"] = float(skm.log_loss(t, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
    out["confusion_matrix"] = cm.tolist()
    return out


def _auc(t: np.ndarray, prob: np.ndarray, positive: int) -> float:
    if prob.shape[1] == 2:
        if len(np.unique(t)) < 2:
            return float("nan")
        return float(skm.roc_auc_score(t == positive, prob[:, positive]))
    present = [c for c in range(prob.shape[1]) if 0 < np.sum(t == c) < len(t)]
    if not present:
        return float("nan")
    return float(np.mean([skm.roc_auc_score(t == c, prob[:, c]) for c in present]))


def _average_precision(t: np.ndarray, prob: np.ndarray, positive: int) -> float:
    if prob.shape[1] == 2:
        if not np.any(t == positive):
            return float("nan")
        return float(skm.average_precision_score(t == positive, prob[:, positive]))
    present = [c for c in range(prob.shape[1]) if np.any(t == c)]
    return float(np.mean([skm.average_precision_score(t == c, prob[:, c]) for c in present]))


def reliability_bins(y_true, y_prob, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins of the top-1 prediction: count, mean confidence and accuracy per bin."""
    t, _ = _check_labels(y_true)
    prob = as_probabilities(y_prob)
    conf = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(y_true, y_prob, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / n) |acc_b - conf_b| over equal-width bins of top-1 confidence (Guo et al., ICML 2017)."""
    bins = reliability_bins(y_true, y_prob, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    used = bins["count"] > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(bins["count"][used] / n * gap))


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """``"youden"`` -> ``("youden", None)``; ``"sensitivity:0.9"`` -> ``("sensitivity", 0.9)``; anything else
    raises ValueError with the accepted forms."""
    r = str(rule).strip().lower()
    if r == "youden":
        return "youden", None
    name, _, value = r.partition(":")
    if name == "sensitivity" and value:
        try:
            target = float(value)
        except ValueError:
            target = None
        if target is not None and 0 < target <= 1:
            return "sensitivity", target
    raise ValueError(f"threshold rule {rule!r}: expected 'youden' or 'sensitivity:X' with 0 < X <= 1 "
                     "(e.g. sensitivity:0.9)")


def choose_threshold(y_true, prob, rule: str) -> float:
    """A decision threshold for a binary score ``prob`` (positive when ``prob > threshold``), chosen on labelled
    data (a validation set, never the test set) by ``rule``:

    * ``"youden"``: maximises sensitivity + specificity - 1 (ties: the threshold nearest 0.5);
    * ``"sensitivity:X"``: the highest threshold whose sensitivity on these data is at least X.

    Thresholds are midpoints between consecutive distinct scores (so a score on the data never sits on the
    threshold). Raises ValueError when the data lack either class."""
    kind, target = parse_threshold_rule(rule)
    t = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} cases but prob has {len(p)}")
    pos, neg = t == 1, t == 0
    if not pos.any() or not neg.any():
        raise ValueError(f"choosing a threshold needs both classes; got {int(pos.sum())} positive and "
                         f"{int(neg.sum())} negative cases")
    u = np.unique(p)
    cand = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6]]) if len(u) > 1 else \
        np.array([u[0] - 1e-6, u[0] + 1e-6])
    sens = np.array([np.mean(p[pos] > c) for c in cand])
    spec = np.array([np.mean(p[neg] <= c) for c in cand])
    if kind == "youden":
        j = sens + spec - 1
        best = np.flatnonzero(np.isclose(j, j.max()))
        return float(cand[best[np.argmin(np.abs(cand[best] - 0.5))]])
    ok = np.flatnonzero(sens >= target - 1e-12)
    return float(cand[ok].max())
