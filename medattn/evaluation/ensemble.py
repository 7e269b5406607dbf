"""Seed ensembles: the class probabilities of models that differ only in their seed, averaged per case.

The models must have scored the same cases in the same order; a file whose case names or labels differ from the
first file's is an error that names both files (averaging misaligned predictions would give a plausible but wrong
number).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

__all__ = ["seed_ensemble", "seed_groups"]


def seed_ensemble(files: Sequence[str | Path], parts: Sequence[tuple[str, str, str]]) -> dict[str, np.ndarray | None]:
    """Average the probabilities of several prediction files (``.npz``).

    ``parts`` names, for each set of cases, ``(prob_key, names_key, labels_key)`` inside the files, e.g.
    ``[("prob", "names", "y_true"), ("val_prob", "val_names", "val_y")]``. Returns ``{prob_key: mean probabilities}``
    plus ``{labels_key: labels}``; a part some file lacks is ``None`` for both keys (older files may lack it), so the
    caller can say that part has no ensemble. Raises ``ValueError`` when fewer than two files are given or when a
    file's names, labels or probability shape differ from the first file's.
    """
    files = [Path(f) for f in files]
    if len(files) < 2:
        raise ValueError(f"a seed ensemble needs at least two prediction files, got {len(files)}")
    data = [np.load(f, allow_pickle=False) for f in files]
    out: dict[str, np.ndarray | None] = {}
    for prob_key, names_key, labels_key in parts:
        if any(prob_key not in d.files or names_key not in d.files or labels_key not in d.files for d in data):
            out[prob_key] = out[labels_key] = None
            continue
        ref = data[0]
        for f, d in zip(files[1:], data[1:]):
            for key in (names_key, labels_key):
                if d[key].shape != ref[key].shape or not np.array_equal(d[key], ref[key]):
                    raise ValueError(f"{f}: {key!r} differs from {files[0]}'s: the files did not score the same "
                                     "cases in the same order")
            if d[prob_key].shape != ref[prob_key].shape:
                raise ValueError(f"{f}: {prob_key!r} has shape {d[prob_key].shape}, {files[0]} has "
                                 f"{ref[prob_key].shape}")
        out[prob_key] = np.mean([d[prob_key].astype("float64") for d in data], axis=0)
        out[labels_key] = np.asarray(ref[labels_key])
    return out


def seed_groups(rows, by: str, path: Callable[[str, int], Path],
                log: Callable[[str], None] = print) -> Iterator[tuple[str, list[dict], list[Path]]]:
    """The groups of ``rows`` (same value of field ``by``: a model, a backbone) with several seeds, as
    ``(name, rows in seed order, prediction files)``; ``path(name, seed)`` is a run's prediction file. A group with a
    missing file is logged (``"! no seed ensemble for ...: missing ..."``) and left out, never silently."""
    for name in dict.fromkeys(r[by] for r in rows):
        rs = sorted((r for r in rows if r[by] == name), key=lambda r: r["seed"])
        if len(rs) < 2:
            continue
        files = [Path(path(name, r["seed"])) for r in rs]
        if missing := [str(f) for f in files if not f.exists()]:
            log(f"! no seed ensemble for {name}: missing {', '.join(missing)}")
            continue
        yield name, rs, files
