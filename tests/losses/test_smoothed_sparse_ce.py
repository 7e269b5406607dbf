import keras
import numpy as np
import pytest

from medattn.losses import SmoothedSparseCategoricalCrossentropy


def _reference(y, p, s):
    """Smoothed cross-entropy in float64: targets (1 - s) one-hot + s / n."""
    n = p.shape[-1]
    t = np.eye(n)[y] * (1 - s) + s / n
    return -(t * np.log(p.astype(np.float64))).sum(-1)


def _probs(rng, n=32, k=4):
    z = rng.normal(size=(n, k))
    return (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("s", [0.0, 0.1, 0.3])
def test_equals_the_smoothed_formula(s):
    rng = np.random.default_rng(0)
    p, y = _probs(rng), rng.integers(0, 4, size=32)
    loss = SmoothedSparseCategoricalCrossentropy(label_smoothing=s, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(y, p)), _reference(y, p, s), rtol=1e-5)
    # (batch, 1) labels as Keras datasets often give them
    np.testing.assert_allclose(np.asarray(loss(y[:, None], p)), _reference(y, p, s), rtol=1e-5)


def test_zero_smoothing_is_the_keras_sparse_loss_and_smoothing_changes_it():
    rng = np.random.default_rng(1)
    p, y = _probs(rng), rng.integers(0, 4, size=32)
    plain = float(keras.losses.SparseCategoricalCrossentropy()(y, p))
    assert float(SmoothedSparseCategoricalCrossentropy(0.0)(y, p)) == pytest.approx(plain, rel=1e-6)
    assert float(SmoothedSparseCategoricalCrossentropy(0.1)(y, p)) != pytest.approx(plain, rel=1e-3)


def test_logits_and_bfloat16():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 4, size=16)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    ref = _reference(y, p, 0.1)
    out = SmoothedSparseCategoricalCrossentropy(0.1, from_logits=True, reduction=None)(y, z)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5)
    bf = SmoothedSparseCategoricalCrossentropy(0.1, reduction=None)(y, keras.ops.cast(p, "bfloat16"))
    assert str(bf.dtype) == "float32" or "float32" in str(bf.dtype)
    np.testing.assert_allclose(np.asarray(bf), ref, rtol=2e-2)


def test_refuses_bad_smoothing_and_round_trips():
    with pytest.raises(ValueError, match="label_smoothing"):
        SmoothedSparseCategoricalCrossentropy(1.0)
    loss = SmoothedSparseCategoricalCrossentropy(0.2)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, SmoothedSparseCategoricalCrossentropy) and again.label_smoothing == 0.2
