"""MIAS mammography ROIs as released with the deep-fusion paper (Sci. Rep. 2020), and the authors' patch protocol.

Layout: ``MIAS_ROIs/{train,val,test}/Normal (N).png`` and ``Tumor (N).png``, 120x120 greyscale; ``trainval`` is
the union of train and val and is not read (it would double-count). Labels: normal 0, tumour 1.

Protocol (docs/papers.md section 2): random 72x72 training patches (top-left corner uniform over the 49x49
valid positions) with per-class counts, and a 72x72 window with stride 12 over each test ROI (5 x 5 = 25 patches),
the ROI id kept for the majority vote.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .core import DatasetError, Record, natural_key, read_image, resolve_root

__all__ = ["CLASSES", "SPLITS", "mias_records", "load_rois", "random_patches", "sliding_windows", "find_root"]

CLASSES = ("Normal", "Tumor")
SPLITS = ("train", "val", "test")
_NAME = re.compile(r"^(Normal|Tumor) \((\d+)\)\.png$")


def find_root(root) -> Path:
    return resolve_root(root, "MIAS ROIs", SPLITS, ("MIAS_ROIs",))


def mias_records(root, splits=SPLITS) -> list[Record]:
    """Records of the requested splits (official folders). Errors on a missing split folder, a file whose
    name is not ``Normal (N).png`` / ``Tumor (N).png``, or a split without both classes."""
    base = find_root(root)
    out = []
    for split in splits:
        folder = base / split
        if not folder.is_dir():
            raise DatasetError(f"MIAS ROIs: split folder {folder} is missing (expected {list(SPLITS)})")
        recs = []
        for p in sorted(folder.iterdir(), key=natural_key):
            if not p.is_file() or p.name.startswith("."):
                continue
            m = _NAME.match(p.name)
            if not m:
                raise DatasetError(f"MIAS ROIs: unexpected file name {p} (expected 'Normal (N).png' or 'Tumor (N).png')")
            cls = m.group(1)
            recs.append(Record(str(p), CLASSES.index(cls), cls, (), f"{split}/{p.name}", split))
        labels = {r.label for r in recs}
        if labels != {0, 1}:
            raise DatasetError(f"MIAS ROIs: split folder {folder} must hold both Normal and Tumor ROIs, "
                               f"found classes {sorted(CLASSES[i] for i in labels)}")
        out.extend(recs)
    return out


def load_rois(records, min_size: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """Decode ROIs into ``(n, H, W)`` uint8 and labels; every ROI must share one size of at least ``min_size``."""
    imgs = [read_image(r.path) for r in records]
    shapes = [im.shape for im in imgs]
    if len(set(shapes)) > 1:
        common = max(set(shapes), key=shapes.count)
        odd = [f"{r.path} ({im.shape[1]}x{im.shape[0]})" for r, im in zip(records, imgs) if im.shape != common][:5]
        raise DatasetError(f"MIAS ROIs: ROIs differ in size (most are {common[1]}x{common[0]}); differing: {odd}")
    for r, im in zip(records, imgs):
        if min(im.shape) < min_size:
            raise DatasetError(f"MIAS ROIs: {r.path} is {im.shape[1]}x{im.shape[0]}, smaller than the "
                               f"{min_size}x{min_size} patch")
    return np.stack(imgs), np.array([r.label for r in records], dtype=np.int32)


def random_patches(rois: np.ndarray, labels: np.ndarray, per_class: dict[int, int], size: int = 72,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_class[c]`` random ``size`` x ``size`` crops from EACH ROI of class ``c`` (the authors used about
    1,000 per tumour ROI and 250 per normal ROI). Returns patches ``(N, size, size)``, labels and ROI indices."""
    rng = np.random.default_rng(seed)
    h, w = rois.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"ROIs are {w}x{h}, smaller than the patch size {size}")
    patches, labs, idx = [], [], []
    for i, (roi, lab) in enumerate(zip(rois, labels)):
        k = int(per_class.get(int(lab), 0))
        ys = rng.integers(0, h - size + 1, k)
        xs = rng.integers(0, w - size + 1, k)
        for y, x in zip(ys, xs):
            patches.append(roi[y:y + size, x:x + size])
        labs += [lab] * k
        idx += [i] * k
    return np.stack(patches), np.array(labs, np.int32), np.array(idx, np.int32)


def sliding_windows(rois: np.ndarray, size: int = 72, stride: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """All ``size`` windows at ``stride`` over each ROI (25 per 120x120 ROI); returns patches and ROI indices."""
    h, w = rois.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"ROIs are {w}x{h}, smaller than the window {size}")
    offs_y = range(0, h - size + 1, stride)
    offs_x = range(0, w - size + 1, stride)
    patches = [roi[y:y + size, x:x + size] for roi in rois for y in offs_y for x in offs_x]
    per = len(offs_y) * len(offs_x)
    return np.stack(patches), np.repeat(np.arange(len(rois), dtype=np.int32), per)
