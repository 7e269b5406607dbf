"""DCAT: the fusion and its ablations build and run, save and reload with the same outputs, MC dropout stays on."""

import keras
import numpy as np
import pytest

from medattn.models.dcat import FUSIONS, build_dcat


def _small(fusion, dropout=0.0):
    return build_dcat(64, 2, backbone_a="efficientnetb0", fusion=fusion, dim=32, num_heads=4, dropout=dropout)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusions_build_and_give_probabilities(fusion):
    m = _small(fusion)
    y = np.asarray(m(np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32") * 255))
    assert y.shape == (2, 2) and np.allclose(y.sum(1), 1, atol=1e-5)
    names = {layer.name for layer in m.layers}
    assert ("cross_attention" in names) == (fusion == "cross_attention")
    assert ("a_preprocess" in names) == (fusion != "b_only") and ("b_preprocess" in names) == (fusion != "a_only")


def test_save_reload_same_outputs_and_mc_dropout_active(tmp_path):
    x = np.random.default_rng(1).random((3, 64, 64, 3)).astype("float32") * 255
    m = _small("cross_attention")
    m.save(tmp_path / "dcat.keras")
    back = keras.saving.load_model(tmp_path / "dcat.keras")
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(m(x)), atol=1e-6)
    mc = _small("cross_attention", dropout=0.5)
    a, b = np.asarray(mc(x, training=False)), np.asarray(mc(x, training=False))
    assert not np.allclose(a, b)  # dropout is on at inference: T passes differ


def test_bad_arguments():
    with pytest.raises(ValueError, match="fusion"):
        build_dcat(64, fusion="sum")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_dcat(70)


def test_bn_momentum_reaches_both_backbones():
    """The cpu profile's BatchNorm momentum (0.9) must reach every BatchNormalization of both branches, nested
    backbones included; otherwise the from-scratch run's inference outputs are unusable."""
    from medattn.training.batchnorm import set_bn_momentum

    m = set_bn_momentum(build_dcat(32, 3, backbone_a="efficientnetb0", dim=16, num_heads=2), 0.9)

    def bns(model):
        out, stack = [], list(model.layers)
        while stack:
            layer = stack.pop()
            stack.extend(getattr(layer, "layers", []))
            if isinstance(layer, keras.layers.BatchNormalization):
                out.append(layer)
        return out

    for branch in ("a_efficientnetb0", "b_resnet34"):
        found = bns(m.get_layer(branch))
        assert len(found) > 10 and all(b.momentum == 0.9 for b in found), branch
