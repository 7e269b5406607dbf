"""Test-time augmentation views and their mean prediction (MIAS patch classifiers, medattn-predict cards)."""

import numpy as np
import pytest

from medattn.evaluation import tta_predict, tta_refusal, tta_restore, tta_views


def _batch(n=3, size=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 2)).astype("float32")


def test_views_are_the_dihedral_group_of_each_image():
    x = _batch()
    assert len(tta_views(x, None)) == 1 and np.array_equal(tta_views(x, None)[0], x)
    flip = tta_views(x, "flip")
    assert len(flip) == 2 and np.array_equal(flip[1], x[:, :, ::-1])
    views = tta_views(x, "dihedral")
    assert len(views) == 8
    # eight different images (a random image has no symmetry), each a rotation or mirror of the original
    keys = {v.tobytes() for v in views}
    assert len(keys) == 8
    assert np.array_equal(views[1][0], np.rot90(x[0], 1)) and np.array_equal(views[4], x[:, :, ::-1])
    # the group is closed: rotating any view by a quarter turn gives another view
    for v in views:
        assert np.rot90(v, 1, axes=(1, 2)).tobytes() in keys


def test_mean_prediction_over_views():
    x = _batch()

    def corner(v):  # a model that looks at one pixel: not invariant, so the views matter
        return v[:, 0, 0, 0]

    want = np.mean([v[:, 0, 0, 0] for v in tta_views(x, "dihedral")], axis=0)
    assert np.allclose(tta_predict(corner, x, "dihedral"), want)
    assert np.allclose(tta_predict(corner, x, None), x[:, 0, 0, 0])
    # the mean over the dihedral views of the four corners' mean equals that mean (it is invariant)
    def corners(v):
        return v[:, [0, 0, -1, -1], [0, -1, 0, -1], 0].mean(1)

    assert np.allclose(tta_predict(corners, x, "dihedral"), corners(x), atol=1e-6)


def test_bad_modes_and_shapes_are_refused():
    with pytest.raises(ValueError, match="tta must be one of"):
        tta_views(_batch(), "rotate")
    with pytest.raises(ValueError, match="square"):
        tta_views(np.zeros((1, 4, 6, 1)), "dihedral")
    with pytest.raises(ValueError, match="batch of images"):
        tta_views(np.zeros((4, 4)), "flip")
    assert len(tta_views(np.zeros((2, 4, 4)), "dihedral")) == 8  # greyscale windows without a channel axis


def test_restore_maps_each_views_dense_output_back_and_refusals_name_the_choices():
    x = _batch()
    for mode in (None, "flip", "dihedral"):  # an identity "segmenter": each view's output restored is the image
        assert all(np.array_equal(tta_restore(v, mode, i), x) for i, v in enumerate(tta_views(x, mode)))
    assert tta_refusal("tta", None, ("flip",)) is None and tta_refusal("tta", "flip", ("flip",)) is None
    assert tta_refusal("tta", "rotate", ("flip", "dihedral"), "why") == "tta 'rotate': choose none or dihedral or flip (why)"
