"""Grad-CAM saliency maps (Selvaraju et al., ICCV 2017) for any Keras classifier, and a figure of them."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["grad_cam", "plot_grad_cam"]


def grad_cam(model, images, layer_name: str, class_index=None) -> np.ndarray:
    """Grad-CAM maps ``(n, H, W)`` in [0, 1] at the images' size.

    ``images``: a batch the model takes (already preprocessed); ``layer_name``: a 4-D feature layer of ``model``
    (usually the last convolutional block); ``class_index``: one class for all images, one per image, or None for
    each image's predicted class. The map is ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of d score /
    d A_k, bilinearly resized to the input and scaled by its maximum (all-zero maps stay zero).
    """
    import keras
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(images, dtype="float32"))
    grad_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    with tf.GradientTape() as tape:
        feats, probs = grad_model(x, training=False)
        probs = tf.cast(probs, tf.float32)
        if class_index is None:
            idx = tf.argmax(probs, axis=-1)
        else:
            idx = tf.constant(np.broadcast_to(np.asarray(class_index), (x.shape[0],)), tf.int64)
        score = tf.gather(probs, idx, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(score, feats), tf.float32)
    feats = tf.cast(feats, tf.float32)
    alpha = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(alpha * feats, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, x.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    return cam / np.where(peak > 0, peak, 1.0)[:, None, None]


def plot_grad_cam(images, cams, path, titles: Sequence[str] | None = None, cols: int = 4, title: str = ""):
    """Each image (``(n, H, W[, C])``, values in [0, 255] or [0, 1]) with its Grad-CAM map overlaid; PNG."""
    from .plots import _plt, _save

    plt = _plt()
    images = np.asarray(images, dtype="float32")
    if images.max() > 1.5:
        images = images / 255.0
    n = len(images)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img.mean(-1) if img.ndim == 3 else img, cmap="gray", vmin=0, vmax=1)
        ax.imshow(cams[i], cmap="jet", alpha=0.35, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
