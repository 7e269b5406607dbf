"""The three waits people notice, measured and kept in ``benchmarks/results/speed.json``:

    python benchmarks/speed.py                                     # suite and default run (about 15 min, 2 cores)
    python benchmarks/speed.py --parts default                     # one part; the file keeps the others
    python benchmarks/speed.py --parts linknet --sm-python /tmp/smvenv/bin/python   # needs segmentation_models

1. ``suite_minutes``: the README's test command (``python -m pytest -q``) as a process, and the seconds of each test
   group (the first folder under ``tests/``, from pytest's ``--durations=0``: worker seconds, which add up to more
   than the wall time when pytest-xdist runs two workers).
2. ``default_run_seconds``: ``python reproductions/dcnnimaf.py`` without data (SYNTHETIC phantoms), from the
   command to the printed table, with the phases its ``run.json`` records.
3. ``linknet_vs_segmentation_models``: our LinkNet's training step over segmentation_models' ``Linknet`` at the
   same input and batch, the median over alternating rounds of ``benchmarks/linknet.py`` (its environment: that
   script's docstring).

Targets (issue "speed"): suite <= 12 minutes, default run <= 60 s, LinkNet ratio <= 1.0, on the 2-core reference
machine with nothing beside it. Each part records its date, commit and command; the machine is recorded once per
part, since parts may be measured on different days. Timing stays out of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "speed.json"
TARGETS = {"suite_minutes": 12.0, "default_run_seconds": 60.0, "linknet_vs_segmentation_models": 1.0}
DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(tests/[^:\s]+)")


def _provenance(command: list[str]) -> dict:
    from medattn.training.records import machine_description

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": " ".join(command),
            "git_commit": commit.stdout.strip() + ("+dirty" if dirty else ""), "machine": machine_description()}


def group_seconds(pytest_output: str) -> dict[str, float]:
    """Seconds per test group (``tests/<folder>`` or ``tests/<file>`` at the top level) from ``--durations=0``."""
    groups: dict[str, float] = defaultdict(float)
    for line in pytest_output.splitlines():
        m = DURATION.match(line)
        if m:
            parts = m.group(3).split("/")
            groups["/".join(parts[:2])] += float(m.group(1))
    return {k: round(v, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def measure_suite() -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0"]
    t0 = time.perf_counter()
    r = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = next((line for line in reversed(r.stdout.splitlines()) if " in " in line and "passed" in line), "")
    failed = [line for line in r.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"value": round(wall / 60, 2), "wall_s": round(wall, 1), "exit_code": r.returncode, "summary": summary,
            "failed": failed,
            "worker_seconds_by_group": group_seconds(r.stdout),
            **_provenance(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0"])}


def measure_default_run() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MEDATTN_DATA_DIR"}  # no data: the SYNTHETIC phantoms
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "reproductions/dcnnimaf.py", "--runs-dir", tmp, "--out", f"{tmp}/results"]
        t0 = time.perf_counter()
        r = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"speed: the default run failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        run = json.loads(Path(tmp, "results", "run.json").read_text())
    phases = {k[len("phase "):-len("_s")]: v for k, v in run.get("phases_this_process", {}).items()
              if k.startswith("phase ")}
    return {"value": round(wall, 1), "run_wall_time_s": run.get("wall_time_s"), "phases_s": phases,
            **_provenance(["python", "reproductions/dcnnimaf.py", "(no data; --runs-dir and --out in a temporary "
                                                                  "folder)"])}


def measure_linknet(sm_python: str, rounds: int, batch: int, size: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp, "linknet.md")
        args = ["--sm-python", sm_python, "--rounds", str(rounds), "--batch", str(batch), "--size", str(size),
                "--repeats", str(repeats), "--markdown", str(md)]
        r = subprocess.run([sys.executable, "benchmarks/linknet.py", *args], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"speed: benchmarks/linknet.py failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        table = md.read_text()
    ratio = re.search(r"ours \+ scSE / segmentation_models, ms per step, per round: ([^(]*)\(median ([\d.]+)\)", table)
    return {"value": float(ratio.group(2)), "per_round": [float(v) for v in ratio.group(1).split(",")],
            "table": table, **_provenance(["python", "benchmarks/linknet.py", *args])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="suite,default", help="comma-separated: suite, default, linknet")
    ap.add_argument("--sm-python", help="python of an environment holding segmentation_models (part linknet)")
    ap.add_argument("--rounds", type=int, default=3, help="linknet: alternating rounds")
    ap.add_argument("--repeats", type=int, default=5, help="linknet: timed steps per model and round (median)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", type=Path, default=RESULT)
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"suite", "default", "linknet"}
    if unknown or ("linknet" in parts and not args.sm_python):
        ap.error(f"unknown part(s) {sorted(unknown)}" if unknown else "part linknet needs --sm-python")
    sys.path.insert(0, str(REPO))
    result = json.loads(args.json.read_text()) if args.json.exists() else {}
    measure = {"suite": ("suite_minutes", measure_suite), "default": ("default_run_seconds", measure_default_run),
               "linknet": ("linknet_vs_segmentation_models",
                           lambda: measure_linknet(args.sm_python, args.rounds, args.batch, args.size, args.repeats))}
    for part in parts:
        key, fn = measure[part]
        result[key] = {**fn(), "target": TARGETS[key]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")  # after every part: a later failure keeps it
    for key, target in TARGETS.items():
        if key in result:
            v = result[key]["value"]
            print(f"{key}: {v} (target <= {target}: {'met' if v <= target else 'missed'}; "
                  f"{result[key]['date']}, {result[key]['git_commit']})")
        else:
            print(f"{key}: not measured")
    if "suite_minutes" in result:
        print("suite worker seconds by group: " + ", ".join(
            f"{k} {v:.0f}" for k, v in result["suite_minutes"]["worker_seconds_by_group"].items()))
    if "default_run_seconds" in result:
        print("default run by phase: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in result["default_run_seconds"]["phases_s"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
