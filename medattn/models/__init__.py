"""One module per paper model."""


def set_bn_momentum(model, momentum: float):
    """Set the moving-average momentum of every BatchNormalization layer in ``model`` (nested models included).

    keras.applications' MobileNetV2 uses 0.999 and Keras' default is 0.99: with a few hundred steps, as in our
    from-scratch CPU runs, the moving statistics are still mostly their initial values, and inference-mode outputs
    are unusable; 0.9 follows the batches within a few dozen steps."""
    import keras

    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model
