"""Losses (Keras 3, ``keras.ops`` only): :class:`StableWeightedBCE` (EMT-Net's sensitivity/specificity knob) and
:class:`SmoothedSparseCategoricalCrossentropy` (integer labels with label smoothing)."""

from .smoothed_sparse_ce import SmoothedSparseCategoricalCrossentropy
from .stable_weighted_bce import StableWeightedBCE

__all__ = ["SmoothedSparseCategoricalCrossentropy", "StableWeightedBCE"]
