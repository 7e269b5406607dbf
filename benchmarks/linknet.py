"""Training step and inference time of our LinkNet against its bare encoder and segmentation_models' Linknet.

    python benchmarks/linknet.py [--batch 4] [--size 256] [--repeats 3] [--rounds 1] [--sm-python PATH/TO/venv/bin/python]
                                 [--markdown benchmarks/results/linknet.md]

Rows (same batch and input, float32, random weights; each model measured in a fresh process of its own):
  * bare InceptionResNetV2 encoder (same padding) -> GAP -> Dense(1): the cost of the encoder alone;
  * our LinkNet with scSE after each decoder block (``medattn.models.build_linknet``), without scSE, and without
    scSE with a 16-filter head (``final_filters=16``, the width segmentation_models uses at full resolution; ours
    defaults to the LinkNet paper's 32);
  * ``segmentation_models.Linknet("inceptionresnetv2", encoder_weights=None)``: only when ``--sm-python`` names
    the interpreter of a separate environment holding segmentation_models (2019-2020 code that only runs
    through the ``tf.keras`` alias):

        python -m venv /tmp/smvenv
        /tmp/smvenv/bin/pip install tensorflow-cpu==2.21.0 segmentation-models==1.0.1
        python benchmarks/linknet.py --sm-python /tmp/smvenv/bin/python

    It is never imported into this environment; the row is measured in a subprocess with
    ``SM_FRAMEWORK=tf.keras`` (on TF 2.21 that alias is Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` and tf-keras
    are set up; the row says which one ran) and printed next to ours.
Columns: parameters, median ms per training step (Adam, BCE), images/s, ratio to the bare encoder, and median ms
per image for inference at batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runs inside the segmentation_models environment; prints one JSON line.
_SM_SNIPPET = r"""
import json, os, statistics, sys, time
os.environ["SM_FRAMEWORK"] = "tf.keras"
import numpy as np
import tensorflow as tf
import segmentation_models as sm
batch, size, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
m = sm.Linknet("inceptionresnetv2", encoder_weights=None, input_shape=(size, size, 3), classes=1,
               activation="sigmoid")
m.compile(tf.keras.optimizers.Adam(1e-4), "binary_crossentropy")
rng = np.random.default_rng(0)
x = rng.normal(size=(batch, size, size, 3)).astype("float32")
y = (rng.random((batch, size, size, 1)) > 0.5).astype("float32")
for _ in range(2):
    m.train_on_batch(x, y)
ts = []
for _ in range(repeats):
    t = time.perf_counter(); m.train_on_batch(x, y); ts.append(time.perf_counter() - t)
f = tf.function(lambda a: m(a, training=False))
x1 = x[:1]
f(x1); f(x1)
inf = []
for _ in range(repeats * 3):
    t = time.perf_counter(); f(x1).numpy(); inf.append(time.perf_counter() - t)
print(json.dumps({"params": int(m.count_params()), "step": statistics.median(ts), "infer": statistics.median(inf),
                  "tf": tf.__version__, "sm": sm.__version__, "keras": tf.keras.__name__,
                  "out": list(m.output_shape)}))
