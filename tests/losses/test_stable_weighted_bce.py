import keras
import numpy as np
import pytest

from medattn.losses import StableWeightedBCE


def _reference(y, x, w):
    """Naive weighted BCE in float64 (finite only for moderate logits)."""
    x = x.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    return -(w * y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("w", [1.0, 2.0, 4.0, 8.0])
def test_equals_the_naive_formula_where_it_is_finite(w):
    rng = np.random.default_rng(0)
    x = rng.uniform(-20, 20, size=(64, 1)).astype("float32")
    y = rng.integers(0, 2, size=(64, 1)).astype("float32")
    loss = StableWeightedBCE(pos_weight=w, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(y, x)), _reference(y, x, w)[:, 0], rtol=1e-5, atol=1e-6)
    mean = StableWeightedBCE(pos_weight=w)(y, x)
    np.testing.assert_allclose(float(mean), _reference(y, x, w).mean(), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_finite_loss_and_gradients_for_huge_logits(dtype):
    import tensorflow as tf

    x = tf.constant([[1e4], [-1e4], [1e4], [-1e4], [0.0]], dtype=dtype)
    y = tf.constant([[1.0], [1.0], [0.0], [0.0], [1.0]])
    loss_fn = StableWeightedBCE(pos_weight=4.0, reduction=None)
    with tf.GradientTape() as tape:
        tape.watch(x)
        per = loss_fn(y, x)
    grad = tape.gradient(per, x)
    per, grad = per.numpy().astype(np.float64), tf.cast(grad, tf.float32).numpy()
    assert np.isfinite(per).all() and np.isfinite(grad).all()
    # right answers: confident and right -> 0; confident and wrong -> |x| (times w for a missed positive)
    big = float(tf.cast(x[0, 0], tf.float32))  # 1e4 is 9984 in bfloat16
    np.testing.assert_allclose(per, [0.0, 4 * big, big, 0.0, 4 * np.log(2)], rtol=1e-5, atol=1e-3)
    naive = keras.losses.BinaryCrossentropy(from_logits=False, reduction=None)(y, tf.sigmoid(tf.cast(x, "float32")))
    assert np.asarray(naive).max() < 20  # Keras clips probabilities, so the naive loss cannot see 1e4 of error


def test_weight_trades_sensitivity_for_specificity():
    y = np.array([[1.0], [0.0]], "float32")
    x = np.array([[-1.0], [1.0]], "float32")  # one missed positive, one false positive
    per1 = np.asarray(StableWeightedBCE(1.0, reduction=None)(y, x))
    per8 = np.asarray(StableWeightedBCE(8.0, reduction=None)(y, x))
    assert per8[0] == pytest.approx(8 * per1[0]) and per8[1] == pytest.approx(per1[1])


def test_config_round_trip_and_bad_weight(tmp_path):
    loss = StableWeightedBCE(pos_weight=3.0)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, StableWeightedBCE) and again.pos_weight == 3.0
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(optimizer="adam", loss=loss)
    model.train_on_batch(np.zeros((2, 4)), np.ones((2, 1)))  # builds the optimizer, so loading restores all of it
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").loss.pos_weight == 3.0
    with pytest.raises(ValueError, match="got 0.0"):
        StableWeightedBCE(pos_weight=0)
