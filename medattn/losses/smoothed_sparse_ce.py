import keras
from keras import ops


@keras.saving.register_keras_serializable(package="medattn")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy on integer labels with label smoothing.

    Keras 3's ``SparseCategoricalCrossentropy`` has no ``label_smoothing``; this one-hot encodes the labels to the
    width of ``y_pred`` and smooths them as ``keras.losses.CategoricalCrossentropy`` does:
    ``y * (1 - s) + s / n_classes``. With ``s = 0`` it equals the plain sparse loss. Computed in float32 whatever
    the input dtype (bfloat16 probabilities round ``log`` too coarsely).

    Reference: Szegedy C et al., "Rethinking the Inception architecture for computer vision", CVPR 2016 (label
    smoothing regularisation).

    Args:
        label_smoothing: s in [0, 1).
        from_logits: whether ``y_pred`` holds logits (default: probabilities, as a softmax head gives).
        reduction, name: as ``keras.losses.Loss``.

    Shapes: ``y_true`` ``(batch,)`` or ``(batch, 1)`` integer classes; ``y_pred`` ``(batch, n_classes)``.

    Example:
        >>> model.compile(loss=SmoothedSparseCategoricalCrossentropy(label_smoothing=0.1))
    """

    def __init__(self, label_smoothing=0.0, from_logits=False, reduction="sum_over_batch_size",
                 name="smoothed_sparse_categorical_crossentropy", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        label_smoothing = float(label_smoothing)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = label_smoothing
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        p = ops.cast(y_pred, "float32")
        y = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(p)[-1], dtype="float32")
        return keras.losses.categorical_crossentropy(y, p, from_logits=self.from_logits,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}
