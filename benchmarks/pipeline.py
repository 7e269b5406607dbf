"""Images/s of the tf.data pipelines against a plain per-image Python loop, and against a model's training speed.

    python benchmarks/pipeline.py [--data-dir $MEDATTN_DATA_DIR] [--batch 16] [--patches 4096] [--skip-models]

1. BUSI at 256x256 (image + union of masks): ``medattn.datasets.pipeline.image_dataset`` (parallel decode and
   resize; first epoch uncached, then cached epochs with augmentation) against a Python loop that opens each PNG
   with PIL, converts, resizes and stacks batches (how Keras 2 ``ImageDataGenerator``/``Sequence`` scripts load).
2. MIAS training patches (72x72, rotation 180, zoom 0.2, flip: the authors' augmentation): ``array_dataset``
   against a per-patch Python loop with PIL rotate/resize (what ``ImageDataGenerator.flow`` does per image).
3. The training speed of real models at the same inputs (VGG16 at 72x72 batch 32; ResNet50 at 256 batch 8), so
   the pipeline is compared with what consumes it.
It prints one Markdown table; every ratio in it comes from this one run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rate(n, fn):
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def _consume(ds) -> None:
    for _ in ds:
        pass


def _pil_busi(record, size: int = 256):
    """One BUSI image (RGB, bilinear) and the union of its masks (nearest), resized with PIL."""
    import numpy as np
    from PIL import Image

    img = Image.open(record.path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    mask = None
    for path in record.mask_paths:
        a = np.asarray(Image.open(path).convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127
        mask = a if mask is None else mask | a
    return img, mask


def _pil_augmented(img, mask, rng, size: int = 256):
    """Rotation, zoom, brightness and a horizontal flip with PIL, as a Keras 2 generator would do them."""
    import numpy as np
    from PIL import Image

    mask = Image.fromarray(mask.astype(np.uint8) * 255)
    angle, zoom = rng.uniform(-18, 18), rng.uniform(0.9, 1.1)
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR).resize((int(size * zoom),) * 2)
    mask = mask.rotate(angle, resample=Image.Resampling.NEAREST).resize((int(size * zoom),) * 2)
    a = np.asarray(img.crop((0, 0, size, size)), dtype=np.float32) + rng.uniform(-25, 25)
    m = np.asarray(mask.crop((0, 0, size, size))) > 127
    return (a[:, ::-1], m[:, ::-1]) if rng.random() < 0.5 else (a, m)


def _python_busi(recs, batch_size: int, augment: bool) -> None:
    """The per-image Python loop over BUSI, stacking batches of ``batch_size``."""
    import numpy as np

    rng, batch = np.random.default_rng(0), []
    for r in recs:
        img, mask = _pil_busi(r)
        batch.append(_pil_augmented(img, mask, rng) if augment else (np.asarray(img, dtype=np.float32), mask))
        if len(batch) == batch_size:
            np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch])
            batch = []


def _busi_rows(root: Path, batch: int) -> list[tuple]:
    from medattn import datasets as D
    from medattn.datasets.pipeline import image_dataset

    recs = D.busi_records(root / "busi")
    n = len(recs)
    py = _rate(n, lambda: _python_busi(recs, batch, augment=False))
    py_aug = _rate(n, lambda: _python_busi(recs, batch, augment=True))
    ds = image_dataset(recs, 256, batch, with_masks=True, cache=False)
    tf_first = _rate(n, lambda: _consume(ds))
    cached = image_dataset(recs, 256, batch, with_masks=True, cache=True)
    _consume(cached)  # fill the cache
    tf_cached = _rate(n, lambda: _consume(cached))
    augmented = image_dataset(recs, 256, batch, with_masks=True, cache=True, shuffle=True,
                              augment={"rotation": 0.05, "zoom": 0.1, "brightness": 0.1})
    _consume(augmented)
    tf_aug = _rate(n, lambda: _consume(augmented))
    what = "BUSI 256x256 + masks"
    return [(what, "Python loop (PIL, per image)", py, 1.0),
            (what, "tf.data, first epoch (decode+resize, uncached)", tf_first, tf_first / py),
            (what, "tf.data, cached epoch", tf_cached, tf_cached / py),
            (what, "Python loop + PIL augmentation (rotate, zoom, flip, brightness)", py_aug, 1.0),
            (what, "tf.data, cached + shuffle + augmentation", tf_aug, tf_aug / py_aug)]


def _python_mias(patches, rng) -> None:
    """The per-patch Python loop with the authors' augmentation (PIL rotate and zoom, flip), batches of 32."""
    import numpy as np
    from PIL import Image

    out = []
    for p in patches:
        im = Image.fromarray(p).rotate(rng.uniform(-180, 180), resample=Image.Resampling.NEAREST)
        s = int(round(72 * rng.uniform(0.8, 1.2)))
        a = np.asarray(im.resize((s, s), Image.Resampling.NEAREST), dtype=np.float32)
        a = a[:72, :72] if s >= 72 else np.pad(a, ((0, 72 - s), (0, 72 - s)), mode="edge")
        if rng.random() < 0.5:
            a = a[:, ::-1]
        a = np.repeat(a[..., None], 3, -1)
        out.append(a - a.mean())
        if len(out) == 32:
            np.stack(out)
            out = []


