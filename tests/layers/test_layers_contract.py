"""Every layer through the shared contract test, plus argument and shape errors."""

import pytest

from medattn import layers as L
from tests.layers.helpers import run_layer_test

VGG72 = [(2, 36, 36, 64), (2, 18, 18, 128), (2, 9, 9, 256), (2, 4, 4, 512), (2, 2, 2, 512)]

CASES = [
    (L.ChannelAttention, {"reduction": 4}, (2, 7, 9, 16), (2, 7, 9, 16)),
    (L.SpatialAttention, {"kernel_size": 7}, (2, 7, 9, 16), (2, 7, 9, 16)),
    (L.CBAM, {"reduction": 4, "kernel_size": 3}, (2, 7, 9, 16), (2, 7, 9, 16)),
    (L.CBAM, {"reduction": 4, "order": "parallel", "residual": True}, (2, 5, 5, 8), (2, 5, 5, 8)),
    (L.CBAM, {"reduction": 2, "order": "spatial_first"}, (2, 5, 5, 8), (2, 5, 5, 8)),
    (L.SpatialChannelAttention, {"reduction": 2, "combine": "max"}, (2, 7, 9, 16), (2, 7, 9, 16)),
    (L.SpatialChannelAttention, {"reduction": 4, "combine": "add"}, (2, 6, 6, 8), (2, 6, 6, 8)),
    (L.SelfAttention2D, {"num_heads": 2}, (2, 7, 9, 16), (2, 7, 9, 16)),
    (L.SelfAttention2D, {"num_heads": 4, "position_embedding": False, "key_dim": 3}, (2, 3, 5, 8), (2, 3, 5, 8)),
    (L.BidirectionalCrossAttention, {"dim": 16, "num_heads": 4}, [(2, 7, 7, 24), (2, 7, 7, 12)], (2, 7, 7, 32)),
    (L.BidirectionalCrossAttention, {"dim": 8, "num_heads": 2, "output_mode": "both"}, [(2, 7, 9, 24), (2, 3, 5, 12)],
     [(2, 7, 9, 8), (2, 3, 5, 8)]),
    (L.BidirectionalCrossAttention, {"dim": 8, "num_heads": 2, "output_mode": "pooled"}, [(2, 7, 9, 24), (2, 3, 5, 12)],
     (2, 16)),
    (L.CrossChannelFusion, {"filters": (32, 32, 32, 64, 64)}, VGG72, (2, 224)),
    (L.CrossChannelFusion, {"filters": (4, 6), "pool_sizes": (3, 1), "batch_norm": False},
     [(2, 9, 7, 5), (2, 3, 3, 2)], (2, 10)),
    (L.GlobalPoolFusion, {"mode": "avg"}, VGG72, (2, 1472)),
    (L.GlobalPoolFusion, {"mode": "avgmax"}, [(2, 7, 9, 3), (2, 2, 2, 5)], (2, 16)),
]


@pytest.mark.parametrize("cls,kwargs,shapes,expected", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_layer_contract(cls, kwargs, shapes, expected, tmp_path):
    run_layer_test(cls, kwargs, shapes, tmp_path, expected_output_shape=expected)


def test_mc_dropout_contract_and_stochastic_at_inference(tmp_path):
    import numpy as np

    run_layer_test(L.MCDropout, {"rate": 0.5, "always_on": False}, (2, 4, 4, 3), tmp_path,
                   expected_output_shape=(2, 4, 4, 3))
    x = np.ones((4, 64), "float32")
    mc = L.MCDropout(0.5)
    a, b = np.asarray(mc(x)), np.asarray(mc(x))
    assert not np.array_equal(a, b)  # a fresh mask every inference call
    assert set(np.unique(a)) <= {0.0, 2.0}
    assert np.array_equal(np.asarray(L.MCDropout(0.5, always_on=False)(x)), x)


@pytest.mark.parametrize("make,match", [
    (lambda: L.ChannelAttention(reduction=0), "reduction must be a positive integer, got 0"),
    (lambda: L.SpatialAttention(kernel_size=4), "kernel_size must be odd.*got 4"),
    (lambda: L.CBAM(order="sideways"), "order must be one of.*'sideways'"),
    (lambda: L.SpatialChannelAttention(combine="concat"), "combine must be one of.*'concat'"),
    (lambda: L.SelfAttention2D(dropout=1.5), r"dropout must be in \[0, 1\), got 1.5"),
    (lambda: L.BidirectionalCrossAttention(dim=10, num_heads=4), "dim=10, num_heads=4"),
    (lambda: L.CrossChannelFusion(filters=(8, 8), pool_sizes=(2,)), r"pool_sizes has 1 entries"),
    (lambda: L.GlobalPoolFusion(mode="median"), "'median'"),
    (lambda: L.MCDropout(rate=1.0), r"rate must be in \[0, 1\), got 1.0"),
])
def test_bad_arguments_raise_quoting_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_shapes_raise():
    import keras

    with pytest.raises(ValueError, match=r"4-D feature map.*\(None, 16\)"):
        L.ChannelAttention()(keras.Input((16,)))
    with pytest.raises(ValueError, match="known height and width"):
        L.SelfAttention2D()(keras.Input((None, None, 8)))
    with pytest.raises(ValueError, match="equal spatial sizes"):
        L.BidirectionalCrossAttention(dim=8, num_heads=2)([keras.Input((4, 4, 8)), keras.Input((2, 2, 8))])
    with pytest.raises(ValueError, match="list of two feature maps"):
        L.BidirectionalCrossAttention(dim=8, num_heads=2)(keras.Input((4, 4, 8)))
    with pytest.raises(ValueError, match="got 2 inputs but filters has 5"):
        L.CrossChannelFusion()([keras.Input((4, 4, 8)), keras.Input((2, 2, 8))])
    with pytest.raises(ValueError, match="smaller than its pool size"):
        L.CrossChannelFusion(filters=(4,), pool_sizes=(8,))([keras.Input((4, 4, 8))])
