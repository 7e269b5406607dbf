import keras
from keras import layers, ops

from ._checks import feature_map_shape, positive_int, unit_interval


@keras.saving.register_keras_serializable(package="medattn")
class SelfAttention2D(layers.Layer):
    """Multi-head self-attention over the spatial positions of a feature map, returned as a map.

    Reference: Vaswani A et al. "Attention Is All You Need", NeurIPS 2017 (multi-head attention); applied to
    H x W tokens as in Wang X et al. "Non-local Neural Networks", CVPR 2018.

    With tokens ``T = reshape(F, (H*W, C)) (+ P)`` (``P`` an optional learned position embedding):
    ``T' = LayerNorm(T + MHA(T, T, T))``, returned as ``reshape(T', (H, W, C))``. Each head has
    ``key_dim = C // num_heads`` unless ``key_dim`` is given.

    Args:
        num_heads: attention heads (default 4).
        key_dim: per-head width (default ``C // num_heads``, at least 1).
        position_embedding: add a learned ``(H*W, C)`` position embedding (default True; needs static H, W).
        dropout: attention dropout rate (default 0).
        epsilon: LayerNorm epsilon (default 1e-6).

    Input: ``(batch, H, W, C)`` with known H, W, C. Output: same shape.

    Example:
        >>> y = SelfAttention2D(num_heads=4)(keras.Input((14, 14, 128)))

    Departure: the paper model (DCNNIMAF) does not specify its self-attention; this is the standard
    post-norm transformer attention sub-block, without the feed-forward sub-block.
    """

    def __init__(self, num_heads=4, key_dim=None, position_embedding=True, dropout=0.0, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = positive_int("num_heads", num_heads)
        self.key_dim = None if key_dim is None else positive_int("key_dim", key_dim)
        self.position_embedding = bool(position_embedding)
        self.dropout = unit_interval("dropout", dropout)
        self.epsilon = float(epsilon)
        self.norm = layers.LayerNormalization(epsilon=self.epsilon, name="norm", dtype=self.dtype_policy)

    def build(self, input_shape):
        _, h, w, c = feature_map_shape(self.__class__.__name__, input_shape, need_spatial=True)
        self._hw = (h, w)
        kd = self.key_dim or max(c // self.num_heads, 1)
        self.mha = layers.MultiHeadAttention(self.num_heads, kd, dropout=self.dropout, name="mha",
                                             dtype=self.dtype_policy)
        self.mha.build((None, h * w, c), (None, h * w, c))
        if self.position_embedding:
            self.pos = self.add_weight(name="position_embedding", shape=(h * w, c),
                                       initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.norm.build((None, h * w, c))
        super().build(input_shape)

    def call(self, inputs, training=None):
        h, w = self._hw
        c = inputs.shape[-1]
        tokens = ops.reshape(inputs, (-1, h * w, c))
        if self.position_embedding:
            tokens = tokens + ops.cast(self.pos, tokens.dtype)[None]
        attn = self.mha(tokens, tokens, tokens, training=training)
        return ops.reshape(self.norm(tokens + attn), (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "position_embedding": self.position_embedding, "dropout": self.dropout, "epsilon": self.epsilon}
