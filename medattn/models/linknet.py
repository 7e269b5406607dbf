"""LinkNet with spatial-channel attention on an InceptionResNetV2 encoder (the BUSI segmenter, paper 1).

Chaurasia A, Culurciello E. "LinkNet: Exploiting Encoder Representations for Efficient Semantic Segmentation",
VCIP 2017, arXiv 1707.03718; attention after each decoder block: scSE (Roy et al., MICCAI 2018).

Three tiers: :func:`decoder_block` (one LinkNet block) -> :func:`_wire_linknet` (graph only) ->
:func:`build_linknet` (backbone from the registry :func:`medattn.backbones.get_backbone`, skips by tap name,
weights, freezing). Decoder block ``i`` (names ``decoder_stage{i}_*``): 1x1 conv to C/4 -> 3x3 transposed conv
stride 2 -> 1x1 conv to the skip's channels (each conv + BN + ReLU), added to the encoder skip, then the attention
block chosen by name (``"scse"`` by default, ``"cbam"``, or None for the ablation).

The encoder's input preprocessing is the registry's for its weights
(``medattn.backbones.preprocessing_for(backbone, weights)``).
"""

from __future__ import annotations

import keras
from keras import layers

from ..backbones import check_input_size, get_backbone
from ..layers import FusedBatchNormalization, attention_block

__all__ = ["decoder_block", "build_linknet"]


def _cbr(x, filters, kernel, name, transpose=False, strides=1):
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def decoder_block(x, skip_channels: int, name: str, attention: bool = True):
    """LinkNet decoder block (x2 upsampling) ending with ``skip_channels`` channels, optional scSE."""
    c = x.shape[-1]
    x = _cbr(x, max(c // 4, 8), 1, f"{name}_reduce")
    x = _cbr(x, max(c // 4, 8), 3, f"{name}_up", transpose=True, strides=2)
    x = _cbr(x, skip_channels, 1, f"{name}_expand")
    return x


def _wire_linknet(encoder: keras.Model, taps: dict, attention: str | None, n_classes: int, final_filters: int):
    skips = [encoder.get_layer(taps[f"P{i}"].layer).output for i in (4, 3, 2, 1)]
    x = encoder.get_layer(taps["P5"].layer).output
    for stage, skip in zip((4, 3, 2, 1), skips):
        if x.shape[1] * 2 != skip.shape[1]:
            raise ValueError(f"skip P{stage} ({skip.shape}) is not twice the size of the decoder input ({x.shape})")
        x = decoder_block(x, skip.shape[-1], f"decoder_stage{stage}")
        x = layers.Add(name=f"decoder_stage{stage}_add")([x, skip])
        x = attention_block(x, attention, f"decoder_stage{stage}", reduction=2)
    x = _cbr(x, final_filters, 3, "head_up", transpose=True, strides=2)
    x = _cbr(x, final_filters, 3, "head_conv")
    act = "sigmoid" if n_classes == 1 else "softmax"
    out = layers.Conv2D(n_classes, 1, activation=act, dtype="float32", name="mask")(x)
    return keras.Model(encoder.input, out, name=f"linknet_{encoder.name}{f'_{attention}' if attention else ''}")


def build_linknet(backbone: str = "inceptionresnetv2", input_size: int = 256, weights=None,
                 attention: str | None = "scse", n_classes: int = 1, freeze_encoder: bool = False,
                 final_filters: int = 32, encoder_width: float = 1.0) -> keras.Model:
    """LinkNet segmenter on any registry backbone with taps P1..P5 (``inceptionresnetv2`` is the same-padding
    variant; ``encoder_width`` scales VGG filters). ``attention``: ``"scse"``, ``"cbam"``, ``"se"`` or None (the
    ablation; ``True``/``False`` mean ``"scse"``/None). ``weights``: None | ``"imagenet"`` | path to encoder
    weights."""
    check_input_size(input_size)
    attention = {True: "scse", False: None}.get(attention, attention) if isinstance(attention, bool) else attention
    opts = {"width": encoder_width} if backbone in ("vgg16", "vgg19") else {}
    if encoder_width != 1.0 and not opts:
        raise ValueError(f"encoder_width applies to VGG encoders only, got {encoder_width!r} for {backbone!r}")
    bb = get_backbone(backbone, (input_size, input_size, 3), weights=weights, **opts)
    missing = [f"P{i}" for i in range(1, 6) if f"P{i}" not in bb.taps]
    if missing:
        raise ValueError(f"backbone {backbone!r} has no feature taps {missing}; LinkNet needs P1..P5")
    if freeze_encoder:
        bb.model.trainable = False
    return _wire_linknet(bb.model, bb.taps, attention, n_classes, final_filters)
