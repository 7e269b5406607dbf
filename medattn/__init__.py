"""medattn: Keras 3 attention and fusion layers for medical imaging, and reproductions of five papers.

Subpackages: :mod:`medattn.layers` (reusable layers), :mod:`medattn.backbones`, :mod:`medattn.models`,
:mod:`medattn.datasets`, :mod:`medattn.evaluation`, :mod:`medattn.training`. Importing ``medattn`` itself is
cheap; the subpackages import Keras when used. ``medattn.load_model(path)`` loads a saved model that uses our
layers (it imports them first, and names the module to import when something is still missing).
"""

import os as _os

__version__ = "0.1.0"

# TensorFlow left its oneDNN kernels off on an AVX2-only AMD EPYC (2026-12-01), where its own Eigen kernels trained our cpu-profile models up to 4x slower (1.8x at the median; DCAT 2.5x:
# benchmarks/results/onednn.md). Turn them on unless the user chose: this must happen before TensorFlow is
# imported (afterwards it changes nothing; ``medattn.onednn_enabled()`` tells what TensorFlow is using). Set
# TF_ENABLE_ONEDNN_OPTS=0 to keep Eigen.
ONEDNN_SET_BY_MEDATTN = "TF_ENABLE_ONEDNN_OPTS" not in _os.environ
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (None: TensorFlow not imported yet)."""
    import sys

    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a TensorFlow without the probe
        return None


def load_model(path, compile: bool = True, **kwargs):  # noqa: A002
    """See :func:`medattn.saving.load_model`."""
    from .saving import load_model as _load

    return _load(path, compile=compile, **kwargs)
