"""MedMNIST v2 ``.npz`` files (Yang et al., Sci. Data 2023), any of the 2D sets.

Keys as released: ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
``test_labels``; images ``(n, H, W)`` or ``(n, H, W, 3)`` uint8, labels ``(n, 1)`` (or ``(n, k)`` multi-label).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core import DatasetError

__all__ = ["load_medmnist", "find_npz"]

SPLITS = ("train", "val", "test")


def find_npz(root, name: str | None = None) -> Path:
    """The ``.npz`` file: ``root`` itself if it is a file, else ``root/<name>.npz`` or the single .npz in root."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.exists():
        raise DatasetError(f"MedMNIST: {root} does not exist")
    if name:
        p = root / f"{name}.npz"
        if not p.is_file():
            raise DatasetError(f"MedMNIST: {p} does not exist")
        return p
    files = sorted(root.glob("*.npz"))
    if len(files) != 1:
        raise DatasetError(f"MedMNIST: expected one .npz file in {root}, found {[f.name for f in files]}")
    return files[0]


def load_medmnist(root, name: str | None = None, splits=SPLITS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images uint8, labels int)}``; labels of shape ``(n, 1)`` are flattened to ``(n,)``."""
    path = find_npz(root, name)
    try:
        data = np.load(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"MedMNIST: cannot read {path} as .npz ({e})") from e
    out = {}
    for s in splits:
        ki, kl = f"{s}_images", f"{s}_labels"
        missing = [k for k in (ki, kl) if k not in data.files]
        if missing:
            raise DatasetError(f"MedMNIST: {path} lacks key(s) {missing}; it has {sorted(data.files)}")
        x, y = data[ki], data[kl]
        if len(x) != len(y):
            raise DatasetError(f"MedMNIST: {path}: {ki} has {len(x)} images but {kl} has {len(y)} labels")
        if x.ndim not in (3, 4):
            raise DatasetError(f"MedMNIST: {path}: {ki} has shape {x.shape}, expected (n, H, W) or (n, H, W, 3)")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        out[s] = (x.astype(np.uint8), y.astype(np.int64))
    return out
