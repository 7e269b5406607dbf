"""DCNNIMAF: a deep CNN with multiple attention modules, classifying BUSI images with their predicted mask.

Pandiyaraju V et al., arXiv 2407.02844 (2024), stage 2. The paper names the attention modules but not the layout;
our default (docs/papers.md section 1): conv stages (two 3x3 conv + BN + ReLU) each followed by
``ChannelAttention`` and ``SpatialAttention`` and a 2x2 max-pool, ``SelfAttention2D`` over the last stage's
tokens, GAP, Dropout, Dense softmax over benign / malignant / normal.

Input: ``mask_mode="stack"`` -> 4 channels (image RGB + predicted mask); ``"multiply"`` -> 3 channels (image x
(0.5 + 0.5 mask), keeping context). The mask must come from the segmenter, never the ground truth: normal images
have empty ground-truth masks, so those would give the label away.
"""

from __future__ import annotations

import keras
from keras import layers

from ..layers import FusedBatchNormalization, SelfAttention2D, attention_block

__all__ = ["build_dcnnimaf"]


def _stage(x, filters, i, attention):
    for j in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{i}_conv{j}")(x)
        x = FusedBatchNormalization(name=f"stage{i}_bn{j}")(x)
        x = layers.Activation("relu", name=f"stage{i}_relu{j}")(x)
    x = attention_block(x, attention, f"stage{i}", reduction=8, kernel_size=7)
    return layers.MaxPooling2D(2, name=f"stage{i}_pool")(x)


def build_dcnnimaf(input_size: int = 224, n_classes: int = 3, filters=(32, 64, 128, 256, 256),
                   mask_mode: str = "stack", attention: str | None = "cbam", self_attention_heads: int = 4,
                   dropout: float = 0.3) -> keras.Model:
    """The classifier. ``attention``: the block after each stage by name (``"cbam"``: channel then spatial
    attention, ``"scse"``, ``"se"``), None removes every attention module, self-attention included (the
    ablation); ``True``/``False`` mean ``"cbam"``/None."""
    attention = {True: "cbam", False: None}.get(attention, attention) if isinstance(attention, bool) else attention
    if mask_mode not in ("stack", "multiply"):
        raise ValueError(f"mask_mode must be 'stack' or 'multiply', got {mask_mode!r}")
    channels = 4 if mask_mode == "stack" else 3
    inp = keras.Input((input_size, input_size, channels), name="image_and_mask")
    x = inp
    for i, f in enumerate(filters, 1):
        x = _stage(x, f, i, attention)
    if attention is not None and self_attention_heads:
        x = SelfAttention2D(num_heads=self_attention_heads, name="self_attention")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes")(x)
    return keras.Model(inp, out, name="dcnnimaf" if attention is not None else "dcnnimaf_no_attention")
