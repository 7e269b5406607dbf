"""LinkNet with spatial-channel attention on an InceptionResNetV2 encoder (the BUSI segmenter, paper 1).

Chaurasia A, Culurciello E. "LinkNet: Exploiting Encoder Representations for Efficient Semantic Segmentation",
VCIP 2017, arXiv 1707.03718; attention after each decoder block: scSE (Roy et al., MICCAI 2018).

Three tiers: :func:`decoder_block` (one LinkNet block) -> :func:`_wire_linknet` (graph only) ->
:func:`build_linknet` (backbone, skips by name from :data:`medattn.backbones.FEATURE_TAPS`, weights, freezing).
Decoder block ``i`` (names ``decoder_stage{i}_*``): 1x1 conv to C/4 -> 3x3 transposed conv stride 2 -> 1x1 conv to
the skip's channels (each conv + BN + ReLU), added to the encoder skip, then ``SpatialChannelAttention``.
"""

from __future__ import annotations

import keras
from keras import layers

from ..backbones import FEATURE_TAPS, inception_resnet_v2_same, vgg
from ..layers import SpatialChannelAttention

__all__ = ["decoder_block", "build_linknet"]


def _cbr(x, filters, kernel, name, transpose=False, strides=1):
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def decoder_block(x, skip_channels: int, name: str, attention: bool = True):
    """LinkNet decoder block (x2 upsampling) ending with ``skip_channels`` channels, optional scSE."""
    c = x.shape[-1]
    x = _cbr(x, max(c // 4, 8), 1, f"{name}_reduce")
    x = _cbr(x, max(c // 4, 8), 3, f"{name}_up", transpose=True, strides=2)
    x = _cbr(x, skip_channels, 1, f"{name}_expand")
    return x


def _wire_linknet(encoder: keras.Model, taps: dict, attention: bool, n_classes: int, final_filters: int):
    skips = [encoder.get_layer(taps[f"P{i}"]).output for i in (4, 3, 2, 1)]
    x = encoder.get_layer(taps["P5"]).output
    for stage, skip in zip((4, 3, 2, 1), skips):
        if x.shape[1] * 2 != skip.shape[1]:
            raise ValueError(f"skip P{stage} ({skip.shape}) is not twice the size of the decoder input ({x.shape})")
        x = decoder_block(x, skip.shape[-1], f"decoder_stage{stage}")
        x = layers.Add(name=f"decoder_stage{stage}_add")([x, skip])
        if attention:
            x = SpatialChannelAttention(reduction=2, name=f"decoder_stage{stage}_attention")(x)
    x = _cbr(x, final_filters, 3, "head_up", transpose=True, strides=2)
    x = _cbr(x, final_filters, 3, "head_conv")
    act = "sigmoid" if n_classes == 1 else "softmax"
    out = layers.Conv2D(n_classes, 1, activation=act, dtype="float32", name="mask")(x)
    return keras.Model(encoder.input, out, name=f"linknet_{encoder.name}{'_scse' if attention else ''}")


def build_linknet(backbone: str = "inceptionresnetv2", input_size: int = 256, weights=None, attention: bool = True,
                  n_classes: int = 1, freeze_encoder: bool = False, final_filters: int = 32,
                  encoder_width: float = 1.0) -> keras.Model:
    """LinkNet segmenter. ``backbone``: ``inceptionresnetv2`` (same-padding variant) or ``vgg16``/``vgg19``
    (``encoder_width`` scales VGG filters). ``attention=False`` gives the ablation without scSE.
    ``weights``: None | ``"imagenet"`` (needs internet) | path to encoder weights."""
    if input_size % 32:
        raise ValueError(f"input_size must be a multiple of 32, got {input_size!r}")
    shape = (input_size, input_size, 3)
    if backbone == "inceptionresnetv2":
        enc = inception_resnet_v2_same(shape, weights=weights)
    elif backbone in ("vgg16", "vgg19"):
        enc = vgg(int(backbone[3:]), shape, weights=weights, width=encoder_width, batch_norm=weights != "imagenet")
    else:
        raise ValueError(f"backbone must be inceptionresnetv2, vgg16 or vgg19, got {backbone!r}")
    if freeze_encoder:
        enc.trainable = False
    taps = FEATURE_TAPS[backbone]
    return _wire_linknet(enc, taps, attention, n_classes, final_filters)
