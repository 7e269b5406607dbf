"""medattn: Keras 3 attention and fusion layers for medical imaging, and reproductions of five papers.

Subpackages: :mod:`medattn.layers` (reusable layers), :mod:`medattn.backbones`, :mod:`medattn.models`,
:mod:`medattn.datasets`, :mod:`medattn.evaluation`, :mod:`medattn.training`. Importing ``medattn`` itself is
cheap; the subpackages import Keras when used. ``medattn.load_model(path)`` loads a saved model that uses our
layers (it imports them first, and names the module to import when something is still missing).
"""

__version__ = "0.1.0"


def load_model(path, compile: bool = True, **kwargs):  # noqa: A002
    """See :func:`medattn.saving.load_model`."""
    from .saving import load_model as _load

    return _load(path, compile=compile, **kwargs)
