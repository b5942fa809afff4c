"""Joint image/mask transforms built from ``torchvision.transforms.v2``.

The dataset hands ``(tv_tensors.Image uint8 (3, H, W), tv_tensors.Mask (H, W))`` to these
pipelines. v2 dispatches on the tv_tensor type: geometric steps move the mask with the image
(nearest-neighbour for masks), photometric steps and normalisation touch the image only.
Results: float32 image (3, h, w), normalised with ``mean``/``std``; mask (h, w), void = 11.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from haformer.data.classes import IGNORE_INDEX, MEAN, STD

IMAGE_SIZE = (360, 480)
"""(H, W) of SegNet CamVid images."""

PAD_FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
"""Padding value per type: black image pixels, void mask pixels (ignored by the loss)."""


def train_transforms(
    crop: tuple[int, int] = IMAGE_SIZE,
    scale: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    color_jitter: bool = False,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
    base_size: tuple[int, int] = IMAGE_SIZE,
) -> v2.Compose:
    """Random scale, pad, random crop, flip, optional colour jitter, normalisation.

    Args:
        crop: output (H, W). Where the scaled image is smaller, it is padded first: image
            pixels with 0, mask pixels with 11 (void).
        scale: range of the random scale factor s (uniform). The image is resized so that it
            fits ``base_size`` times s, keeping its aspect ratio; for 360x480 CamVid images
            and the default ``base_size`` that is s times the original size.
        flip: random horizontal flip with probability 0.5.
        color_jitter: random brightness, contrast and saturation (0.3 each, image only).
        mean, std: per-channel statistics of pixel values / 255 (default: CamVid train).
        base_size: (H, W) the scale range refers to; for reduced-resolution training pass
            the reduced size, for example ``crop=(180, 240), base_size=(180, 240)``.

    Returns a callable ``(image, mask) -> (float32 (3, *crop), mask (*crop))``.
    """
    steps: list[v2.Transform] = [
        # ScaleJitter's target_size is (W, H).
        v2.ScaleJitter(target_size=(base_size[1], base_size[0]), scale_range=scale),
        v2.RandomCrop(crop, pad_if_needed=True, fill=PAD_FILL),
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3))
    return v2.Compose([*steps, *_normalize(mean, std)])


def eval_transforms(mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> v2.Compose:
    """Normalisation only, at full resolution: ``(image, mask) -> (float32 (3, H, W), mask)``."""
    return v2.Compose(_normalize(mean, std))


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """uint8 image -> float32 in [0, 1] -> ``(x - mean) / std``; the mask passes unchanged."""
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
