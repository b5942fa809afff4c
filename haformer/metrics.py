"""Segmentation metrics from a confusion matrix that stays on the device.

The matrix ``M`` is ``(num_classes, num_classes)`` int64 with rows = ground truth and columns =
prediction, so ``M[t, p]`` counts pixels of class ``t`` predicted as ``p``. Pixels whose target
is the ignore index (CamVid void = 11) are left out. From ``M``:

- ``TP_c = M[c, c]``, ``FN_c = row_c - TP_c``, ``FP_c = col_c - TP_c``;
- ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``;
- pixel accuracy ``= trace(M) / sum(M)``; class accuracy ``acc_c = TP_c / row_c``.

**Absent classes.** A class that occurs neither in the targets nor in the predictions has
``TP + FP + FN = 0``: its IoU is undefined, reported as NaN, and left out of the mean
(``miou`` is the mean over the defined classes). A class absent from the targets but predicted
somewhere has IoU 0 and counts. Class accuracy is NaN for classes absent from the targets and
those are left out of ``mean_acc``. On full CamVid splits every class occurs, so this only
matters for small batches and tests.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Count (target, prediction) pairs.

    Args:
        pred: int tensor of class ids, any shape, e.g. (B, H, W).
        target: int tensor of the same shape; values in ``0..num_classes-1`` or ``ignore_index``.

    Returns:
        (num_classes, num_classes) int64 tensor on ``pred``'s device, rows = target.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}; "
            "resize the logits to the label size before scoring"
        )
    keep = target != ignore_index
    t = target[keep].long()
    p = pred[keep].long()
    bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
    if bool(bad.any()):
        raise ValueError(
            f"class ids must lie in 0..{num_classes - 1} ({ignore_index} = ignore, targets only); "
            f"got target values {t[bad].unique().tolist()[:8]} and predictions "
            f"{p[bad].unique().tolist()[:8]}"
        )
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion(matrix: Tensor) -> dict:
    """mIoU, per-class IoU, pixel accuracy and mean class accuracy from a confusion matrix.

    Args:
        matrix: (C, C) counts, rows = target, columns = prediction.

    Returns:
        dict with ``miou`` (float), ``iou`` (list of C floats, NaN for undefined classes),
        ``pixel_acc`` (float), ``mean_acc`` (float), ``acc`` (list of C floats) and
        ``pixels`` (int, the counted pixels). Empty matrices give NaN scores.
    """
    m = matrix.double()
    tp = m.diagonal()
    gt = m.sum(dim=1)
    pred = m.sum(dim=0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
    total = m.sum()
    return {
        "miou": _nanmean(iou),
        "iou": iou.tolist(),
        "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_acc": _nanmean(acc),
        "acc": acc.tolist(),
        "pixels": int(total),
    }


def _nanmean(values: Tensor) -> float:
    defined = values[~values.isnan()]
    return float(defined.mean()) if defined.numel() else math.nan


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all processes in place and return it (no-op without DDP)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class SegMetrics:
    """Running confusion matrix for a segmentation model, kept on ``device``.

    ``update`` takes logits (B, C, H, W) or class ids (B, H, W) with targets (B, H, W); no
    data leaves the device until ``compute``. Under DistributedDataParallel call
    ``all_reduce()`` once before ``compute`` so every rank holds the sum over all ranks.
    """

    def __init__(
        self,
        num_classes: int = 11,
        ignore_index: int = 11,
        device: torch.device | str | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, output: Tensor, target: Tensor) -> None:
        """Add one batch: ``output`` logits (B, C, H, W) or ids (B, H, W); ``target`` (B, H, W)."""
        if output.dim() == target.dim() + 1:
            if output.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits have {output.shape[1]} channels, expected {self.num_classes} classes"
                )
            output = output.argmax(dim=1)
        target = target.to(output.device)
        self.matrix += confusion_matrix(output, target, self.num_classes, self.ignore_index).to(
            self.matrix.device
        )

    def all_reduce(self) -> None:
        """Sum the matrix over all processes (no-op unless torch.distributed is initialised)."""
        all_reduce_sum(self.matrix)

    def compute(self) -> dict:
        """Scores of everything seen so far; see :func:`metrics_from_confusion`."""
        return metrics_from_confusion(self.matrix)

    def reset(self) -> None:
        """Forget every count (start of a new epoch or evaluation)."""
        self.matrix.zero_()
