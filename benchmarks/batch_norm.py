"""Training step with our FusedBatchNormalization against Keras's BatchNormalization, in the models we train.

    python benchmarks/batch_norm.py [--rounds 2] [--repeats 10] [--rows busi_seg,busi_seg_bf16,busi_cls,linknet_irv2]
                                    [--json benchmarks/results/batch_norm.json] [--markdown benchmarks/results/batch_norm.md]

Every (row, kind) is measured in a fresh process of its own; "keras" runs the same model with
``FusedBatchNormalization.call`` set back to ``keras.layers.BatchNormalization.call`` (the layer Keras ships), and the
order of the two kinds alternates from round to round so a slow spell of the machine hits both. Random weights and
inputs; Adam; median ms of ``--repeats`` training steps after two warm-up steps; medians over rounds, the ratio per
round. Rows: the BUSI segmenter of the cpu profile (LinkNet + scSE, quarter-width VGG16-BN, 128 px, batch 8) in
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


def _child(row: str, kind: str, repeats: int) -> dict:
    """One (row, kind), measured in this (fresh) process: what ``--child ROW KIND`` prints."""
    import keras

    from medattn.layers import FusedBatchNormalization
    from medattn.utils import median_train_step_seconds

    if kind == "keras":
        FusedBatchNormalization.call = keras.layers.BatchNormalization.call
    if row.endswith("_bf16"):
        keras.config.set_dtype_policy("mixed_bfloat16")
    model, x, y, loss = _build(row)
    model.compile(keras.optimizers.Adam(1e-4), loss)
    return {"step_ms": 1e3 * median_train_step_seconds(model, x, y, repeats)}


def _measure(row: str, kind: str, repeats: int) -> float:
    r = subprocess.run([sys.executable, __file__, "--child", row, kind, "--repeats", str(repeats)],
                       capture_output=True, text=True, timeout=1800, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if r.returncode != 0:
        raise RuntimeError(f"benchmark process {row} {kind} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["step_ms"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--child", nargs=2, metavar=("ROW", "KIND"), help=argparse.SUPPRESS)
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
                results[row][kind].append(_measure(row, kind, args.repeats))
                print(f"  round {i + 1} {row} {kind}: {results[row][kind][-1]:.0f} ms/step", file=sys.stderr,
                      flush=True)
    report = {"command": "python benchmarks/batch_norm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_description(),
              "rows": [{"row": r, "what": ROWS[r], "keras_ms": results[r]["keras"], "fused_ms": results[r]["fused"],
                        "speedup_per_round": [k / f for k, f in zip(results[r]["keras"], results[r]["fused"])],
                        "speedup": statistics.median(k / f for k, f in zip(results[r]["keras"], results[r]["fused"]))}
                       for r in rows]}
    text = _markdown(report, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


def _markdown(report: dict, args) -> str:
    lines = [f"# Training step: FusedBatchNormalization vs keras.layers.BatchNormalization ({args.rounds} rounds of "
             f"{args.repeats} steps, each in a fresh process)", "",
             "| model | Keras BN ms/step | fused ms/step | speed-up (median of rounds) | per round |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['what']} | {statistics.median(r['keras_ms']):.0f} | {statistics.median(r['fused_ms']):.0f} "
                     f"| {r['speedup']:.2f}x | {', '.join(f'{s:.2f}' for s in r['speedup_per_round'])} |")
    lines += ["", f"- command: `{report['command']}`", f"- date: {report['date']}", f"- machine: `{report['machine']}`",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
