"""Per-step times of Xception at 80 px (the brain cpu profile's size, batch 32): twelve ``train_on_batch`` steps
(the first traces) and one epoch of ``fit`` over 20 batches after a warm-up epoch, in bf16 and float32.

    python benchmarks/xception_steps.py

A check of :mod:`benchmarks.throughput`'s Xception row (three timed steps after one warm-up): every step is printed,
so slow first steps or a busy machine shows. Prints one JSON line per precision.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import keras
    import numpy as np

    from medattn.models.transfer import build_transfer_classifier

    for prec in ("bf16", "float32"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if prec == "bf16" else "float32")
        keras.utils.set_random_seed(0)
        model = build_transfer_classifier("xception", 80, 4)
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).normal(size=(32, 80, 80, 3)).astype("float32")
        y = np.zeros((32,), "int64")
        steps = []
        for _ in range(12):
            t = time.perf_counter()
            model.train_on_batch(x, y)
            steps.append(time.perf_counter() - t)
        xs, ys = np.repeat(x, 20, 0), np.repeat(y, 20, 0)
        model.fit(xs, ys, batch_size=32, epochs=1, verbose=0)
        t = time.perf_counter()
        model.fit(xs, ys, batch_size=32, epochs=1, verbose=0)
        fit_s = time.perf_counter() - t
        print(prec, json.dumps({"train_on_batch_step_s": [round(v, 3) for v in steps],
                                "fit_img_per_s": round(len(xs) / fit_s, 1),
                                "tob_img_per_s_median_after_3": round(32 / float(np.median(steps[3:])), 1)}),
              flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
