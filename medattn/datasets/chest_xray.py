"""Chest X-rays: the Kermany layout and the 4-class test set.

Kermany et al. (Cell 2018) release: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``. File names carry
patient ids: ``personNN_bacteria_MMM.jpeg`` / ``personNN_virus_MMM.jpeg`` -> ``personNN``,
``IM-NNNN-MMMM.jpeg`` -> ``IM-NNNN``, ``NORMAL2-IM-NNNN-MMMM.jpeg`` -> ``NORMAL2-IM-NNNN``. Splits made here group
by patient.

The 4-class set (``test/{NORMAL,PNEUMONIA,COVID19,TURBERCULOSIS}``) adds COVID-19 images from other hospitals
(file names ``COVID19(N).jpeg``, no patient ids, so each image is its own group) and a tuberculosis folder (absent
in our copy; the loader takes the classes that are present when ``classes=None``). A classifier can learn the
COVID-19 source instead of the disease: say so wherever results on that class are reported.
"""

from __future__ import annotations

import re
from pathlib import Path

from .core import DatasetError, Record, check_readable, resolve_root, scan_class_folders

__all__ = ["KERMANY_CLASSES", "FOUR_CLASSES", "kermany_patient_id", "kermany_records", "chest4_records"]

KERMANY_CLASSES = ("NORMAL", "PNEUMONIA")
FOUR_CLASSES = ("NORMAL", "PNEUMONIA", "COVID19", "TURBERCULOSIS")
_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)
_COVID = re.compile(r"^COVID19\s*\(\d+\)", re.IGNORECASE)


def kermany_patient_id(path) -> str:
    """Patient id parsed from a Kermany file name; DatasetError naming the file when none can be parsed."""
    name = Path(path).name
    for pat in (_PERSON, _IM):
        m = pat.match(name)
        if m:
            return m.group(1)
    raise DatasetError(f"Chest X-ray: cannot parse a patient id from {path} (expected 'personNN_bacteria_MMM', "
                       "'personNN_virus_MMM' or 'IM-NNNN-MMMM' file names)")


def _group(p: Path) -> str:
    if _COVID.match(p.name):
        return f"{p.parent.name}/{p.name}"
    return kermany_patient_id(p)


def kermany_records(root, splits=("train", "val", "test"), *, verify=False, skip_bad=False) -> list[Record]:
    base = resolve_root(root, "Chest X-ray (Kermany)", splits, ("chest_xray",))
    out = []
    for split in splits:
        out += scan_class_folders(base / split, KERMANY_CLASSES, dataset="Chest X-ray (Kermany)", split=split,
                                  group_fn=kermany_patient_id, skip_bad=skip_bad)
    if verify or skip_bad:
        out = check_readable(out, skip_bad, "Chest X-ray (Kermany)")
    return out


def chest4_records(root, split: str = "test", classes=None, *, verify=False, skip_bad=False) -> list[Record]:
    """The 4-class layout ``<split>/{NORMAL,PNEUMONIA,COVID19,TURBERCULOSIS}``; ``classes=None`` takes those of
    the four that are present (in that order) and prints which are absent."""
    base = resolve_root(root, "Chest X-ray (4-class)", (split,))
    folder = base / split
    if classes is None:
        classes = tuple(c for c in FOUR_CLASSES if (folder / c).is_dir())
        missing = [c for c in FOUR_CLASSES if c not in classes]
        if missing:
            print(f"[medattn] Chest X-ray (4-class): class folder(s) {missing} absent in {folder}; using {list(classes)}")
        if not classes:
            raise DatasetError(f"Chest X-ray (4-class): {folder} has none of the class folders {list(FOUR_CLASSES)}")
    out = scan_class_folders(folder, classes, dataset="Chest X-ray (4-class)", split=split, group_fn=_group,
                             skip_bad=skip_bad)
    if verify or skip_bad:
        out = check_readable(out, skip_bad, "Chest X-ray (4-class)")
    return out
