"""The split helpers the scripts share."""

import numpy as np


def test_validation_part_splits_a_training_part_by_label_and_whole_groups():
    """The helper every script uses for its validation part: indices of the part it was given, disjoint, covering
    it, stratified and never splitting a group, and the same as holdout_split on the part."""
    from medattn.datasets import holdout_split, validation_part

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    groups = np.arange(300) // 2  # pairs
    part = np.flatnonzero(np.arange(300) % 5 != 0)
    train, val = validation_part(labels, groups, part, 0.2, seed=4)
    assert not set(train) & set(val) and sorted([*train, *val]) == sorted(part)
    assert not set(groups[train]) & set(groups[val])
    assert 0.15 < len(val) / len(part) < 0.25
    ref = holdout_split(labels[part], groups[part], (0.8, 0.2, 0.0), seed=4)
    assert list(val) == list(part[ref["val"]])


def test_a_class_of_one_cannot_be_split_and_says_which():
    import pytest

    from medattn.datasets.splits import TooFewToSplit, kfold_split

    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(TooFewToSplit, match="class 2 has only 1 image") as caught:
        kfold_split(labels, np.arange(7), 2, seed=0)
    assert issubclass(TooFewToSplit, ValueError)  # callers that catch ValueError keep working
    # named by the names the labels index, as a list or as {label: name}; a label without a name stays a number
    assert caught.value.message(["benign", "malignant", "normal"]).startswith("class 'normal' has only 1 image")
    assert caught.value.message({0: "a", 2: "c"}).startswith("class 'c' has only 1 image")
    assert caught.value.message(["benign", "malignant"]).startswith("class 2 has only 1 image")
