import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="medattn")
class DistillationLoss(keras.losses.Loss):
    """Knowledge distillation from stored teacher probabilities (Hinton et al.), with the hard labels in the same
    target.

    ``y_true`` packs, per example, the integer class in column 0 and the teacher's softened class distribution
    ``q = softmax(z_teacher / T)`` in the next ``n_classes`` columns (:func:`pack_targets`). The loss is

        (1 - w) * CE(label, p) + w * T**2 * KL(q || softmax(log p / T))

    where ``p`` is the model's softmax output (``log p / T`` equals the logits over ``T`` up to a constant, so the
    softened student distribution is exact) and ``T**2`` keeps the soft term's gradients on the scale of the hard
    one. A row whose soft columns are all zero (validation data, packed without a teacher) gets the plain
    cross-entropy, so a validation loss stays comparable with runs trained without distillation. Computed in
    float32 whatever the input dtype.

    Reference: Hinton G, Vinyals O, Dean J, "Distilling the knowledge in a neural network", arXiv:1503.02531 (2015).

    Args:
        temperature: T > 0 (the teacher targets must be softened with the same T).
        weight: w in [0, 1], the soft term's share.
        reduction, name: as ``keras.losses.Loss``.

    Shapes: ``y_true`` ``(batch, 1 + n_classes)``; ``y_pred`` ``(batch, n_classes)`` probabilities.

    Example:
        >>> model.compile(loss=DistillationLoss(temperature=4.0, weight=0.9), metrics=[packed_accuracy()])
        >>> model.fit(x, pack_targets(labels, soften(teacher_probs, 4.0)))
    """

    def __init__(self, temperature=4.0, weight=0.9, reduction="sum_over_batch_size", name="distillation", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        temperature, weight = float(temperature), float(weight)
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1], got {weight!r}")
        self.temperature, self.weight = temperature, weight

    def call(self, y_true, y_pred):
        p = ops.cast(y_pred, "float32")
        n = ops.shape(p)[-1]
        t = ops.cast(y_true, "float32")
        label = ops.cast(t[:, 0], "int32")
        q = t[:, 1:]
        logp = ops.log(ops.maximum(p, 1e-30))
        ce = -ops.sum(ops.one_hot(label, n, dtype="float32") * logp, axis=-1)
        log_s = ops.log_softmax(logp / self.temperature, axis=-1)
        kl = ops.sum(q * (ops.log(ops.maximum(q, 1e-30)) - log_s), axis=-1)
        w = self.weight * ops.cast(ops.sum(q, axis=-1) > 0.0, "float32")
        return (1.0 - w) * ce + w * (self.temperature ** 2) * kl

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "weight": self.weight}


@keras.saving.register_keras_serializable(package="medattn")
def _packed_sparse_accuracy(y_true, y_pred):
    label = ops.cast(ops.cast(y_true, "float32")[:, 0], "int32")
    return ops.cast(ops.equal(label, ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")


def packed_accuracy(name: str = "accuracy"):
    """Top-1 accuracy on targets packed by :func:`pack_targets` (the label in column 0), named ``accuracy`` so
    logs and checkpoints read as those of runs with plain labels."""
    return keras.metrics.MeanMetricWrapper(_packed_sparse_accuracy, name=name)


def soften(probs, temperature: float) -> np.ndarray:
    """Teacher probabilities ``(n, k)`` or ``(members, n, k)`` softened with ``temperature``:
    ``softmax(log p / T)`` per member (``log p`` equals the logits up to a constant), averaged over members (the
    ensemble's soft target). Computed in float64; probabilities of exactly 0 count as 1e-30."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise ValueError(f"soften: probabilities must have shape (n, k) or (members, n, k), got {p.shape}")
    if not temperature > 0:
        raise ValueError(f"soften: temperature must be > 0, got {temperature!r}")
    z = np.log(np.maximum(p, 1e-30)) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).mean(axis=0)


def pack_targets(labels, soft=None, n_classes: int | None = None) -> np.ndarray:
    """``(n, 1 + k)`` float32 targets for :class:`DistillationLoss`: the integer label, then the soft target
    (zeros when ``soft`` is None: plain cross-entropy for those rows, as validation data wants)."""
    y = np.asarray(labels).reshape(-1)
    if soft is None:
        if n_classes is None:
            raise ValueError("pack_targets: give soft targets or n_classes")
        soft = np.zeros((len(y), n_classes), np.float32)
    soft = np.asarray(soft, dtype=np.float32)
    if soft.ndim != 2 or len(soft) != len(y):
        raise ValueError(f"pack_targets: soft targets {soft.shape} do not match {len(y)} labels")
    return np.concatenate([y[:, None].astype(np.float32), soft], axis=1)
