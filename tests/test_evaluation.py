import json

import numpy as np
import pytest

from labtf.errors import LabtfError
from labtf.evaluation import compute_metrics, confusion_table, evaluate


def test_metrics_by_hand():
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array([[.8, .1, .1], [.2, .7, .1], [.5, .4, .1],
                      [.1, .8, .1], [.6, .1, .3], [.1, .2, .7]])
    m = compute_metrics(y, probs, classes, k=2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["top_k"] == 2 and m["top_k_accuracy"] == pytest.approx(5 / 6)  # [.6,.1,.3] misses b
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["per_class"]["a"] == pytest.approx(
        {"n": 3, "accuracy": 2 / 3, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5)
    # default top-k is 3 when there are more than 3 classes: true class 3rd -> counted
    five = compute_metrics(np.array([0, 1]), np.array([[0.1, 0.5, 0.3, 0.05, 0.05],
                                                       [0.4, 0.05, 0.05, 0.3, 0.2]]), list("abcde"))
    assert five["top_k"] == 3 and five["top_k_accuracy"] == pytest.approx(0.5)


def test_balanced_accuracy_and_macro_f1_by_hand_and_against_sklearn():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    classes = ["a", "b", "c"]
    y = np.array([0] * 6 + [1, 1, 2, 2])
    pred = np.array([0] * 6 + [0, 1, 0, 2])
    m = compute_metrics(y, np.eye(3)[pred], classes)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)  # mean recall
    f1_a = 2 * 0.75 * 1 / 1.75  # precision 6/8, recall 1
    assert m["macro_f1"] == pytest.approx((f1_a + 2 / 3 + 2 / 3) / 3)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    # another dataset without class c (never predicted either): c does not count as F1 0
    y2, pred2 = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    m2 = compute_metrics(y2, np.eye(3)[pred2], classes)
    assert m2["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m2["balanced_accuracy"] == pytest.approx(0.75)


def test_poster_layout():
    rows = confusion_table(np.array([[74, 1], [5, 64]]), ["lyophilizer/dryer", "bioreactor"])
    assert rows[0] == ["Object", "Class", "# Test Images", "1", "2", "Class Acc. (%)"]
    assert rows[1] == ["lyophilizer/dryer", "1", "75", "74", "1", "98.67"]
    assert rows[-1][0] == "TOTAL" and rows[-1][2] == "144" and rows[-1][-1] == "95.83"


def test_evaluate_on_other_data(trained_run, shared_data, tmp_path):
    m = evaluate(trained_run, str(shared_data))
    assert m["n_test"] == 60 and m["source"] == str(shared_data)
    saved = json.loads(trained_run.file("metrics.json").read_text())
    assert saved["n_test"] == 60
    evaluate(trained_run)  # restore the test-split metrics for other tests
    (tmp_path / "zebra").mkdir()
    (tmp_path / "red_disc").mkdir()
    for d in ("zebra", "red_disc"):
        src = sorted((shared_data / "red_disc").iterdir())[0]
        (tmp_path / d / src.name).write_bytes(src.read_bytes())
    with pytest.raises(LabtfError, match="'zebra'.*not trained on"):
        evaluate(trained_run, str(tmp_path))
