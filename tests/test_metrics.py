"""Confusion-matrix metrics against small cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from haformer.metrics import SegMetrics, confusion_matrix, metrics_from_confusion

# 3 classes, ignore = 3. Pixels (target, prediction), the last one ignored:
#   (0,0) (0,1) (1,1) (1,1) (2,0) [(3,2) ignored]
# Confusion matrix (rows = target):  [[1,1,0],[0,2,0],[1,0,0]]
# TP = [1,2,0]; row sums = [2,2,1]; column sums = [2,3,0]; union = [3,3,1]
# IoU = [1/3, 2/3, 0] -> mIoU 1/3; pixel acc 3/5; class acc [1/2, 1, 0] -> mean 1/2.
TARGET = torch.tensor([[[0, 0, 1], [1, 2, 3]]])
PRED = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
MATRIX = [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_confusion_matrix_by_hand() -> None:
    assert confusion_matrix(PRED, TARGET, 3, 3).tolist() == MATRIX


def test_scores_by_hand() -> None:
    m = metrics_from_confusion(torch.tensor(MATRIX))
    assert m["iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert m["miou"] == pytest.approx(1 / 3)
    assert m["pixel_acc"] == pytest.approx(3 / 5)
    assert m["acc"] == pytest.approx([0.5, 1.0, 0.0])
    assert m["mean_acc"] == pytest.approx(0.5)
    assert m["pixels"] == 5


def test_logits_and_ids_agree_and_accumulate() -> None:
    logits = F.one_hot(PRED, 3).permute(0, 3, 1, 2).float() * 5.0  # (1, 3, 2, 3)
    metrics = SegMetrics(num_classes=3, ignore_index=3)
    metrics.update(logits, TARGET)
    metrics.update(PRED, TARGET)
    assert metrics.matrix.tolist() == [[2 * v for v in row] for row in MATRIX]
    assert metrics.compute()["miou"] == pytest.approx(1 / 3)  # doubling counts changes nothing
    metrics.reset()
    assert int(metrics.matrix.sum()) == 0
    assert math.isnan(metrics.compute()["miou"])


def test_class_absent_from_target_and_prediction_is_left_out() -> None:
    # 4 classes; class 2 and 3 never occur anywhere -> NaN, mean over classes 0 and 1 only
    m = metrics_from_confusion(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 4, 11))
    assert m["iou"][:2] == [1.0, 1.0]
    assert math.isnan(m["iou"][2]) and math.isnan(m["iou"][3])
    assert m["miou"] == 1.0


def test_class_predicted_but_absent_from_target_counts_as_zero() -> None:
    # target [0, 0], prediction [0, 2]: IoU0 = 1/2, IoU1 undefined, IoU2 = 0/1 = 0 -> mIoU 1/4
    m = metrics_from_confusion(confusion_matrix(torch.tensor([0, 2]), torch.tensor([0, 0]), 3, 11))
    assert m["iou"][0] == 0.5 and math.isnan(m["iou"][1]) and m["iou"][2] == 0.0
    assert m["miou"] == pytest.approx(0.25)
    assert m["mean_acc"] == pytest.approx(0.5)  # only class 0 occurs in the target


def test_bad_values_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="class ids must lie in 0..2"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 5]), 3, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 3, 3)
    with pytest.raises(ValueError, match="channels"):
        SegMetrics(num_classes=3).update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2).long())


def test_matrix_stays_on_its_device() -> None:
    metrics = SegMetrics(num_classes=3, ignore_index=3, device="meta")
    assert metrics.matrix.device.type == "meta"
