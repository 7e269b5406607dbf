"""Tiny synthetic dataset trees in the public release layouts, for loader, fault and audit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def natural_image(seed: int, size=(64, 64)) -> np.ndarray:
    """A smooth random greyscale image (sum of blobs): structured enough for perceptual hashing."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(4, 16)
        img += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    img = (img - img.min()) / (np.ptp(img) + 1e-9)
    return (img * 255).astype(np.uint8)


def save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def make_busi(root: Path, n=(3, 2, 2), size=(48, 40)) -> Path:
    base = root / "Dataset_BUSI_with_GT"
    seed = 0
    for cls, k in zip(("benign", "malignant", "normal"), n):
        for i in range(1, k + 1):
            seed += 1
            img = natural_image(seed, size)
            save(base / cls / f"{cls} ({i}).png", img if i % 2 else np.stack([img] * 3, -1))
            mask = np.zeros(size, np.uint8)
            if cls != "normal":
                mask[5:15, 5:20] = 255
            save(base / cls / f"{cls} ({i})_mask.png", mask)
    # one benign lesion with two extra masks (union)
    extra = np.zeros(size, np.uint8)
    extra[30:35, 30:38] = 255
    save(base / "benign" / "benign (1)_mask_1.png", extra)
    return root


def make_mias(root: Path, per=(3, 2)) -> Path:
    base = root / "MIAS_ROIs"
    seed = 100
    for split in ("train", "val", "test"):
        for cls, k in zip(("Normal", "Tumor"), per):
            for i in range(1, k + 1):
                seed += 1
                save(base / split / f"{cls} ({i}).png", natural_image(seed, (120, 120)))
    return root


def make_class_tree(root: Path, classes, per_class=2, pattern="{cls}_{i}.jpg", subdir=None, size=(32, 32),
                    seed=200) -> Path:
    for c, cls in enumerate(classes):
        for i in range(per_class):
            folder = root / cls / subdir if subdir else root / cls
            save(folder / pattern.format(cls=cls, i=i, c=c), natural_image(seed + 10 * c + i, size))
    return root


def make_brain(root: Path) -> Path:
    for split, pre in (("Training", "Tr"), ("Testing", "Te")):
        make_class_tree(root / split, ("glioma", "meningioma", "notumor", "pituitary"),
                        pattern=pre + "-{cls}_{i}.jpg", seed=300 if pre == "Tr" else 400)
    return root


def make_kermany(root: Path) -> Path:
    base = root / "chest_xray"
    for s, split in enumerate(("train", "val", "test")):
        for i in range(2):
            save(base / split / "NORMAL" / f"IM-{s}{i:03d}-0001.jpeg", natural_image(500 + 10 * s + i))
            save(base / split / "PNEUMONIA" / f"person{s}{i}_bacteria_{i}.jpeg", natural_image(600 + 10 * s + i))
        save(base / split / "PNEUMONIA" / f"person{s}0_virus_9.jpeg", natural_image(700 + s))
    return root


def make_medmnist(path: Path, n=(10, 4, 4), size=28) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 255, (k, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (k, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
