"""Deep fusion learning for MIAS mammography ROIs (Sci. Rep. 2020, doi 10.1038/s41598-020-71431-x).

Three tiers: :func:`fusion_head` (the shared classifier head), :func:`_wire` (graph wiring only) and the public
:func:`build_mias_model` (backbone, variant, weights, freezing).

Variants, after the authors' Keras code (docs/papers.md section 2):

* ``baseline`` — backbone output -> GAP -> BatchNorm -> Dense 1024 relu -> Dense 1024 relu -> softmax 2.
* ``model1`` — :class:`~medattn.layers.GlobalPoolFusion` of block1..block5 pool outputs (1,472 features for
  VGG) -> the same BatchNorm + head.
* ``model2`` — :class:`~medattn.layers.CrossChannelFusion` (BN, average pool 16/8/4/2/none to 2x2, 1x1 conv
  32/32/32/64/64, GAP; 224 features) -> the same BatchNorm + head.

Backbones: ``vgg16``, ``vgg19`` (all variants), ``densenet121``, ``resnet50``, ``mobilenet`` (baseline only, as
in the paper's comparison).
"""

from __future__ import annotations

import keras
from keras import layers

from ..backbones import VGG_TAPS, check_backbone, get_backbone, options_for
from ..layers import CrossChannelFusion, FusedBatchNormalization, GlobalPoolFusion

__all__ = ["build_mias_model", "fusion_head", "VARIANTS", "BACKBONES"]

VARIANTS = ("baseline", "model1", "model2")
BACKBONES = ("vgg16", "vgg19", "densenet121", "resnet50", "mobilenet")
MODEL2_FILTERS = (32, 32, 32, 64, 64)
MODEL2_POOLS = (16, 8, 4, 2, 1)


def fusion_head(x, units: int = 1024, n_classes: int = 2, dropout: float = 0.0, name: str = "head"):
    """BatchNorm -> Dense(units) relu -> Dense(units) relu -> softmax (float32 output under mixed precision)."""
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    x = layers.Dense(units, activation="relu", name=f"{name}_fc1")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_drop1")(x)
    x = layers.Dense(units, activation="relu", name=f"{name}_fc2")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_drop2")(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name=f"{name}_softmax")(x)


def _wire(backbone: keras.Model, variant: str, units: int, dropout: float, pool_sizes) -> keras.Model:
    if variant == "baseline":
        feats = layers.GlobalAveragePooling2D(name="gap")(backbone.output)
    else:
        maps = [backbone.get_layer(VGG_TAPS[f"P{i}"]).output for i in range(1, 6)]
        if variant == "model1":
            feats = GlobalPoolFusion(name="global_pool_fusion")(maps)
        else:
            feats = CrossChannelFusion(MODEL2_FILTERS, pool_sizes=pool_sizes, name="cross_channel_fusion")(maps)
    out = fusion_head(feats, units, dropout=dropout)
    return keras.Model(backbone.input, out, name=f"{backbone.name}_{variant}")


def backbone_settings(name: str, weights, width: float, batch_norm: bool) -> dict:
    """The registry options of MIAS backbone ``name`` (``width`` for VGG and MobileNet, ``batch_norm`` for VGG; the
    others are always full size), checked by the registry without building (ValueError: e.g. ImageNet weights for
    a scaled or BatchNorm variant)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    opts = options_for(name, width=width, batch_norm=batch_norm)
    check_backbone(name, weights, **opts)
    return opts


def _backbone(name: str, input_shape, weights, width: float, batch_norm: bool) -> keras.Model:
    opts = backbone_settings(name, weights, width, batch_norm)
    return get_backbone(name, input_shape, weights=weights, **opts).model


def build_mias_model(variant: str = "model2", backbone: str = "vgg16", input_size: int = 72, weights=None,
                     width: float = 1.0, batch_norm: bool = False, freeze_backbone: bool = False,
                     units: int = 1024, dropout: float = 0.0) -> keras.Model:
    """A MIAS patch classifier (2 classes: normal, tumour).

    Args:
        variant: ``baseline`` | ``model1`` | ``model2`` (fusion variants need a VGG backbone).
        weights: None | ``"imagenet"`` (needs internet) | path to backbone weights.
        width, batch_norm: VGG width multiplier and VGG-BN (our from-scratch CPU profile; the paper used
            ``width=1``, no BN, frozen ImageNet weights). ``width`` also sets MobileNet's alpha without ImageNet.
        freeze_backbone: the paper's protocol (only BN, 1x1 convs and the head train).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant != "baseline" and backbone not in ("vgg16", "vgg19"):
        raise ValueError(f"variant {variant!r} fuses VGG block outputs; backbone must be vgg16 or vgg19, got {backbone!r}")
    bb = _backbone(backbone, (input_size, input_size, 3), weights, width, batch_norm)
    if freeze_backbone:
        bb.trainable = False
    pools = None if input_size != 72 else MODEL2_POOLS
    return _wire(bb, variant, units, dropout, pools)
