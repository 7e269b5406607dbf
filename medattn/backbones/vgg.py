"""VGG16 / VGG19 feature extractors with the keras.applications layer names, plus width and BatchNorm options.

Simonyan K, Zisserman A. "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

``width=1.0, batch_norm=False`` is exactly keras.applications' VGG (and takes its ImageNet weights with
``weights="imagenet"``). For training from scratch on a CPU, ``width`` scales every block's filters
(0.25: 16-32-64-128-128) and ``batch_norm=True`` adds BatchNorm after each convolution (VGG-BN); both are
departures from the papers, recorded in every result that uses them.
"""

from __future__ import annotations

import keras
from keras import layers

from ..layers import FusedBatchNormalization

__all__ = ["vgg", "VGG_TAPS", "VGG_FILTERS"]

VGG_FILTERS = (64, 128, 256, 512, 512)
_BLOCKS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_TAPS = {f"P{i}": f"block{i}_pool" for i in range(1, 6)}


def vgg(depth: int = 16, input_shape=(224, 224, 3), weights=None, width: float = 1.0, batch_norm: bool = False,
        name: str | None = None) -> keras.Model:
    """VGG feature extractor (no top) whose output is ``block5_pool``; tap ``block{i}_pool`` by name.

    Args:
        depth: 16 or 19.
        weights: None, ``"imagenet"`` (needs internet; only with ``width=1`` and no BatchNorm) or a path to a
            weights file saved from this same architecture.
        width: filter multiplier (at least 8 filters per conv).
        batch_norm: BatchNorm after each convolution (conv without bias, then BN, then ReLU).
    """
    if depth not in _BLOCKS:
        raise ValueError(f"depth must be 16 or 19, got {depth!r}")
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width!r}")
    if weights == "imagenet":
        if width != 1.0 or batch_norm:
            raise ValueError(f"ImageNet weights exist only for width=1.0 without BatchNorm, got width={width!r}, "
                             f"batch_norm={batch_norm!r}")
        fn = keras.applications.VGG16 if depth == 16 else keras.applications.VGG19
        return fn(include_top=False, weights="imagenet", input_shape=input_shape)
    inp = keras.Input(input_shape, name="input")
    x = inp
    for b, (n_conv, f) in enumerate(zip(_BLOCKS[depth], VGG_FILTERS), start=1):
        filters = max(8, int(round(f * width)))
        for i in range(1, n_conv + 1):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                              activation=None if batch_norm else "relu", name=f"block{b}_conv{i}")(x)
            if batch_norm:
                x = FusedBatchNormalization(name=f"block{b}_bn{i}")(x)
                x = layers.Activation("relu", name=f"block{b}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    model = keras.Model(inp, x, name=name or f"vgg{depth}")
    if weights not in (None, "none"):
        model.load_weights(weights)
    return model
