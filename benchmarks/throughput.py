"""How much of this machine's arithmetic the reproductions' models use: peak, images/s, GFLOP/s, float32 vs bf16.

    python benchmarks/throughput.py                      # cpu-profile sizes (a few minutes on 2 cores)
    python benchmarks/throughput.py --sizes cpu,paper    # also the paper profiles' sizes (much longer)
    python benchmarks/throughput.py --json benchmarks/results/throughput.json --markdown benchmarks/results/throughput.md

1. The matmul peak, measured: a 2048x2048 matmul in float32 and in bfloat16 (GFLOP/s = 2 n^3 / time).
2. For every model of every reproduction at the profile's input size and batch: training and inference images/s,
   forward FLOPs per image counted from the model's graph (TensorFlow's profiler), achieved GFLOP/s (training
   counted as 3x forward) and as a percentage of the peak of its precision, in float32 and in mixed bfloat16.
3. The input pipeline's images/s (decode, resize, augment; BUSI when ``--busi`` or ``$MEDATTN_DATA_DIR/busi`` is
   there) beside the models'.

One run, medians over ``--steps`` timed steps after one warm-up step; a step slower than ``--slow`` seconds is timed
once. Figures depend on the machine (recorded in the output) and on whatever else runs on it.
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


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).numpy()
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


BRAIN_BACKBONES = ("xception", "mobilenetv2", "inceptionv3", "resnet50", "vgg16", "densenet121")


def _targets() -> dict:
    """``(target maker, loss)`` per kind of model: a classifier, a segmenter, EMT-Net's two heads, one logit."""
    import keras
    import numpy as np

    def seg_target(b, s):
        return (np.random.default_rng(0).random((b, s, s, 1)) > 0.8).astype("float32")

    logit = keras.losses.BinaryCrossentropy(from_logits=True)
    return {"cls": (lambda b, s: np.zeros(b, "int32"), "sparse_categorical_crossentropy"),
            "seg": (seg_target, "binary_crossentropy"),
            "multitask": (lambda b, s: {"label": np.zeros((b, 1), "float32"), "mask": seg_target(b, s)},
                          {"label": logit, "mask": "binary_crossentropy"}),
            "logit": (lambda b, s: np.zeros((b, 1), "float32"), logit)}


def _emtnet(size, segmentation, **kw):
    from medattn.models.emtnet import build_emtnet

    return lambda: build_emtnet(size, "mobilenetv2", segmentation=segmentation, **kw)


def _transfer(backbone, size):
    from medattn.models.transfer import build_transfer_classifier

    return lambda: build_transfer_classifier(backbone, size, 4)


def _dcat(size, fusion, **kw):
    from medattn.models.dcat import build_dcat

    return lambda: build_dcat(size, 2, fusion=fusion, **kw)


def _cpu_models(t: dict) -> list[tuple]:
    """The cpu profiles' models (scaled widths, small inputs)."""
    from medattn.models.dcnnimaf import build_dcnnimaf
    from medattn.models.linknet import build_linknet
    from medattn.models.mias_fusion import build_mias_model

    out = [("mias_fusion", f"vgg16 {v} (w0.25, BN)", "cpu",
            lambda v=v: build_mias_model(v, "vgg16", 72, width=0.25, batch_norm=True, units=256), (72, 72, 3), 32,
            *t["cls"]) for v in ("model1", "model2", "baseline")]
    out.append(("dcnnimaf", "LinkNet VGG16-BN/4 + scSE (seg)", "cpu",
                lambda: build_linknet("vgg16", 128, attention="scse", encoder_width=0.25), (128, 128, 3), 8, *t["seg"]))
    out.append(("dcnnimaf", "DCNNIMAF 16-128 (cls)", "cpu",
                lambda: build_dcnnimaf(128, filters=(16, 32, 64, 128, 128)), (128, 128, 4), 8, *t["cls"]))
    cpu_dec = {"width": 0.5, "decoder_filters": (64, 32, 16, 16)}
    out.append(("emtnet", "EMT-Net MobileNetV2 a0.5 multitask", "cpu", _emtnet(160, True, **cpu_dec),
                (160, 160, 3), 16, *t["multitask"]))
    out.append(("emtnet", "MobileNetV2 a0.5 classifier only", "cpu", _emtnet(160, False, width=0.5),
                (160, 160, 3), 16, *t["logit"]))
    for b in BRAIN_BACKBONES:  # the cpu profile: 64 px, 80 for Xception and InceptionV3
        size = 80 if b in ("xception", "inceptionv3") else 64
        out.append(("brain_tumor_transfer", f"{b} + head", "cpu", _transfer(b, size), (size, size, 3), 32, *t["cls"]))
    small = {"backbone_a": "efficientnetb0", "dim": 128, "num_heads": 4}
    for fusion in ("cross_attention", "concat"):
        out.append(("dcat", f"EfficientNetB0 + ResNet-34, {fusion}", "cpu", _dcat(64, fusion, **small),
                    (64, 64, 3), 32, *t["cls"]))
    return out


