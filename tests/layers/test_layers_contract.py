"""Every layer through the shared contract test, plus argument and shape errors."""

import numpy as np
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
    (L.FusedBatchNormalization, {"momentum": 0.9}, (2, 7, 9, 16), (2, 7, 9, 16)),
    (L.FusedBatchNormalization, {"scale": False}, (2, 16), (2, 16)),
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
    layer = L.BidirectionalCrossAttention(dim=8, num_heads=2)
    layer([np.zeros((1, 4, 4, 8), "float32"), np.zeros((1, 4, 4, 8), "float32")])
    with pytest.raises(ValueError, match="equal spatial sizes"):  # checked at call time too
        layer([np.zeros((1, 4, 4, 8), "float32"), np.zeros((1, 2, 2, 8), "float32")])
    with pytest.raises(ValueError, match="list of two feature maps"):
        L.BidirectionalCrossAttention(dim=8, num_heads=2)(keras.Input((4, 4, 8)))
    with pytest.raises(ValueError, match="got 2 inputs but filters has 5"):
        L.CrossChannelFusion()([keras.Input((4, 4, 8)), keras.Input((2, 2, 8))])
    with pytest.raises(ValueError, match="smaller than its pool size"):
        L.CrossChannelFusion(filters=(4,), pool_sizes=(8,))([keras.Input((4, 4, 8))])


def test_cross_attention_any_size_after_build_and_none_dims():
    """Built on 4x4 maps and called on 8x8: tokens stay in the token axis (they used to spill into the batch)."""
    import keras

    for mode, shape in (("concat", (2, 8, 8, 16)), ("both", None), ("pooled", (2, 16))):
        layer = L.BidirectionalCrossAttention(dim=8, num_heads=2, output_mode=mode)
        layer([np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")] * 2)
        out = layer([np.random.default_rng(1).normal(size=(2, 8, 8, 8)).astype("float32"),
                     np.random.default_rng(2).normal(size=(2, 8, 8, 8)).astype("float32")])
        if mode == "both":
            assert out[0].shape == (2, 8, 8, 8) and out[1].shape == (2, 8, 8, 8)
        else:
            assert tuple(out.shape) == shape
    a, b = keras.Input((None, None, 8)), keras.Input((None, None, 6))
    pooled = L.BidirectionalCrossAttention(dim=8, num_heads=2, output_mode="pooled")([a, b])
    model = keras.Model([a, b], pooled)
    out = model([np.zeros((3, 5, 7, 8), "float32"), np.zeros((3, 2, 3, 6), "float32")])
    assert tuple(out.shape) == (3, 16)


def test_layers_refuse_channels_first():
    import keras

    old = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        for layer in (L.CBAM(reduction=2), L.SpatialChannelAttention(), L.ChannelAttention(reduction=2)):
            with pytest.raises(ValueError, match="channels_last feature maps only"):
                layer(np.zeros((1, 8, 4, 4), "float32"))
    finally:
        keras.config.set_image_data_format(old)


def test_load_model_names_the_module_to_import(tmp_path):
    import subprocess
    import sys

    import keras

    import medattn

    inp = keras.Input((8, 8, 16))
    model = keras.Model(inp, L.CBAM(reduction=4)(inp))
    path = tmp_path / "m.keras"
    model.save(path)
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 16)).astype("float32")
    np.testing.assert_allclose(np.asarray(medattn.load_model(path)(x)), np.asarray(model(x)), rtol=1e-6)
    from medattn.saving import required_modules

    assert required_modules(path) == {"CBAM": "medattn.layers.cbam"}
    # plain Keras in a fresh process fails with its generic error; medattn.saving would name the module
    # and medattn.load_model imports every module of the package that registers a class (the stage optimizers too)
    code = ("import importlib, keras, sys\ntry:\n    keras.saving.load_model(sys.argv[1])\nexcept Exception as e:\n"
            "    print('failed', 'CBAM' in str(e))\nfrom medattn.saving import _REGISTERING\n"
            "[importlib.import_module(m) for m in _REGISTERING]\nprint(' '.join(sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert "failed True" in r.stdout
    from tests.conftest import REPO

    registering = {".".join(f.relative_to(REPO).with_suffix("").parts) for f in (REPO / "medattn").rglob("*.py")
                   if "register_keras_serializable" in f.read_text()}
    assert "medattn.training.optimizers" in registering
    assert registering <= set(r.stdout.split()), registering - set(r.stdout.split())
