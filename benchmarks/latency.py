"""Per-image inference latency of EMT-Net at batch 1: float32, mixed bfloat16 and a LiteRT (TFLite) export.

    python benchmarks/latency.py [--runs 50] [--json benchmarks/results/latency.json]
                                 [--markdown benchmarks/results/latency.md] [--no-litert]

The paper reports 0.35 s per image on a virtual mobile device; this measures the same models here, for the cpu
profile's size (MobileNetV2 alpha 0.5 at 128) and the paper's (alpha 1.0 at 224), with the multitask model (both
heads) and the classifier alone. For each: parameters, forward GFLOP per image, median and 90th-percentile ms per
image after warm-up

* float32 (Keras, ``tf.function``),
* mixed bfloat16: the same weights in a model built under the ``mixed_bfloat16`` policy, with the largest difference
  of its malignancy logit from float32's relative to float32's (a numerical check, not an accuracy effect),
* LiteRT: ``model.export(format="litert")`` then TensorFlow's LiteRT interpreter with the machine's cores; skipped
  with the reason where the export or the interpreter is unavailable.

Latency does not depend on the weights' values, so the models have random weights (``weights=None``); the
figures depend on the machine (recorded in the output) and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = [  # (profile, input size, MobileNetV2 alpha, decoder filters): reproductions/emtnet.py's profiles
    ("cpu", 128, 0.5, (64, 32, 16, 16)),
    ("paper", 224, 1.0, (128, 64, 32, 16)),
]


def _build(size, width, decoder, segmentation, policy):
    import keras

    from medattn.models.emtnet import build_emtnet

    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build_emtnet(size, "mobilenetv2", weights=None, segmentation=segmentation, decoder_filters=decoder,
                            width=width)
    finally:
        keras.mixed_precision.set_global_policy(prev)


def _logit(out):
    import numpy as np

    return np.asarray(out["label"] if isinstance(out, dict) else out, dtype=np.float64).ravel()


def _rel_diff(a, ref):
    """Largest |a - ref| relative to the largest |ref| (random weights give tiny logits: absolute differences of
    probabilities would say nothing)."""
    import numpy as np

    return float(np.max(np.abs(a - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def _timed(call, runs, warmup=3):
    for _ in range(warmup):
        call()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return statistics.median(ts), ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]


def _keras_call(model, x):
    import tensorflow as tf

    fn = tf.function(lambda a: model(a, training=False))
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(x))


def _litert(model, x, runs):
    """(median ms, p90 ms, the LiteRT label logit, file MB) or an error string."""
    import numpy as np
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.tflite")
        try:
            model.export(path, format="litert", verbose=False)
        except Exception as e:  # noqa: BLE001 - reported in the table, not fatal
            return f"export failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        size_mb = os.path.getsize(path) / 2**20
        try:
            interp = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
        except Exception as e:  # noqa: BLE001
            return f"interpreter unavailable: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        outs = interp.get_output_details()
        xv = np.asarray(x, dtype=np.float32)

        def call():
            interp.set_tensor(inp["index"], xv)
            interp.invoke()
            return [interp.get_tensor(o["index"]) for o in outs]

        med, p90 = _timed(call, runs)
        res = call()
        label = [r for r in res if r.size == 1]
        return med, p90, label[0] if label else None, size_mb


def measure(runs: int, litert: bool) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    from medattn.evaluation.cost import forward_flops

    rows = []
    for profile, size, width, decoder in CONFIGS:
        for segmentation in (True, False):
            name = "multitask" if segmentation else "classifier only"
            x = tf.constant(np.random.default_rng(0).normal(size=(1, size, size, 3)).astype("float32"))
            m32 = _build(size, width, decoder, segmentation, "float32")
            row = {"profile": profile, "model": name, "input": size, "alpha": width,
                   "params": int(m32.count_params()),
                   "forward_gflop": round(forward_flops(m32, (size, size, 3)) / 1e9, 3)}
            row["float32_ms"], row["float32_p90_ms"] = _timed(_keras_call(m32, x), runs)
            l32 = _logit(m32(x, training=False))
            mbf = _build(size, width, decoder, segmentation, "mixed_bfloat16")
            mbf.set_weights(m32.get_weights())
            row["bf16_ms"], row["bf16_p90_ms"] = _timed(_keras_call(mbf, x), runs)
            row["bf16_speedup"] = row["float32_ms"] / row["bf16_ms"]
            row["bf16_logit_rel_diff"] = _rel_diff(_logit(mbf(x, training=False)), l32)
            if litert:
                r = _litert(m32, x, runs)
                if isinstance(r, str):
                    row["litert"] = r
                else:
                    row["litert_ms"], row["litert_p90_ms"], lab, row["litert_mb"] = r
                    if lab is not None:
                        row["litert_logit_rel_diff"] = _rel_diff(np.asarray(lab, np.float64).ravel(), l32)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _markdown(rows, machine, command) -> str:
    cols = ["profile", "model", "input", "alpha", "params", "forward_gflop", "float32_ms", "bf16_ms", "bf16_speedup",
            "bf16_logit_rel_diff", "litert_ms", "litert_mb", "litert_logit_rel_diff"]
    fmt = {"float32_ms": "{:.1f}", "bf16_ms": "{:.1f}", "litert_ms": "{:.1f}", "bf16_speedup": "{:.2f}x",
           "bf16_logit_rel_diff": "{:.1e}", "litert_logit_rel_diff": "{:.1e}", "litert_mb": "{:.1f}",
           "params": "{:,}"}
    lines = ["## EMT-Net inference latency at batch 1 (ms per image, median)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("—" if v is None else fmt.get(c, "{}").format(v))
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({r["litert"] for r in rows if "litert" in r})
    lines += ["", "Paper: 0.35 s per image on a virtual mobile device. Random weights (latency does not depend on "
              "their values); *_logit_rel_diff: largest |logit - float32's| / largest |float32 logit| on the timed input (a numerical check "
              "of the same weights, not an accuracy effect)."]
    lines += [f"LiteRT not measured: {n}" for n in notes]
    lines += ["", f"- command: `{command}`", f"- machine: `{machine}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--no-litert", action="store_true")
    a = ap.parse_args(argv)
    from medattn.training.records import machine_description

    machine = machine_description()
    rows = measure(a.runs, not a.no_litert)
    command = "python benchmarks/latency.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = _markdown(rows, machine, command.strip())
    print(md)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine, "command": command, "rows": rows}, indent=1) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
