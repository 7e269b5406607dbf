"""The training loop for the strategies Keras 3's ``model.fit`` cannot drive (multi-worker).

Keras 3's ``fit`` works with the default strategy and ``MirroredStrategy`` but fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, tensorflow/tensorflow#72388: "Attempt to convert a value
(PerReplica...)"). :func:`medattn.training.fit` calls :func:`custom_epoch` and :func:`custom_evaluate` there
instead: the same model, compiled loss (Keras scales it by 1/replicas), compiled metrics, optimizer and class
weights, with ``strategy.run``; gradients are all-reduced by the Keras optimizer's tf.distribute support, so every
worker ends with the same weights.

Data: every worker builds the same global batches (same seed), and worker ``i`` takes its slice of each, so all
workers run the same number of steps; a final partial global batch is dropped (it could not be split evenly).
Validation and :func:`predict` run the whole set on every worker (cross-replica reads of the mirrored weights).
"""

from __future__ import annotations

import numpy as np

__all__ = ["custom_epoch", "custom_evaluate", "for_replicas", "needs_custom_loop", "predict",
           "worker_index"]


def needs_custom_loop(strategy) -> bool:
    """True for strategies whose ``model.fit`` is broken in Keras 3 (multi-worker)."""
    name = type(strategy).__name__
    return name.startswith("MultiWorkerMirroredStrategy") or name.startswith("CollectiveAllReduceStrategy")


def worker_index(strategy) -> int:
    """0 for the chief (or a single process), else this worker's index in ``TF_CONFIG``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not needs_custom_loop(strategy):
        return 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if task_type in (None, "chief"):
        return 0
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_id + 1 if has_chief else task_id


def _per_worker_dataset(ds, strategy, batch_size: int, steps: int | None):
    import tensorflow as tf

    n = strategy.num_replicas_in_sync
    if batch_size % n:
        raise ValueError(f"the global batch size ({batch_size}) must be a multiple of the number of replicas ({n})")

    def fn(ctx):
        per_worker = batch_size // ctx.num_input_pipelines
        i = ctx.input_pipeline_id

        def take_slice(*t):
            t = t if len(t) > 1 else t[0]
            return tf.nest.map_structure(lambda a: a[i * per_worker:(i + 1) * per_worker], t)

        d = ds.unbatch().batch(batch_size, drop_remainder=True).map(take_slice)
        d = d.unbatch().batch(ctx.get_per_replica_batch_size(batch_size), drop_remainder=True)
        if steps is not None:
            d = d.take(steps)
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return d.with_options(opts)

    return strategy.distribute_datasets_from_function(fn)


def _train_step(model, strategy, class_weight):
    import tensorflow as tf

    key = (id(strategy), tuple(sorted((class_weight or {}).items())))
    cache = model.__dict__.setdefault("_medattn_steps", {})
    if key in cache:
        return cache[key]
    table = None
    if class_weight:
        k = max(class_weight) + 1
        table = tf.constant([float(class_weight.get(c, 1.0)) for c in range(k)], tf.float32)

    def step(x, y):
        sw = None
        if table is not None:
            sw = tf.gather(table, tf.cast(tf.reshape(y, [-1]), tf.int32))
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=pred, sample_weight=sw, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(x, y):
        per_replica = strategy.run(step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    cache[key] = train_step
    return train_step


def custom_epoch(model, dataset, *, strategy, batch_size: int, class_weight=None, steps=None,
                 on_batch=None) -> dict[str, float]:
    """One epoch over ``dataset`` (global batches ``(x, y)``); returns ``{"loss": mean over steps}``."""
    dist = _per_worker_dataset(dataset, strategy, batch_size, steps)
    train_step = _train_step(model, strategy, class_weight)
    total, n = 0.0, 0
    for x, y in dist:
        loss = float(train_step(x, y))
        total += loss
        n += 1
        if on_batch is not None:
            on_batch({"loss": total / n})
    return {"loss": total / max(n, 1)}


def _batches(data, batch_size: int = 32):
    import tensorflow as tf

    if isinstance(data, (tuple, list)):
        return tf.data.Dataset.from_tensor_slices(tuple(data)).batch(batch_size)
    return data


def _model_strategy(model):
    """The strategy ``model``'s variables were created under (None outside any strategy, or no variables)."""
    v = model.weights[:1]
    return getattr(getattr(v[0], "value", v[0]), "_distribute_strategy", None) if v else None


def _replicas(model) -> int:
    """Replicas of the strategy ``model``'s variables live under (1 outside any strategy)."""
    strat = _model_strategy(model)
    return strat.num_replicas_in_sync if strat is not None else 1


