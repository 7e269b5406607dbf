"""Imported first by the subpackages that need Keras: without a Keras backend installed (a plain ``pip install
medattn`` brings Keras but not TensorFlow), one ImportError line saying which extra to install."""

BACKEND_HINT = ('medattn needs a Keras backend: install its "cpu" extra (tensorflow-cpu; pip install ".[cpu]" in a '
                'clone) or "gpu" extra (tensorflow with CUDA); the layers also run on JAX or PyTorch with KERAS_BACKEND '
                "set")

try:
    import keras  # noqa: F401
except ImportError as _e:
    raise ImportError(f"{BACKEND_HINT} ({_e})") from None
