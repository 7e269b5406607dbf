"""Keras metrics and losses for training, matching the NumPy metrics' definitions and empty-mask policy."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["DiceMetric", "dice_loss", "bce_dice_loss", "soft_dice"]


def soft_dice(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice per image ``(2 sum(t p) + s) / (sum t + sum p + s)``; ``s`` keeps empty-empty at 1."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(y_true * y_pred, axis=axes)
    denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * inter + smooth) / (denom + smooth)


@keras.saving.register_keras_serializable(package="medattn")
def dice_loss(y_true, y_pred):
    """``1 - soft_dice`` per image."""
    return 1.0 - soft_dice(y_true, y_pred)


@keras.saving.register_keras_serializable(package="medattn")
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy (mean over pixels) + soft Dice loss, per image (docs/papers.md section 1 default)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=tuple(range(1, len(y_pred.shape) - 1)))
    return bce + dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="medattn")
class DiceMetric(keras.metrics.Metric):
    """Mean hard Dice over images, thresholded at ``threshold``; an image with empty truth and empty prediction
    counts 1.0, as in :func:`medattn.evaluation.per_image_dice`."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        self.threshold = threshold
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
        p = ops.cast(ops.greater(ops.cast(y_pred, "float32"), self.threshold), "float32")
        axes = tuple(range(1, len(p.shape)))
        inter = ops.sum(t * p, axis=axes)
        denom = ops.sum(t, axis=axes) + ops.sum(p, axis=axes)
        dice = ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), ops.ones_like(denom))
        self.total.assign_add(ops.sum(dice))
        self.count.assign_add(ops.cast(ops.shape(dice)[0], "float32"))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
