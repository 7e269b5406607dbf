"""One place that seeds everything: Python, NumPy, Keras (and through it the backend), tf.data shuffles."""

from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["set_seed"]


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and Keras (which seeds TensorFlow/JAX/PyTorch) with ``seed``.

    tf.data shuffles in medattn take an explicit seed derived from this one. With ``deterministic=True`` the
    TensorFlow backend also enables op determinism (slower; GPU kernels without a deterministic variant then
    raise instead of silently varying).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(int(seed))
    random.seed(int(seed))
    np.random.seed(int(seed))
    import keras

    keras.utils.set_random_seed(int(seed))
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
