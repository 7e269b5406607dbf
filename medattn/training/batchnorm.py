"""BatchNorm during and after training: the momentum a stage trains with (``Stage.bn_momentum``) and precise
statistics recomputed over the training inputs after it (``Stage.precise_bn``); the runner applies both."""


def _bn_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, nested models included, each once."""
    import keras

    found, seen, stack = [], set(), list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def set_bn_momentum(model, momentum: float):
    """Set the moving-average momentum of every BatchNormalization layer in ``model`` (nested models included).

    keras.applications' MobileNetV2 uses 0.999 and Keras' default is 0.99: with a few hundred steps, as in our
    from-scratch CPU runs, the moving statistics are still mostly their initial values, and inference-mode outputs
    are unusable; 0.9 follows the batches within a few dozen steps."""
    for layer in _bn_layers(model):
        layer.momentum = momentum
    return model


def recompute_bn_statistics(model, batches, *, progress: bool = False) -> dict:
    """Replace the moving mean and variance of every trainable BatchNormalization layer in ``model`` by the average,
    over ``batches``, of its per-batch mean and variance under the model's final weights ("precise BN", Wu and
    Johnson 2021, *Rethinking "Batch" in BatchNorm*; He et al. 2016 for ResNet).

    During training the moving statistics are an exponential average over the last ~1/(1 - momentum) batches, each
    taken under the weights of its own step: with momentum 0.9 (our from-scratch profiles) that is about ten batches.
    This pass runs the model in training mode (batch statistics normalize, as in training) over ``batches`` with the
    weights fixed, and sets each layer's moving statistics to the equal-weight mean over the batches. Only the moving
    statistics change: no trainable weight does, and layers that are frozen (``trainable=False``, e.g. the paper
    profiles' fine-tuning) keep theirs. ``batches``: an iterable of input batches (arrays or tensors, or ``(x, ...)``
    tuples whose first element is the input), all of the same size as in training for faithful variances; the caller
    drops a short last batch. Runs eagerly (each batch's momentum differs), outside any distribution strategy's
    ``run``. Dropout in training mode runs too; it changes nothing upstream of the last BatchNormalization layer, and
    the caller must not use this on a model with dropout before a BatchNormalization layer.

    Returns ``{"layers": number of layers recomputed, "batches": n, "images": n_images}``; with no trainable
    BatchNormalization layer nothing runs and ``layers`` is 0."""
    from tqdm.auto import tqdm

    layers = [layer for layer in _bn_layers(model) if layer.trainable]
    if not layers:
        return {"layers": 0, "batches": 0, "images": 0}
    momenta = [layer.momentum for layer in layers]
    n = images = 0
    try:
        for batch in tqdm(batches, desc="BatchNorm statistics", unit="batch", disable=not progress, leave=False):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            n += 1
            for layer in layers:  # moving <- moving * (n-1)/n + batch/n: the running mean over the batches so far
                layer.momentum = (n - 1) / n
            model(x, training=True)
            images += int(x.shape[0])
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m
    if n == 0:
        raise ValueError("recompute_bn_statistics: no batches given")
    return {"layers": len(layers), "batches": n, "images": images}


def recompute_bn_statistics_from_arrays(model, x, batch_size: int, *, seed: int, preprocess=None,
                                        progress: bool = False) -> dict:
    """:func:`recompute_bn_statistics` over in-memory training inputs ``x`` (``(n, H, W, C)``): the rows in an order
    shuffled by ``seed`` (inputs sorted by class would give each batch one class's statistics), no augmentation,
    batches of ``batch_size`` (the training batch size, for faithful variances) with a short last batch dropped
    (kept only when there is no whole batch), ``preprocess`` applied to each batch as in training."""
    import numpy as np

    from ..datasets.pipeline import array_dataset

    order = np.random.default_rng(seed).permutation(len(x))
    if len(order) >= batch_size:
        order = order[:len(order) // batch_size * batch_size]
    return recompute_bn_statistics(model, array_dataset(np.asarray(x)[order], None, batch_size, preprocess=preprocess),
                                   progress=progress)
