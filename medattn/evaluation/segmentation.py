"""Segmentation metrics: per-image Dice and IoU with an explicit empty-mask policy, and pixel accuracy.

Empty-mask policy (the same in every function and in :class:`medattn.evaluation.DiceMetric`):

==================  ==================  =============================================
truth               prediction          Dice / IoU
==================  ==================  =============================================
non-empty           anything            2|T∩P| / (|T|+|P|)  /  |T∩P| / |T∪P|
empty               empty               1.0 (a correct "no lesion"); excluded from the
                                        lesion-image mean, included in the all-image mean
empty               non-empty           0.0 (a false-positive lesion)
==================  ==================  =============================================

"lesion images" are those whose truth mask is non-empty (BUSI benign and malignant); "all images" adds the
normal images. Summaries are computed from the per-image values that :func:`per_image_dice` keeps.
Pixel accuracy is reported because the paper does, but background dominates it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["per_image_dice", "per_image_iou", "pixel_accuracy", "segmentation_summary", "binarize",
           "postprocess_masks", "choose_min_area", "gate_masks", "choose_gate", "MISS_KINDS", "miss_kinds",
           "miss_breakdown"]


def binarize(mask, threshold: float = 0.5) -> np.ndarray:
    """Boolean mask from probabilities or 0/1 (or 0/255) labels; a trailing channel axis of size 1 is dropped."""
    m = np.asarray(mask)
    if m.ndim >= 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.integer) and m.max(initial=0) > 1:
        return m > 127
    return m > threshold


def _prep(y_true, y_pred, threshold):
    t, p = binarize(y_true, 0.5), binarize(y_pred, threshold)
    if t.shape != p.shape:
        raise ValueError(f"truth masks have shape {t.shape} but predictions have shape {p.shape}")
    if t.ndim == 2:
        t, p = t[None], p[None]
    return t.reshape(len(t), -1), p.reshape(len(p), -1)


def per_image_dice(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """Dice per image of a batch ``(n, H, W[, 1])`` (or one ``(H, W)`` mask), empty-mask policy in the module doc."""
    t, p = _prep(y_true, y_pred, threshold)
    inter = np.sum(t & p, axis=1).astype(np.float64)
    denom = (np.sum(t, axis=1) + np.sum(p, axis=1)).astype(np.float64)
    out = np.ones(len(t))
    nz = denom > 0
    out[nz] = 2.0 * inter[nz] / denom[nz]
    return out


def per_image_iou(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """IoU (Jaccard) per image, same empty-mask policy as :func:`per_image_dice`."""
    t, p = _prep(y_true, y_pred, threshold)
    inter = np.sum(t & p, axis=1).astype(np.float64)
    union = np.sum(t | p, axis=1).astype(np.float64)
    out = np.ones(len(t))
    nz = union > 0
    out[nz] = inter[nz] / union[nz]
    return out


def pixel_accuracy(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """Fraction of correctly labelled pixels, per image."""
    t, p = _prep(y_true, y_pred, threshold)
    return np.mean(t == p, axis=1)


def segmentation_summary(y_true, y_pred, threshold: float = 0.5) -> dict:
    """Per-image values and their means: ``dice_lesion``, ``iou_lesion`` (truth non-empty), ``dice_all``,
    ``iou_all``, ``pixel_accuracy``, ``n_lesion``, ``n_empty``, ``false_positive_rate_empty`` (share of empty
    truths with a non-empty prediction) and the per-image arrays under ``per_image``."""
    dice = per_image_dice(y_true, y_pred, threshold)
    iou = per_image_iou(y_true, y_pred, threshold)
    acc = pixel_accuracy(y_true, y_pred, threshold)
    t, p = _prep(y_true, y_pred, threshold)
    lesion = t.any(axis=1)
    empty = ~lesion

    def mean(x):
        return float(np.mean(x)) if len(x) else float("nan")

    return {
        "dice_lesion": mean(dice[lesion]),
        "iou_lesion": mean(iou[lesion]),
        "dice_all": mean(dice),
        "iou_all": mean(iou),
        "pixel_accuracy": mean(acc),
        "n_lesion": int(lesion.sum()),
        "n_empty": int(empty.sum()),
        "false_positive_rate_empty": mean(p[empty].any(axis=1)) if empty.any() else float("nan"),
        "per_image": {"dice": dice, "iou": iou, "pixel_accuracy": acc, "lesion": lesion},
    }


def _largest_component(mask) -> np.ndarray:
    """The largest 8-connected component of a non-empty boolean mask ``(H, W)``."""
    from skimage.measure import label

    lab = label(mask, connectivity=2)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def postprocess_masks(prob, min_area: float = 0.0, largest_component: bool = True,
                      threshold: float = 0.5) -> np.ndarray:
    """Predicted probability masks ``(n, H, W[, 1])`` cleaned for a one-lesion task: outside the largest
    connected component (8-connected) of ``prob > threshold``, the above-threshold pixels are set to 0
    (``largest_component``), and a mask whose kept area is below ``min_area`` (a fraction of the image) is set to
    0 everywhere, so an image the model sees no real lesion in gets an empty mask. Other probabilities are left as
    they are (a classifier may take them); the output has the input's shape and dtype."""
    a = np.asarray(prob)
    out = a.copy()
    flat = out[..., 0] if a.ndim == 4 else out
    pos = binarize(a, threshold)
    if pos.ndim == 2:
        pos, flat = pos[None], flat[None]
    for i in range(len(pos)):
        keep = pos[i]
        if largest_component and keep.any():
            keep = _largest_component(keep)
        if keep.mean() < min_area:
            flat[i] = 0
        else:
            flat[i][pos[i] & ~keep] = 0  # the other components; sub-threshold probabilities stay
    return out


