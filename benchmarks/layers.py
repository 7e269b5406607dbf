"""Forward and forward+backward time of each medattn layer on a realistic map, against a plain 3x3 Conv2D.

    python benchmarks/layers.py [--size 32] [--channels 256] [--batch 16] [--repeats 10]

Each layer is wrapped in a one-layer Keras model; forward = ``predict_on_batch``, forward+backward =
``train_on_batch`` with an MSE loss (SGD). Times are medians over ``--repeats`` after two warm-up calls. The ratio
column divides by the same measurement of ``Conv2D(channels, 3, padding="same")``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _time(fn, repeats):
    fn()
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)

    import keras
    import numpy as np

    from medattn import layers as L

    s, c, b = args.size, args.channels, args.batch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(b, s, s, c)).astype("float32")
    half = rng.normal(size=(b, s // 2, s // 2, c)).astype("float32")
    cases = {
        "Conv2D 3x3 (reference)": (lambda: keras.layers.Conv2D(c, 3, padding="same"), [x]),
        "ChannelAttention r=16": (lambda: L.ChannelAttention(16), [x]),
        "SpatialAttention k=7": (lambda: L.SpatialAttention(7), [x]),
        "CBAM r=16 k=7": (lambda: L.CBAM(16, 7), [x]),
        "SpatialChannelAttention r=2": (lambda: L.SpatialChannelAttention(2), [x]),
        "SelfAttention2D 8 heads": (lambda: L.SelfAttention2D(8), [x]),
        "BidirectionalCrossAttention d=256 (32x32 + 16x16)": (
            lambda: L.BidirectionalCrossAttention(256, 8, output_mode="both"), [x, half]),
        "CrossChannelFusion (32x32 + 16x16 maps)": (lambda: L.CrossChannelFusion((32, 64)), [x, half]),
        "GlobalPoolFusion (32x32 + 16x16 maps)": (lambda: L.GlobalPoolFusion(), [x, half]),
    }
    rows = []
    for name, (make, xs) in cases.items():
        inputs = [keras.Input(v.shape[1:]) for v in xs]
        out = make()(inputs if len(xs) > 1 else inputs[0])
        model = keras.Model(inputs, out)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
        feed = xs if len(xs) > 1 else xs[0]
        y = model.predict_on_batch(feed)
        tgt = [np.zeros_like(v) for v in y] if isinstance(y, list) else np.zeros_like(y)
        fwd = _time(lambda: model.predict_on_batch(feed), args.repeats)
        both = _time(lambda: model.train_on_batch(feed, tgt), args.repeats) if model.trainable_weights else float("nan")
        rows.append((name, model.count_params(), fwd, both))
    ref_f, ref_b = rows[0][2], rows[0][3]
    print(f"# medattn layer benchmark: batch {b}, {s}x{s}x{c}, keras {keras.__version__} "
          f"({keras.backend.backend()}), {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| layer | params | forward ms | x Conv2D | fwd+bwd ms | x Conv2D |")
    print("|---|---|---|---|---|---|")
    for name, params, f, bw in rows:
        print(f"| {name} | {params:,} | {f * 1e3:.1f} | {f / ref_f:.2f} | {bw * 1e3:.1f} | {bw / ref_b:.2f} |")


if __name__ == "__main__":
    main()
