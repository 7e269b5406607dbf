"""Grad-CAM: shape, range, and a map that points at what the score depends on."""

import keras
import numpy as np

from medattn.evaluation.saliency import grad_cam, plot_grad_cam


def _linear_model():
    """score(class 0) grows with the mean brightness of the image: Grad-CAM must follow the bright pixels."""
    inp = keras.Input((16, 16, 1))
    feat = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="feat")(inp)
    pooled = keras.layers.GlobalAveragePooling2D()(feat)
    out = keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.Constant([[4.0, -4.0]]),
                             bias_initializer="zeros")(pooled)
    return keras.Model(inp, out)


def test_grad_cam_follows_the_evidence(tmp_path):
    x = np.zeros((2, 16, 16, 1), "float32")
    x[0, :4, :4] = 1.0  # top-left square
    x[1, 10:, 10:] = 1.0  # bottom-right square
    cams = grad_cam(_linear_model(), x, "feat", class_index=0)
    assert cams.shape == (2, 16, 16) and cams.min() >= 0 and np.isclose(cams.max(), 1.0)
    assert cams[0, :4, :4].mean() > 5 * cams[0, 8:, 8:].mean()
    assert cams[1, 10:, 10:].mean() > 5 * cams[1, :6, :6].mean()
    # for the other class the gradient is negative everywhere: ReLU leaves an all-zero map, not NaN
    other = grad_cam(_linear_model(), x, "feat", class_index=1)
    assert np.all(other == 0)
    path = plot_grad_cam(x[..., 0] * 255, cams, tmp_path / "cam.png", titles=["a", "b"])
    assert path.exists() and path.stat().st_size > 0
