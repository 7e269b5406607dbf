import numpy as np
import pytest

from medattn.backbones import IRV2_TAPS, inception_resnet_v2_same
from medattn.models.dcnnimaf import build_dcnnimaf
from medattn.models.linknet import build_linknet


@pytest.mark.slow
def test_same_padding_irv2_sizes_and_imagenet_weight_shapes():
    import keras

    from medattn.backbones.inception_resnet_v2 import copy_weights_in_order

    m = inception_resnet_v2_same((256, 256, 3))
    sizes = {k: tuple(m.get_layer(v).output.shape[1:3]) for k, v in IRV2_TAPS.items()}
    assert sizes == {"P1": (128, 128), "P2": (64, 64), "P3": (32, 32), "P4": (16, 16), "P5": (8, 8)}
    ref = keras.applications.InceptionResNetV2(include_top=False, weights=None, input_shape=(256, 256, 3))
    # the 'valid' original does not halve cleanly: the reason for the variant
    assert ref.get_layer("conv_7b_ac").output.shape[1] == 6
    assert m.count_params() == ref.count_params() == 54_336_736
    assert copy_weights_in_order(ref, m) == 448  # every weighted layer has the same shape, so ImageNet weights load
    with pytest.raises(ValueError, match="multiples of 32"):
        inception_resnet_v2_same((250, 250, 3))


@pytest.mark.slow
def test_linknet_irv2_output_and_decoder_names():
    m = build_linknet("inceptionresnetv2", 256)
    assert m.output.shape[1:] == (256, 256, 1)
    for stage, size in ((4, 16), (3, 32), (2, 64), (1, 128)):
        assert m.get_layer(f"decoder_stage{stage}_attention").output.shape[1] == size
    ablation = build_linknet("inceptionresnetv2", 256, attention=False)
    assert ablation.count_params() < m.count_params()


def test_linknet_small_vgg_trains_one_step():
    m = build_linknet("vgg16", 64, encoder_width=0.125, final_filters=8)
    m.compile("adam", "binary_crossentropy")
    x = np.random.rand(2, 64, 64, 3).astype("float32")
    y = (np.random.rand(2, 64, 64, 1) > 0.5).astype("float32")
    before = m.get_layer("mask").get_weights()[0].copy()
    m.train_on_batch(x, y)
    assert m.predict(x, verbose=0).shape == (2, 64, 64, 1)
    assert not np.allclose(before, m.get_layer("mask").get_weights()[0])
    with pytest.raises(ValueError, match="multiple of 32"):
        build_linknet("vgg16", 100)


def test_dcnnimaf_shapes_and_ablation():
    m = build_dcnnimaf(64, filters=(8, 8, 16, 16, 16))
    assert m.input.shape[1:] == (64, 64, 4) and m.output.shape[1:] == (3,)
    names = [la.name for la in m.layers]
    assert "self_attention" in names and "stage1_channel_attention" in names
    plain = build_dcnnimaf(64, filters=(8, 8, 16, 16, 16), attention=False, mask_mode="multiply")
    assert plain.input.shape[-1] == 3 and not any("attention" in la.name for la in plain.layers)
    p = m.predict(np.random.rand(2, 64, 64, 4).astype("float32"), verbose=0)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="'overlay'"):
        build_dcnnimaf(mask_mode="overlay")
