import pytest

from medattn.backbones import VGG_TAPS, vgg
from medattn.models.mias_fusion import build_mias_model

VGG16_CONV_PARAMS = 14_714_688  # keras.applications VGG16 without top


def head_params(features):
    bn = 4 * features
    return bn + (features * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 2 + 2)


def test_vgg_taps_sizes_at_72():
    m = vgg(16, (72, 72, 3))
    sizes = [m.get_layer(VGG_TAPS[f"P{i}"]).output.shape[1] for i in range(1, 6)]
    assert sizes == [36, 18, 9, 4, 2]
    assert m.count_params() == VGG16_CONV_PARAMS
    # VGG19 adds one 3x3 conv to each of blocks 3, 4, 5; same count as keras.applications.VGG19
    assert vgg(19, (72, 72, 3)).count_params() == VGG16_CONV_PARAMS + (3 * 3 * 256 * 256 + 256) + 2 * (
        3 * 3 * 512 * 512 + 512) == 20_024_384


@pytest.mark.parametrize("variant,features", [("baseline", 512), ("model1", 1472), ("model2", 224)])
def test_feature_widths_and_parameter_counts(variant, features):
    m = build_mias_model(variant, "vgg16", 72)
    assert m.get_layer("head_bn").input.shape[-1] == features
    fusion = 0
    if variant == "model2":
        chans, filt = (64, 128, 256, 512, 512), (32, 32, 32, 64, 64)
        fusion = sum(4 * c + c * f + f for c, f in zip(chans, filt))  # BN (4 per channel) + 1x1 conv
    assert m.count_params() == VGG16_CONV_PARAMS + fusion + head_params(features)
    assert m.output.shape[-1] == 2


def test_frozen_backbone_trains_only_fusion_and_head():
    m = build_mias_model("model2", "vgg16", 72, freeze_backbone=True)
    names = {w.path.split("/")[0] for w in m.trainable_weights}
    assert not any(n.startswith("block") for n in names)
    assert "cross_channel_fusion" in names and "head_fc1" in names


def test_cpu_profile_variant_and_errors():
    m = build_mias_model("model1", "vgg16", 72, width=0.25, batch_norm=True, units=256)
    assert m.get_layer("head_bn").input.shape[-1] == 16 + 32 + 64 + 128 + 128
    with pytest.raises(ValueError, match="backbone must be vgg16 or vgg19, got 'resnet50'"):
        build_mias_model("model1", "resnet50")
    with pytest.raises(ValueError, match="ImageNet weights exist only for width=1.0"):
        vgg(16, weights="imagenet", width=0.5)
    with pytest.raises(ValueError, match="variant must be one of"):
        build_mias_model("model3")
