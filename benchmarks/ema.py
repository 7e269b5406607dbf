"""What the moving average of the weights (``Stage.ema``, :class:`medattn.training.fit.WeightEma`) costs per step.

    python benchmarks/ema.py [--backbone xception] [--size 80] [--batch 32] [--steps 20]
                             [--json benchmarks/results/ema.json] [--markdown benchmarks/results/ema.md]

Builds the brain MRI cpu profile's classifier (random weights, mixed bfloat16 where the machine has native bf16, as
the profile runs) and times, after warm-up, the median of ``--steps`` training steps (``train_on_batch``) and of
``--steps`` average updates, and gives the update as a percentage of the step: one epoch of that profile is 153
steps, so an epoch costs about that percentage more (plus the average in and the raw weights back out once for
validation and once for a best checkpoint, also timed). Figures depend on the machine (recorded in the output) and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median_s(fn, steps: int) -> float:
    fn()  # warm-up (tracing)
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="xception")
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--decay", type=float, default=0.993)
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)

    import keras
    import numpy as np

    from medattn.models.transfer import build_transfer_classifier
    from medattn.training.fit import WeightEma
    from medattn.training.records import machine_description, package_versions
    from medattn.training.strategy import resolve_mixed_precision, set_mixed_precision

    precision = resolve_mixed_precision("auto")
    set_mixed_precision(precision)
    model = build_transfer_classifier(args.backbone, args.size, 4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 4, args.batch).astype("int32")
    step = _median_s(lambda: model.train_on_batch(x, y), args.steps)
    ema = WeightEma(model, args.decay)
    update = _median_s(lambda: (ema.update(), ema.count.numpy()), args.steps)

    def swap():
        with ema.applied():  # the average in, the raw weights back out: what a validation costs on top
            pass

    swap = _median_s(swap, 3)
    n = sum(int(np.prod(v.shape)) for v in ema.targets)
    res = {"backbone": args.backbone, "size": args.size, "batch": args.batch, "precision": precision,
           "averaged_values": n, "train_step_s": step, "ema_update_s": update, "ema_update_pct_of_step":
           100 * update / step, "swap_in_and_out_s": swap, "steps": args.steps, "machine": machine_description(),
           "packages": package_versions(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:]))}
    line = (f"{args.backbone} {args.size} px batch {args.batch} ({precision}, {n:,} averaged values): train step "
            f"{step * 1000:.0f} ms, average update {update * 1000:.1f} ms ({res['ema_update_pct_of_step']:.1f} % "
            f"of the step), the average in and the weights back out {swap * 1000:.0f} ms")
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(f"{line} (`{res['command']}`, {res['machine'].get('cpu', '?')}, "
                                       f"{res['machine'].get('cores', '?')} cores, {res['date']}).\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