"""


def _time_model(model, x, y, repeats):
    import keras
    import tensorflow as tf

    from medattn.utils import median_train_step_seconds

    model.compile(keras.optimizers.Adam(1e-4), "binary_crossentropy")
    step = median_train_step_seconds(model, x, y, repeats)
    f = tf.function(lambda a: model(a, training=False))
    x1 = x[:1]
    f(x1)
    f(x1)
    inf = []
    for _ in range(repeats * 3):
        t = time.perf_counter()
        keras.ops.convert_to_numpy(f(x1))
        inf.append(time.perf_counter() - t)
    return step, statistics.median(inf)


OURS = {  # row name -> what the child process builds
    "bare": "bare InceptionResNetV2 encoder (GAP -> Dense 1)",
    "scse": "medattn LinkNet + scSE (ours)",
    "none": "medattn LinkNet, no attention",
    "head16": "medattn LinkNet, no attention, 16-filter head (as segmentation_models)",
}


def _child(kind: str, batch: int, size: int, repeats: int) -> dict:
    """One of our rows, measured in this (fresh) process: what ``--child KIND`` prints."""
    import keras
    import numpy as np

    from medattn.backbones import inception_resnet_v2_same
    from medattn.models.linknet import build_linknet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    if kind == "bare":
        enc = inception_resnet_v2_same((size, size, 3), weights=None)
        model = keras.Model(enc.input, keras.layers.Dense(1, activation="sigmoid")(
            keras.layers.GlobalAveragePooling2D()(enc.output)), name="bare_irv2")
        y = np.ones((batch, 1), "float32")
    else:
        model = build_linknet("inceptionresnetv2", size, attention="scse" if kind == "scse" else None,
                              final_filters=16 if kind == "head16" else 32)
        y = (rng.random((batch, size, size, 1)) > 0.5).astype("float32")
    step, inf = _time_model(model, x, y, repeats)
    return {"params": int(model.count_params()), "step": step, "infer": inf}


def _row_from_process(command: list[str], env: dict) -> dict:
    """The JSON row a fresh benchmark process prints last."""
    r = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark process failed: {' '.join(command[:3])}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _measure_round(args, index: int):
    """One pass over every row, each model in a fresh process (as segmentation_models' must be), ours first in even
    rounds and segmentation_models first in odd ones: (name, params, ms/step, ms/image at batch 1)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    shape = [str(args.batch), str(args.size), str(args.repeats)]  # what both kinds of process take
    ours = []
    sm = None

    def measure_ours():
        for kind, name in OURS.items():
            r = _row_from_process([sys.executable, __file__, "--child", kind, "--batch", shape[0], "--size", shape[1],
                                   "--repeats", shape[2]], env)
            ours.append((name, r["params"], r["step"], r["infer"]))
            print(f"  measured {name}: {r['step'] * 1e3:.0f} ms/step", file=sys.stderr, flush=True)

    def measure_sm():
        nonlocal sm
        if not args.sm_python:
            sm = ("segmentation_models Linknet('inceptionresnetv2')", None, None, None)
            return
        r = _row_from_process([args.sm_python, "-c", _SM_SNIPPET, *shape], {**env, "SM_FRAMEWORK": "tf.keras"})
        sm = (f"segmentation_models {r['sm']} Linknet('inceptionresnetv2') (tf {r['tf']}, tf.keras = {r['keras']})",
              r["params"], r["step"], r["infer"])
        print(f"  measured {sm[0]}: {r['step'] * 1e3:.0f} ms/step", file=sys.stderr, flush=True)

    for part in ((measure_ours, measure_sm) if index % 2 == 0 else (measure_sm, measure_ours)):
        part()
    return ours + [sm]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every row this many times, in turn (ours first in even rounds, segmentation_models "
                         "first in odd ones, so a slow spell of the machine hits both); medians over rounds, ratios "
                         "per round")
    ap.add_argument("--sm-python", default=None, help="python of an environment with segmentation_models")
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    ap.add_argument("--child", choices=sorted(OURS), help=argparse.SUPPRESS)  # one of our rows, in this process
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.batch, args.size, args.repeats)))
        return

    from medattn.training.records import machine_description

    rounds = []
    for i in range(args.rounds):  # the table after every round: a run cut short keeps the rounds it finished
        rounds.append(_measure_round(args, i))
        text = _table(args, rounds, argv, machine_description())
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(text)
    print(text)


def _table(args, rounds, argv, machine) -> str:
    def med(i, j):
        vals = [r[i][j] for r in rounds if r[i][j] is not None]
        return statistics.median(vals) if vals else None

    rows = [(rounds[0][i][0], rounds[0][i][1], med(i, 2), med(i, 3)) for i in range(len(rounds[0]))]
    ref = rows[0][2]
    lines = [f"# LinkNet training step: batch {args.batch}, {args.size}x{args.size}, float32, {os.cpu_count()} cores, "
             f"median of {args.repeats} steps per round, median over {len(rounds)} round(s)"
             f"{'' if len(rounds) == args.rounds else f' of {args.rounds} asked for'}; inference at batch 1, "
             f"median of {args.repeats * 3}", "",
             "| model | params | ms/step | images/s | x bare encoder | inference ms/image (batch 1) |",
             "|---|---|---|---|---|---|"]
    for name, p, t, inf in rows:
        if t is None:
            lines.append(f"| {name} | not measured: pass --sm-python | | | | |")
            continue
        lines.append(f"| {name} | {p:,} | {t * 1e3:.0f} | {args.batch / t:.2f} | {t / ref:.2f} | {inf * 1e3:.0f} |")
    if args.sm_python:
        for i, label in ((1, "ours + scSE"), (2, "ours, no attention"), (3, "ours, no attention, 16-filter head")):
            ratios = [r[i][2] / r[-1][2] for r in rounds]
            lines.append(f"\n{label} / segmentation_models, ms per step, per round: "
                         + ", ".join(f"{v:.3f}" for v in ratios) + f" (median {statistics.median(ratios):.3f})")
    lines += ["", f"- command: `python benchmarks/linknet.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
              f"- machine: `{machine}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
