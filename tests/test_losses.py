"""Weighted cross entropy with the ignore index, and OHEM, on hand-computed pixels."""

from __future__ import annotations

import math

import pytest
import torch

from haformer.losses import OhemCrossEntropy, build_loss

# 2 classes, ignore = 2, three pixels in a (1, 2, 1, 3) logit map:
#   pixel A: logits (0, ln 3) -> p(1) = 3/4, target 1, loss ln(4/3) = 0.288 (easy at thresh 0.7)
#   pixel B: logits (0, 0)    -> p(0) = 1/2, target 0, loss ln 2   = 0.693 (hard)
#   pixel C: ignored.
LOGITS = torch.tensor([[0.0, 0.0, 7.0], [math.log(3.0), 0.0, -7.0]]).reshape(1, 2, 1, 3)
TARGET = torch.tensor([[[1, 0, 2]]])
WEIGHT = [2.0, 1.0]


def test_weighted_ce_by_hand() -> None:
    loss = build_loss("ce", weight=WEIGHT, ignore_index=2)(LOGITS, TARGET)
    expected = (1.0 * math.log(4 / 3) + 2.0 * math.log(2)) / (1.0 + 2.0)
    assert float(loss) == pytest.approx(expected)


def test_ohem_keeps_only_hard_pixels() -> None:
    loss = build_loss("ohem", weight=WEIGHT, ignore_index=2, ohem_thresh=0.7, ohem_min_kept=1)
    assert float(loss(LOGITS, TARGET)) == pytest.approx(math.log(2))  # pixel B only


def test_ohem_with_enough_min_kept_is_plain_weighted_ce() -> None:
    ohem = build_loss("ohem", weight=WEIGHT, ignore_index=2, ohem_min_kept=2)
    ce = build_loss("ce", weight=WEIGHT, ignore_index=2)
    assert float(ohem(LOGITS, TARGET)) == pytest.approx(float(ce(LOGITS, TARGET)))


def test_ohem_all_ignored_gives_zero_with_gradient() -> None:
    logits = LOGITS.clone().requires_grad_()
    loss = OhemCrossEntropy(ignore_index=2)(logits, torch.full((1, 1, 3), 2))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal")
    with pytest.raises(ValueError, match="thresh"):
        OhemCrossEntropy(thresh=1.5)
