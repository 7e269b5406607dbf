"""FLOP counting: the frozen graph where it can be frozen, the traced graph where the model writes a variable."""

import pytest


def _unfrozen(model, shape):
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32)).graph
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(model_analyzer.profile(graph=graph, options=opts).total_float_ops)


def test_forward_flops_counts_dense_and_conv_and_survives_mc_dropout():
    import keras

    from medattn.evaluation.cost import forward_flops
    from medattn.layers import MCDropout

    inp = keras.Input((4,))
    dense = keras.Model(inp, keras.layers.Dense(8)(inp))
    assert forward_flops(dense, (4,)) == 2 * 4 * 8 + 8  # multiply-adds of the matmul, then the bias
    x = keras.Input((16, 16, 3))
    conv = keras.Model(x, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, padding="same")(x)))
    assert forward_flops(conv, (16, 16, 3)) == pytest.approx(_unfrozen(conv, (16, 16, 3)))
    assert forward_flops(conv, (16, 16, 3)) >= 2 * 16 * 16 * 3 * 3 * 3 * 4
    mc = keras.Model(inp, keras.layers.Dense(2)(MCDropout(0.5)(keras.layers.Dense(8)(inp))))
    assert forward_flops(mc, (4,)) >= 2 * 4 * 8 + 2 * 8 * 2  # MC dropout's state write: no frozen graph
