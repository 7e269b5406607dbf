"""Backbones and their feature taps (layer names, never indices).

``FEATURE_TAPS[backbone]`` maps pyramid levels ``P1``..``P5`` (stride 2..32) to layer names; the tests check
the spatial size at every level.
"""

from .inception_resnet_v2 import IRV2_TAPS, inception_resnet_v2_same
from .vgg import VGG_TAPS, vgg

FEATURE_TAPS = {
    "vgg16": VGG_TAPS,
    "vgg19": VGG_TAPS,
    "inceptionresnetv2": IRV2_TAPS,
}

__all__ = ["FEATURE_TAPS", "IRV2_TAPS", "VGG_TAPS", "inception_resnet_v2_same", "vgg"]
