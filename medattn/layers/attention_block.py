"""Attention chosen by name (as timm's ``create_attn``): an ablation is a string, not a flag threaded through
builders.

``attention_block(x, kind, name)`` applies one block to a feature map and returns the result:

* ``"cbam"``: :class:`ChannelAttention` then :class:`SpatialAttention` (the CBAM order, as two named layers
  ``{name}_channel_attention`` and ``{name}_spatial_attention``, so each gate can be inspected);
* ``"scse"``: :class:`SpatialChannelAttention` (``{name}_attention``);
* ``"se"``: :class:`ChannelAttention` alone;
* ``None`` / ``"none"``: nothing (the ablation).
"""

from __future__ import annotations

from .channel_attention import ChannelAttention
from .spatial_attention import SpatialAttention
from .spatial_channel_attention import SpatialChannelAttention

__all__ = ["attention_block", "ATTENTION_KINDS"]

ATTENTION_KINDS = ("cbam", "scse", "se", None)


def attention_block(x, kind: str | None, name: str, reduction: int = 16, kernel_size: int = 7):
    """Apply the attention block ``kind`` to ``x`` (see the module docstring); layer names start with ``name``."""
    kind = None if kind in (None, "none", False) else kind
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
    if kind is None:
        return x
    if kind == "scse":
        return SpatialChannelAttention(reduction=reduction, name=f"{name}_attention")(x)
    x = ChannelAttention(reduction=reduction, name=f"{name}_channel_attention")(x)
    if kind == "cbam":
        x = SpatialAttention(kernel_size, name=f"{name}_spatial_attention")(x)
    return x
