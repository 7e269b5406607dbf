"""BUSI breast ultrasound (Al-Dhabyani et al., Data in Brief 2020), layout as released.

``Dataset_BUSI_with_GT/<class>/<class> (N).png`` with ``<class> (N)_mask.png`` and, for a few lesions,
``_mask_1.png``, ``_mask_2.png``: the lesion mask is their union. Classes ``benign`` (0), ``malignant`` (1),
``normal`` (2); every normal mask is empty. Images may be greyscale or RGB.

Known problems (see :mod:`medattn.datasets.audit`): duplicated and near-duplicated images, and one lesion stored
under both benign and malignant; use the audit's groups when splitting.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .core import DatasetError, Record, check_readable, image_size, natural_key, read_image, resolve_root

__all__ = ["CLASSES", "busi_records", "load_mask", "find_root", "present_classes"]

CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?\.png$", re.IGNORECASE)


def find_root(root, classes=CLASSES) -> Path:
    """``busi/`` or ``busi/Dataset_BUSI_with_GT/``: the folder holding the class folders ``classes``."""
    return resolve_root(root, "BUSI", classes, ("Dataset_BUSI_with_GT",))


def present_classes(root) -> tuple[str, ...]:
    """The BUSI classes whose folders exist in ``root`` (or its release folder), in BUSI's order; DatasetError
    naming the expected layout when there is none."""
    if root is None or not Path(root).exists():
        find_root(root)  # raises the usual message
    for cand in (Path(root), Path(root) / "Dataset_BUSI_with_GT"):
        found = tuple(c for c in CLASSES if (cand / c).is_dir())
        if found:
            return found
    find_root(root)  # raises: names the expected class folders and what was found
    raise AssertionError("unreachable")


def busi_records(root, *, classes=CLASSES, verify: bool = False, skip_bad: bool = False,
                 problems: list | None = None) -> list[Record]:
    """One record per image, with all its mask files.

    ``classes``: the class folders to read (all must exist), or ``"present"``: those of ``benign``, ``malignant``,
    ``normal`` that the folder has (another hospital's benign/malignant set, a user's own images in the BUSI
    layout); the absent ones are printed. Labels are always BUSI's (benign 0, malignant 1, normal 2), whichever
    classes are read, so a model trained on BUSI scores them correctly. Checks: class folders present and non-empty, every image
    has at least one mask, every mask has its image, mask and image sizes agree (header only; ``verify=True``
    also decodes every file). The group id is the file's class/name (duplicate groups come from the audit).

    A per-image problem (an unreadable header, an image without its mask, a mask of another size) raises
    DatasetError naming the file, unless ``problems`` is a list: then the problem is appended to it, that image is
    left out, and the scan goes on (the audit uses this to report every problem at once)."""
    classes = _classes_to_read(root, classes)
    base = find_root(root, classes)
    records: list[Record] = []
    for cls in classes:
        images, masks = _class_files(base / cls, classes)
        for img in sorted(images, key=natural_key):
            try:
                ms = _checked_masks(img, masks.get(img.stem, []))
            except DatasetError as e:
                if problems is None:
                    raise
                problems.append(str(e))
                continue
            records.append(Record(str(img), CLASSES.index(cls), cls, tuple(str(m) for m in ms), f"{cls}/{img.name}",
                                  None))
    if verify or skip_bad:
        records = check_readable(records, skip_bad, "BUSI")
    return records


def _classes_to_read(root, classes) -> tuple[str, ...]:
    """The class folders to read: ``classes`` checked against BUSI's, or with ``"present"`` those the folder has
    (the absent ones printed)."""
    if isinstance(classes, str):
        if classes != "present":
            raise ValueError(f"classes must be a sequence of class names or 'present', got {classes!r}")
        classes = present_classes(root)
        absent = [c for c in CLASSES if c not in classes]
        if absent:
            print(f"[medattn] BUSI: {root} has no {', '.join(absent)} folder; reading {', '.join(classes)}",
                  flush=True)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise DatasetError(f"BUSI: unknown class(es) {unknown} (the BUSI layout has {list(CLASSES)})")
    return tuple(classes)


def _class_files(folder: Path, classes) -> tuple[list[Path], dict[str, list[Path]]]:
    """A class folder's images and its masks by image stem; a missing or empty folder, a file of another kind and
    a mask without its image are refused, naming them."""
    if not folder.is_dir():
        raise DatasetError(f"BUSI: class folder {folder} is missing (expected {list(classes)})")
    masks: dict[str, list[Path]] = {}
    images: list[Path] = []
    for p in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        m = _MASK.match(p.name)
        if m:
            masks.setdefault(m.group("stem"), []).append(p)
        elif p.suffix.lower() == ".png":
            images.append(p)
        else:
            raise DatasetError(f"BUSI: unexpected file {p} (expected '<class> (N).png' or '..._mask.png')")
    if not images:
        raise DatasetError(f"BUSI: class folder {folder} has no images")
    stems = {p.stem for p in images}
    orphans = sorted(str(m) for s, ms in masks.items() if s not in stems for m in ms)
    if orphans:
        raise DatasetError(f"BUSI: mask(s) without an image: {orphans[:5]}"
                           f"{' ...' if len(orphans) > 5 else ''} (expected '<stem>.png' beside each mask)")
    return images, masks


def _checked_masks(img: Path, masks: list[Path]) -> list[Path]:
    """An image's masks, sorted; none, or one of another size (from the headers), is refused naming the file."""
    ms = sorted(masks)
    if not ms:
        raise DatasetError(f"BUSI: image {img} has no mask (expected {img.stem}_mask.png)")
    size = image_size(img)
    for m in ms:
        msize = image_size(m)
        if msize != size:
            raise DatasetError(f"BUSI: mask {m} is {msize[0]}x{msize[1]} but its image {img} is "
                               f"{size[0]}x{size[1]} (width x height); they must match")
    return ms


def load_mask(record: Record) -> np.ndarray:
    """The union of a record's mask files as a uint8 0/1 array of the image's size."""
    out = None
    for m in record.mask_paths:
        a = read_image(m) > 127
        out = a if out is None else (out | a)
    if out is None:
        raise DatasetError(f"BUSI: {record.path} has no mask files")
    return out.astype(np.uint8)
