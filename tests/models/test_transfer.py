"""The brain-MRI transfer classifier: the paper's head on registry backbones, the two fine-tuning phases."""

import keras
import numpy as np
import pytest

from medattn.models.transfer import (
    backbone_layers,
    build_transfer_classifier,
    last_feature_layer,
    set_backbone_trainable,
)


@pytest.mark.parametrize("backbone,feature", [("mobilenetv2", "out_relu"), ("vgg16", "block5_pool")])
def test_head_and_feature_layer(backbone, feature):
    m = build_transfer_classifier(backbone, 32, 4, weights=None)
    out = m(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert out.shape == (2, 4) and np.allclose(np.asarray(out).sum(1), 1, atol=1e-5)
    assert [layer.name for layer in m.layers[-5:]] == ["head_gap", "head_dropout1", "head_fc", "head_dropout2",
                                                       "probs"]
    assert m.get_layer("head_fc").units == 256 and m.get_layer("head_dropout1").rate == 0.3
    assert last_feature_layer(m) == feature


def test_phases_freeze_then_unfreeze_top_without_batchnorm():
    m = build_transfer_classifier("mobilenetv2", 32, 4, weights=None)
    bb = [layer for layer in backbone_layers(m) if not isinstance(layer, keras.layers.InputLayer)]
    assert set_backbone_trainable(m, 0.0) == 0
    assert not any(layer.trainable for layer in bb) and m.get_layer("probs").trainable
    n = set_backbone_trainable(m, 0.3)
    top = bb[len(bb) - int(round(0.3 * len(bb))):]
    assert n == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top)
    assert not any(layer.trainable for layer in bb[: len(bb) - len(top)])
    assert not any(layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))
    assert set_backbone_trainable(m, 1.0) == len(bb)  # from scratch: everything, BatchNorm included
    with pytest.raises(ValueError):
        set_backbone_trainable(m, 1.5)
