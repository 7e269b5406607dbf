"""Tuberculosis (TB) Chest X-ray Database (Rahman et al., IEEE Access 2020): ``Normal/*.png``,
``Tuberculosis/*.png`` (released inside ``TB_Chest_Radiography_Database/``). No patient ids."""

from __future__ import annotations

from .core import Record, check_readable, resolve_root, scan_class_folders

__all__ = ["CLASSES", "tb_records"]

CLASSES = ("Normal", "Tuberculosis")


def tb_records(root, *, verify=False, skip_bad=False) -> list[Record]:
    base = resolve_root(root, "TB Chest X-ray", CLASSES, ("TB_Chest_Radiography_Database",))
    recs = scan_class_folders(base, CLASSES, dataset="TB Chest X-ray", skip_bad=skip_bad)
    if verify or skip_bad:
        recs = check_readable(recs, skip_bad, "TB Chest X-ray")
    return recs
