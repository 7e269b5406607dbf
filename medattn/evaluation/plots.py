"""PNG plots: confusion matrix, ROC and PR curves, reliability diagram, segmentation overlays.

matplotlib runs headless (Agg). Every function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .classification import as_probabilities, reliability_bins

__all__ = ["plot_confusion_matrix", "plot_roc_pr", "plot_reliability", "plot_classifier_curves",
           "plot_segmentation_overlays"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_confusion_matrix(cm, class_names: Sequence[str], path, title: str = "Confusion matrix") -> Path:
    """Counts with row-normalised shading (rows = truth)."""
    plt = _plt()
    cm = np.asarray(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / cm.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1.2 * len(cm) + 2.5, 1.2 * len(cm) + 2))
    ax.imshow(np.nan_to_num(norm), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, f"{cm[i, j]}\n{np.nan_to_num(norm[i, j]):.0%}", ha="center", va="center",
                    color="white" if np.nan_to_num(norm[i, j]) > 0.5 else "black")
    ax.set_xticks(range(len(cm)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(cm)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def plot_roc_pr(y_true, y_prob, class_names: Sequence[str], path, title: str = "", positive: int = 1) -> Path:
    """ROC and precision-recall curves side by side (one-vs-rest per class for multiclass)."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _plt()
    t = np.asarray(y_true).astype(int)
    prob = as_probabilities(y_prob)
    classes = [positive] if prob.shape[1] == 2 else list(range(prob.shape[1]))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
    for c in classes:
        pos = t == c
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos, prob[:, c])
        prec, rec, _ = precision_recall_curve(pos, prob[:, c])
        a1.plot(fpr, tpr, label=f"{class_names[c]} (AUC {auc(fpr, tpr):.3f})")
        a2.plot(rec, prec, label=f"{class_names[c]} (prevalence {pos.mean():.2f})")
    a1.plot([0, 1], [0, 1], "k:", lw=0.8)
    a1.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC {title}")
    a2.set(xlabel="recall", ylabel="precision", title=f"Precision-recall {title}", ylim=(0, 1.02))
    a1.legend(loc="lower right", fontsize=8)
    a2.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_reliability(y_true, y_prob, path, n_bins: int = 10, title: str = "Reliability") -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, with the bin counts below."""
    plt = _plt()
    b = reliability_bins(y_true, y_prob, n_bins)
    centres = (b["edges"][:-1] + b["edges"][1:]) / 2
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    used = b["count"] > 0
    a1.bar(centres[used], b["accuracy"][used], width=1 / n_bins, edgecolor="k", alpha=0.7, label="accuracy")
    a1.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    a1.plot(b["confidence"][used], b["accuracy"][used], "ro-", ms=3, label="mean confidence")
    a1.set(ylabel="accuracy", title=title, ylim=(0, 1))
    a1.legend(fontsize=8)
    a2.bar(centres, b["count"], width=1 / n_bins, edgecolor="k")
    a2.set(xlabel="confidence", ylabel="count")
    return _save(fig, path)


def plot_classifier_curves(y_true, y_prob, class_names: Sequence[str], folder, tag: str, title: str = "") -> list[Path]:
    """``roc_pr_<tag>.png`` and ``reliability_<tag>.png`` in ``folder`` for one classifier's test predictions
    (the reliability title carries the ECE over 10 bins)."""
    from .classification import expected_calibration_error

    folder = Path(folder)
    ece = expected_calibration_error(y_true, y_prob, n_bins=10)
    return [plot_roc_pr(y_true, y_prob, class_names, folder / f"roc_pr_{tag}.png", title=title),
            plot_reliability(y_true, y_prob, folder / f"reliability_{tag}.png", n_bins=10,
                             title=f"Reliability {title}: ECE {ece:.3f}")]


def plot_segmentation_overlays(images, truths, preds, path, titles: Sequence[str] | None = None,
                               threshold: float = 0.5) -> Path:
    """One row per case: image, image + truth (green), image + prediction (red)."""
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for i in range(n):
        img = np.asarray(images[i], dtype=np.float32)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        img = (img - img.min()) / (np.ptp(img) + 1e-8)
        t = np.squeeze(np.asarray(truths[i])) > 0.5
        p = np.squeeze(np.asarray(preds[i])) > threshold
        for j, (mask, colour, label) in enumerate([(None, None, "image"), (t, (0, 1, 0), "truth"),
                                                   (p, (1, 0, 0), "prediction")]):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            if mask is not None:
                over = np.zeros(mask.shape + (4,))
                over[mask] = (*colour, 0.4)
                ax.imshow(over)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=[colour], linewidths=0.8)
            ax.set_title(f"{titles[i]}: {label}" if titles else label, fontsize=8)
            ax.axis("off")
    return _save(fig, path)
