"""Training step time of the MIAS fusion models against their bare backbone, at the same batch and input.

    python benchmarks/mias_fusion.py [--batch 32] [--size 72] [--width 1.0] [--batch-norm] [--repeats 5]

Bare backbone = VGG16 (block5_pool) -> GAP -> softmax 2; Model1 / Model2 add the fusion layer and the
BN + 2 x Dense head. Prints median ms per step, patches/s and the ratio to the bare backbone (one run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=72)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch-norm", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import keras
    import numpy as np

    from medattn.backbones import vgg
    from medattn.models.mias_fusion import build_mias_model

    x = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = np.zeros(args.batch, "int32")
    bb = vgg(16, (args.size, args.size, 3), width=args.width, batch_norm=args.batch_norm)
    bare = keras.Model(bb.input, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(bb.output)), name="bare_vgg16")
    models = {"bare VGG16 (GAP -> softmax)": bare}
    for v in ("baseline", "model1", "model2"):
        models[f"VGG16 {v}"] = build_mias_model(v, "vgg16", args.size, width=args.width, batch_norm=args.batch_norm)
    rows = []
    for name, m in models.items():
        m.compile(keras.optimizers.SGD(1e-4, momentum=0.9), "sparse_categorical_crossentropy")
        m.train_on_batch(x, y)
        m.train_on_batch(x, y)
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            m.train_on_batch(x, y)
            ts.append(time.perf_counter() - t)
        rows.append((name, m.count_params(), statistics.median(ts)))
    ref = rows[0][2]
    print(f"# MIAS fusion training step: batch {args.batch}, {args.size}x{args.size}, width {args.width}, "
          f"BN {args.batch_norm}, {os.cpu_count()} cores\n")
    print("| model | params | ms/step | patches/s | x bare VGG16 |")
    print("|---|---|---|---|---|")
    for name, p, t in rows:
        print(f"| {name} | {p:,} | {t * 1e3:.0f} | {args.batch / t:.1f} | {t / ref:.2f} |")


if __name__ == "__main__":
    main()
