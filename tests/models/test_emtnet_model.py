import numpy as np
import pytest

from medattn.models.emtnet import build_emtnet


def test_multitask_outputs_names_and_shapes():
    m = build_emtnet(64, width=0.35, decoder_filters=(16, 16, 8, 8))
    out = m(np.zeros((2, 64, 64, 3), "float32"))
    assert set(out) == {"label", "mask"}
    assert out["label"].shape == (2, 1) and out["mask"].shape == (2, 64, 64, 1)
    assert m.get_layer("decoder_stage1_concat") is not None and m.get_layer("cls_fc1").units == 512
    import keras

    assert keras.backend.standardize_dtype(out["label"].dtype) == "float32"


def test_classification_only_ablation_shares_encoder_and_head():
    multi = build_emtnet(64, width=0.35, decoder_filters=(16, 16, 8, 8))
    single = build_emtnet(64, width=0.35, segmentation=False)
    assert single.output.shape == (None, 1)
    head = ["cls_gap", "cls_fc1", "cls_dropout", "cls_fc2", "label", "out_relu", "block_13_expand_relu"]
    for name in head:
        assert single.get_layer(name).output.shape == multi.get_layer(name).output.shape
    assert not [la for la in single.layers if la.name.startswith("decoder")]


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_emtnet(100)
    with pytest.raises(ValueError, match="4 stages"):
        build_emtnet(64, decoder_filters=(8, 8))
    with pytest.raises(ValueError, match="no feature taps"):
        build_emtnet(96, backbone="inceptionv3")
