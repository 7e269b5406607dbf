"""A minimal distributed training loop for the strategies Keras 3's ``model.fit`` cannot drive.

Keras 3's ``fit`` works with the default strategy and ``MirroredStrategy`` but fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, tensorflow/tensorflow#72388: "Attempt to convert a value
(PerReplica...)"). :func:`distributed_fit` runs the same model, loss and optimizer with
``strategy.experimental_distribute_dataset`` and ``strategy.run``; gradients are all-reduced by the Keras
optimizer's tf.distribute support, so every worker ends with the same weights.
"""

from __future__ import annotations

__all__ = ["distributed_fit", "needs_custom_loop"]


def needs_custom_loop(strategy) -> bool:
    """True for strategies whose ``model.fit`` is broken in Keras 3 (multi-worker)."""
    return type(strategy).__name__.startswith("MultiWorkerMirroredStrategy") or type(strategy).__name__.startswith(
        "CollectiveAllReduceStrategy")


def distributed_fit(model, dataset, *, epochs: int, strategy, loss_fn, verbose: int = 1) -> dict[str, list[float]]:
    """Train a built model whose optimizer was created in ``strategy.scope()``; ``dataset`` yields global
    batches ``(x, y)``. ``loss_fn(y, y_pred)`` returns per-example losses. Returns ``{"loss": [per epoch]}``."""
    import tensorflow as tf

    dist_ds = strategy.experimental_distribute_dataset(dataset)
    optimizer = model.optimizer

    def step(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per_example = loss_fn(y, pred)
            loss = tf.nn.compute_average_loss(per_example)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(x, y):
        per_replica = strategy.run(step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    history = {"loss": []}
    for epoch in range(epochs):
        total, n = 0.0, 0
        for x, y in dist_ds:
            total += float(train_step(x, y))
            n += 1
        history["loss"].append(total / max(n, 1))
        if verbose:
            print(f"epoch {epoch + 1}/{epochs} loss {history['loss'][-1]:.4f}")
    return history
