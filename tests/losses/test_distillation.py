import keras
import numpy as np
import pytest

from medattn.losses import DistillationLoss, pack_targets, packed_accuracy, soften


def _probs(rng, n=32, k=4, scale=1.0):
    z = rng.normal(size=(n, k)) * scale
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def _reference(y, p, q, t, w):
    """Hinton's loss in float64 from the student's probabilities p and the softened teacher target q."""
    logp = np.log(p)
    ce = -logp[np.arange(len(y)), y]
    zs = logp / t
    log_s = zs - np.log(np.exp(zs).sum(-1, keepdims=True))
    kl = (q * (np.log(q) - log_s)).sum(-1)
    return (1 - w) * ce + w * t * t * kl


@pytest.mark.parametrize("t, w", [(1.0, 0.5), (4.0, 0.9), (2.0, 1.0)])
def test_equals_the_formula(t, w):
    rng = np.random.default_rng(0)
    p, y = _probs(rng), rng.integers(0, 4, size=32)
    q = soften(_probs(rng, scale=3.0), t)
    loss = DistillationLoss(temperature=t, weight=w, reduction=None)
    got = np.asarray(loss(pack_targets(y, q), p.astype("float32")))
    np.testing.assert_allclose(got, _reference(y, p, q, t, w), rtol=2e-5, atol=1e-6)


def test_rows_without_a_soft_target_get_the_plain_cross_entropy():
    """Validation data is packed without a teacher: its loss is Keras' sparse cross-entropy, whatever T and w."""
    rng = np.random.default_rng(1)
    p, y = _probs(rng).astype("float32"), rng.integers(0, 4, size=32)
    plain = np.asarray(keras.losses.sparse_categorical_crossentropy(y, p))
    got = np.asarray(DistillationLoss(4.0, 0.9, reduction=None)(pack_targets(y, None, 4), p))
    np.testing.assert_allclose(got, plain, rtol=1e-5)
    # weight 0 with a teacher is the plain loss too; a teacher with weight > 0 changes it
    q = soften(_probs(rng), 4.0)
    np.testing.assert_allclose(np.asarray(DistillationLoss(4.0, 0.0, reduction=None)(pack_targets(y, q), p)), plain,
                               rtol=1e-5)
    assert not np.allclose(np.asarray(DistillationLoss(4.0, 0.5, reduction=None)(pack_targets(y, q), p)), plain)


def test_the_soft_term_is_smallest_where_the_student_matches_the_teacher():
    rng = np.random.default_rng(2)
    teacher = _probs(rng, n=8, scale=2.0)
    q = soften(teacher, 3.0)
    y = teacher.argmax(1)
    loss = DistillationLoss(3.0, 1.0, reduction=None)
    same = np.asarray(loss(pack_targets(y, q), teacher.astype("float32")))
    np.testing.assert_allclose(same, 0.0, atol=1e-5)  # KL(q || q) = 0
    other = np.asarray(loss(pack_targets(y, q), _probs(rng, n=8).astype("float32")))
    assert np.all(other > 1e-3)


def test_soften_averages_the_members_softened_distributions():
    p = np.array([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(soften(p, 1.0)[0], p[0])
    s = soften(p, 2.0)
    r = np.sqrt(p[0]) / np.sqrt(p[0]).sum()  # softmax(log p / 2)
    np.testing.assert_allclose(s[0], r)
    assert s[1, 0] > 0.999 and np.all(s[1, 1:] > 0)  # an exact 0 stays finite
    ens = soften(np.stack([p, p[::-1]]), 2.0)
    np.testing.assert_allclose(ens, (s + s[::-1]) / 2)
    np.testing.assert_allclose(ens.sum(-1), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        soften(p, 0)
    with pytest.raises(ValueError, match="shape"):
        soften(p[0], 1.0)


def test_pack_targets_and_the_packed_accuracy():
    y = np.array([0, 2, 1])
    packed = pack_targets(y, None, 3)
    assert packed.shape == (3, 4) and packed.dtype == np.float32 and list(packed[:, 0]) == [0, 2, 1]
    assert not packed[:, 1:].any()
    with pytest.raises(ValueError, match="n_classes"):
        pack_targets(y)
    with pytest.raises(ValueError, match="do not match 3 labels"):
        pack_targets(y, np.ones((2, 3)))
    m = packed_accuracy()
    assert m.name == "accuracy"
    m.update_state(packed, np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]], "float32"))
    assert float(m.result()) == pytest.approx(2 / 3)


def test_arguments_are_checked_and_the_loss_survives_a_saved_model(tmp_path):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DistillationLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"weight must lie in \[0, 1\]"):
        DistillationLoss(weight=1.5)
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    model.compile(optimizer="sgd", loss=DistillationLoss(2.0, 0.7), metrics=[packed_accuracy()])
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.integers(0, 2, size=16)
    hist = model.fit(x, pack_targets(y, soften(_probs(rng, n=16, k=2), 2.0)), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0]) and "accuracy" in hist.history
    model.save(tmp_path / "m.keras")
    from medattn.saving import load_model

    back = load_model(tmp_path / "m.keras")
    assert isinstance(back.loss, DistillationLoss) and (back.loss.temperature, back.loss.weight) == (2.0, 0.7)
