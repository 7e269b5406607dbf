"""Load a saved ``.keras`` model that uses medattn's classes, with an error that says what is missing.

``keras.saving.load_model`` knows a custom class only once the module that registers it has been imported; without
that it fails with "Could not locate class ...". :func:`load_model` imports every medattn module that registers
classes first, and when loading still fails it names the class and module the file asks for.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

__all__ = ["load_model", "required_modules", "save_model_card", "read_model_card"]

_REGISTERING = ("medattn.layers", "medattn.backbones", "medattn.evaluation.keras_metrics",
                "medattn.losses", "medattn.training.reuse",  # reuse: the cosine schedule of a compiled model
                "medattn.training.optimizers",  # the stage optimizer of a compiled model
                "medattn.models.dcat")  # BackbonePreprocess

CARD_KEYS = ("kind", "input_size", "preprocessing", "class_names")


def save_model_card(model, path, card: dict) -> Path:
    """Save ``model`` to ``path`` (``.keras``) with ``card`` as JSON beside it (``path`` with ``.json``): what a
    user needs to run it on their own images. ``card`` must hold ``kind`` (``segmenter`` | ``classifier``),
    ``input_size``, ``preprocessing`` (a :data:`medattn.backbones.PREPROCESSING` name applied to images in
    [0, 255], or ``"inside"`` when the model does it) and ``class_names``; ``threshold``, ``metrics``, the data
    manifest hash and anything else are kept as given."""
    from .utils import atomic_write_text

    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise ValueError(f"model card for {path} lacks {missing}")
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: the model file must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"file": path.name, **card}, indent=1, default=str) + "\n")
    return path


def read_model_card(path) -> dict:
    """The JSON card beside a ``.keras`` file saved by :func:`save_model_card`; a clear error if it is missing."""
    card = Path(path).with_suffix(".json")
    if not card.is_file():
        raise FileNotFoundError(f"{card}: no model card beside {Path(path).name} (models saved by the reproductions "
                                "have one: input size, preprocessing, class names)")
    return json.loads(card.read_text())


def required_modules(path) -> dict[str, str]:
    """``{class_name: module}`` of every non-Keras class that the saved model's config names."""
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
    found = {}

    def walk(node):
        if isinstance(node, dict):
            module, cls = node.get("module"), node.get("class_name")
            if isinstance(module, str) and isinstance(cls, str) and not module.startswith("keras"):
                found[cls] = module
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return found


def load_model(path, compile: bool = True, **kwargs):  # noqa: A002 - Keras' own argument name
    """``keras.saving.load_model`` after importing medattn's registering modules; a clear error otherwise."""
    import importlib

    import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    for mod in _REGISTERING:
        importlib.import_module(mod)
    try:
        return keras.saving.load_model(path, compile=compile, **kwargs)
    except (TypeError, ValueError) as e:
        try:
            needed = required_modules(path)
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as bad:
            # Keras says "File not found" for a file that is there but damaged: name the real problem
            raise ValueError(f"{path}: cannot be read as a Keras model: the file is there but is not a complete "
                             f".keras archive (truncated or another format; {type(bad).__name__})") from e
        missing = {c: m for c, m in needed.items() if f"'{c}'" in str(e)}
        if missing:
            lines = ", ".join(f"{c} (import {m})" for c, m in missing.items())
            raise ValueError(f"{path}: cannot rebuild {lines}; import those modules before loading") from e
        raise
