import numpy as np
import pytest
from sklearn import metrics as skm

from medattn.evaluation import (
    binary_metrics_from_confusion,
    classification_metrics,
    expected_calibration_error,
    one_vs_rest_accuracy,
)


def _cases_from_confusion(tp, fn, fp, tn):
    """Labels (tumour = 1) reproducing a binary confusion matrix."""
    y_true = np.array([1] * (tp + fn) + [0] * (fp + tn))
    y_pred = np.array([1] * tp + [0] * fn + [1] * fp + [0] * tn)
    return y_true, y_pred


def test_mias_paper_model1_confusion_gives_paper_numbers():
    # Model1 of the deep-fusion paper: TP 21, FN 2, FP 5, TN 36 (tumour positive) on 64 test ROIs.
    y_true, y_pred = _cases_from_confusion(21, 2, 5, 36)
    m = classification_metrics(y_true, y_pred=y_pred, n_classes=2, class_names=["normal", "tumour"])
    assert round(m["accuracy"], 4) == 0.8906
    assert round(m["recall_tumour"], 4) == 0.9130
    assert round(m["precision_tumour"], 4) == 0.8077
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (21, 2, 5, 36)
    b = binary_metrics_from_confusion(21, 2, 5, 36)
    assert b["sensitivity"] == pytest.approx(21 / 23)
    assert b["specificity"] == pytest.approx(36 / 41)


def test_mias_paper_model2_confusion():
    y_true, y_pred = _cases_from_confusion(22, 1, 7, 34)
    m = classification_metrics(y_true, y_pred=y_pred, n_classes=2)
    assert round(m["accuracy"], 4) == 0.875
    assert round(m["sensitivity"], 4) == 0.9565
    assert round(m["precision_pos"], 4) == 0.7586


def test_hand_computed_three_class():
    # truth 0,0,1,1,2,2 ; predicted 0,1,1,1,2,0
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = classification_metrics(y_true, y_pred=y_pred, n_classes=3, class_names=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["recall_a"] == pytest.approx(0.5)
    assert m["precision_b"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # one-vs-rest accuracies: a: (1 + 3) / 6, b: (2 + 3) / 6, c: (1 + 4) / 6 ; supports 2, 2, 2
    ovr = one_vs_rest_accuracy(np.array(m["confusion_matrix"]))
    np.testing.assert_allclose(ovr, [4 / 6, 5 / 6, 5 / 6])
    assert m["weighted_accuracy"] == pytest.approx((4 / 6 + 5 / 6 + 5 / 6) / 3)
    assert m["weighted_accuracy"] > m["accuracy"]


def test_against_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    n, k = 400, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, prob)
    pred = prob.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["f1_weighted"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, prob))


def test_binary_auc_uses_probabilities_not_hard_labels():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])  # one inversion of four pairs -> AUC 0.75
    m = classification_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(1.0)


def test_ece_perfect_and_overconfident():
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(y, np.eye(2)[y]) == pytest.approx(0.0)
    # always 90 % sure of class 1, right half of the time -> ECE = |0.5 - 0.9| = 0.4
    assert expected_calibration_error(y, np.full(4, 0.9)) == pytest.approx(0.4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="4 cases"):
        classification_metrics([0, 1, 1, 0], y_pred=[0, 1])
    with pytest.raises(ValueError, match="class names"):
        classification_metrics([0, 1], y_pred=[0, 1], n_classes=2, class_names=["x"])


def test_macro_f1_matches_classification_metrics_and_sklearn():
    import numpy as np

    from medattn.evaluation import classification_metrics
    from medattn.evaluation.classification import macro_f1

    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(3, 40))
        t = rng.integers(0, 3, n)
        prob = rng.dirichlet(np.ones(3), n)
        if trial % 4 == 0:  # a class missing from the truth, or never predicted
            t[t == 2] = 0
        ref = classification_metrics(t, prob, n_classes=3)["f1_macro"]
        assert macro_f1(t, prob, 3) == pytest.approx(ref, abs=1e-12)
        assert macro_f1(t, prob.argmax(1), 3) == pytest.approx(ref, abs=1e-12)


def test_choose_threshold_rules_on_validation_scores():
    import numpy as np
    import pytest

    from medattn.evaluation import choose_threshold

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.25, 0.4, 0.6, 0.8, 0.9, 0.95])
    t = choose_threshold(y, p, "sensitivity:0.9")  # 9 of 10 positives would need > 0.9 * 6 -> 6 of 6: all
    assert np.mean(p[y == 1] > t) >= 0.9 and t < 0.25 and t > 0.2
    t = choose_threshold(y, p, "sensitivity:0.5")  # the highest threshold keeping 3 of 6 positives
    assert np.mean(p[y == 1] > t) == 0.5 and 0.7 < t < 0.8
    t = choose_threshold(y, p, "youden")  # between 0.3 and 0.4: sensitivity 5/6, specificity 3/4
    assert 0.3 < t < 0.4
    assert not np.any(np.isclose(p, t))
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.ones(4), p[:4], "youden")
    with pytest.raises(ValueError, match="sensitivity:X"):
        choose_threshold(y, p, "sensitivity:1.5")
    with pytest.raises(ValueError, match="youden"):
        choose_threshold(y, p, "f1")
