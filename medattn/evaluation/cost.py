"""What a model costs: parameters, forward FLOPs counted from its graph, per-image latency at batch 1."""

from __future__ import annotations

import statistics
import time

import numpy as np

__all__ = ["forward_flops", "latency_ms"]


def forward_flops(model, shape) -> float:
    """FLOPs of one forward pass of one image of ``shape`` (TensorFlow's profiler on the frozen graph; a
    multiply-add counts as 2). A model that writes a variable in its forward pass (MC dropout's seed state) cannot
    be frozen; its traced graph is profiled as it is (the same count where both work, tested)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    try:
        graph = convert_variables_to_constants_v2(concrete).graph
    except (ValueError, tf.errors.InvalidArgumentError):
        graph = concrete.graph
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(model_analyzer.profile(graph=graph, options=opts).total_float_ops)


def latency_ms(model, shape, runs: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median and 90th-percentile milliseconds per image at batch 1, after ``warmup`` calls (a traced call)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(0).normal(size=(1, *shape)).astype("float32"))
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
        ts.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(ts), "p90_ms": float(np.percentile(ts, 90))}
