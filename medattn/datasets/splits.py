"""Deterministic, stratified, group-aware splits: holdout and k-fold.

Groups are patient ids (where file names carry them) merged with the audit's duplicate groups, so that no
patient and no duplicate (exact or near) spans two splits. ``dedup`` keeps one image per group.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

__all__ = ["TooFewToSplit", "group_pairs", "merge_groups", "holdout_split", "validation_part", "kfold_split", "dedup_indices", "check_no_leak"]


def group_pairs(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Union-find: connected components of size > 1, each sorted, in order of their first member."""
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps = defaultdict(list)
    for i in range(n):
        comps[find(i)].append(i)
    return sorted((c for c in comps.values() if len(c) > 1), key=lambda c: c[0])


def merge_groups(n: int, base_groups: Sequence | None = None, duplicate_groups: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """Integer group id per item: items sharing a base group (patient) or a duplicate group end in one group."""
    pairs = []
    if base_groups is not None:
        if len(base_groups) != n:
            raise ValueError(f"base_groups has {len(base_groups)} entries for {n} items")
        first: dict = {}
        for i, g in enumerate(base_groups):
            if g is None:
                continue
            if g in first:
                pairs.append((first[g], i))
            else:
                first[g] = i
    for g in duplicate_groups:
        pairs += [(g[0], j) for j in g[1:]]
    comps = group_pairs(n, pairs)
    out = np.arange(n)
    for c in comps:
        out[c] = c[0]
    _, ids = np.unique(out, return_inverse=True)
    return ids


class TooFewToSplit(ValueError):
    """A class with fewer than two items in the part being split: the data cannot be split stratified (the runner
    stops the run with this one line, naming the class by the names its script gave, exit 2)."""

    def __init__(self, label, count: int):
        self.label, self.count = label, count
        super().__init__(self.message())

    def message(self, class_names=None) -> str:
        """The one line, the class named by ``class_names`` (a list its labels index, or ``{label: name}``)."""
        names = class_names if isinstance(class_names, dict) else dict(enumerate(class_names or ()))
        name = names.get(self.label, self.label)
        return (f"class {name!r} has only {self.count} image(s) in the part being split; stratified splitting "
                f"needs at least 2 of each class: too few images for this profile's splits")


def _fold_of(labels, groups, n_splits, seed):
    values, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.min())
    if smallest < 2:
        raise TooFewToSplit(values[np.argmin(counts)].item(), smallest)
    n_splits = min(n_splits, smallest)  # tiny data: fewer, larger folds (fractions become approximate)
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.empty(len(labels), dtype=int)
    for k, (_, test) in enumerate(sgkf.split(np.zeros(len(labels)), labels, groups)):
        fold[test] = k
    return fold


def holdout_split(labels, groups, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` index arrays, stratified by label, whole groups only.

    The test part is one fold of ``round(1 / test)`` stratified group folds; val is one fold of the remainder
    split into ``round(rest / val)`` folds. Fractions are approximate when groups are large.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    idx = np.arange(len(labels))
    train_f, val_f, test_f = fractions
    if test_f > 0:
        fold = _fold_of(labels, groups, max(2, round(1 / test_f)), seed)
        test = idx[fold == 0]
        rest = idx[fold != 0]
    else:
        test, rest = idx[:0], idx
    if val_f > 0:
        k = max(2, round((train_f + val_f) / val_f))
        fold = _fold_of(labels[rest], groups[rest], k, seed + 1)
        val, train = rest[fold == 0], rest[fold != 0]
    else:
        val, train = rest[:0], rest
    out = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    check_no_leak(out, groups)
    return out



def validation_part(labels, groups, index, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A training part ``index`` (indices into ``labels`` and ``groups``) split into ``(train, validation)``
    indices: ``fraction`` of it for validation, stratified by label, whole groups only (:func:`holdout_split` on
    the part). What every script keeps aside to choose epochs, thresholds and settings without its test images."""
    index = np.asarray(index)
    part = holdout_split(np.asarray(labels)[index], np.asarray(groups)[index], (1 - fraction, fraction, 0.0),
                         seed=seed)
    return index[part["train"]], index[part["val"]]

def kfold_split(labels, groups, k: int = 5, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``k`` folds of ``{"train", "test"}`` indices, stratified, groups kept whole."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    fold = _fold_of(labels, groups, k, seed)
    idx = np.arange(len(labels))
    out = [{"train": idx[fold != f], "test": idx[fold == f]} for f in range(k)]
    for s in out:
        check_no_leak(s, groups)
    return out


def dedup_indices(groups) -> np.ndarray:
    """One index per group (the first), sorted."""
    _, first = np.unique(np.asarray(groups), return_index=True)
    return np.sort(first)


def check_no_leak(split: dict[str, np.ndarray], groups) -> None:
    """Raise ValueError naming a group that appears in two parts of ``split``."""
    groups = np.asarray(groups)
    seen: dict = {}
    for name, idx in split.items():
        for g in np.unique(groups[idx]).tolist():
            if g in seen and seen[g] != name:
                raise ValueError(f"group {g!r} is in both {seen[g]!r} and {name!r}")
            seen[g] = name
