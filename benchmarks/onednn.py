"""TensorFlow's oneDNN CPU kernels on vs off, for every model of the reproductions (one run, float32).

    python benchmarks/onednn.py                        # cpu-profile sizes, a few minutes per setting on 2 cores
    python benchmarks/onednn.py --json benchmarks/results/onednn.json --markdown benchmarks/results/onednn.md

TensorFlow chooses its convolution and matmul kernels once, when it is imported, from ``TF_ENABLE_ONEDNN_OPTS``;
unset, it turns oneDNN on only on some CPUs (on the AVX2-only AMD EPYC we measured on it was off). ``import medattn``
sets it to 1 unless the user set it (``medattn/__init__.py``). This script runs ``benchmarks/throughput.py`` in two
fresh processes, ``TF_ENABLE_ONEDNN_OPTS=0`` and ``=1``, and prints training and inference images/s side by side
with the ratio on / off. Figures depend on the machine (recorded) and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(setting: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.json"
        cmd = [sys.executable, str(HERE / "throughput.py"), "--sizes", args.sizes, "--precisions", "float32",
               "--steps", str(args.steps), "--json", str(out)] + (["--only", args.only] if args.only else [])
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "TF_CPP_MIN_LOG_LEVEL": "2"}
        print(f"TF_ENABLE_ONEDNN_OPTS={setting}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=sys.stderr)
        return json.loads(out.read_text())


def render(off: dict, on: dict, command: str, date: str) -> str:
    m = on["machine"]
    lines = [f"Machine: {m.get('cpu')}, {m.get('cores')} cores; float32; oneDNN off: matmul peak "
             f"{off['peak_gflop_per_s']['float32']:.0f} GFLOP/s, on: {on['peak_gflop_per_s']['float32']:.0f}; "
             f"`{command}` ({date}).", "",
             "| reproduction | model | profile | input | batch | train img/s off | train img/s on | on / off | "
             "infer img/s off | infer img/s on | on / off |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in off["rows"]:
        b = next(r for r in on["rows"] if (r["model"], r["profile"]) == (a["model"], a["profile"]))
        lines.append(f"| {a['reproduction']} | {a['model']} | {a['profile']} | {a['input']} | {a['batch']} | "
                     f"{a['train_images_per_s']:,.1f} | {b['train_images_per_s']:,.1f} | "
                     f"{b['train_images_per_s'] / a['train_images_per_s']:.2f} | {a['infer_images_per_s']:,.1f} | "
                     f"{b['infer_images_per_s']:,.1f} | {b['infer_images_per_s'] / a['infer_images_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="cpu", help="cpu, paper or cpu,paper")
    ap.add_argument("--only", default=None, help="comma-separated reproductions to time (default: all)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", help="write both runs' figures here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)
    off, on = measure("0", args), measure("1", args)
    command, date = " ".join(["python"] + sys.argv), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    md = render(off, on, command, date)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"off": off, "on": on, "command": command, "date": date}, indent=1)
                                   + "\n")
    if args.markdown:
        Path(args.markdown).write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
