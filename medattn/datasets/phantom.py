"""Synthetic breast-ultrasound-like phantoms in the BUSI release layout (for runs without the real data).

Every image is SYNTHETIC: a speckled tissue background (Rayleigh-distributed speckle over smooth horizontal
layers), and for ``benign`` a smooth oval hypo-echoic lesion, for ``malignant`` an irregular, spiculated
hypo-echoic lesion taller than wide with posterior acoustic shadowing, for ``normal`` no lesion (empty mask). The
files are written as ``Dataset_BUSI_with_GT/<class>/<class> (N).png`` with ``_mask.png`` so that
:func:`medattn.datasets.busi_records` reads them exactly like the real BUSI; a ``SYNTHETIC.txt`` marker says what
they are. Nothing here resembles patient data; results on it only show that the pipeline runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_phantom_busi", "phantom_image"]

MARKER = "SYNTHETIC.txt"


def _speckle_background(rng, h, w):
    yy = np.linspace(0, 1, h)[:, None]
    layers = 0.55 + 0.25 * np.sin(2 * np.pi * (yy * rng.uniform(1.5, 3.0) + rng.uniform()))
    layers = layers * (1.1 - 0.5 * yy)  # attenuation with depth
    speckle = rng.rayleigh(0.45, (h, w))
    return layers * speckle


def _lesion_mask(rng, h, w, kind):
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.35, 0.6) * h, rng.uniform(0.3, 0.7) * w
    if kind == "benign":
        ry, rx = rng.uniform(0.07, 0.12) * h, rng.uniform(0.12, 0.2) * w  # wider than tall, smooth
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        return r <= 1.0
    ry, rx = rng.uniform(0.1, 0.16) * h, rng.uniform(0.07, 0.12) * w  # taller than wide, irregular margin
    ang = np.arctan2(yy - cy, xx - cx)
    k = rng.integers(5, 9)
    spikes = 1 + 0.25 * np.sin(k * ang + rng.uniform(0, 6)) + 0.12 * np.sin(2 * k * ang + rng.uniform(0, 6))
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return r <= spikes


def phantom_image(kind: str, seed: int, size=(192, 256)) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image uint8 (H, W), mask uint8 0/255)`` phantom of ``kind`` benign | malignant | normal."""
    if kind not in ("benign", "malignant", "normal"):
        raise ValueError(f"kind must be benign, malignant or normal, got {kind!r}")
    rng = np.random.default_rng(seed)
    h, w = size
    img = _speckle_background(rng, h, w)
    mask = np.zeros((h, w), bool)
    if kind != "normal":
        mask = _lesion_mask(rng, h, w, kind)
        img = np.where(mask, img * rng.uniform(0.15, 0.3), img)
        if kind == "malignant":  # posterior acoustic shadow below the lesion
            cols = mask.any(axis=0)
            bottom = np.where(mask.any(axis=1))[0].max()
            shadow = np.zeros((h, w))
            shadow[bottom:, cols] = 0.5
            img = img * (1 - shadow)
        else:  # posterior enhancement below a benign cyst-like lesion
            cols = mask.any(axis=0)
            bottom = np.where(mask.any(axis=1))[0].max()
            img[bottom:bottom + h // 8, cols] *= 1.3
    img = np.clip(img / np.percentile(img, 99.5), 0, 1)
    return (img * 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def make_phantom_busi(root, counts=(40, 25, 15), seed: int = 0, size=(192, 256)) -> Path:
    """Write benign/malignant/normal phantoms (``counts``) under ``root`` in the BUSI layout; returns ``root``."""
    from PIL import Image

    root = Path(root)
    base = root / "Dataset_BUSI_with_GT"
    for c, (kind, n) in enumerate(zip(("benign", "malignant", "normal"), counts)):
        (base / kind).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            img, mask = phantom_image(kind, seed * 100_000 + c * 10_000 + i, size)
            Image.fromarray(img).save(base / kind / f"{kind} ({i}).png")
            Image.fromarray(mask).save(base / kind / f"{kind} ({i})_mask.png")
    (root / MARKER).write_text("SYNTHETIC phantom images made by medattn.datasets.phantom; not patient data.\n")
    return root