def _paper_models(t: dict) -> list[tuple]:
    """The paper profiles' models (full widths, the papers' inputs)."""
    from medattn.models.dcnnimaf import build_dcnnimaf
    from medattn.models.linknet import build_linknet
    from medattn.models.mias_fusion import build_mias_model

    out = [("mias_fusion", f"vgg16 {v} (full width)", "paper", lambda v=v: build_mias_model(v, "vgg16", 72),
            (72, 72, 3), 32, *t["cls"]) for v in ("model1", "model2", "baseline")]
    out.append(("dcnnimaf", "LinkNet InceptionResNetV2 + scSE (seg)", "paper",
                lambda: build_linknet("inceptionresnetv2", 256, attention="scse"), (256, 256, 3), 8, *t["seg"]))
    out.append(("dcnnimaf", "DCNNIMAF 32-256 (cls)", "paper", lambda: build_dcnnimaf(224), (224, 224, 4), 8,
                *t["cls"]))
    out.append(("emtnet", "EMT-Net MobileNetV2 multitask", "paper", _emtnet(224, True), (224, 224, 3), 16,
                *t["multitask"]))
    for b in BRAIN_BACKBONES:
        size = 299 if b in ("xception", "inceptionv3") else 224
        out.append(("brain_tumor_transfer", f"{b} + head", "paper", _transfer(b, size), (size, size, 3), 32,
                    *t["cls"]))
    out.append(("dcat", "EfficientNetB4 + ResNet-34, cross_attention", "paper", _dcat(224, "cross_attention"),
                (224, 224, 3), 32, *t["cls"]))
    return out


def _models(sizes) -> list[tuple]:
    """(reproduction, model, profile, builder, input shape, batch, target maker, loss) for each size asked."""
    t = _targets()
    return (_cpu_models(t) if "cpu" in sizes else []) + (_paper_models(t) if "paper" in sizes else [])


