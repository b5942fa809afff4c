"""Pixel-Excitation Module (PEM): a parameter-free channel re-weighting (book ch. 3).

``PEM(x) = x * A + x`` with ``A = softmax_over_channels(GAP(x))`` of shape (B, C, 1, 1):
channels whose mean response is high get amplified a little more than the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def excite(x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """``x * softmax_C(pooled) + x``: x (B, C, H, W), pooled (B, C, 1, 1) -> (B, C, H, W)."""
    return x * torch.softmax(pooled, dim=1) + x


def excite_and_sum(z: torch.Tensor, branches: int) -> torch.Tensor:
    """``sum_t PEM(z_t)`` for ``branches`` maps stacked along channels, in 5 operations.

    z (B, n*h, H, W) = [z_1 | ... | z_n] -> (B, h, H, W). Each branch gets its own softmax over
    its own h channels, exactly as ``sum(PEM()(z_t) for z_t in z.chunk(n, 1))``.
    """
    b, c, height, width = z.shape
    z = z.view(b, branches, c // branches, height, width)  # (B, n, h, H, W)
    weights = torch.softmax(z.mean((3, 4), keepdim=True), dim=2)  # (B, n, h, 1, 1)
    return torch.addcmul(z, z, weights).sum(1)  # sum_t (z_t * A_t + z_t): (B, h, H, W)


class PEM(nn.Module):
    """Parameter-free PEM (corrected): (B, C, H, W) -> (B, C, H, W).

    The seed's PEM also created a 1x1 convolution ``fc`` (C*C + C parameters) that its
    ``forward`` never calls: 27,040 parameters over the seed model that never receive a
    gradient, and that make DistributedDataParallel fail unless
    ``find_unused_parameters=True``. The computation itself needs no parameters, so this PEM
    has none. ``in_channels`` is accepted (and ignored) so the two PEMs are interchangeable.
    """

    def __init__(self, in_channels: int | None = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return excite(x, F.adaptive_avg_pool2d(x, 1))


class SeedPEM(nn.Module):
    """The seed's PEM, exactly: GAP, softmax over channels, ``x * A + x``; (B,C,H,W) -> same.

    ``fc`` is created and never used, as in the seed (it only adds ``C*C + C`` parameters).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(in_channels, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return excite(x, self.gap(x))
