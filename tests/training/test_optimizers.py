"""The fused optimizers compute Keras's updates with one kernel per variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from medattn.training.optimizers import FusedAdam, FusedAdamW, FusedSGD

SCHEDULE = dict(initial_learning_rate=1e-2, decay_steps=5, alpha=0.1)


def _model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3, use_bias=False, name="conv"), keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="head")])


def _train(optimizer, steps: int = 4):
    model = _model()
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(32, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 32)
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return model


PAIRS = [
    (lambda: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(**SCHEDULE), global_clipnorm=1.0),
     lambda: FusedAdam(keras.optimizers.schedules.CosineDecay(**SCHEDULE), global_clipnorm=1.0)),
    (lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.05), lambda: FusedAdamW(1e-2, weight_decay=0.05)),
    (lambda: keras.optimizers.SGD(1e-2, momentum=0.9), lambda: FusedSGD(1e-2, momentum=0.9)),
    (lambda: keras.optimizers.SGD(1e-2, momentum=0.9, nesterov=True),
     lambda: FusedSGD(1e-2, momentum=0.9, nesterov=True)),
    (lambda: keras.optimizers.SGD(1e-2), lambda: FusedSGD(1e-2)),
]


@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_fused_updates_equal_keras_updates(pair):
    make_keras, make_fused = PAIRS[pair]
    ours, theirs = _train(make_fused()), _train(make_keras())
    assert type(ours.optimizer).__name__.startswith("Fused")
    moved = [np.abs(a - b).max() for a, b in zip(ours.get_weights(), _model().get_weights())]
    assert min(moved[:3]) > 1e-4  # the kernel, gamma and beta trained
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    names = [[v.path.split("/", 1)[1].replace(m.name, "model") for v in m.optimizer.variables] for m in (ours, theirs)]
    assert names[0] == names[1] and ours.optimizer.name.split("_")[0] == theirs.optimizer.name.split("_")[0]
    for a, b in zip(ours.optimizer.variables, theirs.optimizer.variables):  # checkpoints interchange
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def _update_ops(optimizer, gradient, shape) -> set:
    """Operation types of one ``apply`` traced as a graph."""
    var = keras.Variable(np.ones(shape, "float32"))
    optimizer.build([var])
    step = tf.function(lambda: optimizer.apply([gradient], [var]))
    return {op.type for op in step.get_concrete_function().graph.get_operations()}


def test_one_kernel_per_variable_and_keras_update_for_amsgrad_and_sparse_gradients():
    dense = tf.constant([1.0, 2.0, 3.0])
    assert "ResourceApplyAdam" in _update_ops(FusedAdam(0.1), dense, 3)
    assert "ResourceApplyAdam" in _update_ops(FusedAdamW(0.1), dense, 3)
    assert "ResourceApplyKerasMomentum" in _update_ops(FusedSGD(0.1, momentum=0.5), dense, 3)
    assert "ResourceApplyGradientDescent" in _update_ops(FusedSGD(0.1), dense, 3)
    assert "ResourceApplyAdam" not in _update_ops(FusedAdam(0.1, amsgrad=True), dense, 3)
    sparse = tf.IndexedSlices(tf.ones((1, 2)), tf.constant([2]), tf.constant([4, 2]))
    assert "ResourceApplyAdam" not in _update_ops(FusedAdam(0.1), sparse, (4, 2))
    table, opt = keras.Variable(np.ones((4, 2), "float32")), FusedAdam(0.1)
    opt.apply([sparse], [table])
    assert np.asarray(table)[2].max() < 1 and np.asarray(table)[[0, 1, 3]].min() == 1  # only the row it names


def test_a_model_saved_with_a_fused_optimizer_loads_with_its_state(tmp_path):
    model = _train(FusedAdam(1e-2))
    model.save(tmp_path / "m.keras")
    back = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(back.optimizer, FusedAdam) and int(back.optimizer.iterations) == 4
    for a, b in zip(back.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
