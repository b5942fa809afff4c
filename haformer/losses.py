"""Training losses: class-weighted cross entropy with an ignore index, and its OHEM variant.

Both take logits (B, C, H, W) and int64 targets (B, H, W) holding class ids or the ignore
index (CamVid void = 11) and return a scalar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from haformer.data.classes import IGNORE_INDEX


class OhemCrossEntropy(nn.Module):
    """Online hard example mining: cross entropy over the hardest pixels only.

    A pixel is *hard* when the model gives its true class a probability below ``thresh``
    (its unweighted loss exceeds ``-ln(thresh)``). The loss is the weighted mean (divided by
    the summed class weights, like ``nn.CrossEntropyLoss``) over the hard pixels; when fewer
    than ``min_kept`` pixels are hard, the ``min_kept`` pixels with the largest loss are used
    instead. Early in training (everything is hard) this is plain weighted cross entropy; late
    in training the easy road and sky pixels stop dominating the gradient.
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
        thresh: float = 0.7,
        min_kept: int = 100_000,
    ) -> None:
        super().__init__()
        if not 0.0 < thresh <= 1.0:
            raise ValueError(f"OHEM thresh is a probability in (0, 1]; got {thresh}")
        if min_kept < 1:
            raise ValueError(f"OHEM min_kept must be at least 1; got {min_kept}")
        self.register_buffer("weight", weight, persistent=False)
        self.ignore_index = ignore_index
        self.loss_thresh = -math.log(thresh)
        self.min_kept = min_kept

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """logits (B, C, H, W), target (B, H, W) int64 -> scalar loss."""
        # unweighted loss decides hardness, the weighted one is what is averaged
        plain = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        plain = plain[valid]
        if plain.numel() == 0:
            return logits.sum() * 0.0
        w = torch.ones_like(plain)
        if self.weight is not None:
            w = self.weight.to(plain.dtype)[target[valid]]
        hard = plain > self.loss_thresh
        if int(hard.sum()) < self.min_kept:
            k = min(self.min_kept, plain.numel())
            hard = torch.zeros_like(hard)
            hard[torch.topk(plain.detach(), k, sorted=False).indices] = True
        # normalised like nn.CrossEntropyLoss, so keeping every pixel gives plain weighted CE
        return (plain[hard] * w[hard]).sum() / w[hard].sum()


def build_loss(
    name: str = "ce",
    weight: Sequence[float] | Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    ohem_thresh: float = 0.7,
    ohem_min_kept: int = 100_000,
) -> nn.Module:
    """Make the training loss.

    Args:
        name: ``"ce"`` (cross entropy, weighted if ``weight`` is given) or ``"ohem"``.
        weight: per-class weights (C,), e.g. ENet weights ``1 / ln(1.10 + p_c)``, or None.
        ignore_index: target value that contributes nothing (CamVid void = 11).
        ohem_thresh, ohem_min_kept: see :class:`OhemCrossEntropy`.

    Returns:
        module mapping (logits (B, C, H, W), target (B, H, W)) to a scalar. For ``"ce"`` the
        weighted mean divides by the summed weights of the counted pixels (PyTorch's rule).
    """
    w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=w, ignore_index=ignore_index)
    if name == "ohem":
        return OhemCrossEntropy(w, ignore_index, ohem_thresh, ohem_min_kept)
    raise ValueError(f"unknown loss {name!r}: choose 'ce' or 'ohem'")
