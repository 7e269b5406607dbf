import numpy as np
import pytest

from medattn import datasets as D
from medattn.datasets.pipeline import array_dataset, image_dataset
from tests.datasets import synth


def test_busi_pipeline_images_masks_labels(tmp_path):
    synth.make_busi(tmp_path)
    recs = D.busi_records(tmp_path)
    ds = image_dataset(recs, 32, 4, with_masks=True, channels=1)
    xs, (ms, ys) = next(iter(ds))
    assert xs.shape == (4, 32, 32, 1) and ms.shape == (4, 32, 32, 1) and ys.shape == (4,)
    assert set(np.unique(ms.numpy())) <= {0.0, 1.0}
    total = sum(int(b[0].shape[0]) for b in ds)
    assert total == len(recs)
    # union of the two masks of benign (1): both areas present after resizing
    b1 = recs.index(next(r for r in recs if r.name == "benign (1).png"))
    m = np.concatenate([b[1][0].numpy() for b in ds])[b1, ..., 0]
    assert m[4:9, 5:15].mean() > 0.9 and m[20:23, 25:30].mean() > 0.9 and m[12:18].sum() == 0


def test_shuffle_and_augmentation_deterministic_under_seed(tmp_path):
    synth.make_busi(tmp_path)
    recs = D.busi_records(tmp_path)

    def run(seed, epoch):
        ds = image_dataset(recs, 32, 7, shuffle=True, seed=seed, epoch=epoch,
                           augment={"rotation": 0.1, "zoom": 0.1, "brightness": 0.1})
        x, y = next(iter(ds))
        return x.numpy(), y.numpy()

    a, b, c = run(1, 0), run(1, 0), run(1, 1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_array_dataset_from_patches():
    x = np.random.default_rng(0).integers(0, 255, (10, 72, 72), dtype=np.uint8)
    y = np.arange(10) % 2
    ds = array_dataset(x, y, 4, preprocess=lambda t: t - 1.0)
    xb, yb = next(iter(ds))
    assert xb.shape == (4, 72, 72, 1) and xb.dtype.name == "float32"
    np.testing.assert_allclose(xb.numpy()[..., 0], x[:4].astype("float32") - 1.0)


def test_pipeline_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        image_dataset([], 32, 4)
    synth.make_brain(tmp_path)
    recs = D.brain_mri_records(tmp_path)
    with pytest.raises(ValueError, match="no record has a mask"):
        image_dataset(recs, 32, 4, with_masks=True)


def test_array_dataset_traced_transform_reused_and_deterministic():
    """The per-batch transform is traced once per configuration; epochs still differ, a repeat is identical, and
    the cached transform gives what a freshly traced one gives."""
    from medattn.datasets import pipeline

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (10, 16, 16, 3)).astype(np.uint8)
    m = (rng.random((10, 16, 16, 1)) > 0.5).astype(np.float32)
    aug = {"rotation": 0.1, "zoom": 0.1, "flip": "horizontal", "brightness": 0.1}

    def batches(epoch):
        ds = array_dataset(x, None, 4, masks=m, shuffle=True, seed=3, epoch=epoch, augment=aug)
        return [(a.numpy(), b.numpy()) for a, b in ds]

    pipeline._array_element_fn.cache_clear()
    e0, e0_again, e1 = batches(0), batches(0), batches(1)
    info = pipeline._array_element_fn.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    for (a, b), (c, d) in zip(e0, e0_again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert not np.array_equal(e0[0][0], e1[0][0])
    assert set(np.unique(e0[0][1])) <= {0.0, 1.0}  # masks stay binary after the shared warp
    pipeline._array_element_fn.cache_clear()  # a fresh trace gives the same batches
    for (a, b), (c, d) in zip(e0, batches(0)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_augmenter_refuses_a_translation_of_half_the_image_or_more():
    from medattn.datasets.pipeline import augmenter

    augmenter(translate=0.0)
    augmenter(translate=0.49)
    for bad in (0.5, -0.1):
        with pytest.raises(ValueError, match=r"translate must lie in \[0, 0.5\)"):
            augmenter(translate=bad)


@pytest.mark.parametrize("arg, good, bad, message", [
    ("rotation", (0.0, 0.5), (0.51, -0.01), r"rotation must lie in \[0, 0.5\]"),
    ("zoom", (0.0, 0.99), (1.0, -0.1), r"zoom must lie in \[0, 1\)"),
])
def test_augmenter_refuses_a_rotation_or_zoom_out_of_range(arg, good, bad, message):
    from medattn.datasets.pipeline import augmenter

    for v in good:
        augmenter(**{arg: v})
    for v in bad:
        with pytest.raises(ValueError, match=message):
            augmenter(**{arg: v})
