"""Images/s of the tf.data pipelines against a plain per-image Python loop, and against a model's training speed.

    python benchmarks/pipeline.py [--data-dir $MEDATTN_DATA_DIR] [--repeats 2]

1. BUSI at 256x256 (image + union of masks): ``medattn.datasets.pipeline.image_dataset`` (parallel decode and
   resize; first epoch uncached, then cached epochs with augmentation) against a Python loop that opens each PNG
   with PIL, converts, resizes and stacks batches (how Keras 2 ``ImageDataGenerator``/``Sequence`` scripts load).
2. MIAS training patches (72x72, rotation 180, zoom 0.2, flip: the authors' augmentation): ``array_dataset``
   against a per-patch Python loop with PIL rotate/resize (what ``ImageDataGenerator.flow`` does per image).
3. The training speed of real models at the same inputs (VGG16 at 72x72 batch 32; ResNet50 at 256 batch 8), so
   the pipeline is compared with what consumes it.
Ratios come from one run of this script; the figures go into the issue notes.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("MEDATTN_DATA_DIR", "$MEDATTN_DATA_DIR"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patches", type=int, default=4096)
    ap.add_argument("--skip-models", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from medattn import datasets as D
    from medattn.datasets.pipeline import array_dataset, image_dataset

    root = Path(args.data_dir)
    rows = []

    # 1. BUSI 256x256 with masks
    recs = D.busi_records(root / "busi")
    n = len(recs)

    def python_busi():
        batch = []
        for r in recs:
            img = np.asarray(Image.open(r.path).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR),
                             dtype=np.float32)
            m = None
            for mp in r.mask_paths:
                a = np.asarray(Image.open(mp).convert("L").resize((256, 256), Image.Resampling.NEAREST)) > 127
                m = a if m is None else m | a
            batch.append((img, m))
            if len(batch) == args.batch:
                np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch])
                batch = []

    def consume(ds):
        for _ in ds:
            pass

    def python_busi_aug():
        rng = np.random.default_rng(0)
        batch = []
        for r in recs:
            img = Image.open(r.path).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR)
            m = None
            for mp in r.mask_paths:
                a = np.asarray(Image.open(mp).convert("L").resize((256, 256), Image.Resampling.NEAREST)) > 127
                m = a if m is None else m | a
            mask = Image.fromarray(m.astype(np.uint8) * 255)
            ang, z = rng.uniform(-18, 18), rng.uniform(0.9, 1.1)
            img = img.rotate(ang, resample=Image.Resampling.BILINEAR).resize((int(256 * z),) * 2)
            mask = mask.rotate(ang, resample=Image.Resampling.NEAREST).resize((int(256 * z),) * 2)
            a = np.asarray(img.crop((0, 0, 256, 256)), dtype=np.float32) + rng.uniform(-25, 25)
            mk = np.asarray(mask.crop((0, 0, 256, 256))) > 127
            if rng.random() < 0.5:
                a, mk = a[:, ::-1], mk[:, ::-1]
            batch.append((a, mk))
            if len(batch) == args.batch:
                np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch])
                batch = []

    py = _rate(n, python_busi)
    py_aug = _rate(n, python_busi_aug)
    ds = image_dataset(recs, 256, args.batch, with_masks=True, cache=False)
    tf_first = _rate(n, lambda: consume(ds))
    dsc = image_dataset(recs, 256, args.batch, with_masks=True, cache=True)
    consume(dsc)  # fill the cache
    tf_cached = _rate(n, lambda: consume(dsc))
    dsa = image_dataset(recs, 256, args.batch, with_masks=True, cache=True, shuffle=True,
                        augment={"rotation": 0.05, "zoom": 0.1, "brightness": 0.1})
    consume(dsa)
    tf_aug = _rate(n, lambda: consume(dsa))
    rows += [("BUSI 256x256 + masks", "Python loop (PIL, per image)", py, 1.0),
             ("BUSI 256x256 + masks", "tf.data, first epoch (decode+resize, uncached)", tf_first, tf_first / py),
             ("BUSI 256x256 + masks", "tf.data, cached epoch", tf_cached, tf_cached / py),
             ("BUSI 256x256 + masks", "Python loop + PIL augmentation (rotate, zoom, flip, brightness)", py_aug, 1.0),
             ("BUSI 256x256 + masks", "tf.data, cached + shuffle + augmentation", tf_aug, tf_aug / py_aug)]

    # 2. MIAS patches with the authors' augmentation
    mrecs = [r for r in D.mias_records(root / "mias_rois") if r.split == "train"]
    rois, labels = D.load_rois(mrecs)
    per = max(1, args.patches // len(rois))
    patches, plabels, _ = D.random_patches(rois, labels, {0: per, 1: per}, seed=0)
    k = len(patches)
    rng = np.random.default_rng(0)

    def python_mias():
        out = []
        for p in patches:
            im = Image.fromarray(p)
            im = im.rotate(rng.uniform(-180, 180), resample=Image.Resampling.NEAREST)
            z = rng.uniform(0.8, 1.2)
            s = int(round(72 * z))
            im = im.resize((s, s), Image.Resampling.NEAREST)
            a = np.asarray(im, dtype=np.float32)
            a = a[:72, :72] if s >= 72 else np.pad(a, ((0, 72 - s), (0, 72 - s)), mode="edge")
            if rng.random() < 0.5:
                a = a[:, ::-1]
            a = np.repeat(a[..., None], 3, -1)
            out.append(a - a.mean())
            if len(out) == 32:
                np.stack(out)
                out = []

    py_m = _rate(k, python_mias)
    dsm = array_dataset(patches, plabels, 32, shuffle=True, augment={"rotation": 0.5, "zoom": 0.2},
                        preprocess=lambda t: t - __import__("tensorflow").reduce_mean(t, axis=[0, 1, 2], keepdims=True))
    consume(dsm)
    tf_m = _rate(k, lambda: consume(dsm))
    rows += [("MIAS 72x72 patches + augmentation", "Python loop (PIL, per patch)", py_m, 1.0),
             ("MIAS 72x72 patches + augmentation", "tf.data array pipeline", tf_m, tf_m / py_m)]

    # 3. what consumes it
    if not args.skip_models:
        import keras

        for name, fn, size, bs in (("VGG16 72x72 train step", keras.applications.VGG16, 72, 32),
                                   ("ResNet50 256x256 train step", keras.applications.ResNet50, 256, 8)):
            base = fn(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
            model = keras.Model(base.input, keras.layers.Dense(2, activation="softmax")(base.output))
            model.compile("adam", "sparse_categorical_crossentropy")
            x = np.random.rand(bs, size, size, 3).astype("float32")
            y = np.zeros(bs, dtype="int32")
            model.train_on_batch(x, y)
            rate = _rate(bs * 3, lambda: [model.train_on_batch(x, y) for _ in range(3)])
            rows.append((name, "model training (float32)", rate, float("nan")))

    print(f"# tf.data pipeline benchmark ({os.cpu_count()} cores)\n")
    print("| data | loader | images/s | x matching Python loop |")
    print("|---|---|---|---|")
    for d, how, r, ratio in rows:
        print(f"| {d} | {how} | {r:.1f} | {'—' if ratio != ratio else f'{ratio:.1f}'} |")


if __name__ == "__main__":
    main()
