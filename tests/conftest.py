"""Shared test set-up: quiet TensorFlow, the real-data root, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    """``$MEDATTN_DATA_DIR`` if set and present, else ``../shared/datasets`` beside the repository if present."""
    env = os.environ.get("MEDATTN_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "datasets"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("real datasets not found (set MEDATTN_DATA_DIR)")
    return root


def dataset_dir(name: str) -> Path:
    root = data_root()
    if root is None or not (root / name).is_dir():
        pytest.skip(f"dataset {name!r} not found under MEDATTN_DATA_DIR")
    return root / name