def time_model(builder, shape, batch, target, loss, precision, steps, slow):
    import keras
    import numpy as np

    from medattn.evaluation.cost import forward_flops

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        keras.utils.set_random_seed(0)
        model = builder()
        model.compile(keras.optimizers.Adam(1e-4), loss)
        x = np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")
        y = target(batch, shape[0])
        model.train_on_batch(x, y)  # build + trace
        ts = []
        for _ in range(steps):
            t = time.perf_counter()
            model.train_on_batch(x, y)
            ts.append(time.perf_counter() - t)
            if ts[-1] > slow:
                break
        train_steps, train = ts, statistics.median(ts)
        model.predict_on_batch(x)
        ts = []
        for _ in range(steps):
            t = time.perf_counter()
            model.predict_on_batch(x)
            ts.append(time.perf_counter() - t)
            if ts[-1] > slow:
                break
        infer = statistics.median(ts)
        flops = forward_flops(model, shape) if precision == "float32" else None
        return {"params": int(model.count_params()), "train_step_s": train, "train_step_times_s": train_steps,
                "train_images_per_s": batch / train,
                "infer_images_per_s": batch / infer, "forward_gflop_per_image": flops / 1e9 if flops else None}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def pipeline_rate(busi: str | None, size: int = 128, batch: int = 8, n: int = 160) -> dict:
    """Images/s of the BUSI training pipeline (decode + resize + augment, no cache), else of in-memory arrays."""
    import numpy as np

    from medattn.datasets.pipeline import array_dataset, image_dataset

    aug = {"rotation": 0.04, "zoom": 0.1, "flip": "horizontal", "brightness": 0.1}
    if busi:
        from medattn.datasets import busi_records

        recs = busi_records(busi)[:n]
        ds = image_dataset(recs, size, batch, with_masks=True, with_labels=False, shuffle=True, augment=aug,
                           cache=False)
        what = f"BUSI decode + resize {size} + augment ({len(recs)} images, no cache)"
    else:
        x = np.random.default_rng(0).integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)
        ds = array_dataset(x, np.zeros(n, "int32"), batch, shuffle=True, augment=aug)
        what = f"in-memory arrays {size}x{size} + augment ({n} images)"
    t = time.perf_counter()
    count = sum(int(b[0].shape[0]) for b in ds)
    return {"what": what, "images_per_s": count / (time.perf_counter() - t)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="cpu", help="cpu, paper or cpu,paper")
    ap.add_argument("--precisions", default="float32,bf16")
    ap.add_argument("--only", default=None, help="comma-separated reproductions to time (default: all)")
    ap.add_argument("--models", default=None,
                    help="comma-separated substrings of model names to time, e.g. xception (default: all)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per cell (after one build-and-trace step); "
                    "every step's time goes to the JSON")
    ap.add_argument("--slow", type=float, default=20.0, help="time a step slower than this (s) only once")
    ap.add_argument("--busi", default=None, help="BUSI folder for the pipeline figure")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)

    from medattn.training.records import machine_description, package_versions

    busi = args.busi
    if busi is None and os.environ.get("MEDATTN_DATA_DIR") and (Path(os.environ["MEDATTN_DATA_DIR"]) / "busi").is_dir():
        busi = str(Path(os.environ["MEDATTN_DATA_DIR"]) / "busi")
    precisions = args.precisions.split(",")
    peak = {p: matmul_peak("float32" if p == "float32" else "bfloat16") for p in precisions}
    print("matmul peak (2048x2048): " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peak.items()), flush=True)
    rows = []
    only = set(args.only.split(",")) if args.only else None
    for repro, name, profile, builder, shape, batch, target, loss in _models(args.sizes.split(",")):
        if only and repro not in only:
            continue
        if args.models and not any(m.lower() in name.lower() for m in args.models.split(",")):
            continue
        flops = None
        for p in precisions:
            r = time_model(builder, shape, batch, target, loss, p, args.steps, args.slow)
            flops = r["forward_gflop_per_image"] or flops
            train_gflops = 3 * flops * r["train_images_per_s"] if flops else None
            row = {"reproduction": repro, "model": name, "profile": profile, "input": "x".join(map(str, shape)),
                   "batch": batch, "precision": p, "params": r["params"], "forward_gflop_per_image": flops,
                   "train_images_per_s": r["train_images_per_s"], "infer_images_per_s": r["infer_images_per_s"],
                   "train_step_times_s": [round(t, 4) for t in r["train_step_times_s"]],
                   "train_gflop_per_s": train_gflops,
                   "train_pct_of_peak": 100 * train_gflops / peak[p] if train_gflops else None,
                   "infer_gflop_per_s": flops * r["infer_images_per_s"] if flops else None}
            rows.append(row)
            print(f"{repro:12s} {name:42s} {p:7s} train {row['train_images_per_s']:7.1f} img/s "
                  f"({row['train_pct_of_peak'] or 0:4.1f} % of peak), infer {row['infer_images_per_s']:7.1f} img/s; "
                  f"steps {' '.join(f'{t:.3f}' for t in row['train_step_times_s'])} s",
                  flush=True)
    pipe = pipeline_rate(busi)
    print(f"input pipeline: {pipe['what']}: {pipe['images_per_s']:.0f} images/s", flush=True)
    for r in rows:
        if r["precision"] == "bf16":
            f32 = next(x for x in rows if x["model"] == r["model"] and x["profile"] == r["profile"]
                       and x["precision"] == "float32")
            r["bf16_speedup_train"] = r["train_images_per_s"] / f32["train_images_per_s"]
    result = {"machine": machine_description(), "packages": package_versions(), "peak_gflop_per_s": peak,
              "pipeline": pipe, "rows": rows, "command": " ".join(["python"] + sys.argv),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_outputs(result, render(result), args.json, args.markdown)
    return 0


def write_outputs(result: dict, md: str, json_path: str | None, md_path: str | None) -> None:
    """Print the table; write the figures to ``json_path`` and the table to ``md_path`` when given."""
    print(md)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    if md_path:
        Path(md_path).write_text(md)


def render(result: dict) -> str:
    def f(x, d=1):
        return "—" if x is None else f"{x:,.{d}f}"

    m = result["machine"]
    onednn = {True: "; oneDNN kernels on", False: "; oneDNN kernels off"}.get(m.get("onednn"), "")
    bf16 = {True: "; native bf16 (AVX512_BF16/AMX)", False: "; no native bf16 (emulated)"}.get(m.get("native_bf16"), "")
    lines = [f"Machine: {m.get('cpu')}, {m.get('cores')} cores{bf16}{onednn}; matmul peak "
             + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in result["peak_gflop_per_s"].items())
             + f"; `{result['command']}` ({result['date']}).", "",
             "| reproduction | model | profile | input | batch | precision | GFLOP/img (fwd) | train img/s | "
             "train GFLOP/s | % of peak | infer img/s | bf16 / fp32 (train) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['reproduction']} | {r['model']} | {r['profile']} | {r['input']} | {r['batch']} | "
                     f"{r['precision']} | {f(r['forward_gflop_per_image'], 2)} | {f(r['train_images_per_s'])} | "
                     f"{f(r['train_gflop_per_s'])} | {f(r['train_pct_of_peak'])} | {f(r['infer_images_per_s'])} | "
                     f"{f(r.get('bf16_speedup_train'), 2)} |")
    p = result["pipeline"]
    lines += ["", f"Input pipeline: {p['what']}: {p['images_per_s']:.0f} images/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
