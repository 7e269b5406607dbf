"""Kermany OCT2017 retinal OCT: ``{train,test}/{CNV,DME,DRUSEN,NORMAL}/<CLASS>-<patient>-<n>.jpeg``.
The patient id is the middle field; splits made here group by patient."""

from __future__ import annotations

import re
from pathlib import Path

from .core import DatasetError, Record, check_readable, resolve_root, scan_class_folders

__all__ = ["CLASSES", "oct_patient_id", "oct_records"]

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
_NAME = re.compile(r"^(CNV|DME|DRUSEN|NORMAL)-(\d+)-\d+\.jpe?g$", re.IGNORECASE)


def oct_patient_id(path) -> str:
    m = _NAME.match(Path(path).name)
    if not m:
        raise DatasetError(f"OCT2017: cannot parse a patient id from {path} (expected '<CLASS>-<patient>-<n>.jpeg')")
    return m.group(2)


def oct_records(root, splits=("train", "test"), *, verify=False, skip_bad=False) -> list[Record]:
    base = resolve_root(root, "OCT2017", splits, ("OCT2017",))
    out = []
    for split in splits:
        out += scan_class_folders(base / split, CLASSES, dataset="OCT2017", split=split, group_fn=oct_patient_id,
                                  skip_bad=skip_bad)
    if verify or skip_bad:
        out = check_readable(out, skip_bad, "OCT2017")
    return out
