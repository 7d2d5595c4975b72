import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segrt.training.losses import SegmentationLoss, median_frequency_weights, soft_dice_loss


def perfect_logits(target, num_classes, scale=50.0):
    return F.one_hot(target.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2).float() * scale


def test_dice_perfect_is_zero_and_wrong_is_high():
    target = torch.randint(0, 3, (2, 16, 16))
    assert soft_dice_loss(perfect_logits(target, 3), target) < 1e-3
    wrong = perfect_logits((target + 1) % 3, 3)
    assert soft_dice_loss(wrong, target) > 0.9


def test_ignored_pixels_do_not_count():
    target = torch.randint(0, 3, (1, 16, 16))
    target[:, :4] = 255
    logits = perfect_logits(target, 3)
    other = logits.clone()
    other[:, :, :4] = torch.randn_like(other[:, :, :4]) * 20  # garbage where ignored
    for loss in (SegmentationLoss(1, 0), SegmentationLoss(0, 1), SegmentationLoss(1, 1)):
        assert loss(other, target) == pytest.approx(float(loss(logits, target)), abs=1e-5)
        assert loss(logits, target) < 1e-3


def test_ce_plus_dice_is_the_weighted_sum():
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    ce = F.cross_entropy(logits, target)
    dice = soft_dice_loss(logits, target, 255)
    assert SegmentationLoss(1, 0.5)(logits, target) == pytest.approx(float(ce + 0.5 * dice), rel=1e-5)


def test_class_weights_change_ce():
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    w = torch.tensor([1.0, 5.0, 1.0])
    assert SegmentationLoss(1, 0, w)(logits, target) != pytest.approx(float(SegmentationLoss(1, 0)(logits, target)))


def test_median_frequency_weights():
    w = median_frequency_weights(np.array([800, 150, 50, 0]))
    # frequencies .8 .15 .05 (median .15): weights .1875 1 3; unseen class 0
    np.testing.assert_allclose(w.numpy(), [0.1875, 1.0, 3.0, 0.0], rtol=1e-6)


def test_bad_weights():
    with pytest.raises(ValueError):
        SegmentationLoss(0, 0)
