import numpy as np
import pytest

from segrt.imaging.metrics import ConfusionMatrix, mask_iou


def test_hand_computed():
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3).update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # class 0: tp 1 fp 1 fn 1 -> 1/3; class 1: tp 2 fp 1 fn 0 -> 2/3; class 2: tp 1 fp 0 fn 1 -> 1/2
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(cm.dice(), [2 / 4, 4 / 5, 2 / 3])
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_accumulates_over_batches():
    a = ConfusionMatrix(2).update([0, 1], [0, 0]).update([1], [1])
    b = ConfusionMatrix(2).update([0, 1, 1], [0, 0, 1])
    assert (a.matrix == b.matrix).all()


def test_absent_class_excluded_from_miou():
    cm = ConfusionMatrix(3).update([0, 0, 1], [0, 0, 1])
    assert np.isnan(cm.iou()[2])
    assert cm.miou() == 1.0
    assert cm.summary(["a", "b", "c"])["iou"]["c"] is None


def test_ignore_index():
    cm = ConfusionMatrix(2, ignore_index=255).update([1, 0, 1], [255, 0, 1])
    assert cm.matrix.sum() == 2
    assert cm.miou() == 1.0


def test_out_of_range_rejected():
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update([0, 3], [0, 1])


def test_mask_iou_symmetric_agreement():
    a = np.array([0, 0, 1, 1])
    assert mask_iou(a, a, 2) == 1.0
    assert mask_iou(a, np.array([0, 1, 1, 1]), 2) == pytest.approx((1 / 2 + 2 / 3) / 2)
