"""What a model's training images looked like, and whether new images look like them.

:func:`input_profile` summarises images as they are on disk (before any resizing or preprocessing): the share that
are greyscale, their heights and widths and their mean intensities (the 1st and 99th percentiles, 0-255). A
reproduction records it on every saved model's card (``input_profile``); :func:`unlike_profile` names what makes an
image unlike it, so ``medattn-predict`` can warn when a model is applied to images of another kind (a breast
ultrasound model on brain MRI, colour photographs for a greyscale model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["input_profile", "profile_of_files", "profile_of_arrays", "unlike_profile", "image_facts"]

SAMPLE = 200  # images read per profile (evenly spaced over the sorted list): enough for percentiles, cheap
GREY_TOLERANCE = 2.0  # mean absolute difference between channels (0-255) below which an image counts as greyscale


def image_facts(img: np.ndarray) -> dict:
    """``grey`` (channels equal within :data:`GREY_TOLERANCE`), ``height``, ``width``, ``mean`` (0-255) of a
    ``(H, W)`` or ``(H, W, C)`` uint8 image."""
    a = np.asarray(img, dtype=np.float32)
    grey = a.ndim == 2 or a.shape[-1] == 1 or float(np.abs(a[..., :3] - a[..., :1]).mean()) <= GREY_TOLERANCE
    return {"grey": bool(grey), "height": int(a.shape[0]), "width": int(a.shape[1]), "mean": float(a.mean())}


def input_profile(images: Iterable[np.ndarray]) -> dict:
    """The profile of ``images`` (uint8 arrays as read from disk); see the module docstring."""
    facts = [image_facts(i) for i in images]
    if not facts:
        raise ValueError("input_profile needs at least one image")

    def span(key):
        v = np.array([f[key] for f in facts], dtype=np.float64)
        return [round(float(np.percentile(v, 1)), 1), round(float(np.percentile(v, 99)), 1)]

    return {"n": len(facts), "grey_fraction": round(float(np.mean([f["grey"] for f in facts])), 3),
            "height": span("height"), "width": span("width"), "mean_intensity": span("mean")}


def profile_of_files(paths: Sequence[Path | str]) -> dict:
    """:func:`input_profile` of at most :data:`SAMPLE` of ``paths`` (evenly spaced over their sorted order; files
    that cannot be read are left out)."""
    from .core import DatasetError, read_image

    paths = sorted(str(p) for p in paths)
    paths = [paths[i] for i in _sample(len(paths))]

    def readable():
        for p in paths:
            try:
                yield read_image(Path(p), mode="RGB")
            except DatasetError:  # the loaders name and handle unreadable files; the profile describes the rest
                continue

    return input_profile(readable())


def profile_of_arrays(images) -> dict:
    """:func:`input_profile` of at most :data:`SAMPLE` of ``images`` (an array of images, evenly spaced)."""
    return input_profile(images[i] for i in _sample(len(images)))


def _sample(n: int) -> list[int]:
    """At most :data:`SAMPLE` indices of ``n`` items, evenly spaced, first and last included."""
    return list(range(n)) if n <= SAMPLE else np.linspace(0, n - 1, SAMPLE).round().astype(int).tolist()


def unlike_profile(facts: dict, profile: dict) -> list[str]:
    """What makes an image (:func:`image_facts`) unlike the training images of ``profile``: greyscale against
    colour, a size outside half the smallest to twice the largest training size, a mean intensity more than 25
    grey levels outside the training range. Empty when it looks like them."""
    problems = []
    share = profile.get("grey_fraction")
    if share is not None and share >= 0.95 and not facts["grey"]:
        problems.append("colour (the model trained on greyscale images)")
    elif share is not None and share <= 0.05 and facts["grey"]:
        problems.append("greyscale (the model trained on colour images)")
    for key in ("height", "width"):
        lo, hi = profile.get(key, (None, None))
        if lo is not None and not 0.5 * lo <= facts[key] <= 2 * hi:
            problems.append(f"{key} {facts[key]} px (training images: {lo:g}-{hi:g})")
    lo, hi = profile.get("mean_intensity", (None, None))
    if lo is not None and not lo - 25 <= facts["mean"] <= hi + 25:
        problems.append(f"mean intensity {facts['mean']:.0f} (training images: {lo:g}-{hi:g})")
    return problems
