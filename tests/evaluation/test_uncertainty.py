import numpy as np
import pytest

from medattn.evaluation.uncertainty import entropy, mc_predict, uncertainty_from_samples


def test_entropy_by_hand():
    assert entropy([0.5, 0.5]) == pytest.approx(np.log(2))
    assert entropy([1.0, 0.0]) == 0.0


def test_mutual_information_separates_disagreement_from_ambiguity():
    agree = np.array([[[0.5, 0.5]]] * 4)  # every pass unsure: aleatoric, no epistemic part
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]] * 2)  # confident passes that disagree: epistemic
    a, d = uncertainty_from_samples(agree), uncertainty_from_samples(disagree)
    assert a["predictive_entropy"][0] == pytest.approx(np.log(2)) == d["predictive_entropy"][0]
    assert a["mutual_information"][0] == pytest.approx(0.0)
    assert d["mutual_information"][0] == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match=r"\(T, n, n_classes\)"):
        uncertainty_from_samples(np.zeros((3, 2)))


def test_mc_predict_with_mcdropout_model():
    import keras

    from medattn.layers import MCDropout

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    x = MCDropout(0.5)(keras.layers.Dense(16, activation="relu")(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    res = mc_predict(model, np.random.rand(5, 8).astype("float32"), passes=10)
    assert res["mean"].shape == (5, 3) and (res["std"] > 0).any()
    np.testing.assert_allclose(res["mean"].sum(1), 1.0, atol=1e-5)
    assert (res["mutual_information"] >= -1e-9).all()
