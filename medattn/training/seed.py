"""One place that seeds everything: Python, NumPy, Keras (and through it the backend), tf.data shuffles."""

from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["set_seed"]


def _seed_keras(seed: int) -> None:
    """``keras.utils.set_random_seed`` without its ``tf.random.set_seed`` (done by :func:`_seed_tensorflow`)."""
    import keras

    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils
    except ImportError:  # another Keras layout: the public call (seeds TensorFlow too, flushing its caches)
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)


def _seed_tensorflow(seed: int) -> None:
    """``tf.random.set_seed(seed)`` without its flush of the runtime's kernel cache (eager mode).

    In eager mode ``tf.random.set_seed`` sets the context's global seed and the sequence of operation seeds, then
    clears the kernel cache, which also holds every traced function's instantiated, optimised graph: a model reused
    across the folds and protocols of one run (:class:`medattn.training.reuse.ModelPool`) then spends about 2 s
    re-instantiating its train and test steps after every seeding (a quarter of the synthetic default's training
    time, since cross-fit folds are seeded ``seed + fold``). Here the seeds are set the same way and the cache is
    kept. The cache matters only to stateful random kernels, which keep a counter per (global seed, operation
    seed) pair: after reseeding with a seed used before, an unseeded ``tf.random.uniform`` continues its count
    instead of starting over. medattn draws with stateless ops and explicit keys (Keras 3 layers, augmentation)
    and seeded tf.data shuffles, which read the global seed when they are created (tested the same)."""
    import tensorflow as tf

    try:
        from tensorflow.python.eager import context
        ctx = context.context()
        private_ok = tf.executing_eagerly() and hasattr(ctx, "_seed") and hasattr(ctx, "_rng")
    except ImportError:
        private_ok = False
    if private_ok:
        ctx._seed = seed
        ctx._rng = random.Random(seed)
    else:
        tf.random.set_seed(seed)


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy, Keras and TensorFlow with ``seed``.

    tf.data shuffles in medattn take an explicit seed derived from this one. With ``deterministic=True`` the
    TensorFlow backend also enables op determinism (slower; GPU kernels without a deterministic variant then
    raise instead of silently varying). Seeding keeps TensorFlow's instantiated functions (see
    :func:`_seed_tensorflow`).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    # Keras (and TensorFlow) imported BEFORE the Python and NumPy generators are seeded: their first import draws
    # from those generators, so seeding first made the first run of a process differ from every later run with
    # the same seed (a run resumed in a new process then did not continue the run it resumed; tested)
    import keras

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() != "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    _seed_keras(seed)
    _seed_tensorflow(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
