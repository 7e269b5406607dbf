"""DCAT: two backbones on one image fused by bidirectional cross-attention, CBAM, MC dropout (paper 5).

Borah J, Singh H K. "DCAT: Dual Cross-Attention Fusion for Disease Classification in Radiological Images with
Uncertainty Estimation", arXiv 2503.11851 (2025). Defaults where the paper is silent: ``docs/papers.md``
section 5.

The model takes images in [0, 255] (``(size, size, 3)``); each branch applies its own backbone's preprocessing
inside the model (:class:`BackbonePreprocess`: EfficientNet carries its own rescaling, ResNet-34 from scratch takes
[0, 1]), so one saved ``.keras`` file holds everything a user needs. ``fusion``:

* ``"cross_attention"`` (DCAT): :class:`medattn.layers.BidirectionalCrossAttention` between the two last feature
  maps (1x1 projections to ``dim``, attention in both directions, residual + LayerNorm), the two refined maps
  concatenated (2 ``dim`` channels), CBAM (reduction 16, 7x7), global average pooling;
* ``"concat"`` (ablation): the same 1x1 projections concatenated, CBAM, pooling: no cross-attention;
* ``"a_only"`` / ``"b_only"`` (ablations): one backbone, 1x1 projection, CBAM, pooling.

Both backbones have stride 32, so at an input size that is a multiple of 32 their last maps have the same size.

Then :class:`medattn.layers.MCDropout` (active at inference: T passes give the predictive mean and entropy) and a
softmax.
"""

from __future__ import annotations

import keras
from keras import layers

from ..backbones import check_input_size, get_backbone, preprocess_fn
from ..layers import CBAM, BidirectionalCrossAttention, MCDropout

__all__ = ["build_dcat", "BackbonePreprocess", "FUSIONS"]

FUSIONS = ("cross_attention", "concat", "a_only", "b_only")


@keras.saving.register_keras_serializable(package="medattn")
class BackbonePreprocess(layers.Layer):
    """The registry's input transform ``name`` (``unit``, ``tf``, ``caffe``, ``torch``, ``raw``) as a layer, for
    models whose branches need different transforms of one input in [0, 255]."""

    def __init__(self, transform: str, **kwargs):
        super().__init__(**kwargs)
        preprocess_fn(transform)  # validates the name
        self.transform = transform

    def call(self, inputs):
        return preprocess_fn(self.transform)(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "transform": self.transform}


def _branch(x, name: str, size: int, weights, tag: str, options: dict):
    bb = get_backbone(name, (size, size, 3), weights=weights, **options)
    bb.model.name = f"{tag}_{name}"
    return bb.model(BackbonePreprocess(bb.preprocessing, name=f"{tag}_preprocess")(x))




def build_dcat(input_size: int = 224, n_classes: int = 2, *, backbone_a: str = "efficientnetb4",
               backbone_b: str = "resnet34", fusion: str = "cross_attention", dim: int = 256, num_heads: int = 8,
               dropout: float = 0.5, weights_a=None, weights_b=None, options_a: dict | None = None,
               options_b: dict | None = None) -> keras.Model:
    """The DCAT classifier (softmax over ``n_classes``) or one of its ablations (``fusion``, see the module
    docstring). ``weights_*``: None | ``"imagenet"`` | path (ResNet-34 has no Keras ImageNet weights)."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    check_input_size(input_size)
    inp = keras.Input((input_size, input_size, 3), name="image")
    feats = []
    if fusion != "b_only":
        feats.append(_branch(inp, backbone_a, input_size, weights_a, "a", options_a or {}))
    if fusion != "a_only":
        feats.append(_branch(inp, backbone_b, input_size, weights_b, "b", options_b or {}))
    if fusion == "cross_attention":
        x = BidirectionalCrossAttention(dim=dim, num_heads=num_heads, output_mode="concat",
                                        name="cross_attention")(feats)
    else:
        tags = {"concat": ("a", "b"), "a_only": ("a",), "b_only": ("b",)}[fusion]
        maps = [layers.Conv2D(dim, 1, name=f"{t}_proj")(f) for f, t in zip(feats, tags)]
        x = maps[0] if len(maps) == 1 else layers.Concatenate(name="fused")(maps)
    x = CBAM(reduction=16, kernel_size=7, name="cbam")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = MCDropout(dropout, name="mc_dropout")(x)
    out = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inp, out, name=f"dcat_{fusion}")
