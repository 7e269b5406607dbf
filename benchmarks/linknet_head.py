"""What the LinkNet head's width costs: training step time and FLOPs of the BUSI segmenter with 32, 16 and 8 head
filters (the transposed conv to full size and the 3x3 conv after it; ``build_linknet(final_filters=...)``).

    python benchmarks/linknet_head.py [--rounds 12] [--paper] [--json PATH] [--markdown PATH]

The LinkNet paper's head has 32 filters, segmentation_models' Linknet 16 at that stage. At the cpu profile's size
(quarter-width VGG16-BN encoder, 128 px, batch 8) the encoder's first stage has 16 channels, so a 32-filter head at
full resolution is a large share of the model. Every width is built and traced first, then the widths take turns,
one training step each per round (a slow spell of the machine hits all of them); medians over rounds. ``--paper``
adds the paper profile's InceptionResNetV2 LinkNet at 256 px, batch 4. float32, random weights, BCE + Dice, Adam.
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

WIDTHS = (32, 16, 8)


def measure(backbone: str, size: int, batch: int, rounds: int, widths=WIDTHS, **kw) -> list[dict]:
    import keras
    import numpy as np

    import medattn  # noqa: F401 - the oneDNN default before TensorFlow is imported
    from medattn.evaluation.cost import forward_flops
    from medattn.evaluation.keras_metrics import bce_dice_loss
    from medattn.models.linknet import build_linknet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = (rng.random((batch, size, size, 1)) > 0.7).astype("float32")
    models, rows = {}, []
    for w in widths:
        m = build_linknet(backbone, size, weights=None, attention="scse", final_filters=w, **kw)
        m.compile(keras.optimizers.Adam(1e-3), bce_dice_loss)
        for _ in range(2):  # trace, then one untimed step
            m.train_on_batch(x, y)
        models[w] = m
        rows.append({"backbone": backbone, "input": size, "batch": batch, "final_filters": w,
                     "params": int(m.count_params()), "forward_gflop": forward_flops(m, (size, size, 3)) / 1e9,
                     "steps_s": []})
        print(f"  built {backbone} head {w}", file=sys.stderr, flush=True)
    for _ in range(rounds):
        for row in rows:
            t = time.perf_counter()
            models[row["final_filters"]].train_on_batch(x, y)
            row["steps_s"].append(time.perf_counter() - t)
    ref = statistics.median(rows[0]["steps_s"])
    for row in rows:
        med = statistics.median(row["steps_s"])
        row.update(ms_per_step=med * 1e3, images_per_s=batch / med, speedup_vs_32=ref / med,
                   gflop_share_vs_32=row["forward_gflop"] / rows[0]["forward_gflop"])
    keras.backend.clear_session()
    return rows


def render(result: dict) -> str:
    lines = [f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; float32; TensorFlow oneDNN "
             f"{'on' if result['machine'].get('onednn') else 'off'}; `{result['command']}` ({result['started']}).", "",
             "| segmenter | input | batch | head filters | params | GFLOP/img (fwd) | FLOPs vs 32 | ms/step | img/s "
             "| speed-up vs 32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = "LinkNet VGG16-BN/4 + scSE (cpu)" if r["backbone"] == "vgg16" else "LinkNet InceptionResNetV2 + scSE (paper)"
        lines.append(f"| {name} | {r['input']} | {r['batch']} | {r['final_filters']} | {r['params']:,} | "
                     f"{r['forward_gflop']:.3f} | {r['gflop_share_vs_32']:.2f} | {r['ms_per_step']:.0f} | "
                     f"{r['images_per_s']:.1f} | {r['speedup_vs_32']:.2f} |")
    lines += ["", f"Medians over {result['rounds']} rounds (cpu size) of one training step per width, the widths in "
              "turn in one process; random weights."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--paper", action="store_true", help="also the InceptionResNetV2 LinkNet at 256 px, batch 4")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    from medattn.training.records import machine_description

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = measure("vgg16", 128, 8, args.rounds, encoder_width=0.25)
    if args.paper:
        rows += measure("inceptionresnetv2", 256, 4, max(3, args.rounds // 3))
    result = {"command": "python benchmarks/linknet_head.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "started": started, "machine": machine_description(), "rounds": args.rounds, "rows": rows}
    text = render(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
