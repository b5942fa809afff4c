"""CamVid (SegNet version) classes, colours and pixel statistics, and :func:`colorize`.

Ids 0..10 are the classes in :data:`CLASSES` order; 11 is void, ignored by losses and metrics.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 11
"""Label value of void pixels; also the fill value of padded mask pixels."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),  # Sky
    (128, 0, 0),  # Building
    (192, 192, 128),  # Pole
    (128, 64, 128),  # Road
    (60, 40, 222),  # Pavement
    (128, 128, 0),  # Tree
    (192, 128, 128),  # SignSymbol
    (64, 64, 128),  # Fence
    (64, 0, 128),  # Car
    (64, 64, 0),  # Pedestrian
    (0, 128, 192),  # Bicyclist
    (0, 0, 0),  # void
)
"""SegNet colours (R, G, B) of ids 0..11; void (11) is black."""

MEAN = (0.4119, 0.4251, 0.4327)
STD = (0.3071, 0.3116, 0.3072)
"""RGB mean and standard deviation of pixel values / 255 over the 367 train images."""

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def colorize(mask: ArrayT) -> ArrayT:
    """Colour a label or prediction map with :data:`PALETTE`.

    ``mask`` holds ids 0..11, shape ``(..., H, W)`` (a torch tensor or a NumPy array).
    Returns uint8 RGB of shape ``(..., H, W, 3)``, of the same kind as the input, ready for
    ``PIL.Image.fromarray`` (NumPy) or ``matplotlib.pyplot.imshow``.
    """
    if isinstance(mask, torch.Tensor):
        palette = torch.tensor(PALETTE, dtype=torch.uint8, device=mask.device)
        ids = mask.long()
    else:
        palette = np.asarray(PALETTE, dtype=np.uint8)
        ids = np.asarray(mask).astype(np.int64)
    if math.prod(ids.shape) and not 0 <= int(ids.min()) <= int(ids.max()) <= IGNORE_INDEX:
        raise ValueError(
            f"colorize expects ids 0..{IGNORE_INDEX} (11 = void); "
            f"got values {int(ids.min())}..{int(ids.max())}"
        )
    return palette[ids]
