"""Experiment configs and profiles, the shared CLI, tf.distribute strategy choice, seeds, fit loop, records."""

from .cli import build_parser, default_data_dir, parse_config
from .config import ExperimentConfig, load_config, override, save_config
from .fit import FitResult, fit
from .records import RunRecorder, dataset_fingerprint, run_metadata
from .seed import set_seed
from .strategy import get_strategy, resolve_strategy_name, set_mixed_precision

__all__ = [
    "ExperimentConfig",
    "FitResult",
    "RunRecorder",
    "build_parser",
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
