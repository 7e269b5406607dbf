"""Brain Tumor MRI (Nickparvar, Kaggle, CC0): ``Training|Testing/<class>/*.jpg``, four classes.

Classes: glioma 0, meningioma 1, notumor 2, pituitary 3. No patient ids: the group of an image is its file until
the audit merges duplicates (the release has many exact and near duplicates across Training and Testing).
"""

from __future__ import annotations

from pathlib import Path

from .core import Record, check_readable, resolve_root, scan_class_folders

__all__ = ["CLASSES", "SPLITS", "brain_mri_records", "find_root"]

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
SPLITS = {"train": "Training", "test": "Testing"}


def find_root(root) -> Path:
    return resolve_root(root, "Brain Tumor MRI", tuple(SPLITS.values()))


def brain_mri_records(root, splits=("train", "test"), *, verify: bool = False, skip_bad: bool = False) -> list[Record]:
    base = find_root(root)
    out = []
    for split in splits:
        folder = base / SPLITS[split]
        out += scan_class_folders(folder, CLASSES, dataset="Brain Tumor MRI", split=split, skip_bad=skip_bad,
                                  group_fn=lambda p, s=split: f"{SPLITS[s]}/{p.parent.name}/{p.name}")
    if verify or skip_bad:
        out = check_readable(out, skip_bad, "Brain Tumor MRI")
    return out
