"""Records, image reading with clear errors, and the scan of class-per-folder layouts shared by the loaders.

A :class:`Record` is one image: its path, integer label and class name, mask paths (if any), group id
(patient id where the file name carries one, else the file itself; the splitter adds duplicate groups) and the
split it came from in the public release (``"train"``, ``"test"``... or ``None``).

Every loader raises :class:`DatasetError` (a ``ValueError``) naming the file and what was expected. With
``skip_bad=True`` unreadable files are skipped instead, and the loader prints how many and which.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["Record", "DatasetError", "read_image", "image_size", "scan_class_folders", "resolve_root",
           "IMAGE_SUFFIXES", "report_skipped", "check_readable", "natural_key"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")


class DatasetError(ValueError):
    """A malformed dataset: the message names the file(s) and what was expected."""


@dataclasses.dataclass(frozen=True)
class Record:
    path: str
    label: int
    label_name: str
    mask_paths: tuple[str, ...] = ()
    group: str | None = None
    split: str | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


def natural_key(p: Path):
    """Sort key that orders ``name (2)`` before ``name (10)``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def resolve_root(root, dataset: str, markers: Sequence[str], release_dirs: Sequence[str] = ()) -> Path:
    """The folder that holds ``markers`` (sub-folders or files): ``root`` itself or a release folder inside it.

    Raises :class:`DatasetError` naming what was looked for when neither has them.
    """
    if root is None:
        raise DatasetError(f"{dataset}: no data folder given (pass --data-dir or set MEDATTN_DATA_DIR)")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{dataset}: data folder {root} does not exist")
    for cand in [root] + [root / d for d in release_dirs]:
        if all((cand / m).exists() for m in markers):
            return cand
    present = sorted(p.name for p in root.iterdir())[:12]
    raise DatasetError(f"{dataset}: {root} does not have the expected layout: looked for {list(markers)} in it"
                       f"{' or in ' + ', '.join(str(root / d) for d in release_dirs) if release_dirs else ''}; "
                       f"found {present}")


def image_size(path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding; DatasetError if it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


def read_image(path, mode: str = "L") -> np.ndarray:
    """Decode an image fully into a uint8 array (``mode`` ``"L"`` grey or ``"RGB"``); greyscale and RGB files
    are both accepted. 16-bit and 32-bit greyscale files are scaled to 0-255 by their own range (min to max), not
    clipped (PIL's conversion saturates everything above 255). DatasetError for unreadable, truncated or empty
    files."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                a = np.zeros_like(a) if hi == lo else (a - lo) * (255.0 / (hi - lo))
                grey = np.round(a).astype(np.uint8)
                return grey if mode == "L" else np.repeat(grey[..., None], 3, axis=-1)
            return np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{path}: cannot decode image ({type(e).__name__}: {e}); the file may be truncated or "
                           "not an image") from e


MIN_IMAGE_SIDE = 16  # pixels: an image smaller than this on either side holds nothing to learn from
CONTENT_PROBLEMS = ("too_small", "transparent", "empty_mask", "full_mask")


def content_problems(path, image: np.ndarray, masks: Sequence[np.ndarray] = (), label: str | None = None,
                     empty_mask_labels: Sequence[str] = ("normal",), name=None) -> list[tuple[str, str]]:
    """What is wrong with a decoded image and its masks, as ``(kind, message)`` pairs (``kind`` one of
    :data:`CONTENT_PROBLEMS`): a side under :data:`MIN_IMAGE_SIDE` pixels, transparent pixels in the file (their
    colour is undefined once the alpha channel is dropped), every mask empty for a class that has lesions (any
    label not in ``empty_mask_labels``), or masks that cover the whole image. Messages name the file as ``name``
    (default: ``path``)."""
    out = []
    name = path if name is None else name
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        return [("too_small", f"{name}: image is {w}x{h}, under the {MIN_IMAGE_SIDE}-pixel minimum")]
    if _has_transparency(path):
        out.append(("transparent", f"{name}: has transparent pixels (an alpha channel below 255)"))
    if len(masks):
        union = np.any([np.asarray(m) > 0 for m in masks], axis=0)
        if label is not None and label not in empty_mask_labels and not union.any():
            out.append(("empty_mask", f"{name}: its {label} image has an empty mask"))
        if union.mean() >= 0.99:
            out.append(("full_mask", f"{name}: its mask covers the whole image"))
    return out


def _has_transparency(path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("RGBA", "LA", "PA") and not (im.mode == "P" and "transparency" in im.info):
                return False
            return int(np.asarray(im.convert("RGBA"))[..., 3].min()) < 255
    except (OSError, ValueError):
        return False


def check_readable(records: Iterable[Record], skip_bad: bool, dataset: str) -> list[Record]:
    """Decode every image and mask once and check their content (:func:`content_problems`); raise on the first bad
    file, or skip bad records and report them."""
    good, bad = [], []
    for r in records:
        try:
            image = read_image(r.path)
            masks = [read_image(m) for m in r.mask_paths]
            problems = content_problems(r.path, image, masks, r.label_name if r.mask_paths else None)
            if problems:
                raise DatasetError(f"{dataset}: {problems[0][1]}")
            good.append(r)
        except DatasetError as e:
            if not skip_bad:
                raise
            bad.append((r.path, str(e)))
    report_skipped(dataset, bad)
    return good


def report_skipped(dataset: str, bad: Sequence[tuple[str, str]]) -> None:
    if bad:
        print(f"[medattn] {dataset}: skipped {len(bad)} bad file(s) (skip_bad=True):")
        for path, why in bad:
            print(f"  - {path}: {why}")


def scan_class_folders(
    root: Path,
    classes: Sequence[str],
    *,
    dataset: str,
    split: str | None = None,
    group_fn: Callable[[Path], str] | None = None,
    subdir: str | None = None,
    skip_bad: bool = False,
    allow_extra_folders: bool = False,
) -> list[Record]:
    """Records of a ``root/<class>/[<subdir>/]*.<image>`` layout, classes in the given order (label = index).

    Errors: a missing or empty class folder, an unexpected class folder (unless ``allow_extra_folders``), a
    non-image file in a class folder (skipped and reported with ``skip_bad``), a file name that ``group_fn``
    cannot parse.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{dataset}: folder {root} does not exist")
    present = {p.name for p in root.iterdir() if p.is_dir()}
    extra = present - set(classes)
    if extra and not allow_extra_folders:
        raise DatasetError(f"{dataset}: unexpected folder(s) {sorted(extra)} in {root}; expected only {list(classes)}")
    records, bad = [], []
    for label, cls in enumerate(classes):
        folder = root / cls / subdir if subdir else root / cls
        if not folder.is_dir():
            raise DatasetError(f"{dataset}: class folder {folder} is missing (expected classes {list(classes)})")
        files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=natural_key)
        images = []
        for p in files:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                images.append(p)
            elif skip_bad:
                bad.append((str(p), "not an image file name"))
            else:
                raise DatasetError(f"{dataset}: {p} is not an image (expected {', '.join(IMAGE_SUFFIXES)})")
        if not images:
            raise DatasetError(f"{dataset}: class folder {folder} has no images")
        for p in images:
            group = group_fn(p) if group_fn else f"{cls}/{p.name}"
            records.append(Record(str(p), label, cls, (), group, split))
    report_skipped(dataset, bad)
    return records
