"""COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021), layout as released on Kaggle:
``COVID/images/*.png``, ``Normal/images``, ``Lung_Opacity/images``, ``Viral Pneumonia/images``, each with a
``masks/`` folder of lung masks of the same file names (released at 256x256 while images are 299x299, so
sizes are not compared). No patient ids (each image is its own group)."""

from __future__ import annotations

from pathlib import Path

from .core import DatasetError, Record, check_readable, resolve_root, scan_class_folders

__all__ = ["CLASSES", "covid_radiography_records"]

CLASSES = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")


def covid_radiography_records(root, *, with_masks: bool = True, verify=False, skip_bad=False) -> list[Record]:
    base = resolve_root(root, "COVID-19 Radiography", CLASSES, ("COVID-19_Radiography_Dataset",))
    recs = scan_class_folders(base, CLASSES, dataset="COVID-19 Radiography", subdir="images", skip_bad=skip_bad)
    if with_masks:
        out = []
        for r in recs:
            m = Path(r.path).parent.parent / "masks" / Path(r.path).name
            if not m.is_file():
                raise DatasetError(f"COVID-19 Radiography: image {r.path} has no lung mask (expected {m})")
            out.append(Record(r.path, r.label, r.label_name, (str(m),), r.group, r.split))
        recs = out
    if verify or skip_bad:
        recs = check_readable(recs, skip_bad, "COVID-19 Radiography")
    return recs
