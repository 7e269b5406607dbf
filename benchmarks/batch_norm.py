"""Training step with our fused kernels against Keras's own layer or optimizer, in the models we train.

    python benchmarks/batch_norm.py [--part batch_norm|optimizer] [--rounds 2] [--repeats 10]
                                    [--rows busi_seg,busi_seg_bf16,busi_cls,linknet_irv2]
                                    [--json benchmarks/results/batch_norm.json] [--markdown benchmarks/results/batch_norm.md]

``--part batch_norm`` (Adam from Keras): "keras" runs the same model with ``FusedBatchNormalization.call`` set back
to ``keras.layers.BatchNormalization.call`` (the layer Keras ships). ``--part optimizer`` (our batch normalisation):
``keras.optimizers.Adam`` against ``medattn.training.optimizers.FusedAdam``. Every (row, kind) is measured in a
fresh process of its own, and the order of the two kinds alternates from round to round so a slow spell of the
machine hits both. Random weights and inputs; median ms of ``--repeats`` training steps after two warm-up steps,
and the seconds of the first step (tracing the training graph and running it once); medians over rounds, the
ratio per round. Rows: the BUSI segmenter of the cpu profile (LinkNet + scSE, quarter-width VGG16-BN, 128 px, batch 8) in
float32 and in mixed bfloat16 (what ``--mixed-precision auto`` picks on CPUs with native bf16), the BUSI classifier
of the cpu profile (DCNNIMAF, 128 px, batch 8), and the paper's segmenter (LinkNet + scSE, InceptionResNetV2, 256 px,
batch 4).
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

ROWS = {
    "busi_seg": "BUSI segmenter, cpu profile (LinkNet + scSE, VGG16-BN/4, 128 px, batch 8), float32",
    "busi_seg_bf16": "BUSI segmenter, cpu profile, mixed bfloat16",
    "busi_cls": "BUSI classifier, cpu profile (DCNNIMAF, 128 px, batch 8), float32",
    "linknet_irv2": "paper segmenter (LinkNet + scSE, InceptionResNetV2, 256 px, batch 4), float32",
}

TITLES = {"batch_norm": "FusedBatchNormalization vs keras.layers.BatchNormalization",
          "optimizer": "medattn's FusedAdam vs keras.optimizers.Adam"}


def _build(row: str):
    """(model, x, y, loss) of one row."""
    import keras
    import numpy as np

    from medattn.models.dcnnimaf import build_dcnnimaf
    from medattn.models.linknet import build_linknet

    rng = np.random.default_rng(0)
    if row.startswith("busi_seg"):
        model, shape, batch = build_linknet("vgg16", 128, encoder_width=0.25), (128, 128, 3), 8
        y = (rng.random((batch, 128, 128, 1)) > 0.5).astype("float32")
        loss = "binary_crossentropy"
    elif row == "busi_cls":
        model = build_dcnnimaf(128, filters=(16, 32, 64, 128, 128))
        shape, batch = (128, 128, model.input_shape[-1]), 8
        y = keras.utils.to_categorical(rng.integers(0, 3, batch), 3)
        loss = "categorical_crossentropy"
    else:
        model, shape, batch = build_linknet("inceptionresnetv2", 256), (256, 256, 3), 4
        y = (rng.random((batch, 256, 256, 1)) > 0.5).astype("float32")
        loss = "binary_crossentropy"
    return model, rng.normal(size=(batch, *shape)).astype("float32"), y, loss


def _child(part: str, row: str, kind: str, repeats: int) -> dict:
    """One (row, kind), measured in this (fresh) process: what ``--child PART ROW KIND`` prints."""
    import keras

    from medattn.layers import FusedBatchNormalization
    from medattn.training.optimizers import FusedAdam
    from medattn.utils import median_train_step_seconds

    if part == "batch_norm" and kind == "keras":
        FusedBatchNormalization.call = keras.layers.BatchNormalization.call
    if row.endswith("_bf16"):
        keras.config.set_dtype_policy("mixed_bfloat16")
    model, x, y, loss = _build(row)
    fused_optimizer = part == "optimizer" and kind == "fused"
    model.compile((FusedAdam if fused_optimizer else keras.optimizers.Adam)(1e-4), loss)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    return {"step_ms": 1e3 * median_train_step_seconds(model, x, y, repeats, warmup=1), "first_step_s": first}


def _measure(part: str, row: str, kind: str, repeats: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", part, row, kind, "--repeats", str(repeats)],
                       capture_output=True, text=True, timeout=1800, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if r.returncode != 0:
        raise RuntimeError(f"benchmark process {row} {kind} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=tuple(TITLES), default="batch_norm")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--child", nargs=3, metavar=("PART", "ROW", "KIND"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child, args.repeats)))
        return
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    from medattn.training.records import machine_description

    results = {r: {"keras": [], "fused": []} for r in rows}
    for i in range(args.rounds):
        for row in rows:
            for kind in (("keras", "fused") if i % 2 == 0 else ("fused", "keras")):
                results[row][kind].append(_measure(args.part, row, kind, args.repeats))
                print(f"  round {i + 1} {row} {kind}: {results[row][kind][-1]['step_ms']:.0f} ms/step", file=sys.stderr,
                      flush=True)
    report = {"command": "python benchmarks/batch_norm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_description(),
              "part": args.part, "rows": [_row_report(r, results[r]) for r in rows]}
    text = _markdown(report, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


def _row_report(row: str, result: dict) -> dict:
    keras_ms, fused_ms = ([m["step_ms"] for m in result[k]] for k in ("keras", "fused"))
    return {"row": row, "what": ROWS[row], "keras_ms": keras_ms, "fused_ms": fused_ms,
            "keras_first_step_s": [m["first_step_s"] for m in result["keras"]],
            "fused_first_step_s": [m["first_step_s"] for m in result["fused"]],
            "speedup_per_round": [k / f for k, f in zip(keras_ms, fused_ms)],
            "speedup": statistics.median(k / f for k, f in zip(keras_ms, fused_ms))}


def _markdown(report: dict, args) -> str:
    lines = [f"# Training step: {TITLES[args.part]} ({args.rounds} rounds of {args.repeats} steps, each in a fresh "
             "process)", "",
             "| model | Keras ms/step | fused ms/step | speed-up (median of rounds) | per round | first step s, Keras "
             "| first step s, fused |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['what']} | {statistics.median(r['keras_ms']):.0f} | {statistics.median(r['fused_ms']):.0f} "
                     f"| {r['speedup']:.2f}x | {', '.join(f'{s:.2f}' for s in r['speedup_per_round'])} "
                     f"| {statistics.median(r['keras_first_step_s']):.1f} "
                     f"| {statistics.median(r['fused_first_step_s']):.1f} |")
    lines += ["", f"- command: `{report['command']}`", f"- date: {report['date']}", f"- machine: `{report['machine']}`",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
