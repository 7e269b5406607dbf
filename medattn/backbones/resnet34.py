"""ResNet-34 (basic blocks 3-4-6-3), which neither keras.applications nor keras-hub provides.

He K, Zhang X, Ren S, Sun J. "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv 1512.03385.

Layout as torchvision's ``resnet34``: 7x7/2 conv 64 + BN + ReLU, 3x3/2 max-pool, four stages of basic blocks
(two 3x3 conv + BN, identity shortcut, or 1x1/2 conv + BN where the stage halves the size), 64-128-256-512
filters. Without the top it has 21,284,672 trainable parameters, as torchvision counts them (BN scale and
offset trainable, moving statistics not). No ImageNet weights ship with Keras: ``weights`` is None or a path to
weights saved from this same builder.

Layer names: ``conv1_conv``, ``conv1_bn``, ``conv1_relu``, ``pool1_pool``, then ``stage{s}_block{b}_*`` with each
block's output ``stage{s}_block{b}_out``; taps P1..P5 in :data:`RESNET34_TAPS`.
"""

from __future__ import annotations

import keras
from keras import layers

from ..layers import FusedBatchNormalization

__all__ = ["resnet34", "RESNET34_TAPS"]

_BLOCKS = (3, 4, 6, 3)
_FILTERS = (64, 128, 256, 512)
RESNET34_TAPS = {"P1": "conv1_relu", "P2": "stage1_block3_out", "P3": "stage2_block4_out",
                 "P4": "stage3_block6_out", "P5": "stage4_block3_out"}


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_down_conv")(x)
        shortcut = FusedBatchNormalization(epsilon=1e-5, name=f"{name}_down_bn")(shortcut)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = FusedBatchNormalization(epsilon=1e-5, name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = FusedBatchNormalization(epsilon=1e-5, name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def resnet34(input_shape=(224, 224, 3), weights=None, name: str = "resnet34") -> keras.Model:
    """ResNet-34 feature extractor (no top); output is the stage-4 map (stride 32, 512 channels)."""
    if weights == "imagenet":
        raise ValueError("ResNet-34 has no ImageNet weights in Keras; pass weights=None or a path to weights "
                         "saved from medattn.backbones.resnet34")
    inp = keras.Input(input_shape, name="input")
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="conv1_conv")(inp)
    x = FusedBatchNormalization(epsilon=1e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for s, (n, f) in enumerate(zip(_BLOCKS, _FILTERS), start=1):
        for b in range(1, n + 1):
            x = _basic_block(x, f, 2 if (b == 1 and s > 1) else 1, f"stage{s}_block{b}")
    model = keras.Model(inp, x, name=name)
    if weights not in (None, "none"):
        model.load_weights(weights)
    return model
