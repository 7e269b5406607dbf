"""Which precision trains each cpu-profile model faster on this machine: float32 or mixed bfloat16, decided by rule.

    python benchmarks/precision.py --json benchmarks/results/precision_epyc.json \
        --markdown benchmarks/results/precision_epyc.md

``throughput.py`` times float32 and then bf16 once per model, minutes apart; on the shared 2-core machines of this
project the machine itself changed speed by 2x between days, and two runs of it disagreed on the bf16/float32
ratio of three models (docs/speed.md). This benchmark is built to decide instead of describe:

- both precisions of a model are built once, side by side in one process (Keras fixes a layer's dtype policy when
  the layer is made), and traced with one warm-up step each;
- then ``--rounds`` rounds, the order alternating ABBA (float32 first, then bf16 first, ...), each timing
  ``--steps`` training steps of each precision; a round's ratio is the float32 median step time over the bf16
  median (above 1: bf16 faster). Drift of the machine within a round touches both precisions alike;
- the matmul peak is measured before and after, so a machine that changed speed during the run shows.

The rule (committed in 391edb8, 2026-12-03, before the first full run; a two-round, one-step smoke of four models
had only checked that the code ran):

- ``bf16`` when the median of the round ratios is at least 1.05 and at most one round is below 1;
- ``float32`` when the median is at most 0.95 and at most one round is above 1;
- otherwise ``tie``: no measured reason to change, so the profiles keep what ``auto`` did before (bf16 where the
  CPU computes it natively).

The decisions feed :data:`medattn.training.precision.CPU_FLOAT32_FASTER` (a test keeps the two in step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RULE = {"bf16_at_least": 1.05, "float32_at_most": 0.95, "rounds_against_allowed": 1}


def decide(ratios: list[float], rule: dict = RULE) -> str:
    """``bf16``, ``float32`` or ``tie`` from the per-round float32/bf16 step-time ratios (see the module)."""
    med = statistics.median(ratios)
    if med >= rule["bf16_at_least"] and sum(r < 1 for r in ratios) <= rule["rounds_against_allowed"]:
        return "bf16"
    if med <= rule["float32_at_most"] and sum(r > 1 for r in ratios) <= rule["rounds_against_allowed"]:
        return "float32"
    return "tie"


def cpu_models():
    """(reproduction, key, model, builder, input shape, batch, target, loss): every model a cpu profile trains.
    ``key`` is what :func:`medattn.training.precision.model_precision` is asked about."""
    from throughput import _models

    from medattn.models.mias_fusion import build_mias_model

    keys = {"LinkNet VGG16-BN/4 + scSE (seg)": "dcnnimaf:segmenter", "DCNNIMAF 16-128 (cls)": "dcnnimaf:classifier",
            "EMT-Net MobileNetV2 a0.5 multitask": "emtnet:mobilenetv2",
            "MobileNetV2 a0.5 classifier only": "emtnet:mobilenetv2-classifier"}
    out = []
    cls = None
    for repro, name, _profile, builder, shape, batch, target, loss in _models(["cpu"]):
        if repro == "mias_fusion":
            key = "mias_fusion:vgg16:" + name.split()[1]
            cls = (target, loss)
        elif repro == "brain_tumor_transfer":
            key = "brain_tumor_transfer:" + name.split()[0]
        elif repro == "dcat":
            key = "dcat:" + name.split(", ")[1]
        else:
            key = keys[name]
        out.append((repro, key, name, builder, shape, batch, target, loss))
    for spec in ("vgg19:model1", "vgg19:model2", "vgg19:baseline", "mobilenet:baseline", "resnet50:baseline",
                 "densenet121:baseline"):
        b, v = spec.split(":")
        out.append(("mias_fusion", f"mias_fusion:{spec}", f"{b} {v} (w0.25, BN)",
                    lambda b=b, v=v: build_mias_model(v, b, 72, width=0.25, batch_norm=True, units=256),
                    (72, 72, 3), 32, *cls))
    return out


def _build(builder, policy, loss):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = builder()
        model.compile(keras.optimizers.Adam(1e-4), loss)
        return model
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _steps(model, x, y, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        ts.append(time.perf_counter() - t)
    return ts


def time_pair(builder, shape, batch, target, loss, rounds: int, steps: int) -> dict:
    import numpy as np

    models = {"float32": _build(builder, "float32", loss), "bf16": _build(builder, "mixed_bfloat16", loss)}
    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")
    y = target(batch, shape[0])
    for m in models.values():
        m.train_on_batch(x, y)  # build + trace
    times = {"float32": [], "bf16": []}
    ratios = []
    for i in range(rounds):
        order = ("float32", "bf16") if i % 2 == 0 else ("bf16", "float32")
        med = {}
        for p in order:
            ts = _steps(models[p], x, y, steps)
            times[p].append([round(t, 4) for t in ts])
            med[p] = statistics.median(ts)
        ratios.append(med["float32"] / med["bf16"])
    return {"ratios": ratios, "step_times_s": times,
            "float32_images_per_s": batch / statistics.median([t for r in times["float32"] for t in r]),
            "bf16_images_per_s": batch / statistics.median([t for r in times["bf16"] for t in r])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per precision per round")
    ap.add_argument("--only", default=None, help="comma-separated substrings of the model keys to time")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)

    from throughput import matmul_peak, write_outputs

    from medattn.training.records import machine_description, package_versions

    def peak():
        return {"float32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}

    peak_before = peak()
    print(f"matmul peak before: {peak_before['float32']:.0f} / {peak_before['bf16']:.0f} GFLOP/s", flush=True)
    rows = []
    for repro, key, name, builder, shape, batch, target, loss in cpu_models():
        if args.only and not any(s in key for s in args.only.split(",")):
            continue
        t = time.perf_counter()
        r = time_pair(builder, shape, batch, target, loss, args.rounds, args.steps)
        row = {"reproduction": repro, "key": key, "model": name, "input": "x".join(map(str, shape)), "batch": batch,
               **r, "ratio_median": statistics.median(r["ratios"]), "decision": decide(r["ratios"]),
               "seconds": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(f"{key:36s} ratios {' '.join(f'{x:.2f}' for x in r['ratios'])}  median {row['ratio_median']:.2f}  "
              f"-> {row['decision']}  ({row['seconds']:.0f} s)", flush=True)
    peak_after = peak()
    print(f"matmul peak after: {peak_after['float32']:.0f} / {peak_after['bf16']:.0f} GFLOP/s", flush=True)
    result = {"machine": machine_description(), "packages": package_versions(), "rule": RULE,
              "rounds": args.rounds, "steps": args.steps, "peak_before_gflop_per_s": peak_before,
              "peak_after_gflop_per_s": peak_after, "rows": rows, "command": " ".join(["python"] + sys.argv),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_outputs(result, render(result), args.json, args.markdown)
    return 0


def render(result: dict) -> str:
    m, b, a = result["machine"], result["peak_before_gflop_per_s"], result["peak_after_gflop_per_s"]
    lines = [f"Machine: {m.get('cpu')}, {m.get('cores')} cores; matmul peak float32/bf16 {b['float32']:.0f}/"
             f"{b['bf16']:.0f} GFLOP/s before, {a['float32']:.0f}/{a['bf16']:.0f} after; {result['rounds']} ABBA "
             f"rounds of {result['steps']} training steps per precision; `{result['command']}` ({result['date']}).",
             "", "| model key | model | input | batch | float32 img/s | bf16 img/s | bf16 speed-up per round "
             "(float32 / bf16 step time) | median | decision |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['key']} | {r['model']} | {r['input']} | {r['batch']} | {r['float32_images_per_s']:.1f} | "
                     f"{r['bf16_images_per_s']:.1f} | {' '.join(f'{x:.2f}' for x in r['ratios'])} | "
                     f"{r['ratio_median']:.2f} | {r['decision']} |")
    rule = result["rule"]
    lines += ["", f"Rule: bf16 when the median is >= {rule['bf16_at_least']} with at most "
              f"{rule['rounds_against_allowed']} round below 1; float32 when it is <= {rule['float32_at_most']} with "
              f"at most {rule['rounds_against_allowed']} round above 1; otherwise a tie (keep bf16 where native)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
