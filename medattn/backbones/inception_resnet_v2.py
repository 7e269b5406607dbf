"""InceptionResNetV2 with 'same' padding, so feature maps halve cleanly (256 -> 128, 64, 32, 16, 8).

Szegedy C, Ioffe S, Vanhoucke V, Alemi A. "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
Learning", AAAI 2017, arXiv 1602.07261.

keras.applications' InceptionResNetV2 uses 'valid' padding in the stem and the reduction blocks, so at 256x256 its
maps are 127, 60, 29, 14 and 6 pixels and do not line up with a U-Net/LinkNet decoder. This builder is the same
architecture (same layers, filters and weight shapes) with every convolution and pooling 'same'-padded, as
segmentation_models does. ``weights="imagenet"`` builds keras.applications' model with ImageNet weights (needs
internet) and copies them layer by layer: padding does not change any weight shape.

Feature taps (:data:`IRV2_TAPS`): P1 ``stem_conv3_ac`` (stride 2), P2 ``stem_conv5_ac`` (4), P3 ``block35_10_ac``
(8), P4 ``block17_20_ac`` (16), P5 ``conv_7b_ac`` (32).
"""

from __future__ import annotations

import keras
from keras import layers

from ..layers import FusedBatchNormalization

__all__ = ["inception_resnet_v2_same", "IRV2_TAPS", "ScaledResidual"]

IRV2_TAPS = {"P1": "stem_conv3_ac", "P2": "stem_conv5_ac", "P3": "block35_10_ac", "P4": "block17_20_ac",
             "P5": "conv_7b_ac"}


@keras.saving.register_keras_serializable(package="medattn")
class ScaledResidual(layers.Layer):
    """``x + scale * r`` (Inception-ResNet residual scaling)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        x, r = inputs
        return x + r * self.scale

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _cbn(x, filters, kernel, strides=1, name=None, activation="relu", use_bias=False):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=use_bias, name=name)(x)
    if not use_bias:
        x = FusedBatchNormalization(scale=False, name=None if name is None else f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=None if name is None else f"{name}_ac")(x)
    return x


def _block(x, scale, kind, idx, activation="relu"):
    if kind == "block35":
        b0 = _cbn(x, 32, 1)
        b1 = _cbn(_cbn(x, 32, 1), 32, 3)
        b2 = _cbn(_cbn(_cbn(x, 32, 1), 48, 3), 64, 3)
        branches = [b0, b1, b2]
    elif kind == "block17":
        b0 = _cbn(x, 192, 1)
        b1 = _cbn(_cbn(_cbn(x, 128, 1), 160, (1, 7)), 192, (7, 1))
        branches = [b0, b1]
    else:
        b0 = _cbn(x, 192, 1)
        b1 = _cbn(_cbn(_cbn(x, 192, 1), 224, (1, 3)), 256, (3, 1))
        branches = [b0, b1]
    name = f"{kind}_{idx}"
    mixed = layers.Concatenate(name=f"{name}_mixed")(branches)
    up = _cbn(mixed, x.shape[-1], 1, name=f"{name}_conv", activation=None, use_bias=True)
    x = ScaledResidual(scale, name=f"{name}_scale")([x, up])
    return layers.Activation(activation, name=f"{name}_ac")(x) if activation else x


def inception_resnet_v2_same(input_shape=(256, 256, 3), weights=None, name="inception_resnet_v2_same"):
    """The feature extractor (no top); output ``conv_7b_ac`` at stride 32. Input sides must be multiples of 32.

    Args:
        weights: None, ``"imagenet"`` (copied from keras.applications; needs internet) or a path.
    """
    h, w = input_shape[:2]
    if h is not None and (h % 32 or w % 32):
        raise ValueError(f"input height and width must be multiples of 32, got {input_shape}")
    inp = keras.Input(input_shape, name="input")
    x = _cbn(inp, 32, 3, strides=2, name="stem_conv1")
    x = _cbn(x, 32, 3, name="stem_conv2")
    x = _cbn(x, 64, 3, name="stem_conv3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool1")(x)
    x = _cbn(x, 80, 1, name="stem_conv4")
    x = _cbn(x, 192, 3, name="stem_conv5")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool2")(x)
    b0 = _cbn(x, 96, 1)
    b1 = _cbn(_cbn(x, 48, 1), 64, 5)
    b2 = _cbn(_cbn(_cbn(x, 64, 1), 96, 3), 96, 3)
    bp = _cbn(layers.AveragePooling2D(3, strides=1, padding="same")(x), 64, 1)
    x = layers.Concatenate(name="mixed_5b")([b0, b1, b2, bp])
    for i in range(1, 11):
        x = _block(x, 0.17, "block35", i)
    b0 = _cbn(x, 384, 3, strides=2)
    b1 = _cbn(_cbn(_cbn(x, 256, 1), 256, 3), 384, 3, strides=2)
    bp = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = layers.Concatenate(name="mixed_6a")([b0, b1, bp])
    for i in range(1, 21):
        x = _block(x, 0.1, "block17", i)
    b0 = _cbn(_cbn(x, 256, 1), 384, 3, strides=2)
    b1 = _cbn(_cbn(x, 256, 1), 288, 3, strides=2)
    b2 = _cbn(_cbn(_cbn(x, 256, 1), 288, 3), 320, 3, strides=2)
    bp = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = layers.Concatenate(name="mixed_7a")([b0, b1, b2, bp])
    for i in range(1, 10):
        x = _block(x, 0.2, "block8", i)
    x = _block(x, 1.0, "block8", 10, activation=None)
    x = _cbn(x, 1536, 1, name="conv_7b")
    model = keras.Model(inp, x, name=name)
    if weights == "imagenet":
        ref = keras.applications.InceptionResNetV2(include_top=False, weights="imagenet", input_shape=input_shape)
        copy_weights_in_order(ref, model)
    elif weights not in (None, "none"):
        model.load_weights(weights)
    return model


def copy_weights_in_order(src: keras.Model, dst: keras.Model) -> int:
    """Copy weights between two models with the same weighted layers in the same order; returns the count."""
    a = [la for la in src.layers if la.weights]
    b = [lb for lb in dst.layers if lb.weights]
    if len(a) != len(b):
        raise ValueError(f"models differ: {len(a)} weighted layers in {src.name}, {len(b)} in {dst.name}")
    for la, lb in zip(a, b):
        wa = la.get_weights()
        if [w.shape for w in wa] != [tuple(w.shape) for w in lb.weights]:
            raise ValueError(f"weight shapes differ between {la.name} and {lb.name}")
        lb.set_weights(wa)
    return len(b)
