import keras
from keras import layers, ops

from ._checks import choice, feature_map_shape, positive_int, unit_interval


def _sizes(t):
    """Height and width of a feature map: Python ints where the static shape has them, tensors otherwise."""
    dyn = ops.shape(t)
    return tuple(t.shape[i] if t.shape[i] is not None else dyn[i] for i in (1, 2))


def _layer_norm(norm: layers.LayerNormalization, t):
    """``norm(t)`` written out (float32 statistics, the layer's own gamma and beta, the result in ``t``'s dtype).

    Speed, measured on the 2-core CPU (DCAT with EfficientNetB0 + ResNet-34 at 64 px, bf16, batch 32): a training
    process runs either at ~44 images/s (the two backbones' backward passes overlap) or at 24.9 (they do not: the
    same figure as with inter-op parallelism forced to 1), decided by TensorFlow's scheduling when it starts. With
    Keras' LayerNormalization here 7 of 7 processes were slow; with this written-out form 5 of 9 were fast. The
    sub-layer still owns the weights, so checkpoints and saved models are unchanged."""
    x = ops.cast(t, "float32")
    mean = ops.mean(x, axis=-1, keepdims=True)
    var = ops.var(x, axis=-1, keepdims=True)
    y = (x - mean) * ops.rsqrt(var + norm.epsilon) * norm.gamma + norm.beta
    return ops.cast(y, t.dtype)


@keras.saving.register_keras_serializable(package="medattn")
class BidirectionalCrossAttention(layers.Layer):
    """Bidirectional cross-attention between two feature maps (the DCAT fusion).

    Reference: Borah J, Singh H K. "DCAT: Dual Cross-Attention Fusion for Disease Classification in Radiological
    Images with Uncertainty Estimation", arXiv 2503.11851 (2025); multi-head attention of Vaswani et al. 2017.

    Both maps are projected to a common width ``d`` by 1x1 convolutions and flattened to tokens
    ``A (Na x d)``, ``B (Nb x d)``. Then ``A' = LayerNorm(A + MHA(q=A, k=B, v=B))`` and
    ``B' = LayerNorm(B + MHA(q=B, k=A, v=A))`` with separate attention weights per direction. The maps may have
    different channels and different spatial sizes.

    Args:
        dim: common width d (default 256).
        num_heads: heads per direction (default 8); ``dim`` must be divisible by it.
        dropout: attention dropout (default 0).
        output_mode: ``"concat"`` -> ``concatenate([A', B'], channels)`` as a map (needs equal spatial sizes);
            ``"both"`` -> ``[A' map (Ha, Wa, d), B' map (Hb, Wb, d)]``; ``"pooled"`` -> ``concatenate(GAP(A'),
            GAP(B'))`` of shape ``(batch, 2d)`` (works for any sizes).
        epsilon: LayerNorm epsilon (default 1e-6).

    Inputs: a list ``[a (batch, Ha, Wa, Ca), b (batch, Hb, Wb, Cb)]``. Nothing depends on the token counts (no
    positional weights), so the layer runs on any spatial sizes, including ``None`` ones, and sizes at call time may
    differ from those at build time; ``"concat"`` needs equal sizes of the two maps.

    Example:
        >>> a, b = keras.Input((7, 7, 1792)), keras.Input((7, 7, 512))
        >>> fused = BidirectionalCrossAttention(dim=256, num_heads=8)([a, b])   # (None, 7, 7, 512)

    Departure: the paper does not publish its projection or normalisation details; these are the defaults of
    docs/papers.md section 5 (1x1 projection to d = 256, 8 heads, residual + LayerNorm).
    """

    def __init__(self, dim=256, num_heads=8, dropout=0.0, output_mode="concat", epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.dim = positive_int("dim", dim)
        self.num_heads = positive_int("num_heads", num_heads)
        if self.dim % self.num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim!r}, num_heads={num_heads!r}")
        self.dropout = unit_interval("dropout", dropout)
        self.output_mode = choice("output_mode", output_mode, ("concat", "both", "pooled"))
        self.epsilon = float(epsilon)
        kw = {"dtype": self.dtype_policy}
        self.proj_a = layers.Conv2D(self.dim, 1, name="proj_a", **kw)
        self.proj_b = layers.Conv2D(self.dim, 1, name="proj_b", **kw)
        kd = self.dim // self.num_heads
        self.attn_ab = layers.MultiHeadAttention(self.num_heads, kd, dropout=self.dropout, name="attn_a_from_b", **kw)
        self.attn_ba = layers.MultiHeadAttention(self.num_heads, kd, dropout=self.dropout, name="attn_b_from_a", **kw)
        self.norm_a = layers.LayerNormalization(epsilon=self.epsilon, name="norm_a", **kw)
        self.norm_b = layers.LayerNormalization(epsilon=self.epsilon, name="norm_b", **kw)

    def _shapes(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f"{self.__class__.__name__} expects a list of two feature maps, got {input_shape}")
        name = self.__class__.__name__
        return feature_map_shape(name, input_shape[0]), feature_map_shape(name, input_shape[1])

    def build(self, input_shape):
        sa, sb = self._shapes(input_shape)
        self._check_concat(sa, sb)
        self.proj_a.build(sa)
        self.proj_b.build(sb)
        na = sa[1] * sa[2] if None not in sa[1:3] else None
        nb = sb[1] * sb[2] if None not in sb[1:3] else None
        self.attn_ab.build((None, na, self.dim), (None, nb, self.dim))
        self.attn_ba.build((None, nb, self.dim), (None, na, self.dim))
        self.norm_a.build((None, na, self.dim))
        self.norm_b.build((None, nb, self.dim))
        super().build(input_shape)

    def _check_concat(self, sa, sb):
        if self.output_mode == "concat" and None not in (*sa[1:3], *sb[1:3]) and tuple(sa[1:3]) != tuple(sb[1:3]):
            raise ValueError(f"output_mode='concat' needs equal spatial sizes, got {tuple(sa[1:3])} and "
                             f"{tuple(sb[1:3])}; use output_mode='both' or 'pooled'")

    def call(self, inputs, training=None):
        a, b = inputs
        self._check_concat(tuple(a.shape), tuple(b.shape))
        (ha, wa), (hb, wb) = _sizes(a), _sizes(b)
        ta = ops.reshape(self.proj_a(a), (-1, ha * wa, self.dim))
        tb = ops.reshape(self.proj_b(b), (-1, hb * wb, self.dim))
        ra = _layer_norm(self.norm_a, ta + self.attn_ab(ta, tb, tb, training=training))
        rb = _layer_norm(self.norm_b, tb + self.attn_ba(tb, ta, ta, training=training))
        if self.output_mode == "pooled":
            return ops.concatenate([ops.mean(ra, axis=1), ops.mean(rb, axis=1)], axis=-1)
        ma = ops.reshape(ra, (-1, ha, wa, self.dim))
        mb = ops.reshape(rb, (-1, hb, wb, self.dim))
        if self.output_mode == "both":
            return [ma, mb]
        return ops.concatenate([ma, mb], axis=-1)

    def compute_output_shape(self, input_shape):
        sa, sb = self._shapes(input_shape)
        if self.output_mode == "pooled":
            return (sa[0], 2 * self.dim)
        if self.output_mode == "both":
            return [sa[:3] + (self.dim,), sb[:3] + (self.dim,)]
        return sa[:3] + (2 * self.dim,)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "dropout": self.dropout,
                "output_mode": self.output_mode, "epsilon": self.epsilon}
