"""Segmentation post-processing: the largest component, emptying small masks, the area chosen on held-out data."""

import numpy as np
import pytest

from medattn.evaluation import segmentation as S


def _mask(n=32, blobs=((8, 8, 5),), value=0.9):
    yy, xx = np.mgrid[:n, :n]
    m = np.full((n, n), 0.1, dtype=np.float32)
    for cy, cx, r in blobs:
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value
    return m


def test_largest_component_kept_small_masks_emptied():
    big_and_speck = _mask(blobs=((10, 10, 6), (25, 25, 1)))
    speck_only = _mask(blobs=((25, 25, 1),))
    prob = np.stack([big_and_speck, speck_only])[..., None]
    out = S.postprocess_masks(prob, min_area=0.01)
    assert out.shape == prob.shape and out.dtype == prob.dtype
    b = S.binarize(out)
    assert b[0, 10, 10] and not b[0, 25, 25]  # the speck beside the lesion is gone
    assert not b[1].any() and np.all(out[1] == 0)  # a mask below 1 % of the image is emptied
    assert out[0, 0, 0, 0] == np.float32(0.1)  # sub-threshold probabilities of a kept mask stay
    assert np.array_equal(S.binarize(S.postprocess_masks(prob, 0.0, largest_component=False)), S.binarize(prob))
    assert np.array_equal(prob, np.stack([big_and_speck, speck_only])[..., None])  # the input is not modified


def test_min_area_chosen_for_dice_over_all_images():
    """Lesion images with real masks and normal images where the model leaves small false blobs: the chosen area
    empties the false blobs and keeps the lesions, which raises the all-image Dice; with no false blobs it stays
    at the smallest candidate."""
    truth, prob = [], []
    for _ in range(6):
        t = np.zeros((32, 32), np.float32)
        t[4:16, 4:16] = 1
        truth.append(t)
        prob.append(_mask(blobs=((10, 10, 6),)))
    for _ in range(6):
        truth.append(np.zeros((32, 32), np.float32))
        prob.append(_mask(blobs=((20, 20, 2),)))  # about 1.2 % of the image
    truth, prob = np.stack(truth), np.stack(prob)
    area, scores = S.choose_min_area(truth, prob)
    assert area == 0.02 and scores[0.02] > scores[0.0]
    out = S.postprocess_masks(prob, area)
    assert S.segmentation_summary(truth, out)["false_positive_rate_empty"] == 0.0
    assert S.segmentation_summary(truth, prob)["false_positive_rate_empty"] == 1.0
    assert S.choose_min_area(truth[:6], prob[:6])[0] == 0.0


def test_gate_empties_flagged_masks_and_is_chosen_by_dice_over_all_images():
    from medattn.evaluation.segmentation import choose_gate, gate_masks

    truth = np.zeros((3, 8, 8, 1), "float32")
    truth[0, 2:6, 2:6] = 1  # a lesion image, then two normal images
    prob = np.zeros_like(truth)
    prob[0, 2:6, 2:6] = 0.9
    prob[1, :2, :2] = 0.8  # a false-positive lesion on a normal image
    prob[2, :2, :2] = 0.8
    g = gate_masks(prob, [False, True, False])
    assert g[1].max() == 0 and np.array_equal(g[0], prob[0]) and np.array_equal(g[2], prob[2])
    assert prob[1].max() == np.float32(0.8)  # a copy: the input is untouched
    # flags that empty the two false positives: mean Dice over all images 1/3 -> 1
    apply, scores = choose_gate(truth, prob, [False, True, True])
    assert apply and scores["without"] == pytest.approx(1 / 3) and scores["with"] == pytest.approx(1.0)
    # flags that empty the lesion image: worse, so not applied
    apply, scores = choose_gate(truth, prob, [True, False, False])
    assert not apply and scores["with"] < scores["without"]
    # no flag: a tie keeps the masks
    assert choose_gate(truth, prob, [False, False, False])[0] is False
    with pytest.raises(ValueError, match="3 masks but"):
        gate_masks(prob, [True, False])


def test_miss_breakdown_hand_cases():
    n = 8
    truth = np.zeros((6, n, n), dtype=np.float32)
    prob = np.zeros((6, n, n), dtype=np.float32)
    prob[0, 2:4, 2:4] = 0.9  # 0: normal image (a false positive is not a missed lesion)
    truth[1, 1:4, 1:4] = 1
    prob[1, 1:4, 1:4] = 0.9  # 1: found, Dice 1
    truth[2, 1:4, 1:4] = 1
    prob[2, 1:4, 1:4] = 0.3  # 2: nothing above 0.5, 0.3 at most inside the lesion -> empty
    truth[3, 1:4, 1:4] = 1
    prob[3, 6:8, 6:8] = 0.9  # 3: predicted far from the lesion -> elsewhere
    truth[4, 0:3, 0:3] = 1  # 9 lesion pixels
    prob[4, 2, 2] = 0.9  # one predicted pixel on the lesion ...
    prob[4, 4:8, 4:8] = 0.9  # ... and a 16-pixel component apart: Dice 2/26 < 0.1 -> wrong_component
    truth[5, 0:3, 0:3] = 1
    prob[5, 2:8, 4:8] = 0.9  # 24 pixels, not touching (column 3 is empty) ...
    prob[5, 2, 2:4] = 0.9  # ... joined through (2, 3) to one pixel on the lesion: Dice 2/35 -> small_overlap
    kinds = S.miss_kinds(truth, prob)
    assert kinds == ["-", "-", "empty", "elsewhere", "wrong_component", "small_overlap"]
    b = S.miss_breakdown(truth[..., None], prob[..., None])
    assert (b["n_lesion"], b["n_missed"]) == (5, 4)
    assert [b[f"missed_{k}"] for k in S.MISS_KINDS] == [1, 1, 1, 1]
    assert b["dice_found"] == pytest.approx(1.0)
    assert b["dice_lesion"] == pytest.approx((1 + 0 + 0 + 2 / 26 + 2 / 35) / 5)
    assert b["empty_max_prob_median"] == pytest.approx(0.3)
    # a lower miss bar or threshold changes the verdicts as it should
    assert S.miss_kinds(truth, prob, miss_dice=0.06)[4:] == ["-", "small_overlap"]  # Dice 0.077 and 0.057
    assert S.miss_kinds(truth, prob, threshold=0.2)[2] == "-"
    with pytest.raises(ValueError, match="shape"):
        S.miss_kinds(truth, prob[:, :4])
    with pytest.raises(ValueError, match="shape"):
        S.miss_breakdown(truth, prob[:, :4, :, None])
    assert S.miss_breakdown(truth[2], prob[2])["missed_empty"] == 1  # one (H, W) mask
