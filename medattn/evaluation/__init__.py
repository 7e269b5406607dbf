"""Metrics, confidence intervals, paper-comparison tables and plots."""

from .classification import (
    as_probabilities,
    binary_metrics_from_confusion,
    choose_threshold,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    one_vs_rest_accuracy,
    reliability_bins,
)
from .ensemble import seed_ensemble, seed_groups
from .intervals import (
    bootstrap_ci,
    mcnemar_exact,
    seed_cell,
    seed_interval,
    seed_spread,
    seeds_mark,
    wilson_interval,
)
from .segmentation import per_image_dice, per_image_iou, pixel_accuracy, segmentation_summary
from .tables import comparison_rows, render_markdown, write_table
from .tta import TTA_MODES, tta_predict, tta_refusal, tta_restore, tta_views

__all__ = [
    "as_probabilities",
    "binary_metrics_from_confusion",
    "bootstrap_ci",
    "choose_threshold",
    "classification_metrics",
    "mcnemar_exact",
    "comparison_rows",
    "confusion_matrix",
    "expected_calibration_error",
    "one_vs_rest_accuracy",
    "per_image_dice",
    "per_image_iou",
    "pixel_accuracy",
    "reliability_bins",
    "render_markdown",
    "seed_cell",
    "seed_ensemble",
    "seed_groups",
    "seed_interval",
    "seed_spread",
    "seeds_mark",
    "segmentation_summary",
    "TTA_MODES",
    "tta_predict",
    "tta_refusal",
    "tta_restore",
    "tta_views",
    "wilson_interval",
    "write_table",
]
