import keras
import numpy as np
import pytest

from medattn.layers import CBAM, attention_block


def _names(kind):
    inp = keras.Input((8, 8, 16))
    model = keras.Model(inp, attention_block(inp, kind, "stage1", reduction=4))
    return [layer.name for layer in model.layers[1:]], model


def test_attention_chosen_by_name():
    assert _names("cbam")[0] == ["stage1_channel_attention", "stage1_spatial_attention"]
    assert _names("scse")[0] == ["stage1_attention"]
    assert _names("se")[0] == ["stage1_channel_attention"]
    assert _names(None)[0] == [] and _names("none")[0] == []
    with pytest.raises(ValueError, match="'eca'"):
        _names("eca")


def test_cbam_block_computes_the_cbam_layer():
    """The two named gates compute what the CBAM layer (channel first) computes with the same weights."""
    _, model = _names("cbam")
    cbam = CBAM(reduction=4, kernel_size=7)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
    cbam(x)
    cbam.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(cbam(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_linknet_and_dcnnimaf_take_attention_by_name():
    from medattn.models.dcnnimaf import build_dcnnimaf
    from medattn.models.linknet import build_linknet

    m = build_linknet("vgg16", 64, attention="cbam", encoder_width=0.125)
    assert m.get_layer("decoder_stage1_spatial_attention") is not None
    m = build_linknet("resnet34", 64, attention=None)
    assert not [la for la in m.layers if "attention" in la.name]
    c = build_dcnnimaf(64, filters=(8, 8, 8, 8, 8), attention="scse")
    assert c.get_layer("stage3_attention") is not None
    assert build_dcnnimaf(64, filters=(8, 8, 8, 8, 8), attention=None).name == "dcnnimaf_no_attention"
