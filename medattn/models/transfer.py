"""A registry backbone with the brain-MRI transfer study's classification head (paper 4).

Head (``docs/papers.md`` section 4): global average pooling -> Dropout 0.3 -> Dense 256 ReLU -> Dropout 0.3 ->
softmax. :func:`set_backbone_trainable` gives the two phases of fine-tuning: backbone frozen (head only), then the
top fraction of its layers unfrozen with BatchNorm layers kept in inference mode (their ImageNet statistics are
not re-estimated from small batches).
"""

from __future__ import annotations

import keras
from keras import layers

from ..backbones import get_backbone

__all__ = ["build_transfer_classifier", "set_backbone_trainable", "backbone_layers", "last_feature_layer"]


def build_transfer_classifier(backbone: str, input_size: int = 224, n_classes: int = 4, weights=None,
                              dropout: float = 0.3, units: int = 256, **backbone_options) -> keras.Model:
    """``backbone`` from the registry (``weights``: None | ``"imagenet"`` | path) with the paper's head; the
    backbone's layers are the model's own (names unchanged), so :func:`last_feature_layer` names a layer of the
    model for Grad-CAM."""
    bb = get_backbone(backbone, (input_size, input_size, 3), weights=weights, **backbone_options)
    x = layers.GlobalAveragePooling2D(name="head_gap")(bb.model.output)
    x = layers.Dropout(dropout, name="head_dropout1")(x)
    x = layers.Dense(units, activation="relu", name="head_fc")(x)
    x = layers.Dropout(dropout, name="head_dropout2")(x)
    out = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(bb.model.input, out, name=f"transfer_{backbone}")


def backbone_layers(model) -> list:
    """The model's backbone layers, input first (everything before the head)."""
    return [layer for layer in model.layers if not layer.name.startswith("head_") and layer.name != "probs"]


def last_feature_layer(model) -> str:
    """The name of the backbone's last 4-D feature map (the input of the head's pooling): Grad-CAM's layer."""
    return _producer(model, model.get_layer("head_gap"))


def _producer(model, layer) -> str:
    """The layer whose output feeds ``layer``."""
    src = layer.input
    for cand in model.layers:
        if cand is not layer and getattr(cand, "output", None) is src:
            return cand.name
    raise ValueError(f"no layer of {model.name} produces the input of {layer.name}")


def set_backbone_trainable(model, fraction: float) -> int:
    """Make the top ``fraction`` (0..1) of the backbone's layers trainable and the rest frozen; BatchNorm layers
    stay frozen whenever ``fraction < 1`` (fine-tuning) and train with the rest when ``fraction == 1`` (training
    from scratch). Returns the number of trainable backbone layers. Recompile afterwards."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    bb = [layer for layer in backbone_layers(model) if not isinstance(layer, keras.layers.InputLayer)]
    first = len(bb) - int(round(fraction * len(bb)))
    n = 0
    for i, layer in enumerate(bb):
        on = i >= first and (fraction == 1.0 or not isinstance(layer, keras.layers.BatchNormalization))
        layer.trainable = on
        n += int(on)
    return n