def _mias_rows(root: Path, n_patches: int) -> list[tuple]:
    import numpy as np
    import tensorflow as tf

    from medattn import datasets as D
    from medattn.datasets.pipeline import array_dataset

    rois, labels = D.load_rois([r for r in D.mias_records(root / "mias_rois") if r.split == "train"])
    per = max(1, n_patches // len(rois))
    patches, plabels, _ = D.random_patches(rois, labels, {0: per, 1: per}, seed=0)
    k = len(patches)
    py = _rate(k, lambda: _python_mias(patches, np.random.default_rng(0)))
    ds = array_dataset(patches, plabels, 32, shuffle=True, augment={"rotation": 0.5, "zoom": 0.2},
                       preprocess=lambda t: t - tf.reduce_mean(t, axis=[0, 1, 2], keepdims=True))
    _consume(ds)
    tf_rate = _rate(k, lambda: _consume(ds))
    what = "MIAS 72x72 patches + augmentation"
    return [(what, "Python loop (PIL, per patch)", py, 1.0), (what, "tf.data array pipeline", tf_rate, tf_rate / py)]


def _model_rows() -> list[tuple]:
    """Images/s of a float32 training step of VGG16 (72 px, batch 32) and ResNet50 (256 px, batch 8)."""
    import keras
    import numpy as np

    rows = []
    for name, fn, size, bs in (("VGG16 72x72 train step", keras.applications.VGG16, 72, 32),
                               ("ResNet50 256x256 train step", keras.applications.ResNet50, 256, 8)):
        base = fn(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
        model = keras.Model(base.input, keras.layers.Dense(2, activation="softmax")(base.output))
        model.compile("adam", "sparse_categorical_crossentropy")
        x, y = np.random.rand(bs, size, size, 3).astype("float32"), np.zeros(bs, dtype="int32")
        model.train_on_batch(x, y)
        rows.append((name, "model training (float32)", _rate(bs * 3, lambda: [model.train_on_batch(x, y)
                                                                             for _ in range(3)]), float("nan")))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("MEDATTN_DATA_DIR", "$MEDATTN_DATA_DIR"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patches", type=int, default=4096)
    ap.add_argument("--skip-models", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.data_dir)
    rows = _busi_rows(root, args.batch) + _mias_rows(root, args.patches)
    if not args.skip_models:
        rows += _model_rows()
    print(f"# tf.data pipeline benchmark ({os.cpu_count()} cores)\n")
    print("| data | loader | images/s | x matching Python loop |")
    print("|---|---|---|---|")
    for d, how, r, ratio in rows:
        print(f"| {d} | {how} | {r:.1f} | {'—' if ratio != ratio else f'{ratio:.1f}'} |")


if __name__ == "__main__":
    main()