def choose_min_area(y_true, prob, candidates=(0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05),
                    largest_component: bool = True, threshold: float = 0.5) -> tuple[float, dict]:
    """The ``min_area`` of :func:`postprocess_masks` that gives the highest mean Dice over ALL images (lesion and
    empty: an emptied normal image scores 1, an emptied lesion 0), on data that is not the test split; ties go to
    the smaller area. Returns ``(min_area, {candidate: mean Dice})``."""
    scores = {}
    for c in candidates:
        scores[float(c)] = float(np.mean(per_image_dice(y_true, postprocess_masks(prob, c, largest_component,
                                                                                   threshold), threshold)))
    best = max(scores, key=lambda c: (round(scores[c], 12), -c))
    return best, scores


def gate_masks(prob, empty) -> np.ndarray:
    """Masks ``(n, H, W[, 1])`` with those of the images flagged in ``empty`` (``(n,)`` booleans, e.g. "the
    classifier calls this image normal") set to 0 everywhere; the others unchanged. Returns a copy."""
    out = np.array(prob, copy=True)
    empty = np.asarray(empty, dtype=bool)
    if empty.shape != (len(out),):
        raise ValueError(f"gate_masks: {len(out)} masks but {empty.shape} flags")
    out[empty] = 0
    return out


def choose_gate(y_true, prob, empty, threshold: float = 0.5) -> tuple[bool, dict]:
    """Whether emptying the masks flagged in ``empty`` raises the mean Dice over ALL images (lesion and empty,
    the same criterion as :func:`choose_min_area`), on data that is not the test split; a tie keeps the masks.
    Returns ``(apply, {"without": mean Dice, "with": mean Dice})``."""
    without = float(np.mean(per_image_dice(y_true, prob, threshold)))
    gated = float(np.mean(per_image_dice(y_true, gate_masks(prob, empty), threshold)))
    return round(gated, 12) > round(without, 12), {"without": without, "with": gated}


MISS_KINDS = ("empty", "elsewhere", "wrong_component", "small_overlap")


def miss_kinds(y_true, prob, threshold: float = 0.5, miss_dice: float = 0.1) -> list[str]:
    """Per image, why a lesion was missed: ``"-"`` for an image without a lesion or with Dice >= ``miss_dice``;
    otherwise ``"empty"`` (no pixel above ``threshold``), ``"elsewhere"`` (predicted pixels, none on the lesion),
    ``"wrong_component"`` (some predicted pixels on the lesion, but not in the largest 8-connected component, which
    the usual one-lesion cleaning would keep) or ``"small_overlap"`` (the largest component touches the lesion, yet
    Dice stays below ``miss_dice``)."""
    t, p = binarize(y_true, 0.5), binarize(prob, threshold)
    if t.shape != p.shape:
        raise ValueError(f"truth masks have shape {t.shape} but predictions have shape {p.shape}")
    if t.ndim == 2:
        t, p = t[None], p[None]
    dice = per_image_dice(t, p)
    kinds = []
    for ti, pi, d in zip(t, p, dice):
        if not ti.any() or d >= miss_dice:
            kinds.append("-")
        elif not pi.any():
            kinds.append("empty")
        elif not (pi & ti).any():
            kinds.append("elsewhere")
        else:
            kinds.append("small_overlap" if (_largest_component(pi) & ti).any() else "wrong_component")
    return kinds


def miss_breakdown(y_true, prob, threshold: float = 0.5, miss_dice: float = 0.1) -> dict:
    """Where the lesion Dice is lost (for images that are not the test split, to decide what to try next): the
    number of lesion images, how many are missed (Dice below ``miss_dice``) and of which kind
    (:func:`miss_kinds`), the mean lesion Dice, the mean Dice of the lesion images that are not missed, and the
    median of the highest predicted probability inside the lesion of the ``empty`` misses (near ``threshold``:
    a lower threshold would find them; near 0: the model does not see them)."""
    t = binarize(y_true, 0.5)
    a = np.asarray(prob, dtype=np.float64)
    if a.ndim >= 3 and a.shape[-1] == 1:  # the channel axis, as binarize drops it
        a = a[..., 0]
    t, a = (t[None] if t.ndim == 2 else t), (a[None] if a.ndim == 2 else a)
    kinds = np.array(miss_kinds(t, a, threshold, miss_dice))
    dice = per_image_dice(t, a, threshold)
    lesion = t.reshape(len(t), -1).any(axis=1)
    found = lesion & (kinds == "-")
    empty = kinds == "empty"
    return {"n_lesion": int(lesion.sum()), "n_missed": int((lesion & ~found).sum()),
            **{f"missed_{k}": int(np.sum(kinds == k)) for k in MISS_KINDS},
            "dice_lesion": float(dice[lesion].mean()) if lesion.any() else float("nan"),
            "dice_found": float(dice[found].mean()) if found.any() else float("nan"),
            "empty_max_prob_median": (float(np.median([a[i][t[i]].max() for i in np.flatnonzero(empty)]))
                                      if empty.any() else float("nan"))}
