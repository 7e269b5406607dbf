import numpy as np
import pytest

from medattn.evaluation import per_image_dice, per_image_iou, pixel_accuracy, segmentation_summary


def test_two_by_two_dice_by_hand():
    t = np.array([[1, 1], [0, 0]])
    p = np.array([[1, 0], [0, 0]])
    # |T∩P| = 1, |T| = 2, |P| = 1 -> Dice 2/3, IoU 1/2, pixel accuracy 3/4
    assert per_image_dice(t, p)[0] == pytest.approx(2 / 3)
    assert per_image_iou(t, p)[0] == pytest.approx(0.5)
    assert pixel_accuracy(t, p)[0] == pytest.approx(0.75)


def test_empty_mask_policy():
    z = np.zeros((2, 2))
    one = np.array([[0, 1], [0, 0]])
    assert per_image_dice(z, z)[0] == 1.0  # both empty: correct "no lesion"
    assert per_image_dice(z, one)[0] == 0.0  # prediction only
    assert per_image_dice(one, z)[0] == 0.0  # truth only
    assert per_image_iou(z, z)[0] == 1.0 and per_image_iou(z, one)[0] == 0.0


def test_summary_separates_lesion_and_all_images():
    truth = np.stack([np.array([[1, 1], [0, 0]]), np.zeros((2, 2)), np.zeros((2, 2))])
    pred = np.stack([np.array([[1, 0], [0, 0]]), np.zeros((2, 2)), np.array([[1, 0], [0, 0]])])
    s = segmentation_summary(truth, pred)
    assert s["n_lesion"] == 1 and s["n_empty"] == 2
    assert s["dice_lesion"] == pytest.approx(2 / 3)
    assert s["dice_all"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert s["false_positive_rate_empty"] == pytest.approx(0.5)


def test_probabilities_thresholded_and_255_masks():
    t = np.array([[255, 0]], dtype=np.uint8)
    p = np.array([[0.7, 0.2]])
    assert per_image_dice(t, p)[0] == 1.0
    assert per_image_dice(t, p, threshold=0.8)[0] == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        per_image_dice(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_keras_dice_metric_matches_numpy():
    from medattn.evaluation.keras_metrics import DiceMetric

    rng = np.random.default_rng(1)
    t = (rng.random((4, 8, 8, 1)) > 0.6).astype("float32")
    t[1] = 0
    p = rng.random((4, 8, 8, 1)).astype("float32")
    p[1] = 0
    m = DiceMetric()
    m.update_state(t, p)
    assert float(m.result()) == pytest.approx(per_image_dice(t, p).mean(), abs=1e-6)
