"""Reusable Keras 3 attention and fusion layers (``keras.ops`` only: TensorFlow, JAX and PyTorch backends).

| layer | paper |
|---|---|
| :class:`ChannelAttention`, :class:`SpatialAttention`, :class:`CBAM` | Woo et al., ECCV 2018 |
| :class:`SpatialChannelAttention` (scSE) | Roy et al., MICCAI 2018 |
| :class:`SelfAttention2D` | Vaswani et al. 2017 / Wang et al. CVPR 2018 |
| :class:`BidirectionalCrossAttention` | Borah & Singh, DCAT, arXiv 2503.11851 |
| :class:`CrossChannelFusion`, :class:`GlobalPoolFusion` | deep fusion, Sci. Rep. 2020 |
| :class:`MCDropout` | Gal & Ghahramani, ICML 2016 |
| :class:`FusedBatchNormalization` | Ioffe & Szegedy, ICML 2015 (one fused kernel on TensorFlow) |
"""

from .. import _backend  # noqa: F401 - first: one line when no Keras backend is installed
from .attention_block import ATTENTION_KINDS, attention_block
from .bidirectional_cross_attention import BidirectionalCrossAttention
from .cbam import CBAM
from .channel_attention import ChannelAttention
from .cross_channel_fusion import CrossChannelFusion
from .fused_batch_norm import FusedBatchNormalization
from .global_pool_fusion import GlobalPoolFusion
from .mc_dropout import MCDropout
from .self_attention_2d import SelfAttention2D
from .spatial_attention import SpatialAttention
from .spatial_channel_attention import SpatialChannelAttention

__all__ = [
    "ATTENTION_KINDS",
    "BidirectionalCrossAttention",
    "CBAM",
    "ChannelAttention",
    "CrossChannelFusion",
    "FusedBatchNormalization",
    "GlobalPoolFusion",
    "MCDropout",
    "SelfAttention2D",
    "SpatialAttention",
    "SpatialChannelAttention",
    "attention_block",
]