def _splits_evenly(k: int, n: int) -> bool:
    """Whether ``tf.distribute`` gives each of ``n`` replicas a part of a batch of ``k``: it hands out
    ``ceil(k / n)`` at a time when ``n`` does not divide ``k``, so 5 over 4 replicas is 2, 2, 1 and none."""
    return k >= n and (k % n == 0 or (n - 1) * -(-k // n) < k)


def replica_batch_plan(total: int, batch_size: int, replicas: int) -> tuple[int, int]:
    """``(b, k)``: ``total`` elements as batches of ``b`` (a multiple of ``replicas``) and then, if ``k``, one
    batch of ``k``, so that every replica gets a part of every batch and the first batch divides evenly (Keras
    under ``MirroredStrategy`` fails on an uneven first batch, ``AddN ... must have the same size``)."""
    n = replicas
    b = -(-batch_size // n) * n
    r = total % b
    if r % n == 0 or (total > r and _splits_evenly(r, n)):
        return b, 0
    for k in range(r % n, total - n + 1, n):
        if _splits_evenly(k, n):
            return b, k
    raise ValueError(f"{total} element(s) cannot be batched so that each of {replicas} replicas gets a part of "
                     f"every batch")


def for_replicas(data, replicas: int, batch_size: int = 32, *, training: bool = False):
    """``data`` (a dataset of batches, or an array / tuple of arrays) as batches Keras can split over
    ``replicas`` replicas of a ``MirroredStrategy`` (unchanged with one replica).

    TensorFlow gives a replica an empty batch when a batch is too small to go round (a final batch of 1 on two
    replicas), and the model then fails (``Incompatible shapes: [C] vs. [0,H,W,C]``). Training batches are cut to
    a multiple of ``replicas``: at most ``replicas - 1`` images of an epoch's final batch sit that epoch out (the
    next epoch shuffles again), as ``drop_remainder`` does for the whole final batch. Validation and prediction
    keep every element exactly once, in order: one extra pass counts them, and they are batched again by
    :func:`replica_batch_plan`."""
    if replicas <= 1:
        return data
    import tensorflow as tf

    def size(*el):
        return tf.shape(tf.nest.flatten(el)[0])[0]

    ds = _batches((data,) if isinstance(data, np.ndarray) else data, batch_size)
    if training:
        def cut(*el):
            keep = size(*el) // replicas * replicas
            el = tf.nest.map_structure(lambda a: a[:keep], el)
            return el if len(el) > 1 else el[0]

        return _with_default_rewrites(ds.map(cut).filter(lambda *el: size(*el) > 0))
    flat = ds.unbatch()
    total = int(flat.reduce(np.int64(0), lambda c, _: c + 1))
    b, k = replica_batch_plan(total, batch_size, replicas)
    out = flat.batch(b) if not k else flat.take(total - k).batch(b).concatenate(flat.skip(total - k).batch(k))
    batches = -(-(total - k) // b) + (1 if k else 0)  # known, so Keras does not learn it by running out of data
    return _with_default_rewrites(out.apply(tf.data.experimental.assert_cardinality(batches)))


def _with_default_rewrites(ds):
    """``ds`` with tf.data's default graph rewrites on again (``medattn.datasets.pipeline`` turns them off).

    Under a strategy, Keras starts an iterator over every dataset it is given, takes one batch for its symbolic
    build and drops the iterator. With the rewrites off, dropping the distributed iterator of a validation set
    crashed the process (SIGSEGV in ``EpochIterator.reset``) in about 4 of 10 runs of
    ``tests/training/_partial_batch_worker.py`` on two CPU replicas; with them on, in none of 18. The rewrites
    change no element (``pipeline._finished``)."""
    import logging

    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = True
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # not "Changing the value of option apply_default_optimizations" per dataset
    try:
        return ds.with_options(options)
    finally:
        absl.setLevel(level)


def _forward(model):
    import tensorflow as tf

    fn = model.__dict__.get("_medattn_forward")
    if fn is None:
        fn = tf.function(lambda x: model(x, training=False))
        model.__dict__["_medattn_forward"] = fn
    return fn


def predict(model, x, batch_size: int = 32) -> np.ndarray:
    """``model.predict`` that also works under a multi-worker strategy (every worker predicts all of ``x``)."""
    import tensorflow as tf

    if hasattr(x, "shape") and x.shape[0] == 0:  # Keras' predict fails on an empty array
        return np.zeros((0, *model.output_shape[1:]), dtype="float32")
    if not needs_custom_loop(tf.distribute.get_strategy()) and not _built_under_multiworker(model):
        try:
            x = for_replicas(x, _replicas(model), batch_size)
        except ValueError:  # too few elements to give every replica a part: one device predicts them all
            x = x if not isinstance(x, np.ndarray) else (x,)
        else:
            return model.predict(x, batch_size=batch_size, verbose=0)
    fwd = _forward(model)
    ds = _batches(x if not isinstance(x, np.ndarray) else (x,), batch_size)
    out = [np.asarray(fwd(b[0] if isinstance(b, tuple) else b)) for b in ds]
    return np.concatenate(out)


def _built_under_multiworker(model) -> bool:
    strat = _model_strategy(model)
    return strat is not None and needs_custom_loop(strat)


def _fresh_metric(m, y, pred):
    import keras

    if isinstance(m, keras.metrics.Metric):
        return type(m).from_config(m.get_config())
    if m in ("accuracy", "acc"):
        if len(y.shape) < len(pred.shape):
            return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        return keras.metrics.BinaryAccuracy(name="accuracy") if pred.shape[-1] == 1 else \
            keras.metrics.CategoricalAccuracy(name="accuracy")
    return keras.metrics.get(m)


def custom_evaluate(model, validation_data, batch_size: int = 32) -> dict[str, float]:
    """Loss and compiled metrics on the whole validation set (names without the ``val_`` prefix)."""
    import keras

    fwd = _forward(model)
    ys, preds = [], []
    for x, y in _batches(validation_data, batch_size):
        preds.append(np.asarray(fwd(x)))
        ys.append(np.asarray(y))
    y, pred = np.concatenate(ys), np.concatenate(preds)
    logs = {"loss": float(model.compute_loss(y=y, y_pred=pred, training=False))}
    compiled = getattr(getattr(model, "_compile_metrics", None), "_user_metrics", None) or []
    for m in compiled if isinstance(compiled, (list, tuple)) else [compiled]:
        metric = _fresh_metric(m, y, pred)
        metric.update_state(y, pred)
        logs[metric.name] = float(keras.ops.convert_to_numpy(metric.result()))
    return logs
