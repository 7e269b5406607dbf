"""The one argument parser every reproduction uses.

Common flags: ``--data-dir`` (default: ``$MEDATTN_DATA_DIR/<dataset>``), ``--profile {smoke,cpu,paper}``,
``--out``, ``--seed`` / ``--seeds``, ``--epochs``, ``--batch-size``, ``--lr``, ``--weights {none,imagenet,PATH}``,
``--strategy {auto,default,mirrored,multiworker,tpu}``, ``--mixed-precision {off,bf16,fp16}``, ``--resume``,
``--deterministic``, ``--quiet``; any other config field with ``--set FIELD=VALUE`` (repeatable).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping, Sequence

from .config import ExperimentConfig, override

__all__ = ["build_parser", "parse_config", "default_data_dir", "DATA_ENV"]

DATA_ENV = "MEDATTN_DATA_DIR"


def default_data_dir(dataset: str, env: Mapping[str, str] | None = None) -> str | None:
    """``$MEDATTN_DATA_DIR/<dataset>`` if the variable is set and that folder exists, else None."""
    env = os.environ if env is None else env
    root = env.get(DATA_ENV)
    if not root:
        return None
    cand = Path(root) / dataset
    return str(cand) if cand.exists() else None


def build_parser(description: str, profiles: Sequence[str] = ("smoke", "cpu", "paper"),
                 default_profile: str = "cpu") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", help=f"this dataset's folder (default: ${DATA_ENV}/<dataset>)")
    ap.add_argument("--profile", choices=list(profiles), default=default_profile,
                    help=f"experiment profile (default {default_profile})")
    ap.add_argument("--out", help="results folder (default results/<paper>, or runs/<paper>-<profile> for smoke)")
    ap.add_argument("--seed", type=int, help="one seed (shorthand for --seeds N)")
    ap.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int, help="global batch size (split across replicas)")
    ap.add_argument("--lr", type=float, dest="learning_rate")
    ap.add_argument("--weights", help="none | imagenet (needs internet) | path to a weights file")
    ap.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker", "tpu"])
    ap.add_argument("--mixed-precision", choices=["off", "bf16", "fp16"])
    ap.add_argument("--resume", action="store_true", default=None, help="continue from checkpoints in --out")
    ap.add_argument("--deterministic", action="store_true", default=None, help="enable TF op determinism")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override any config field (repeatable)")
    return ap


def parse_config(profiles: Mapping[str, ExperimentConfig], argv=None, *, description: str = "",
                 dataset: str | None = None, parser: argparse.ArgumentParser | None = None):
    """Parse ``argv`` and return ``(config, args)``: the chosen profile with every flag applied."""
    ap = parser or build_parser(description, tuple(profiles))
    args = ap.parse_args(argv)
    cfg = profiles[args.profile]
    changes: dict[str, object] = {}
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        changes[k.strip().replace("-", "_")] = v
    if args.seed is not None and args.seeds is not None:
        ap.error("give --seed or --seeds, not both")
    seeds = str(args.seed) if args.seed is not None else args.seeds
    for field in ("epochs", "batch_size", "learning_rate", "weights", "strategy", "mixed_precision", "resume",
                  "deterministic", "out"):
        val = getattr(args, field, None)
        if val is not None:
            changes[field] = val
    if seeds is not None:
        changes["seeds"] = seeds
    data_dir = args.data_dir or (default_data_dir(dataset) if dataset else None)
    if data_dir is not None:
        changes["data_dir"] = data_dir
    if args.quiet:
        changes["verbose"] = 0
    try:
        cfg = override(cfg, changes)
    except (ValueError, TypeError) as e:
        ap.error(str(e))
    return cfg, args
