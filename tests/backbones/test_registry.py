"""The backbone registry: every backbone by name, its taps (sizes checked), its preprocessing, ResNet-34."""

import numpy as np
import pytest

from medattn.backbones import (
    BACKBONES,
    backbone_options,
    get_backbone,
    imagenet_weights_status,
    preprocess_fn,
    preprocessing_for,
    resnet34,
)

SIZE = 128
VALID_PADDING = {"xception", "inceptionv3"}  # keras.applications' valid padding: a few pixels short


@pytest.mark.parametrize("name", [n for n in BACKBONES if n not in ("efficientnetb1", "efficientnetb2",
                                                                     "efficientnetb3")])
def test_taps_have_the_size_and_channels_of_their_stride(name):
    bb = get_backbone(name, (SIZE, SIZE, 3))
    assert bb.taps and set(bb.taps) <= {"P1", "P2", "P3", "P4", "P5"}
    for level, tap in bb.taps.items():
        out = bb.feature(level)
        assert tap.channels == out.shape[-1]
        expected = SIZE // tap.stride
        if name in VALID_PADDING or (name == "inceptionv3"):
            assert expected - 4 <= out.shape[1] <= expected, (name, level, out.shape)
        else:
            assert out.shape[1] == expected, (name, level, out.shape)
    assert bb.preprocessing == preprocessing_for(name, None)


def test_preprocessing_follows_the_weights():
    assert preprocessing_for("inceptionresnetv2", None) == "unit"
    assert preprocessing_for("inceptionresnetv2", "imagenet") == "tf"  # [-1, 1], not [0, 1]
    assert preprocessing_for("vgg16", "/some/copy/of/imagenet.h5") == "caffe"
    assert preprocessing_for("densenet121", "imagenet") == "torch"
    assert preprocessing_for("efficientnetb4", None) == "raw"  # it rescales inside the model
    x = np.full((1, 2, 2, 3), 255.0, dtype="float32")
    np.testing.assert_allclose(np.asarray(preprocess_fn("tf")(x)), 1.0)
    np.testing.assert_allclose(np.asarray(preprocess_fn("unit")(x)), 1.0)
    rgb = np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32")
    np.testing.assert_allclose(np.asarray(preprocess_fn("caffe")(rgb))[0, 0, 0],
                               [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-5)
    with pytest.raises(ValueError, match="'nope'"):
        preprocess_fn("nope")


def test_resnet34_counts_as_torchvision_and_loads_its_own_weights(tmp_path):
    m = resnet34((224, 224, 3))
    trainable = int(sum(np.prod(v.shape) for v in m.trainable_weights))
    assert trainable == 21_284_672
    assert m.output.shape[1:] == (7, 7, 512)
    path = tmp_path / "r34.weights.h5"
    m.save_weights(path)
    bb = get_backbone("resnet34", (224, 224, 3), weights=str(path))
    for a, b in zip(m.get_weights(), bb.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        get_backbone("resnet34", (224, 224, 3), weights="imagenet")


def test_bad_names_options_and_paths():
    with pytest.raises(ValueError, match="'resnet18'"):
        get_backbone("resnet18")
    with pytest.raises(ValueError, match="width"):
        get_backbone("resnet50", (64, 64, 3), width=0.5)
    with pytest.raises(ValueError, match="does not exist"):
        get_backbone("vgg16", (64, 64, 3), weights="/no/such/file.h5")


def test_mobilenet_width_is_its_alpha_and_never_silently_replaced():
    """Any positive width from scratch (0.35 used to become 1.0 for MobileNet); with ImageNet weights only 1.0, the
    one file the registry names: another width is refused before anything is downloaded."""
    m = get_backbone("mobilenet", (64, 64, 3), width=0.35).model
    assert m.get_layer("conv1").filters == int(32 * 0.35)
    m = get_backbone("mobilenetv2", (64, 64, 3), width=0.35).model
    assert m.get_layer("Conv1").filters < 32
    for name in ("mobilenet", "mobilenetv2"):
        with pytest.raises(ValueError, match="only at width 1.0, got width=0.5"):
            get_backbone(name, (64, 64, 3), weights="imagenet", width=0.5)
        with pytest.raises(ValueError, match=r"must be in \(0, 4\]"):
            get_backbone(name, (64, 64, 3), width=0)
    assert backbone_options("mobilenetv2") == ("width",) and backbone_options("resnet50") == ()


def test_imagenet_status_names_the_file_and_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    problems = imagenet_weights_status(["inceptionresnetv2", "resnet34"], probe_network=lambda: False)
    text = " ".join(problems)
    assert "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5" in text and "--weights PATH" in text
    assert "resnet34: Keras has no ImageNet weights" in text
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"x")
    assert imagenet_weights_status(["inceptionresnetv2"], probe_network=lambda: False) == []
    assert imagenet_weights_status(["vgg16"], probe_network=lambda: True) == []  # downloadable


def test_check_backbone_refuses_what_get_backbone_would_without_building():
    """Scripts call check_backbone before loading data: the same refusals as get_backbone, nothing built; and
    options_for keeps only the settings a backbone takes (VGG width and BatchNorm, MobileNet width, ResNet none)."""
    from medattn.backbones import check_backbone, options_for

    check_backbone("vgg16", "imagenet")
    check_backbone("vgg16", None, width=0.25, batch_norm=True)
    check_backbone("vgg16", "/some/file.weights.h5", width=0.25)  # a weights file of the scaled model
    for name, opts, msg in [("vgg16", {"width": 0.25}, "vgg16: ImageNet weights exist only at width 1.0 without "
                                                       "BatchNorm, got width=0.25"),
                            ("vgg19", {"batch_norm": True}, "got batch_norm=True"),
                            ("mobilenetv2", {"width": 0.5}, "only at width 1.0, got width=0.5"),
                            ("resnet34", {}, "no ImageNet weights"),
                            ("resnet50", {"width": 1.0}, r"resnet50 has no width option \(it takes none\)")]:
        with pytest.raises(ValueError, match=msg):
            check_backbone(name, "imagenet", **opts)
    with pytest.raises(ValueError, match="'resnet18'"):
        check_backbone("resnet18")
    assert options_for("vgg16", width=0.25, batch_norm=True) == {"width": 0.25, "batch_norm": True}
    assert options_for("mobilenet", width=0.25, batch_norm=True) == {"width": 0.25}
    assert options_for("densenet121", width=0.25, batch_norm=True) == {}
