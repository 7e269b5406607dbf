"""Losses (Keras 3, ``keras.ops`` only): :class:`StableWeightedBCE` (EMT-Net's sensitivity/specificity knob),
:class:`SmoothedSparseCategoricalCrossentropy` (integer labels with label smoothing) and
:class:`DistillationLoss` (knowledge distillation from stored teacher probabilities)."""

from .distillation import DistillationLoss, pack_targets, packed_accuracy, soften
from .smoothed_sparse_ce import SmoothedSparseCategoricalCrossentropy
from .stable_weighted_bce import StableWeightedBCE

__all__ = ["DistillationLoss", "SmoothedSparseCategoricalCrossentropy", "StableWeightedBCE", "pack_targets",
           "packed_accuracy", "soften"]
