"""Test-time augmentation for classifiers: the mean prediction over symmetric views of each input.

Use it only with views the model was trained to treat alike (its training augmentation): ``flip`` (the image and its
mirror image) for models trained with horizontal flips, ``dihedral`` (the four quarter-turn rotations of the image
and of its mirror image) for models trained with flips and rotations of up to a half turn either way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["TTA_MODES", "tta_views", "tta_restore", "tta_predict", "tta_refusal"]

TTA_MODES = {"flip": 2, "dihedral": 8}  # mode -> number of views


def tta_views(x: np.ndarray, mode: str | None) -> list[np.ndarray]:
    """The views of a batch ``x`` (N, H, W) or (N, H, W, C): ``[x]`` for ``None``; ``flip``: ``x`` and its left-right mirror;
    ``dihedral``: rotations by 0, 90, 180, 270 degrees of ``x`` and of its mirror (square inputs only)."""
    x = np.asarray(x)
    if mode is None:
        return [x]
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {sorted(TTA_MODES)} or none, got {mode!r}")
    if x.ndim not in (3, 4):
        raise ValueError(f"tta expects a batch of images (N, H, W) or (N, H, W, C), got shape {x.shape}")
    mirror = x[:, :, ::-1]
    if mode == "flip":
        return [x, mirror]
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"tta=dihedral needs square inputs, got {x.shape[1]}x{x.shape[2]}")
    return [np.rot90(v, k, axes=(1, 2)) for v in (x, mirror) for k in range(4)]


def tta_restore(y: np.ndarray, mode: str | None, i: int) -> np.ndarray:
    """Map a dense output (a mask: N, H, W[, C]) of view ``i`` of :func:`tta_views` back onto the original image."""
    if mode is None or i == 0:
        return y
    if mode == "flip":
        return y[:, :, ::-1]
    y = np.rot90(y, -(i % 4), axes=(1, 2))
    return y[:, :, ::-1] if i >= 4 else y


def tta_refusal(field: str, mode: str | None, allowed, why: str = "") -> str | None:
    """None if ``mode`` is off or one of ``allowed``, else the one-line reason a script refuses it with."""
    if mode is None or mode in allowed:
        return None
    return f"{field} {mode!r}: choose none or {' or '.join(sorted(allowed))}" + (f" ({why})" if why else "")


def tta_predict(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, mode: str | None) -> np.ndarray:
    """Mean of ``predict(view)`` over the views of ``x`` (:func:`tta_views`); ``predict`` maps a batch to one
    output array per image (probabilities, not logits: the mean of probabilities is what is averaged)."""
    outs = [np.asarray(predict(np.ascontiguousarray(v)), dtype=np.float64) for v in tta_views(x, mode)]
    return np.mean(outs, axis=0)
