"""Backbones, their feature taps (layer names, never indices) and their preprocessing: one registry.

:func:`get_backbone` builds any backbone the five papers use by name and returns the model, its taps
``P1``..``P5`` (stride 2..32; layer, channels, stride) and the preprocessing that belongs to its weights.
``FEATURE_TAPS[backbone]`` is the tap table alone; the tests check the spatial size at every level.
"""

from .. import _backend  # noqa: F401 - first: one line when no Keras backend is installed
from .hed import HED_INSTALL, HED_SHA256, HED_SOURCE, hed_provenance, hed_weights_file, load_hed_convolutions
from .inception_resnet_v2 import IRV2_TAPS, inception_resnet_v2_same
from .registry import (
                       BACKBONES,
                       PREPROCESSING,
                       Backbone,
                       FeatureTap,
                       backbone_options,
                       check_backbone,
                       check_input_size,
                       get_backbone,
                       imagenet_file,
                       imagenet_weights_status,
                       is_hed_weights,
                       options_for,
                       preprocess_fn,
                       preprocessing_for,
                       weights_card,
)
from .resnet34 import RESNET34_TAPS, resnet34
from .vgg import VGG_TAPS, vgg

FEATURE_TAPS = {name: dict(entry.taps) for name, entry in BACKBONES.items()}

__all__ = ["BACKBONES", "Backbone", "FEATURE_TAPS", "FeatureTap", "HED_INSTALL", "HED_SHA256", "HED_SOURCE",
           "IRV2_TAPS", "PREPROCESSING", "RESNET34_TAPS",
           "VGG_TAPS", "backbone_options", "check_backbone", "check_input_size", "get_backbone", "hed_provenance", "hed_weights_file", "imagenet_file",
           "imagenet_weights_status", "is_hed_weights", "load_hed_convolutions",
           "inception_resnet_v2_same", "options_for", "preprocess_fn", "preprocessing_for", "resnet34", "vgg",
           "weights_card"]
