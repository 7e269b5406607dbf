"""Precise BatchNorm statistics (medattn.training.batchnorm.recompute_bn_statistics): every trainable BatchNormalization layer's
moving statistics become the mean of its per-batch statistics under the final weights; nothing else changes."""

import keras
import numpy as np
import pytest

from medattn.training.batchnorm import recompute_bn_statistics, set_bn_momentum


def _model(frozen_second=False):
    inp = keras.Input((6, 6, 3))
    x = keras.layers.BatchNormalization(name="bn1")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, name="dense")(x)
    inner = keras.Model(inp, out, name="inner")  # nested, as keras.applications backbones are
    outer_in = keras.Input((6, 6, 3))
    model = keras.Model(outer_in, inner(outer_in))
    set_bn_momentum(model, 0.9)
    if frozen_second:
        inner.get_layer("bn2").trainable = False
    return model, inner


def _batches(n=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    # shifted and scaled so the statistics are far from the initial 0 and 1
    return [(rng.normal(2.0, 3.0, (size, 6, 6, 3)) * np.array([1.0, 0.5, 2.0])).astype("float32") for _ in range(n)]


def test_moving_statistics_become_the_mean_of_the_batch_statistics():
    model, inner = _model()
    batches = _batches()
    # reference, in float64: bn1 sees the inputs; bn2 sees the conv output of the training-mode (batch-normalized)
    # first layer, computed here with the model's own layers
    conv_in = keras.Model(inner.input, inner.get_layer("conv").output)
    exp1_m = np.mean([b.astype("float64").mean((0, 1, 2)) for b in batches], 0)
    exp1_v = np.mean([b.astype("float64").var((0, 1, 2)) for b in batches], 0)
    convs = [np.asarray(conv_in(b, training=True), dtype="float64") for b in batches]
    exp2_m = np.mean([c.mean((0, 1, 2)) for c in convs], 0)
    exp2_v = np.mean([c.var((0, 1, 2)) for c in convs], 0)
    weights = [np.array(w) for w in model.trainable_weights]

    info = recompute_bn_statistics(model, batches)

    assert info == {"layers": 2, "batches": 3, "images": 24}
    bn1, bn2 = inner.get_layer("bn1"), inner.get_layer("bn2")
    np.testing.assert_allclose(np.asarray(bn1.moving_mean), exp1_m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn1.moving_variance), exp1_v, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(bn2.moving_mean), exp2_m, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn2.moving_variance), exp2_v, rtol=1e-4)
    for before, after in zip(weights, model.trainable_weights):
        np.testing.assert_array_equal(before, np.asarray(after))  # no trainable weight moved
    assert bn1.momentum == 0.9 and bn2.momentum == 0.9  # restored


def test_one_batch_makes_inference_equal_training_mode():
    """With a single batch, inference mode (moving statistics) normalizes exactly as training mode (that batch's
    statistics) does: the outputs agree."""
    model, _ = _model()
    (x,) = _batches(n=1, size=16, seed=3)
    assert not np.allclose(np.asarray(model(x, training=False)), np.asarray(model(x, training=True)), atol=1e-3)
    recompute_bn_statistics(model, [(x, np.zeros(16))])  # (x, y) tuples are accepted: x is used
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(model(x, training=True)),
                               rtol=1e-4, atol=1e-4)


def test_frozen_layers_keep_their_statistics_and_no_batchnorm_is_a_no_op():
    model, inner = _model(frozen_second=True)
    bn2 = inner.get_layer("bn2")
    before = np.array(bn2.moving_mean), np.array(bn2.moving_variance)
    info = recompute_bn_statistics(model, _batches())
    assert info["layers"] == 1
    np.testing.assert_array_equal(np.asarray(bn2.moving_mean), before[0])
    np.testing.assert_array_equal(np.asarray(bn2.moving_variance), before[1])
    assert not np.allclose(np.asarray(inner.get_layer("bn1").moving_mean), 0.0)

    plain = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    assert recompute_bn_statistics(plain, _batches()) == {"layers": 0, "batches": 0, "images": 0}


def test_no_batches_is_an_error_and_momentum_is_restored():
    model, inner = _model()
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn_statistics(model, [])
    assert inner.get_layer("bn1").momentum == 0.9
