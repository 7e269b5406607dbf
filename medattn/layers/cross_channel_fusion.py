import keras
from keras import layers, ops

from ._checks import feature_map_shape, positive_int
from .fused_batch_norm import FusedBatchNormalization


@keras.saving.register_keras_serializable(package="medattn")
class CrossChannelFusion(layers.Layer):
    """1x1 cross-channel fusion of several feature maps (the MIAS deep-fusion Model2).

    Reference: "Mammographic image classification with deep fusion learning", Scientific Reports 10 (2020),
    doi 10.1038/s41598-020-71431-x (Model2), after the authors' Keras code.

    For each input map ``F_i``: ``z_i = GAP(relu(conv1x1_{f_i}(avgpool_{p_i}(BN(F_i)))))``; the output is
    ``concatenate(z_1, ..., z_n)`` of width ``sum(f_i)``. With VGG block1..block5 pool outputs at 72x72 input
    (36, 18, 9, 4, 2 pixels), pools 16, 8, 4, 2, 1 bring every map to 2x2 and filters 32, 32, 32, 64, 64 give 224
    features, as in the paper.

    Args:
        filters: 1x1 conv filters per input (default ``(32, 32, 32, 64, 64)``).
        pool_sizes: average-pool size per input (1 = none). Default None: ``size // grid_size`` from each
            input's height, so every map is pooled to about ``grid_size x grid_size``.
        grid_size: target grid when ``pool_sizes`` is None (default 2).
        batch_norm: BatchNorm on each input first (default True, as in the paper).

    Inputs: a list of n maps ``(batch, H_i, W_i, C_i)``. Output: ``(batch, sum(filters))``.

    Example:
        >>> maps = [keras.Input((s, s, c)) for s, c in [(36, 64), (18, 128), (9, 256), (4, 512), (2, 512)]]
        >>> z = CrossChannelFusion()(maps)   # (None, 224)
    """

    def __init__(self, filters=(32, 32, 32, 64, 64), pool_sizes=None, grid_size=2, batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(positive_int("filters[i]", f) for f in filters)
        self.pool_sizes = None if pool_sizes is None else tuple(positive_int("pool_sizes[i]", p) for p in pool_sizes)
        if self.pool_sizes is not None and len(self.pool_sizes) != len(self.filters):
            raise ValueError(f"pool_sizes has {len(self.pool_sizes)} entries but filters has {len(self.filters)}: "
                             f"{self.pool_sizes} vs {self.filters}")
        self.grid_size = positive_int("grid_size", grid_size)
        self.batch_norm = bool(batch_norm)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(input_shape[0],
                                                                                          (list, tuple)):
            raise ValueError(f"CrossChannelFusion expects a list of feature maps, got {input_shape}")
        if len(input_shape) != len(self.filters):
            raise ValueError(f"CrossChannelFusion got {len(input_shape)} inputs but filters has "
                             f"{len(self.filters)} entries: {self.filters}")
        shapes = [feature_map_shape("CrossChannelFusion", s) for s in input_shape]
        pools = self.pool_sizes
        if pools is None:
            if any(s[1] is None for s in shapes):
                raise ValueError(f"pool_sizes=None needs known heights, got shapes {shapes}")
            pools = tuple(max(s[1] // self.grid_size, 1) for s in shapes)
        self._pools = pools
        kw = {"dtype": self.dtype_policy}
        self.norms, self.pools, self.convs = [], [], []
        for i, (s, p, f) in enumerate(zip(shapes, pools, self.filters)):
            if self.batch_norm:
                bn = FusedBatchNormalization(name=f"bn_{i}", **kw)
                bn.build(s)
                self.norms.append(bn)
            if p > 1:
                if s[1] is not None and s[1] < p:
                    raise ValueError(f"input {i} has height {s[1]}, smaller than its pool size {p}")
                self.pools.append(layers.AveragePooling2D(p, name=f"pool_{i}", **kw))
            else:
                self.pools.append(None)
            conv = layers.Conv2D(f, 1, activation="relu", name=f"conv_{i}", **kw)
            conv.build(s)
            self.convs.append(conv)
        super().build(input_shape)

    def call(self, inputs, training=None):
        outs = []
        for i, x in enumerate(inputs):
            if self.batch_norm:
                x = self.norms[i](x, training=training)
            if self.pools[i] is not None:
                x = self.pools[i](x)
            outs.append(ops.mean(self.convs[i](x), axis=(1, 2)))
        return ops.concatenate(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], sum(self.filters))

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters),
                "pool_sizes": None if self.pool_sizes is None else list(self.pool_sizes),
                "grid_size": self.grid_size, "batch_norm": self.batch_norm}
