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


def _six_class_masks(seed=0):
    """Six classes over 8 tiles of 64x64: five large ones and 'road' on 2 pixels of each tile."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 5, (8, 64, 64)).repeat(1, axis=0)
    ref = np.sort(ref, axis=2)  # large regions
    ref[:, 0, :2] = 5
    return ref


def test_a_handful_of_rare_class_pixels_changing_does_not_fail_the_gate():
    from segrt.imaging.metrics import agreement, agreement_problems

    ref = _six_class_masks()
    out = ref.copy()
    out[ref == 5] = 0  # the rare class vanishes: 16 of 32768 pixels
    agreed = agreement(ConfusionMatrix(6).update(out, ref))
    assert agreed["classes"][5]["iou"] == 0.0 and not agreed["classes"][5]["gated"]
    assert agreed["mask_iou"] > 0.999 and not agreement_problems(agreed, 0.99)
    assert ConfusionMatrix(6).update(out, ref).miou() < 0.84  # the old mean over all classes: 5/6


def test_a_class_with_support_that_collapses_fails_and_is_named_even_when_the_mean_holds():
    from segrt.imaging.metrics import agreement, agreement_problems

    names = [f"c{i}" for i in range(9)] + ["road"]
    ref = np.repeat(np.arange(10), 10)[None, :, None].repeat(4, axis=0).repeat(50, axis=2)  # 10 bands of 10 rows
    out = ref.copy()
    out[:, 90:92, :] = 8  # 'road' loses 2 of its 10 rows to its neighbour: IoU 0.8 and 0.83
    agreed = agreement(ConfusionMatrix(10).update(out, ref))
    assert agreed["mask_iou"] >= 0.96 and agreed["classes"][9]["gated"]
    problems = agreement_problems(agreed, 0.96, names)
    assert len(problems) == 2 and all("agrees at IoU" in p for p in problems), problems
    assert "class 'road' (10.0% of the pixels) agrees at IoU 0.8000 < 0.910" in problems[1]
