"""Experiment configs and profiles, the shared CLI, tf.distribute strategy choice, seeds, fit loop, records, and
the reproduction runner every script stands on (:mod:`medattn.runner.reproduction`)."""

from .cli import SHARED_FLAGS, build_parser, default_data_dir, parse_config
from .config import ExperimentConfig, Stage, config_hash, load_config, override, save_config
from .fit import FitResult, fit
from .records import RunRecorder, dataset_fingerprint, run_metadata
from .seed import set_seed
from .strategy import get_strategy, resolve_strategy_name, set_mixed_precision

__all__ = [
    "ExperimentConfig",
    "FitResult",
    "RunRecorder",
    "SHARED_FLAGS",
    "Stage",
    "build_parser",
    "config_hash",
    "dataset_fingerprint",
    "default_data_dir",
    "fit",
    "get_strategy",
    "load_config",
    "override",
    "parse_config",
    "resolve_strategy_name",
    "run_metadata",
    "save_config",
    "set_mixed_precision",
    "set_seed",
]
