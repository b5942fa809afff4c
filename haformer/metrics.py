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

from haformer.data.classes import IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Count (target, prediction) pairs.

    Args:
        pred: int tensor of class ids, any shape, e.g. (B, H, W).
        target: int tensor of the same shape; values in ``0..num_classes-1`` or ``ignore_index``.

    Returns:
        (num_classes, num_classes) int64 tensor on ``pred``'s device, rows = target.

    Raises ValueError for differing shapes or ids outside ``0..num_classes-1``.
    """
    counts = pair_counts(pred, target, num_classes, ignore_index)
    if int(counts[-1]):
        keep = target != ignore_index
        t, p = target[keep].long(), pred[keep].long()
        bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
        raise ValueError(
            f"class ids must lie in 0..{num_classes - 1} ({ignore_index} = ignore, targets only); "
            f"got target values {t[bad].unique().tolist()[:8]} and predictions "
            f"{p[bad].unique().tolist()[:8]}"
        )
    return counts[:-1].reshape(num_classes, num_classes)


def pair_counts(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """The confusion counts as a flat (num_classes**2 + 1,) int64 tensor, without waiting for
    the device: ``[t * C + p]`` counts target t predicted as p, the last entry counts pixels
    with an id outside ``0..C-1`` (ignored targets excluded), which the caller checks later.

    No boolean indexing, ``bincount`` or ``.item()``: a fixed-size 1-D ``scatter_add_``
    (deterministic on CUDA), so a training step does not stall on the GPU to count pixels.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}; "
            "resize the logits to the label size before scoring"
        )
    c = num_classes
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    in_range = (t >= 0) & (t < c) & (p >= 0) & (p < c)
    index = torch.where(in_range, t * c + p, c * c)  # out of range -> the "bad" slot
    index = torch.where(t == ignore_index, c * c + 1, index)  # ignored -> dropped below
    counts = torch.zeros(c * c + 2, dtype=torch.long, device=pred.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    return counts[:-1]


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

    ``update`` takes logits (B, C, H, W) or class ids (B, H, W) with targets (B, H, W); it
    never waits for the device (no data leaves it until ``compute``, which also checks that
    every id was in range). Under DistributedDataParallel call ``all_reduce()`` once before
    ``compute`` so every rank holds the sum over all ranks.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes**2 + 1, dtype=torch.long, device=device)
        """Flat confusion counts plus the out-of-range count (see :func:`pair_counts`)."""

    @property
    def matrix(self) -> Tensor:
        """The (C, C) confusion matrix so far, rows = target (a view on the device)."""
        return self.counts[:-1].view(self.num_classes, self.num_classes)

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
        counts = pair_counts(output, target, self.num_classes, self.ignore_index)
        self.counts += counts.to(self.counts.device)

    def all_reduce(self) -> None:
        """Sum the counts over all processes (no-op unless torch.distributed is initialised)."""
        all_reduce_sum(self.counts)

    def compute(self) -> dict:
        """Scores of everything seen so far; see :func:`metrics_from_confusion` (computed on
        the CPU: float64 is not available on every device, e.g. Apple MPS).

        Raises ValueError if some target or prediction was outside ``0..num_classes-1``.
        """
        counts = self.counts.cpu()
        if int(counts[-1]):
            raise ValueError(
                f"{int(counts[-1])} pixels had class ids outside 0..{self.num_classes - 1} "
                f"(targets may also be {self.ignore_index} = ignore): labels or model output do "
                "not match num_classes"
            )
        return metrics_from_confusion(counts[:-1].view(self.num_classes, self.num_classes))

    def reset(self) -> None:
        """Forget every count (start of a new epoch or evaluation)."""
        self.counts.zero_()
