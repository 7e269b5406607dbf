"""medattn: Keras 3 attention and fusion layers for medical imaging, and reproductions of five papers.

Subpackages: :mod:`medattn.layers` (reusable layers), :mod:`medattn.backbones`, :mod:`medattn.models`,
:mod:`medattn.datasets`, :mod:`medattn.evaluation`, :mod:`medattn.training`. Importing ``medattn`` itself is
cheap; the subpackages import Keras when used.
"""

__version__ = "0.1.0"
