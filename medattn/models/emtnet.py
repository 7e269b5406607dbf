"""EMT-Net: one encoder shared by a benign/malignant classifier and a lesion segmenter (paper 3).

Shi J, Vakanski A, Xian M, Ding J, Ning C. "EMT-NET: Efficient multitask network for computer-aided diagnosis of
breast cancer", ISBI 2022, arXiv 2201.04795. The paper gives the idea (segmentation focuses the shared encoder on
the tumour) but not the layout; our defaults follow the same group's benchmark code (docs/papers.md section 3):

* encoder: a registry backbone (MobileNetV2 by default), taps P1..P5;
* decoder (U-Net style), names ``decoder_stage{i}_*``: 3x3 transposed conv stride 2 -> concatenate the skip ->
  two 3x3 conv + BN + ReLU, with 128/64/32/16 filters, then a transposed conv to the input size and a 1x1 sigmoid
  conv: output ``mask``;
* classification head on the encoder's last map: GAP -> Dense 512 ReLU -> Dropout 0.3 -> Dense 64 ReLU -> Dense 1:
  output ``label``, a logit (malignant positive), to be trained with
  :class:`medattn.losses.StableWeightedBCE`.

Three tiers: :func:`decoder_stage` -> :func:`_wire` (graph only) -> :func:`build_emtnet` (backbone, weights,
heads). ``segmentation=False`` gives the classification-only ablation (same encoder and head).
"""

from __future__ import annotations

import keras
from keras import layers

from ..backbones import check_input_size, get_backbone
from ..layers import FusedBatchNormalization

__all__ = ["build_emtnet", "decoder_stage"]


def _conv_bn_relu(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def decoder_stage(x, skip, filters: int, name: str):
    """x2 upsampling by transposed conv, concatenation with the encoder skip, two conv-BN-ReLU."""
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"{name}_up")(x)
    if skip is not None:
        x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    x = _conv_bn_relu(x, filters, f"{name}_a")
    return _conv_bn_relu(x, filters, f"{name}_b")


def _wire(bb, segmentation: bool, decoder_filters, dropout: float) -> keras.Model:
    top = bb.feature("P5")
    h = layers.GlobalAveragePooling2D(name="cls_gap")(top)
    h = layers.Dense(512, activation="relu", name="cls_fc1")(h)
    h = layers.Dropout(dropout, name="cls_dropout")(h)
    h = layers.Dense(64, activation="relu", name="cls_fc2")(h)
    label = layers.Dense(1, dtype="float32", name="label")(h)
    if not segmentation:
        return keras.Model(bb.model.input, label, name=f"emtnet_{bb.name}_cls_only")
    x = top
    for level, f in zip((4, 3, 2, 1), decoder_filters):
        x = decoder_stage(x, bb.feature(f"P{level}"), f, f"decoder_stage{level}")
    x = layers.Conv2DTranspose(decoder_filters[-1], 3, strides=2, padding="same", name="decoder_final_up")(x)
    mask = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(bb.model.input, {"label": label, "mask": mask}, name=f"emtnet_{bb.name}")


def build_emtnet(input_size: int = 224, backbone: str = "mobilenetv2", weights=None, segmentation: bool = True,
                 decoder_filters=(128, 64, 32, 16), dropout: float = 0.3, **backbone_options) -> keras.Model:
    """The multitask model (outputs ``{"label": logit, "mask": probability}``) or, with ``segmentation=False``,
    the classifier alone (output: the logit). ``weights``: None | ``"imagenet"`` | path to encoder weights;
    ``backbone_options`` go to the registry (e.g. ``width`` for MobileNetV2's alpha without ImageNet weights)."""
    check_input_size(input_size)
    if len(decoder_filters) != 4:
        raise ValueError(f"decoder_filters must give 4 stages, got {decoder_filters!r}")
    bb = get_backbone(backbone, (input_size, input_size, 3), weights=weights, **backbone_options)
    missing = [f"P{i}" for i in range(1, 6) if f"P{i}" not in bb.taps]
    if segmentation and missing:
        raise ValueError(f"backbone {backbone!r} has no feature taps {missing}; the decoder needs P1..P5")
    return _wire(bb, segmentation, tuple(decoder_filters), dropout)
