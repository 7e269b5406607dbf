"""Losses (Keras 3, ``keras.ops`` only): :class:`StableWeightedBCE` (EMT-Net's sensitivity/specificity knob)."""

from .stable_weighted_bce import StableWeightedBCE

__all__ = ["StableWeightedBCE"]
