"""``run_layer_test``: the checks every medattn layer must pass (after keras-hub's ``run_layer_test``)."""

from __future__ import annotations

import numpy as np


def _inputs(shapes, seed=0):
    rng = np.random.default_rng(seed)
    if isinstance(shapes, list):
        return [rng.normal(size=s).astype("float32") for s in shapes]
    return rng.normal(size=shapes).astype("float32")


def _keras_inputs(shapes):
    import keras

    if isinstance(shapes, list):
        return [keras.Input(s[1:]) for s in shapes]
    return keras.Input(shapes[1:])


def _flat(x):
    return [np.asarray(v, dtype="float32") for v in (x if isinstance(x, (list, tuple)) else [x])]


def run_layer_test(layer_cls, init_kwargs, input_shapes, tmp_path, expected_output_shape=None,
                   check_bf16=True, atol=1e-5):
    """Config round trip, symbolic and eager calls, .keras save/load, one training step, bf16 run."""
    import keras

    # 1. config round trip
    layer = layer_cls(**init_kwargs)
    cfg = layer.get_config()
    for k, v in init_kwargs.items():
        got = cfg[k]
        assert (list(got) if isinstance(got, tuple) else got) == (list(v) if isinstance(v, tuple) else v), (k, got, v)
    assert layer_cls.from_config(cfg).get_config() == cfg

    # 2. symbolic call inside a functional model; eager call gives the same values
    inputs = _keras_inputs(input_shapes)
    outputs = layer(inputs)
    model = keras.Model(inputs, outputs)
    x = _inputs(input_shapes)
    y_model = _flat(model(x))
    y_eager = _flat(layer(x))
    for a, b in zip(y_model, y_eager):
        np.testing.assert_allclose(a, b, atol=atol)
    if expected_output_shape is not None:
        exp = expected_output_shape if isinstance(expected_output_shape, list) else [expected_output_shape]
        assert [tuple(a.shape) for a in y_model] == [tuple(e) for e in exp]
        sym = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        assert [tuple(s.shape[1:]) for s in sym] == [tuple(e[1:]) for e in exp]
        out_shape = layer.compute_output_shape(
            [tuple(s) for s in input_shapes] if isinstance(input_shapes, list) else tuple(input_shapes))
        out_shape = out_shape if isinstance(out_shape, list) else [out_shape]
        assert [tuple(s[1:]) for s in out_shape] == [tuple(e[1:]) for e in exp]

    # 3. .keras save and load gives identical outputs
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(y_model, _flat(loaded(x))):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # 4. one training step changes the trainable weights
    if model.trainable_weights:
        before = [np.array(w) for w in model.trainable_weights]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        targets = [np.ones_like(a) for a in y_model]
        model.train_on_batch(x, targets if len(targets) > 1 else targets[0])
        after = [np.array(w) for w in model.trainable_weights]
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), "no weight changed in a training step"

    # 5. mixed precision (bf16) runs and computes in bf16
    if check_bf16:
        lb = layer_cls(**init_kwargs, dtype="mixed_bfloat16")
        yb = lb(x)
        yb = yb if isinstance(yb, (list, tuple)) else [yb]
        assert all("bfloat16" in str(v.dtype) for v in yb), [v.dtype for v in yb]
        assert all(np.isfinite(np.asarray(keras.ops.cast(v, "float32"))).all() for v in yb)
    return model
