import keras
from keras import ops


@keras.saving.register_keras_serializable(package="medattn")
class StableWeightedBCE(keras.losses.Loss):
    """Positive-weighted binary cross-entropy on logits, finite for any logit (EMT-Net's classification loss).

    Reference: Shi J, Vakanski A, Xian M, Ding J, Ning C. "EMT-NET: Efficient multitask network for computer-aided
    diagnosis of breast cancer", ISBI 2022, arXiv 2201.04795 (the same group's busbench code gives the form).

    Computes, per example, ``(1 - y) x + (1 + (w - 1) y) softplus(-x)`` with
    ``softplus(-x) = max(-x, 0) + log1p(exp(-|x|))``, which equals the naive
    ``-(w y log sigmoid(x) + (1 - y) log(1 - sigmoid(x)))`` wherever that is finite, and stays finite (with finite
    gradients) for logits of any size, where the naive form gives ``log(0) = -inf``. ``w > 1`` weighs the positive
    class (malignant) up: higher sensitivity, lower specificity. Computed in float32 whatever the input dtype, so
    bfloat16 logits of +-1e4 are safe.

    Args:
        pos_weight: w, the weight of positive examples (default 1: plain BCE).
        reduction, name: as ``keras.losses.Loss``.

    Shapes: ``y_true`` and ``y_pred`` (logits) ``(batch,)`` or ``(batch, 1)``; one value per example before
    reduction.

    Example:
        >>> model.compile(loss=StableWeightedBCE(pos_weight=4.0))
    """

    def __init__(self, pos_weight=1.0, reduction="sum_over_batch_size", name="stable_weighted_bce", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        pos_weight = float(pos_weight)
        if not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight!r}")
        self.pos_weight = pos_weight

    def call(self, y_true, y_pred):
        x = ops.cast(y_pred, "float32")
        y = ops.cast(ops.reshape(y_true, ops.shape(x)), "float32")
        softplus_neg = ops.maximum(-x, 0.0) + ops.log1p(ops.exp(-ops.abs(x)))
        per = (1.0 - y) * x + (1.0 + (self.pos_weight - 1.0) * y) * softplus_neg
        return ops.mean(per, axis=-1) if len(per.shape) > 1 else per

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight}
